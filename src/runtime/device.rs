//! Device selection: `auto` walks each backend's priority list and takes the first device the
//! runtime reports as available; an explicit device must be available or it is an error.

use std::fmt;
use std::str::FromStr;

use super::{ExportBackend, RuntimeError};

/// What the user asked for: `auto` or one explicit device name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    #[default]
    Auto,
    Explicit(String),
}

impl FromStr for DeviceRequest {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Ok(if t.is_empty() || t.eq_ignore_ascii_case("auto") {
            DeviceRequest::Auto
        } else {
            DeviceRequest::Explicit(t.to_string())
        })
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Explicit(d) => f.write_str(d),
        }
    }
}

/// The outcome of device selection: the device to use and, for `auto`, every candidate of
/// higher priority that was skipped and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChoice {
    pub device: String,
    pub skipped: Vec<(String, String)>,
}

impl DeviceChoice {
    /// Logs the choice and the skipped candidates.
    pub fn log(&self, backend: ExportBackend) {
        for (dev, why) in &self.skipped {
            log::info!("{backend}: skipped device {dev}: {why}");
        }
        log::info!("{backend}: using device {}", self.device);
    }
}

/// The priority list of each backend (getiaction's design): OpenVINO GPU -> NPU -> CPU;
/// ONNX CUDA -> TensorRT -> CPU; TorchScript cuda -> cpu. `remote` has one: the server,
/// which places the model itself.
pub fn priority(backend: ExportBackend) -> &'static [&'static str] {
    match backend {
        ExportBackend::OpenVino => &["GPU", "NPU", "CPU"],
        ExportBackend::Onnx => &["cuda", "tensorrt", "cpu"],
        ExportBackend::TorchScript => &["cuda", "cpu"],
        ExportBackend::Remote => &["server"],
    }
}

/// Normalises a device name the way each runtime spells it (`gpu.0` -> `GPU.0` for OpenVINO,
/// `CUDA` -> `cuda` for the others).
fn normalise(backend: ExportBackend, name: &str) -> String {
    match backend {
        ExportBackend::OpenVino => name.to_ascii_uppercase(),
        _ => name.to_ascii_lowercase(),
    }
}

/// Whether `available` (as the runtime reports it, e.g. `GPU.0`, `cuda:1`) is an instance of
/// the device class `class` (`GPU`, `cuda`).
fn is_instance(backend: ExportBackend, class: &str, available: &str) -> bool {
    let a = normalise(backend, available);
    a == class || a.starts_with(&format!("{class}.")) || a.starts_with(&format!("{class}:"))
}

/// Picks a device for `backend` from what the runtime reports as `available`.
pub fn select_device(
    backend: ExportBackend,
    request: &DeviceRequest,
    available: &[String],
) -> Result<DeviceChoice, RuntimeError> {
    let list = priority(backend);
    match request {
        DeviceRequest::Auto => {
            let mut skipped = Vec::new();
            for class in list {
                if let Some(dev) = available.iter().find(|a| is_instance(backend, class, a)) {
                    return Ok(DeviceChoice {
                        device: normalise(backend, dev),
                        skipped,
                    });
                }
                skipped.push((
                    class.to_string(),
                    "not reported available by the runtime".into(),
                ));
            }
            Err(RuntimeError::DeviceUnavailable {
                backend,
                requested: "auto".into(),
                available: super::join_names(available.iter().map(String::as_str)),
            })
        }
        DeviceRequest::Explicit(dev) => {
            let want = normalise(backend, dev);
            let class = want.split(['.', ':']).next().unwrap_or_default();
            if !list.contains(&class) {
                return Err(RuntimeError::UnknownDevice {
                    backend,
                    requested: dev.clone(),
                    expected: list.join(", "),
                });
            }
            let ok = available.iter().any(|a| {
                let a = normalise(backend, a);
                a == want || (want == class && is_instance(backend, class, &a))
            });
            if ok {
                Ok(DeviceChoice {
                    device: want,
                    skipped: Vec::new(),
                })
            } else {
                Err(RuntimeError::DeviceUnavailable {
                    backend,
                    requested: dev.clone(),
                    available: super::join_names(available.iter().map(String::as_str)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn auto_walks_priority_and_records_skips() {
        let c = select_device(ExportBackend::OpenVino, &DeviceRequest::Auto, &s(&["CPU"])).unwrap();
        assert_eq!(c.device, "CPU");
        assert_eq!(
            c.skipped.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["GPU", "NPU"]
        );
        let c = select_device(
            ExportBackend::OpenVino,
            &DeviceRequest::Auto,
            &s(&["CPU", "NPU", "GPU.0"]),
        )
        .unwrap();
        assert_eq!(c.device, "GPU.0");
        assert!(c.skipped.is_empty());
        let c = select_device(
            ExportBackend::OpenVino,
            &DeviceRequest::Auto,
            &s(&["CPU", "NPU"]),
        )
        .unwrap();
        assert_eq!(c.device, "NPU");
        let c = select_device(
            ExportBackend::Onnx,
            &DeviceRequest::Auto,
            &s(&["cpu", "tensorrt"]),
        )
        .unwrap();
        assert_eq!(c.device, "tensorrt");
        assert_eq!(c.skipped.len(), 1);
        let c = select_device(
            ExportBackend::TorchScript,
            &DeviceRequest::Auto,
            &s(&["cpu", "cuda:0"]),
        )
        .unwrap();
        assert_eq!(c.device, "cuda:0");
    }

    #[test]
    fn explicit_unavailable_is_an_error_naming_it() {
        let e =
            select_device(ExportBackend::Onnx, &"cuda".parse().unwrap(), &s(&["cpu"])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`cuda` is not available") && msg.contains("cpu"),
            "{msg}"
        );
        let e = select_device(
            ExportBackend::TorchScript,
            &"tpu".parse().unwrap(),
            &s(&["cpu"]),
        )
        .unwrap_err();
        assert!(matches!(e, RuntimeError::UnknownDevice { .. }), "{e}");
    }

    #[test]
    fn explicit_available_is_taken_case_insensitively() {
        let c = select_device(
            ExportBackend::OpenVino,
            &"cpu".parse().unwrap(),
            &s(&["CPU", "GPU"]),
        )
        .unwrap();
        assert_eq!(c.device, "CPU");
        let c = select_device(
            ExportBackend::TorchScript,
            &"CUDA".parse().unwrap(),
            &s(&["cpu", "cuda:0"]),
        )
        .unwrap();
        assert_eq!(c.device, "cuda");
        let e = select_device(
            ExportBackend::TorchScript,
            &"cuda:1".parse().unwrap(),
            &s(&["cpu", "cuda:0"]),
        );
        assert!(e.is_err());
    }

    #[test]
    fn nothing_available_is_an_error() {
        assert!(select_device(ExportBackend::Onnx, &DeviceRequest::Auto, &[]).is_err());
    }
}
