//! Runtime adapters: one trait over ONNX Runtime, OpenVINO, TorchScript (libtorch) and a
//! KServe v2 inference server (`remote`: Triton, OpenVINO Model Server, KServe, MLServer).
//!
//! Mirrors `getiaction.inference.adapters`: [`RuntimeAdapter`] (load, predict, input and
//! output names), [`ExportBackend`] and the [`get_adapter`] factory. Each backend lives in its
//! own module behind its own cargo feature; a backend that is not compiled in, or whose
//! runtime library cannot be found, is an error that says how to get it, never a panic.
//!
//! Tensors cross the trait as `f32` ([`ndarray::ArrayD`]); adapters convert to and from the
//! model's port types (`f16`, `f64`, `i64`, ...) where a model has them, with [`ports`].

mod device;
pub mod link;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "remote")]
pub mod openpi;
#[cfg(feature = "openvino")]
pub mod openvino;
#[cfg(feature = "openvino")]
pub mod ov_tokenizer;
pub mod ports;
#[cfg(feature = "remote")]
pub mod remote;
#[cfg(feature = "torch")]
pub mod torchscript;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ndarray::{ArrayD, ArrayViewD};

pub use crate::export::ExportBackend;
pub use device::{select_device, DeviceChoice, DeviceRequest};
pub use link::{LinkStatus, ServerLink, ServerState};

/// Output tensors by the model's output names (ordered, so iteration is deterministic).
pub type TensorMap = BTreeMap<String, ArrayD<f32>>;

/// Element type of a model port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    F64,
    I64,
    I32,
    U8,
    Bool,
    /// A type this crate does not convert; named as the runtime names it.
    Other(String),
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::Bool => "bool",
            DType::Other(s) => s,
        };
        f.write_str(s)
    }
}

/// Name, shape and element type of one model input or output.
/// `None` in `shape` is a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<Option<usize>>,
    pub dtype: DType,
}

impl TensorSpec {
    /// Whether a concrete shape fits this spec (dynamic dimensions match anything).
    pub fn accepts(&self, shape: &[usize]) -> bool {
        self.shape.len() == shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(d, s)| d.is_none_or(|d| d == *s))
    }
}

/// Formats a spec shape as `[1, ?, 6]`.
pub fn fmt_shape(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "?".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// ONNX Runtime graph optimisation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphOptimization {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

impl std::str::FromStr for GraphOptimization {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "disable" | "disabled" | "none" | "0" => Ok(Self::Disable),
            "basic" | "1" => Ok(Self::Basic),
            "extended" | "2" => Ok(Self::Extended),
            "all" | "3" | "99" => Ok(Self::All),
            _ => Err(RuntimeError::InvalidOption {
                option: "onnx_optimization",
                value: s.to_string(),
                expected: "disable, basic, extended or all",
            }),
        }
    }
}

/// The precision a runtime may compute in (`inference_precision`). Only OpenVINO offers a
/// choice: on CPU it runs `f32` unless told otherwise (bf16 on CPUs with AVX512-BF16 / AMX,
/// f16 on CPUs with AVX512-FP16 / AMX-FP16); GPU and NPU keep their own default unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" | "fp16" => Ok(Self::F16),
            _ => Err(RuntimeError::InvalidOption {
                option: "inference_precision",
                value: s.to_string(),
                expected: "f32, bf16 or f16",
            }),
        }
    }
}

/// The per-call deadline of the `remote` backend when none is given (`remote_timeout_ms`).
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_millis(1000);

/// A port the export declares, which the inference server's model must have (checked before
/// the first call). `None` dimensions and `dtype` are not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortExpectation {
    pub name: String,
    /// With the batch dimension.
    pub shape: Vec<Option<usize>>,
    pub dtype: Option<DType>,
}

/// The protocol the `remote` backend speaks (`remote_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoteProtocol {
    /// KServe v2 / Open Inference Protocol over gRPC (`http://`, `https://`).
    #[default]
    Kserve,
    /// openpi's WebSocket policy server (`ws://`): msgpack-encoded numpy.
    Openpi,
}

impl fmt::Display for RemoteProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteProtocol::Kserve => "kserve",
            RemoteProtocol::Openpi => "openpi",
        })
    }
}

impl RemoteProtocol {
    /// `kserve`, `openpi`, or empty / `auto`: implied by the URL (`ws://`, `wss://` -> openpi).
    pub fn resolve(name: &str, url: &str) -> Result<Self, RuntimeError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "kserve" | "kserve_v2" | "grpc" => Ok(Self::Kserve),
            "openpi" => Ok(Self::Openpi),
            "" | "auto" => Ok(Self::implied_by(url)),
            _ => Err(RuntimeError::InvalidOption {
                option: "remote_protocol",
                value: name.to_string(),
                expected: "kserve or openpi (ws:// URLs imply openpi)",
            }),
        }
    }

    /// The protocol a URL implies: `ws://` and `wss://` are openpi's, anything else KServe's.
    pub fn implied_by(url: &str) -> Self {
        let u = url.trim().to_ascii_lowercase();
        if u.starts_with("ws://") || u.starts_with("wss://") {
            Self::Openpi
        } else {
            Self::Kserve
        }
    }
}

/// Where and how the `remote` backend reaches its inference server.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// `http://host:port` (plain gRPC) or `https://host:port` (TLS).
    pub url: String,
    /// The model's name on the server.
    pub model: String,
    /// The model version; empty lets the server choose.
    pub model_version: String,
    /// Deadline of each inference call.
    pub timeout: Duration,
    /// PEM file of the certificate authority for `https://` (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Inputs the export declares (the server's model must match them); empty: unchecked.
    pub expected_inputs: Vec<PortExpectation>,
    /// Outputs the export declares; empty: unchecked.
    pub expected_outputs: Vec<PortExpectation>,
    /// The protocol; `None`: implied by the URL ([`RemoteProtocol::implied_by`]).
    pub protocol: Option<RemoteProtocol>,
    /// openpi without an export: the observation's keys and image formats, from the I/O map's
    /// `openpi:` section. `None`: the export's inputs, float32, by name.
    pub openpi_schema: Option<OpenpiSchema>,
}

/// How an openpi observation is laid out when an I/O map, not an export, describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpenpiSchema {
    /// A `/` in an input name nests maps (`images/cam_high` travels as
    /// `{"images": {"cam_high": ...}}`, openpi's ALOHA schema); `false`: the name is the key
    /// as written (`observation/joint_position`, DROID and LIBERO).
    pub nested: bool,
    /// The key the task travels under; `None`: never sent.
    pub prompt_key: Option<String>,
    /// The image inputs (by input name) and their format on the wire; every other input is a
    /// float32 vector.
    pub images: Vec<(String, OpenpiImage)>,
    /// The chunk the server answers (`H` of `actions` `[H, D]`); `None`: learnt from the
    /// answer to a probe when the connection is made.
    pub chunk_size: Option<usize>,
    /// The node's `task`: the prompt of the probe and of the warm-up calls, until an
    /// observation brings its own.
    pub probe_prompt: Option<String>,
}

/// One image of an openpi observation on the wire. The node prepares it as a `3 x H x W`
/// float tensor in `[0, 1]` (resized to the size the server wants); this says how it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenpiImage {
    /// `H x W x 3` (DROID, LIBERO); `false`: `3 x H x W` (ALOHA).
    pub hwc: bool,
    /// `uint8` `0..=255` (rounded); `false`: float32 in `[0, 1]`.
    pub uint8: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            url: String::new(),
            model: String::new(),
            model_version: String::new(),
            timeout: DEFAULT_REMOTE_TIMEOUT,
            ca_file: None,
            expected_inputs: Vec::new(),
            expected_outputs: Vec::new(),
            protocol: None,
            openpi_schema: None,
        }
    }
}

impl RemoteOptions {
    /// The protocol in use: the one set, else the one the URL implies.
    pub fn protocol(&self) -> RemoteProtocol {
        self.protocol
            .unwrap_or_else(|| RemoteProtocol::implied_by(&self.url))
    }

    /// Completes the options from the export directory: the model name defaults to the
    /// policy's name ([`ExportDir::policy_name`](crate::export::ExportDir::policy_name)), and
    /// the ports the export declares (`input_shapes` / `output_shapes`, batch dimension 1
    /// added) become the expectations the server's model is checked against.
    pub fn for_export(mut self, export: &crate::export::ExportDir) -> Self {
        if self.model.trim().is_empty() {
            self.model = export.policy_name();
        }
        let ports = |shapes: &indexmap::IndexMap<String, Vec<usize>>| -> Vec<PortExpectation> {
            shapes
                .iter()
                .map(|(name, dims)| PortExpectation {
                    name: name.clone(),
                    shape: std::iter::once(Some(1))
                        .chain(dims.iter().map(|d| Some(*d)))
                        .collect(),
                    dtype: None,
                })
                .collect()
        };
        if self.expected_inputs.is_empty() {
            self.expected_inputs = ports(&export.metadata.input_shapes);
        }
        if self.expected_outputs.is_empty() {
            self.expected_outputs = ports(&export.metadata.output_shapes);
        }
        self
    }
}

/// Options shared by all adapters. `Default` is: `device: auto`, runtime-chosen thread
/// count, no OpenVINO cache, all ONNX graph optimisations.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// `auto` or an explicit device (`CPU`, `GPU`, `NPU` for OpenVINO; `cpu`, `cuda`,
    /// `tensorrt` for ONNX; `cpu`, `cuda`, `cuda:N` for TorchScript).
    pub device: DeviceRequest,
    /// Intra-op CPU threads; `None` lets the runtime decide.
    pub threads: Option<usize>,
    /// OpenVINO compiled-model cache directory (`CACHE_DIR`).
    pub openvino_cache_dir: Option<PathBuf>,
    /// ONNX Runtime graph optimisation level.
    pub onnx_optimization: GraphOptimization,
    /// ONNX Runtime: whether idle intra-op threads spin (`None`: ONNX Runtime's default, on).
    /// Spinning answers sooner and burns CPU between calls; off, they sleep.
    pub onnx_spinning: Option<bool>,
    /// The precision the runtime computes in (OpenVINO only; the others compute in the
    /// model's own types and refuse anything but `f32` here).
    pub precision: Precision,
    /// The inference server of the `remote` backend.
    pub remote: RemoteOptions,
}

/// What went wrong between the `remote` backend and its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteFault {
    /// The URL, model name or TLS settings are unusable.
    Config,
    /// No connection could be made, or it was lost.
    Unreachable,
    /// The server is up but not ready, or the model is not ready.
    NotReady,
    /// The server does not have the model (version).
    UnknownModel,
    /// The server's model does not match the export (names, shapes, datatypes).
    Mismatch,
    /// The deadline passed before the answer.
    Timeout,
    /// The answer is malformed: a missing output, a wrong size or type, a non-finite value.
    BadAnswer,
    /// The server failed the request.
    Server,
}

impl fmt::Display for RemoteFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteFault::Config => "invalid settings",
            RemoteFault::Unreachable => "server unreachable",
            RemoteFault::NotReady => "not ready",
            RemoteFault::UnknownModel => "unknown model",
            RemoteFault::Mismatch => "model does not match the export",
            RemoteFault::Timeout => "deadline exceeded",
            RemoteFault::BadAnswer => "bad answer",
            RemoteFault::Server => "server error",
        })
    }
}

/// Errors of the runtime layer. Each names the backend, file, tensor or library involved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("backend `{backend}` is not compiled in; rebuild with `--features {feature}`")]
    NotCompiled {
        backend: ExportBackend,
        feature: &'static str,
    },
    #[error("{backend} runtime library could not be loaded ({detail}); {hint}")]
    LibraryMissing {
        backend: ExportBackend,
        detail: String,
        hint: String,
    },
    #[error("{backend}: failed to load model {}: {detail}", path.display())]
    Load {
        backend: ExportBackend,
        path: PathBuf,
        detail: String,
    },
    #[error("{backend}: model is not loaded; call load() first")]
    NotLoaded { backend: ExportBackend },
    #[error("{backend}: device `{requested}` is not available (available: {available})")]
    DeviceUnavailable {
        backend: ExportBackend,
        requested: String,
        available: String,
    },
    #[error("{backend}: unknown device `{requested}` (expected one of: {expected})")]
    UnknownDevice {
        backend: ExportBackend,
        requested: String,
        expected: String,
    },
    #[error("{backend}: model has no input named `{name}` (inputs: {inputs})")]
    UnknownInput {
        backend: ExportBackend,
        name: String,
        inputs: String,
    },
    #[error("{backend}: input `{name}` was given more than once")]
    DuplicateInput {
        backend: ExportBackend,
        name: String,
    },
    #[error("{backend}: input `{name}` was not given (inputs given: {given})")]
    MissingInput {
        backend: ExportBackend,
        name: String,
        given: String,
    },
    #[error("{backend}: input `{name}` expects shape {expected}, got {actual:?}")]
    Shape {
        backend: ExportBackend,
        name: String,
        expected: String,
        actual: Vec<usize>,
    },
    #[error("{backend}: tensor `{name}` has element type {dtype}, which is not supported")]
    UnsupportedType {
        backend: ExportBackend,
        name: String,
        dtype: DType,
    },
    #[error("{backend}: inference failed: {detail}")]
    Inference {
        backend: ExportBackend,
        detail: String,
    },
    #[error("remote server {url}, model `{model}`: {fault}: {detail}")]
    Remote {
        url: String,
        model: String,
        fault: RemoteFault,
        detail: String,
    },
    #[error("{backend}: model {kind} `{name}` {source}")]
    PortShape {
        backend: ExportBackend,
        /// `input` or `output`.
        kind: &'static str,
        name: String,
        #[source]
        source: crate::shape::ShapeError,
    },
    #[error("invalid value `{value}` for {option}: expected {expected}")]
    InvalidOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// A loaded model behind one runtime: the Rust form of getiaction's `RuntimeAdapter`.
///
/// Adapters are created by [`get_adapter`] and must be [`load`](RuntimeAdapter::load)ed
/// before use. They are `Send` so a worker thread can own one (asynchronous refill).
pub trait RuntimeAdapter: Send {
    /// The backend this adapter runs.
    fn backend(&self) -> ExportBackend;
    /// Loads (and compiles) the model file on the device chosen by the options.
    fn load(&mut self, model_path: &Path) -> Result<(), RuntimeError>;
    /// The device the model runs on, as the runtime names it (after `auto` resolution).
    fn device(&self) -> &str;
    /// Model inputs in the model's order (empty before `load`).
    fn inputs(&self) -> &[TensorSpec];
    /// Model outputs in the model's order (empty before `load`).
    fn outputs(&self) -> &[TensorSpec];
    /// Runs the model on named f32 tensors. Every model input must be given exactly once;
    /// outputs come back as f32 by output name.
    fn predict(
        &mut self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
    ) -> Result<TensorMap, RuntimeError>;

    /// For adapters that talk to an inference server: a handle on the link's health (state,
    /// round trips, error counts), shared with whoever reports it. `None` for in-process
    /// runtimes.
    fn server_link(&self) -> Option<ServerLink> {
        None
    }

    /// The task (language instruction) of the observation about to be predicted, for adapters
    /// that send it themselves (openpi's `prompt`). In-process models get it through their
    /// tokenizer processors instead; the default ignores it.
    fn set_task(&mut self, _task: Option<&str>) {}

    /// Names of the model inputs, in order.
    fn input_names(&self) -> Vec<String> {
        self.inputs().iter().map(|s| s.name.clone()).collect()
    }
    /// Names of the model outputs, in order.
    fn output_names(&self) -> Vec<String> {
        self.outputs().iter().map(|s| s.name.clone()).collect()
    }
}

/// Runs `fut` to completion on `rt` from synchronous code (the remote adapters own a small
/// runtime and block on it, so any thread can call them). Inside another tokio runtime (a
/// synchronous tick in the node) it runs on a scoped helper thread named `thread`, since a
/// runtime cannot block inside another. `Err` when that thread cannot start or panics.
#[cfg(feature = "remote")]
pub(crate) fn block_on_runtime<F>(
    rt: &tokio::runtime::Runtime,
    thread: &str,
    fut: F,
) -> Result<F::Output, String>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return Ok(rt.block_on(fut));
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(thread.into())
            .spawn_scoped(s, || rt.block_on(fut))
            .map_err(|e| format!("cannot start a thread: {e}"))?
            .join()
            .map_err(|_| "the call thread panicked".to_string())
    })
}

/// The factory: an unloaded adapter for `backend` configured with `options`.
pub fn get_adapter(
    backend: ExportBackend,
    #[allow(unused_variables)] options: &RuntimeOptions,
) -> Result<Box<dyn RuntimeAdapter>, RuntimeError> {
    match backend {
        #[cfg(feature = "onnx")]
        ExportBackend::Onnx => Ok(Box::new(onnx::OnnxAdapter::new(options.clone()))),
        #[cfg(feature = "openvino")]
        ExportBackend::OpenVino => Ok(Box::new(openvino::OpenVinoAdapter::new(options.clone()))),
        #[cfg(feature = "torch")]
        ExportBackend::TorchScript => Ok(Box::new(torchscript::TorchScriptAdapter::new(
            options.clone(),
        ))),
        #[cfg(feature = "remote")]
        ExportBackend::Remote => match options.remote.protocol() {
            RemoteProtocol::Kserve => Ok(Box::new(remote::RemoteAdapter::new(options.clone()))),
            RemoteProtocol::Openpi => Ok(Box::new(openpi::OpenpiAdapter::new(options.clone()))),
        },
        #[allow(unreachable_patterns)]
        other => Err(RuntimeError::NotCompiled {
            backend: other,
            feature: other.feature(),
        }),
    }
}

/// The devices `backend`'s runtime reports as available on this machine, best first.
pub fn available_devices(backend: ExportBackend) -> Result<Vec<String>, RuntimeError> {
    match backend {
        #[cfg(feature = "onnx")]
        ExportBackend::Onnx => onnx::available_devices(),
        #[cfg(feature = "openvino")]
        ExportBackend::OpenVino => openvino::available_devices(),
        #[cfg(feature = "torch")]
        ExportBackend::TorchScript => Ok(torchscript::available_devices()),
        #[cfg(feature = "remote")]
        ExportBackend::Remote => Ok(vec!["server".to_string()]),
        #[allow(unreachable_patterns)]
        other => Err(RuntimeError::NotCompiled {
            backend: other,
            feature: other.feature(),
        }),
    }
}

/// Backends compiled into this build.
pub fn compiled_backends() -> Vec<ExportBackend> {
    ExportBackend::ALL
        .into_iter()
        .filter(|b| b.is_compiled())
        .collect()
}

/// Checks the given inputs against the model's specs: each model input exactly once, with a
/// fitting shape. Adapters call this before converting, so every backend reports the same
/// errors.
pub fn check_inputs(
    backend: ExportBackend,
    specs: &[TensorSpec],
    inputs: &[(&str, ArrayViewD<'_, f32>)],
) -> Result<(), RuntimeError> {
    for (i, (name, view)) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|(n, _)| n == name) {
            return Err(RuntimeError::DuplicateInput {
                backend,
                name: (*name).to_string(),
            });
        }
        let Some(spec) = specs.iter().find(|s| s.name == *name) else {
            return Err(RuntimeError::UnknownInput {
                backend,
                name: (*name).to_string(),
                inputs: join_names(specs.iter().map(|s| s.name.as_str())),
            });
        };
        if !spec.accepts(view.shape()) {
            return Err(RuntimeError::Shape {
                backend,
                name: spec.name.clone(),
                expected: fmt_shape(&spec.shape),
                actual: view.shape().to_vec(),
            });
        }
    }
    for spec in specs {
        if !inputs.iter().any(|(n, _)| *n == spec.name) {
            return Err(RuntimeError::MissingInput {
                backend,
                name: spec.name.clone(),
                given: join_names(inputs.iter().map(|(n, _)| *n)),
            });
        }
    }
    Ok(())
}

/// Checks every port a loaded model reports against the bounds of [`crate::shape`]
/// (dynamic dimensions count as 1): buffers are built from these shapes (warm-up inputs,
/// `policyctl bench` inputs, the node's image buffers), so a model or metadata claiming an
/// enormous tensor is refused here, naming the port and the limit.
pub fn check_port_shapes(adapter: &dyn RuntimeAdapter) -> Result<(), RuntimeError> {
    let ports = adapter
        .inputs()
        .iter()
        .map(|s| ("input", s))
        .chain(adapter.outputs().iter().map(|s| ("output", s)));
    for (kind, spec) in ports {
        crate::shape::check_port_shape(&spec.shape).map_err(|source| RuntimeError::PortShape {
            backend: adapter.backend(),
            kind,
            name: spec.name.clone(),
            source,
        })?;
    }
    Ok(())
}

pub(crate) fn join_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}
