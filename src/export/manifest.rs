//! physicalai policy packages: `manifest.json` (format `policy_package`, version `1.0`).
//!
//! The schema is the one physicalai's exporter writes and its runtime reads: `policy`,
//! `model.{runner, artifacts, preprocessors, postprocessors, callbacks, input_features,
//! output_features}`, `hardware.{robots, cameras}`, `metadata`; unknown top-level keys are
//! kept in [`Manifest::extra`]. Every component (runner, processor, feature) is named
//! either by `type` plus flat parameters or by `class_path` plus `init_args`; `class_path`
//! wins when both are present, and keys beside `init_args` are then annotations (the
//! runner's `chunk_size`, for example).
//!
//! Parsing is strict where the runtime would fail later and lenient where it would not:
//! wrong types and impossible values are errors naming the file and the JSON path
//! (`model.preprocessors[1].mode`); an unknown version is refused rather than guessed.
//! The file system (artifact files, statistics) is resolved by [`super::ExportDir`] and the
//! processors, not here.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::ExportError;

/// The manifest's file name inside an export directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The only `format` a policy package has.
pub const MANIFEST_FORMAT: &str = "policy_package";
/// Manifest versions this build reads.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0"];
/// Largest number of dimensions of a declared shape.
pub const MAX_DECLARED_RANK: usize = 8;
/// Largest declared dimension (a camera of 65536 pixels a side is already absurd).
pub const MAX_DECLARED_DIM: usize = 1 << 16;

/// A parsed `manifest.json`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manifest {
    /// `format` (always `policy_package`).
    pub format: String,
    /// `version` (one of [`SUPPORTED_VERSIONS`]).
    pub version: String,
    pub policy: PolicyInfo,
    pub model: ModelSpec,
    pub hardware: Hardware,
    /// `metadata.created_at`, `metadata.created_by` (informational).
    pub created_at: String,
    pub created_by: String,
    /// Every other top-level key, as written (e.g. `rtc`, `input_names`).
    pub extra: IndexMap<String, Value>,
}

/// `policy`: the policy's identity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyInfo {
    /// `policy.name` (also the default model file stem, e.g. `act` -> `act.onnx`).
    pub name: String,
    /// `policy.source.repo_id`.
    pub repo_id: String,
    /// `policy.source.class_path` (the training class; informational).
    pub class_path: String,
}

/// `model`: how to run the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub n_obs_steps: usize,
    /// `None`: SinglePass.
    pub runner: Option<Component>,
    /// Backend name -> model file, in file order (the first entry is the default backend).
    pub artifacts: IndexMap<String, String>,
    pub preprocessors: Vec<Component>,
    pub postprocessors: Vec<Component>,
    pub callbacks: Vec<Component>,
    pub input_features: Vec<Feature>,
    pub output_features: Vec<Feature>,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            n_obs_steps: 1,
            runner: None,
            artifacts: IndexMap::new(),
            preprocessors: Vec::new(),
            postprocessors: Vec::new(),
            callbacks: Vec::new(),
            input_features: Vec::new(),
            output_features: Vec::new(),
        }
    }
}

/// A component (runner, processor, callback, feature), as the manifest names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Where it sits in the manifest, e.g. `model.preprocessors[0]` (for errors).
    pub json_path: String,
    /// `type`, when given.
    pub type_name: Option<String>,
    /// `class_path`, when given.
    pub class_path: Option<String>,
    /// The constructor arguments: `init_args` when `class_path` is given, else the flat
    /// parameters beside `type`.
    pub params: Map<String, Value>,
    /// With `class_path`: the keys beside `init_args` (annotations such as `chunk_size`).
    pub annotations: Map<String, Value>,
}

impl Component {
    /// The registry short name (`normalize`, `single_pass`, ...): `class_path` mapped through
    /// the known physicalai classes when it wins, else `type`. A class path that maps to no
    /// known class is returned as written.
    pub fn kind(&self) -> &str {
        if let Some(cp) = &self.class_path {
            return short_name(cp).unwrap_or(cp);
        }
        self.type_name.as_deref().unwrap_or("")
    }

    /// How the component was named, for messages: `type `x`` or `class_path `a.b.C``.
    pub fn describe(&self) -> String {
        match (&self.class_path, &self.type_name) {
            (Some(cp), _) => format!("class_path `{cp}`"),
            (None, Some(t)) => format!("type `{t}`"),
            (None, None) => "an unnamed component".into(),
        }
    }

    /// A parameter, then an annotation (for `class_path` components).
    pub fn param(&self, key: &str) -> Option<&Value> {
        self.params
            .get(key)
            .filter(|v| !v.is_null())
            .or_else(|| self.annotations.get(key).filter(|v| !v.is_null()))
    }

    /// The JSON path of one of its parameters, as the manifest spells it.
    pub fn param_path(&self, key: &str) -> String {
        if self.class_path.is_some() && !self.annotations.contains_key(key) {
            format!("{}.init_args.{key}", self.json_path)
        } else {
            format!("{}.{key}", self.json_path)
        }
    }
}

/// Short names of physicalai's classes (the registry of its component factory), by class
/// name. Class paths are matched on their last segment under the `physicalai.` (or the
/// older `getiaction.`) namespace.
const CLASS_NAMES: &[(&str, &str)] = &[
    ("SinglePass", "single_pass"),
    ("TwoStage", "two_stage"),
    ("ActionChunking", "action_chunking"),
    ("StatsNormalizer", "normalize"),
    ("ResizePreprocessor", "resize"),
    ("ResizeSmolVLA", "smolvla_resize"),
    ("NewLinePreprocessor", "new_line"),
    ("HFTokenizer", "hf_tokenizer"),
    ("OVTokenizer", "ov_tokenizer"),
    ("Pi05Preprocessor", "pi05"),
    ("StatsDenormalizer", "denormalize"),
    ("ActionChunkTrimmer", "action_chunk_trimmer"),
    ("InferenceFeature", "feature"),
];

fn short_name(class_path: &str) -> Option<&'static str> {
    if !(class_path.starts_with("physicalai.") || class_path.starts_with("getiaction.")) {
        return None;
    }
    let last = class_path.rsplit('.').next()?;
    CLASS_NAMES
        .iter()
        .find(|(class, _)| *class == last)
        .map(|(_, short)| *short)
}

/// Element type of a declared feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureDtype {
    Float32,
    Int64,
    Bool,
    String,
    Other(String),
}

impl FeatureDtype {
    fn parse(s: &str) -> Self {
        match s
            .trim()
            .trim_start_matches("torch.")
            .to_ascii_lowercase()
            .as_str()
        {
            "float32" | "float" | "f32" => Self::Float32,
            "int64" | "long" | "i64" => Self::Int64,
            "bool" | "bool_" => Self::Bool,
            "string" | "str" | "str_" | "object" => Self::String,
            other => Self::Other(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Self::Float32 => "float32",
            Self::Int64 => "int64",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Other(s) => s,
        }
    }
}

/// One declared input or output (`model.input_features[i]`): name, kind, shape without the
/// batch dimension, element type.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub json_path: String,
    pub name: String,
    /// `VISUAL`, `STATE`, `ACTION`, `LANGUAGE` or `COMMON` (upper case, as written).
    pub ftype: String,
    pub shape: Vec<usize>,
    pub dtype: FeatureDtype,
}

/// `hardware`: what the policy was trained on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hardware {
    pub robots: Vec<Robot>,
    pub cameras: Vec<CameraSpec>,
}

/// `hardware.robots[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Robot {
    pub name: String,
    pub robot_type: String,
    pub state: Option<OrderedSpec>,
    pub action: Option<OrderedSpec>,
}

/// A state or action space: shape, dtype and the joint names along it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedSpec {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub order: Vec<String>,
}

/// `hardware.cameras[i]`: logical name and `[C, H, W]` shape.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSpec {
    pub name: String,
    /// Empty when not given.
    pub shape: Vec<usize>,
    pub dtype: String,
}

impl Manifest {
    /// Reads and parses `path`.
    pub fn from_file(path: &Path) -> Result<Self, ExportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses manifest text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ExportError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ExportError::Syntax {
            path: path.to_path_buf(),
            format: "JSON",
            detail: e.to_string(),
        })?;
        let p = JsonParser {
            path: path.to_path_buf(),
        };
        let root = p.object(&value, "(top level)")?;

        let format = p
            .opt_str(root, "format", "format")?
            .unwrap_or_else(|| MANIFEST_FORMAT.to_string());
        if format != MANIFEST_FORMAT {
            return Err(p.invalid(
                "format",
                format!("is `{format}`; a policy package says `{MANIFEST_FORMAT}`"),
            ));
        }
        let version = match root.get("version") {
            None | Some(Value::Null) => "1.0".to_string(),
            Some(Value::String(s)) => s.clone(),
            // `1.0` written as a number.
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(p.invalid("version", format!("must be a string, got {}", kind(other))))
            }
        };
        if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(p.invalid(
                "version",
                format!(
                    "is `{version}`, which this build cannot read (it reads manifest version {}); \
                     use a policy_node release that supports it, or re-export with a matching exporter",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }

        let policy = match root.get("policy") {
            None | Some(Value::Null) => PolicyInfo::default(),
            Some(v) => {
                let o = p.object(v, "policy")?;
                let source = match o.get("source") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(p.object(v, "policy.source")?),
                };
                let name = p.opt_str(o, "name", "policy.name")?.unwrap_or_default();
                if !name.is_empty() && !is_safe_name(&name) {
                    return Err(p.invalid(
                        "policy.name",
                        format!(
                            "is `{name}`; it names the model file, so it must match \
                             [A-Za-z0-9][A-Za-z0-9_.-]*"
                        ),
                    ));
                }
                PolicyInfo {
                    name,
                    repo_id: match source {
                        Some(s) => p
                            .opt_str(s, "repo_id", "policy.source.repo_id")?
                            .unwrap_or_default(),
                        None => String::new(),
                    },
                    class_path: match source {
                        Some(s) => p
                            .opt_str(s, "class_path", "policy.source.class_path")?
                            .unwrap_or_default(),
                        None => String::new(),
                    },
                }
            }
        };

        let model = match root.get("model") {
            None | Some(Value::Null) => ModelSpec::default(),
            Some(v) => p.model(p.object(v, "model")?)?,
        };
        let hardware = match root.get("hardware") {
            None | Some(Value::Null) => Hardware::default(),
            Some(v) => p.hardware(p.object(v, "hardware")?)?,
        };
        let (created_at, created_by) = match root.get("metadata") {
            None | Some(Value::Null) => (String::new(), String::new()),
            Some(v) => {
                let o = p.object(v, "metadata")?;
                (
                    p.opt_str(o, "created_at", "metadata.created_at")?
                        .unwrap_or_default(),
                    p.opt_str(o, "created_by", "metadata.created_by")?
                        .unwrap_or_default(),
                )
            }
        };
        const KNOWN: &[&str] = &[
            "format", "version", "policy", "model", "hardware", "metadata",
        ];
        let extra = root
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            format,
            version,
            policy,
            model,
            hardware,
            created_at,
            created_by,
            extra,
        })
    }

    /// The policy name: `policy.name`, else the module of `policy.source.class_path`, lower
    /// case: its second-to-last segment, as physicalai takes it, except that a module
    /// named `policy` or `model` gives way to its package
    /// (`physicalai.policies.act.policy.ACT` -> `act`, where physicalai says `policy`).
    pub fn policy_name(&self) -> Option<String> {
        if !self.policy.name.is_empty() {
            return Some(self.policy.name.clone());
        }
        let parts: Vec<String> = self
            .policy
            .class_path
            .to_ascii_lowercase()
            .split('.')
            .map(str::to_string)
            .collect();
        if parts.len() < 3 {
            return None;
        }
        let mut i = parts.len() - 2;
        if matches!(parts[i].as_str(), "policy" | "model") && i > 0 {
            i -= 1;
        }
        Some(parts[i].clone()).filter(|n| is_safe_name(n))
    }

    /// The runner's short name (`single_pass` when none is given).
    pub fn runner_kind(&self) -> &str {
        self.model
            .runner
            .as_ref()
            .map_or("single_pass", Component::kind)
    }

    /// The first `hardware.robots[]` entry that gives a joint order for its state or actions.
    pub fn robot_with_order(&self) -> Option<&Robot> {
        self.hardware.robots.iter().find(|r| {
            r.state.as_ref().is_some_and(|s| !s.order.is_empty())
                || r.action.as_ref().is_some_and(|a| !a.order.is_empty())
        })
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9_.-]*$`: a name that is safe as a file stem.
pub(crate) fn is_safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Typed access to a JSON tree with errors naming the file and the JSON path.
pub(crate) struct JsonParser {
    pub(crate) path: PathBuf,
}

impl JsonParser {
    pub(crate) fn invalid(&self, key: &str, problem: impl Into<String>) -> ExportError {
        ExportError::InvalidKey {
            path: self.path.clone(),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    pub(crate) fn object<'v>(
        &self,
        v: &'v Value,
        at: &str,
    ) -> Result<&'v Map<String, Value>, ExportError> {
        match v {
            Value::Object(o) => Ok(o),
            other => Err(self.invalid(at, format!("must be an object, got {}", kind(other)))),
        }
    }

    pub(crate) fn opt_str(
        &self,
        o: &Map<String, Value>,
        key: &str,
        at: &str,
    ) -> Result<Option<String>, ExportError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.invalid(at, format!("must be a string, got {}", kind(other)))),
        }
    }

    fn list<'v>(
        &self,
        o: &'v Map<String, Value>,
        key: &str,
        at: &str,
    ) -> Result<&'v [Value], ExportError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(self.invalid(at, format!("must be a list, got {}", kind(other)))),
        }
    }

    /// A positive integer no larger than `max`.
    pub(crate) fn positive(&self, v: &Value, at: &str, max: usize) -> Result<usize, ExportError> {
        match v.as_u64() {
            Some(n) if n > 0 && n as u128 <= max as u128 => Ok(n as usize),
            Some(n) if n > 0 => Err(self.invalid(at, format!("is {n}, above the limit of {max}"))),
            _ => Err(self.invalid(at, format!("must be a positive integer, got {}", render(v)))),
        }
    }

    /// A shape: a list of positive integers, each at most [`MAX_DECLARED_DIM`].
    pub(crate) fn shape(&self, v: &Value, at: &str) -> Result<Vec<usize>, ExportError> {
        let Value::Array(dims) = v else {
            return Err(self.invalid(at, format!("must be a list of dimensions, got {}", kind(v))));
        };
        if dims.len() > MAX_DECLARED_RANK {
            return Err(self.invalid(
                at,
                format!(
                    "has {} dimensions, above the limit of {MAX_DECLARED_RANK}",
                    dims.len()
                ),
            ));
        }
        let shape = dims
            .iter()
            .enumerate()
            .map(|(i, d)| self.positive(d, &format!("{at}[{i}]"), MAX_DECLARED_DIM))
            .collect::<Result<Vec<_>, _>>()?;
        // And the per-tensor bound every shape taken from a file meets.
        crate::shape::check_shape(&shape).map_err(|e| self.invalid(at, e.to_string()))?;
        Ok(shape)
    }

    pub(crate) fn string_list(&self, v: &Value, at: &str) -> Result<Vec<String>, ExportError> {
        let Value::Array(items) = v else {
            return Err(self.invalid(at, format!("must be a list of strings, got {}", kind(v))));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.invalid(
                    &format!("{at}[{i}]"),
                    format!("must be a string, got {}", kind(other)),
                )),
            })
            .collect()
    }

    fn component(&self, v: &Value, at: &str) -> Result<Component, ExportError> {
        let o = self.object(v, at)?;
        let type_name = self
            .opt_str(o, "type", &format!("{at}.type"))?
            .filter(|s| !s.is_empty());
        let class_path = self
            .opt_str(o, "class_path", &format!("{at}.class_path"))?
            .filter(|s| !s.is_empty());
        if type_name.is_none() && class_path.is_none() {
            return Err(self.invalid(
                at,
                "names no component: give `type` (with flat parameters) or `class_path` (with `init_args`)",
            ));
        }
        let init_args = match o.get("init_args") {
            None | Some(Value::Null) => Map::new(),
            Some(v) => self.object(v, &format!("{at}.init_args"))?.clone(),
        };
        let rest: Map<String, Value> = o
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "class_path" | "init_args"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (params, annotations) = if class_path.is_some() {
            (init_args, rest)
        } else {
            // `type` + flat parameters; a stray `init_args` beside `type` is not passed on by
            // physicalai either, so it is kept as an annotation only.
            let mut ann = Map::new();
            if !init_args.is_empty() {
                ann.insert("init_args".into(), Value::Object(init_args));
            }
            (rest, ann)
        };
        Ok(Component {
            json_path: at.to_string(),
            type_name,
            class_path,
            params,
            annotations,
        })
    }

    fn components(
        &self,
        o: &Map<String, Value>,
        key: &str,
        at: &str,
    ) -> Result<Vec<Component>, ExportError> {
        self.list(o, key, at)?
            .iter()
            .enumerate()
            .map(|(i, v)| self.component(v, &format!("{at}[{i}]")))
            .collect()
    }

    fn feature(&self, v: &Value, at: &str) -> Result<Feature, ExportError> {
        let c = self.component(v, at)?;
        if c.kind() != "feature" && c.type_name.as_deref() != Some("feature") {
            return Err(self.invalid(
                at,
                format!(
                    "is {}; a feature is `physicalai.inference.data.features.InferenceFeature`",
                    c.describe()
                ),
            ));
        }
        let name = match c.param("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(other) => {
                return Err(self.invalid(
                    &c.param_path("name"),
                    format!("must be a non-empty string, got {}", render(other)),
                ))
            }
            None => return Err(self.invalid(&c.param_path("name"), "is missing")),
        };
        let shape = match c.param("shape") {
            Some(v) => self.shape(v, &c.param_path("shape"))?,
            None => return Err(self.invalid(&c.param_path("shape"), "is missing")),
        };
        let ftype = match c.param("ftype") {
            None => String::new(),
            Some(Value::String(s)) => s
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase(),
            Some(other) => {
                return Err(self.invalid(
                    &c.param_path("ftype"),
                    format!("must be a string, got {}", kind(other)),
                ))
            }
        };
        let dtype = match c.param("dtype") {
            None => FeatureDtype::Float32,
            Some(Value::String(s)) if !s.is_empty() => {
                FeatureDtype::parse(s.rsplit('.').next().unwrap_or(s))
            }
            Some(other) => {
                return Err(self.invalid(
                    &c.param_path("dtype"),
                    format!("must be a non-empty string, got {}", render(other)),
                ))
            }
        };
        Ok(Feature {
            json_path: at.to_string(),
            name,
            ftype,
            shape,
            dtype,
        })
    }

    fn model(&self, o: &Map<String, Value>) -> Result<ModelSpec, ExportError> {
        let n_obs_steps = match o.get("n_obs_steps") {
            None | Some(Value::Null) => 1,
            Some(v) => self.positive(v, "model.n_obs_steps", 1024)?,
        };
        let runner = match o.get("runner") {
            None | Some(Value::Null) => None,
            Some(v) => Some(self.component(v, "model.runner")?),
        };
        let artifacts = match o.get("artifacts") {
            None | Some(Value::Null) => IndexMap::new(),
            Some(v) => {
                let a = self.object(v, "model.artifacts")?;
                let mut out = IndexMap::new();
                for (k, v) in a {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        other => {
                            return Err(self.invalid(
                                &format!("model.artifacts.{k}"),
                                format!("must be a file name, got {}", kind(other)),
                            ))
                        }
                    }
                }
                out
            }
        };
        let features = |key: &str| -> Result<Vec<Feature>, ExportError> {
            let at = format!("model.{key}");
            self.list(o, key, &at)?
                .iter()
                .enumerate()
                .map(|(i, v)| self.feature(v, &format!("{at}[{i}]")))
                .collect()
        };
        Ok(ModelSpec {
            n_obs_steps,
            runner,
            artifacts,
            preprocessors: self.components(o, "preprocessors", "model.preprocessors")?,
            postprocessors: self.components(o, "postprocessors", "model.postprocessors")?,
            callbacks: self.components(o, "callbacks", "model.callbacks")?,
            input_features: features("input_features")?,
            output_features: features("output_features")?,
        })
    }

    fn ordered(&self, v: &Value, at: &str) -> Result<OrderedSpec, ExportError> {
        let o = self.object(v, at)?;
        let shape = match o.get("shape") {
            Some(v) => self.shape(v, &format!("{at}.shape"))?,
            None => return Err(self.invalid(&format!("{at}.shape"), "is missing")),
        };
        let order = match o.get("order") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => self.string_list(v, &format!("{at}.order"))?,
        };
        if !order.is_empty() && shape.last() != Some(&order.len()) {
            return Err(self.invalid(
                &format!("{at}.order"),
                format!(
                    "names {} joint(s) but `{at}.shape` is {shape:?}",
                    order.len()
                ),
            ));
        }
        for (i, name) in order.iter().enumerate() {
            if order[..i].contains(name) {
                return Err(self.invalid(
                    &format!("{at}.order[{i}]"),
                    format!("repeats joint `{name}`"),
                ));
            }
        }
        Ok(OrderedSpec {
            shape,
            dtype: self
                .opt_str(o, "dtype", &format!("{at}.dtype"))?
                .unwrap_or_else(|| "float32".into()),
            order,
        })
    }

    fn hardware(&self, o: &Map<String, Value>) -> Result<Hardware, ExportError> {
        let mut robots = Vec::new();
        for (i, v) in self
            .list(o, "robots", "hardware.robots")?
            .iter()
            .enumerate()
        {
            let at = format!("hardware.robots[{i}]");
            let r = self.object(v, &at)?;
            let name = self
                .opt_str(r, "name", &format!("{at}.name"))?
                .ok_or_else(|| self.invalid(&format!("{at}.name"), "is missing"))?;
            let spec = |key: &str| -> Result<Option<OrderedSpec>, ExportError> {
                match r.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => Ok(Some(self.ordered(v, &format!("{at}.{key}"))?)),
                }
            };
            robots.push(Robot {
                name,
                robot_type: self
                    .opt_str(r, "type", &format!("{at}.type"))?
                    .unwrap_or_default(),
                state: spec("state")?,
                action: spec("action")?,
            });
        }
        let mut cameras = Vec::new();
        for (i, v) in self
            .list(o, "cameras", "hardware.cameras")?
            .iter()
            .enumerate()
        {
            let at = format!("hardware.cameras[{i}]");
            let c = self.object(v, &at)?;
            let name = self
                .opt_str(c, "name", &format!("{at}.name"))?
                .ok_or_else(|| self.invalid(&format!("{at}.name"), "is missing"))?;
            let shape = match c.get("shape") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => self.shape(v, &format!("{at}.shape"))?,
            };
            if !shape.is_empty() && shape.len() != 3 {
                return Err(self.invalid(
                    &format!("{at}.shape"),
                    format!("must be [C, H, W], got {shape:?}"),
                ));
            }
            cameras.push(CameraSpec {
                name,
                shape,
                dtype: self
                    .opt_str(c, "dtype", &format!("{at}.dtype"))?
                    .unwrap_or_else(|| "uint8".into()),
            });
        }
        Ok(Hardware { robots, cameras })
    }
}

/// A JSON value as it would be written, shortened.
pub(crate) fn render(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ExportError> {
        Manifest::parse(text, Path::new("manifest.json"))
    }

    fn key_of(e: ExportError) -> String {
        match e {
            ExportError::InvalidKey { key, .. } => key,
            other => panic!("expected an InvalidKey error, got {other}"),
        }
    }

    #[test]
    fn empty_manifest_has_defaults() {
        let m = parse("{}").unwrap();
        assert_eq!(m.format, MANIFEST_FORMAT);
        assert_eq!(m.version, "1.0");
        assert_eq!(m.runner_kind(), "single_pass");
        assert_eq!(m.model.n_obs_steps, 1);
    }

    #[test]
    fn both_component_styles() {
        let m = parse(
            r#"{"model": {
                "runner": {"class_path": "physicalai.inference.runners.SinglePass",
                           "init_args": {"chunk_size": 7}, "chunk_size": 9, "type": "two_stage"},
                "preprocessors": [{"type": "normalize", "mode": "min_max", "artifact": "s.safetensors"}]
            }}"#,
        )
        .unwrap();
        let r = m.model.runner.as_ref().unwrap();
        assert_eq!(r.kind(), "single_pass", "class_path wins over type");
        assert_eq!(r.param("chunk_size"), Some(&Value::from(7)));
        assert_eq!(r.annotations.get("chunk_size"), Some(&Value::from(9)));
        let n = &m.model.preprocessors[0];
        assert_eq!(n.kind(), "normalize");
        assert_eq!(n.param("mode"), Some(&Value::from("min_max")));
        assert_eq!(n.param_path("mode"), "model.preprocessors[0].mode");
    }

    #[test]
    fn unknown_keys_are_kept_in_order() {
        let m = parse(r#"{"rtc": {"chunk_size": 50}, "input_names": ["state"]}"#).unwrap();
        assert_eq!(m.extra.keys().collect::<Vec<_>>(), ["rtc", "input_names"]);
    }

    #[test]
    fn version_and_format_are_checked() {
        assert_eq!(
            key_of(parse(r#"{"version": "2.0"}"#).unwrap_err()),
            "version"
        );
        assert_eq!(
            key_of(parse(r#"{"format": "something"}"#).unwrap_err()),
            "format"
        );
        assert_eq!(parse(r#"{"version": 1.0}"#).unwrap().version, "1.0");
    }

    #[test]
    fn errors_name_the_json_path() {
        let cases = [
            (
                r#"{"model": {"preprocessors": [{}]}}"#,
                "model.preprocessors[0]",
            ),
            (
                r#"{"model": {"artifacts": {"onnx": 3}}}"#,
                "model.artifacts.onnx",
            ),
            (
                r#"{"model": {"input_features": [{"class_path": "physicalai.inference.data.features.InferenceFeature", "init_args": {"name": "state", "shape": [0]}}]}}"#,
                "model.input_features[0].init_args.shape[0]",
            ),
            (
                r#"{"hardware": {"cameras": [{"name": "top", "shape": [3, 4]}]}}"#,
                "hardware.cameras[0].shape",
            ),
            (
                r#"{"hardware": {"robots": [{"name": "a", "state": {"shape": [2], "order": ["j1"]}}]}}"#,
                "hardware.robots[0].state.order",
            ),
            (r#"{"policy": {"name": "../x"}}"#, "policy.name"),
            (
                r#"{"model": {"input_features": [{"type": "feature", "name": "s", "shape": [100000000]}]}}"#,
                "model.input_features[0].shape[0]",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(key_of(parse(text).unwrap_err()), want, "{text}");
        }
    }

    #[test]
    fn policy_name_falls_back_to_the_class_path() {
        let m = parse(
            r#"{"policy": {"source": {"class_path": "physicalai.policies.act.policy.ACT"}}}"#,
        )
        .unwrap();
        assert_eq!(m.policy_name().as_deref(), Some("act"));
    }
}
