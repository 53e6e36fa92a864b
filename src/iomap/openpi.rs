//! The map's `openpi:` section: the observation an openpi policy server wants, when no export
//! is on the robot (`remote_protocol: openpi`, `export_dir` empty).
//!
//! ```yaml
//! openpi:
//!   keys: nested       # nested (default): `images/cam_high` travels as {"images": {"cam_high": ..}}
//!                      # flat: the input name is the key as written (`observation/joint_position`)
//!   prompt: prompt     # the key the task travels under ("" = never sent); default `prompt`
//!   chunk_size: 50     # optional: the H of the server's `actions` [H, D]; default: learnt from
//!                      # the answer to a probe when the node connects
//!   images:            # one entry per image input of `inputs`
//!     images/cam_high: {size: [224, 224], layout: chw, dtype: uint8, resize: pad}
//! ```
//!
//! The `inputs` keys are then the server's observation keys; every input that is not an image
//! travels as a float32 vector of its width. The action width `D` is the map's own (every
//! action index its channels publish or `ignore`); an answer of another width is refused.
//! Images are resized to `size` (`[H, W]`) keeping their aspect ratio and padding with black
//! (`pad`, openpi's `resize_with_pad`) or to fill it (`stretch`), then sent as `layout`
//! (`hwc` / `chw`) in `dtype` (`uint8` 0..255 / `float32` 0..1).

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::spec::{InputFeature, IoMap};
use super::IoMapError;
use crate::runtime::{OpenpiImage, OpenpiSchema};

pub use crate::observation::ImageFit;

/// One image of the section.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenpiImageSpec {
    /// The input name (a key of `inputs`).
    pub input: String,
    pub height: usize,
    pub width: usize,
    pub wire: OpenpiImage,
    pub fit: ImageFit,
}

/// The checked `openpi:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenpiSection {
    pub nested: bool,
    pub prompt_key: Option<String>,
    pub chunk_size: Option<usize>,
    pub images: Vec<OpenpiImageSpec>,
}

/// Largest image side accepted (pixels).
const MAX_SIDE: u64 = 8192;
/// Largest `chunk_size` accepted.
const MAX_CHUNK: u64 = 100_000;

impl OpenpiSection {
    /// The schema the openpi adapter encodes observations with.
    pub fn schema(&self) -> OpenpiSchema {
        OpenpiSchema {
            nested: self.nested,
            prompt_key: self.prompt_key.clone(),
            images: self
                .images
                .iter()
                .map(|i| (i.input.clone(), i.wire))
                .collect(),
            chunk_size: self.chunk_size,
            probe_prompt: None,
        }
    }

    /// The image of input `name`.
    pub fn image(&self, name: &str) -> Option<&OpenpiImageSpec> {
        self.images.iter().find(|i| i.input == name)
    }
}

impl IoMap {
    /// The policy's inputs as the map's `openpi:` section describes them, in `inputs` order:
    /// each name and its shape without the batch dimension (`[3, H, W]` for an image, `[n]`
    /// otherwise). `None` without the section.
    pub fn openpi_inputs(&self) -> Option<Vec<(String, Vec<usize>)>> {
        let section = self.openpi.as_ref()?;
        Some(
            self.inputs
                .iter()
                .map(|f| match section.image(&f.name) {
                    Some(i) => (f.name.clone(), vec![3, i.height, i.width]),
                    None => (f.name.clone(), vec![f.width()]),
                })
                .collect(),
        )
    }
}

fn err(
    file: Option<&std::path::Path>,
    path: impl Into<String>,
    rule: impl Into<String>,
) -> IoMapError {
    IoMapError {
        file: file.map(std::path::Path::to_path_buf),
        path: path.into(),
        rule: rule.into(),
    }
}

fn mapping<'v>(
    file: Option<&std::path::Path>,
    path: &str,
    v: &'v Value,
    known: &[&str],
) -> Result<BTreeMap<String, &'v Value>, IoMapError> {
    let Value::Mapping(m) = v else {
        return Err(err(file, path, "must be a mapping"));
    };
    let mut out = BTreeMap::new();
    for (k, val) in m {
        let Some(k) = k.as_str() else {
            return Err(err(file, path, "keys must be strings"));
        };
        if !known.is_empty() && !known.contains(&k) {
            return Err(err(
                file,
                format!("{path}.{k}"),
                format!("unknown key (known: {})", known.join(", ")),
            ));
        }
        out.insert(k.to_string(), val);
    }
    Ok(out)
}

fn choice<'a>(
    file: Option<&std::path::Path>,
    path: &str,
    v: Option<&&Value>,
    options: &[&'a str],
) -> Result<&'a str, IoMapError> {
    let Some(v) = v else {
        return Ok(options[0]);
    };
    let s = v.as_str().map(str::to_ascii_lowercase);
    options
        .iter()
        .find(|o| s.as_deref() == Some(**o))
        .copied()
        .ok_or_else(|| {
            err(
                file,
                path,
                format!("must be one of {}, got {v:?}", options.join(", ")),
            )
        })
}

/// Parses and checks the section against the map's inputs.
pub(super) fn parse(
    file: Option<&std::path::Path>,
    v: &Value,
    inputs: &[InputFeature],
) -> Result<OpenpiSection, IoMapError> {
    let top = mapping(
        file,
        "openpi",
        v,
        &["keys", "prompt", "chunk_size", "images"],
    )?;
    let nested = choice(file, "openpi.keys", top.get("keys"), &["nested", "flat"])? == "nested";
    let prompt_key = match top.get("prompt") {
        None => Some("prompt".to_string()),
        Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(err(
                file,
                "openpi.prompt",
                "must be a string (\"\" = never sent)",
            ))
        }
    };
    let chunk_size = match top.get("chunk_size") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(0) => None,
            Some(n) if n <= MAX_CHUNK => Some(n as usize),
            _ => {
                return Err(err(
                    file,
                    "openpi.chunk_size",
                    format!(
                        "must be an integer in 1..={MAX_CHUNK} (or 0: from the server's answer)"
                    ),
                ))
            }
        },
    };
    let images_v = match top.get("images") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => mapping(file, "openpi.images", v, &[])?,
    };
    let mut images = Vec::new();
    for (name, spec) in &images_v {
        let path = format!("openpi.images.{name}");
        let Some(feature) = inputs.iter().find(|f| &f.name == name) else {
            return Err(err(
                file,
                path,
                "is not an input of `inputs` (each entry describes an image input)",
            ));
        };
        if !feature.is_image() {
            return Err(err(
                file,
                path,
                format!(
                    "input `{name}` is not an image (its sources are {}); only image inputs have an entry here",
                    feature.sources[0].msg_type.type_name()
                ),
            ));
        }
        let m = mapping(file, &path, spec, &["size", "layout", "dtype", "resize"])?;
        let size = m.get("size").ok_or_else(|| {
            err(
                file,
                format!("{path}.size"),
                "is required: [height, width] the server wants",
            )
        })?;
        let dims: Option<Vec<u64>> = size
            .as_sequence()
            .map(|s| s.iter().filter_map(Value::as_u64).collect());
        let (height, width) = match dims.as_deref() {
            Some([h, w]) if (1..=MAX_SIDE).contains(h) && (1..=MAX_SIDE).contains(w) => {
                (*h as usize, *w as usize)
            }
            _ => {
                return Err(err(
                    file,
                    format!("{path}.size"),
                    format!("must be [height, width], each in 1..={MAX_SIDE}"),
                ))
            }
        };
        let hwc = choice(
            file,
            &format!("{path}.layout"),
            m.get("layout"),
            &["hwc", "chw"],
        )? == "hwc";
        let uint8 = choice(
            file,
            &format!("{path}.dtype"),
            m.get("dtype"),
            &["uint8", "float32"],
        )? == "uint8";
        let fit = match choice(
            file,
            &format!("{path}.resize"),
            m.get("resize"),
            &["pad", "stretch"],
        )? {
            "pad" => ImageFit::Pad,
            _ => ImageFit::Stretch,
        };
        images.push(OpenpiImageSpec {
            input: name.clone(),
            height,
            width,
            wire: OpenpiImage { hwc, uint8 },
            fit,
        });
    }
    if let Some(f) = inputs
        .iter()
        .find(|f| f.is_image() && !images_v.contains_key(&f.name))
    {
        return Err(err(
            file,
            format!("openpi.images.{}", f.name),
            format!(
                "is missing: image input `{}` needs the size the server wants ({{size: [224, 224]}})",
                f.name
            ),
        ));
    }
    // Keys must not collide on the wire (nested: one key a prefix of another's path).
    let keys: Vec<&str> = inputs
        .iter()
        .map(|f| f.name.as_str())
        .chain(prompt_key.as_deref())
        .collect();
    for (j, a) in keys.iter().enumerate() {
        for b in &keys[..j] {
            let clash = a == b
                || (nested && (a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))));
            if clash {
                return Err(err(
                    file,
                    "openpi",
                    format!("keys `{b}` and `{a}` collide in the observation"),
                ));
            }
        }
        if nested && (a.starts_with('/') || a.ends_with('/') || a.contains("//")) {
            return Err(err(
                file,
                "openpi.keys",
                format!("`{a}` has an empty path segment (keys: nested splits names at `/`)"),
            ));
        }
    }
    Ok(OpenpiSection {
        nested,
        prompt_key,
        chunk_size,
        images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> IoMap {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        IoMap::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The three example maps of `config/`: openpi's ALOHA, DROID and LIBERO schemas.
    #[test]
    fn the_example_maps_describe_openpis_three_schemas() {
        let aloha = config("io_map_openpi_aloha.yaml");
        let s = aloha.openpi.as_ref().unwrap();
        assert!(s.nested);
        assert_eq!(s.prompt_key.as_deref(), Some("prompt"));
        assert_eq!(s.chunk_size, None);
        assert_eq!(aloha.action_extent(), 14);
        let inputs = aloha.openpi_inputs().unwrap();
        assert_eq!(inputs[0], ("state".to_string(), vec![14]));
        assert_eq!(inputs.len(), 5);
        for (name, shape) in &inputs[1..] {
            assert!(name.starts_with("images/cam_"), "{name}");
            assert_eq!(shape, &vec![3, 224, 224]);
            let i = s.image(name).unwrap();
            assert_eq!(
                (i.wire.hwc, i.wire.uint8, i.fit),
                (false, true, ImageFit::Pad)
            );
        }

        let droid = config("io_map_openpi_droid.yaml");
        let s = droid.openpi.as_ref().unwrap();
        assert!(!s.nested);
        assert_eq!(droid.action_extent(), 8);
        let inputs = droid.openpi_inputs().unwrap();
        assert_eq!(
            inputs[0],
            ("observation/joint_position".to_string(), vec![7])
        );
        assert_eq!(
            inputs[1],
            ("observation/gripper_position".to_string(), vec![1])
        );
        assert!(s.images.iter().all(|i| i.wire.hwc && i.wire.uint8));

        let libero = config("io_map_openpi_libero.yaml");
        assert_eq!(libero.action_extent(), 7);
        let inputs = libero.openpi_inputs().unwrap();
        assert_eq!(inputs[0], ("observation/state".to_string(), vec![8]));
        assert_eq!(libero.openpi.as_ref().unwrap().images.len(), 2);
    }

    const BASE: &str = "inputs:
  state: {topic: /js, type: sensor_msgs/msg/JointState, select: [position.a, position.b]}
  images/top: {topic: /top/image_raw}
outputs:
  - {topic: /cmd, type: std_msgs/msg/Float64MultiArray, action: [0, 1]}
";

    fn parse(section: &str) -> Result<IoMap, IoMapError> {
        IoMap::parse(&format!("{BASE}{section}"))
    }

    #[test]
    fn defaults_are_openpis_own() {
        let m = parse("openpi:\n  images:\n    images/top: {size: [224, 224]}\n").unwrap();
        let s = m.openpi.unwrap();
        assert!(s.nested);
        assert_eq!(s.prompt_key.as_deref(), Some("prompt"));
        let i = &s.images[0];
        assert_eq!((i.height, i.width), (224, 224));
        assert_eq!(
            (i.wire.hwc, i.wire.uint8, i.fit),
            (true, true, ImageFit::Pad)
        );
        let m = parse("openpi:\n  prompt: \"\"\n  chunk_size: 50\n  images:\n    images/top: {size: [96, 128], layout: CHW, dtype: float32, resize: stretch}\n").unwrap();
        let s = m.openpi.unwrap();
        assert_eq!((s.prompt_key, s.chunk_size), (None, Some(50)));
        let i = &s.images[0];
        assert_eq!((i.height, i.width), (96, 128));
        assert_eq!(
            (i.wire.hwc, i.wire.uint8, i.fit),
            (false, false, ImageFit::Stretch)
        );
        assert!(IoMap::parse(BASE).unwrap().openpi.is_none());
    }

    /// Each error names the YAML path and the rule.
    #[test]
    fn bad_sections_name_the_path() {
        let cases = [
            (
                "openpi:\n  images: {}\n",
                "openpi.images.images/top",
                "is missing",
            ),
            (
                "openpi:\n  images:\n    images/top: {}\n",
                "openpi.images.images/top.size",
                "required",
            ),
            (
                "openpi:\n  images:\n    images/top: {size: [0, 4]}\n",
                "openpi.images.images/top.size",
                "[height, width]",
            ),
            (
                "openpi:\n  images:\n    images/top: {size: [4]}\n",
                "openpi.images.images/top.size",
                "[height, width]",
            ),
            (
                "openpi:\n  images:\n    images/top: {size: [4, 4], layout: whc}\n",
                "openpi.images.images/top.layout",
                "hwc, chw",
            ),
            (
                "openpi:\n  images:\n    images/top: {size: [4, 4], dtype: int16}\n",
                "openpi.images.images/top.dtype",
                "uint8, float32",
            ),
            (
                "openpi:\n  images:\n    images/top: {size: [4, 4], resize: crop}\n",
                "openpi.images.images/top.resize",
                "pad, stretch",
            ),
            (
                "openpi:\n  images:\n    images/top: {size: [4, 4], colour: rgb}\n",
                "openpi.images.images/top.colour",
                "unknown key",
            ),
            (
                "openpi:\n  images:\n    state: {size: [4, 4]}\n    images/top: {size: [4, 4]}\n",
                "openpi.images.state",
                "not an image",
            ),
            (
                "openpi:\n  images:\n    images/side: {size: [4, 4]}\n",
                "openpi.images.images/side",
                "not an input",
            ),
            (
                "openpi:\n  keys: deep\n  images:\n    images/top: {size: [4, 4]}\n",
                "openpi.keys",
                "nested, flat",
            ),
            (
                "openpi:\n  chunk_size: -3\n  images:\n    images/top: {size: [4, 4]}\n",
                "openpi.chunk_size",
                "integer",
            ),
            (
                "openpi:\n  prompt: images\n  images:\n    images/top: {size: [4, 4]}\n",
                "openpi",
                "collide",
            ),
            (
                "openpi:\n  prompt: 3\n  images:\n    images/top: {size: [4, 4]}\n",
                "openpi.prompt",
                "string",
            ),
            ("openpi:\n  fps: 3\n", "openpi.fps", "unknown key"),
        ];
        for (section, path, rule) in cases {
            let e = parse(section).expect_err(section);
            assert_eq!(e.path, path, "{section}: {e}");
            assert!(e.rule.contains(rule), "{section}: {e}");
        }
        // `a` and `a/b` collide only when nested.
        let clash = "inputs:
  obs: {topic: /a, type: std_msgs/msg/Float64, select: [data]}
  obs/x: {topic: /b, type: std_msgs/msg/Float64, select: [data]}
outputs:
  - {topic: /cmd, type: std_msgs/msg/Float64MultiArray, action: [0]}
openpi:
  keys: KEYS
";
        let e = IoMap::parse(&clash.replace("KEYS", "nested")).unwrap_err();
        assert!(e.rule.contains("collide"), "{e}");
        IoMap::parse(&clash.replace("KEYS", "flat")).unwrap();
    }
}
