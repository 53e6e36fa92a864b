//! The node's parameters (the contract of `design.md`, plus optional safety limits), their
//! defaults, and their validation. ROS-free: the node fills a [`ParamMap`] from ROS
//! parameters, replay from the node's own `--params-file` YAML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A parameter value as ROS types it.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Double(f64),
    String(String),
    BoolArray(Vec<bool>),
    IntArray(Vec<i64>),
    DoubleArray(Vec<f64>),
    StringArray(Vec<String>),
}

impl ParamValue {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Bool(_) => "bool",
            ParamValue::Int(_) => "integer",
            ParamValue::Double(_) => "double",
            ParamValue::String(_) => "string",
            ParamValue::BoolArray(_) => "bool array",
            ParamValue::IntArray(_) => "integer array",
            ParamValue::DoubleArray(_) => "double array",
            ParamValue::StringArray(_) => "string array",
        }
    }
}

/// Parameters by name.
pub type ParamMap = BTreeMap<String, ParamValue>;

/// A rejected parameter: its name and the rule it breaks.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("parameter `{name}` {rule}")]
    Invalid { name: String, rule: String },
    #[error("parameters file {}: {detail}", path.display())]
    File { path: PathBuf, detail: String },
}

fn invalid(name: &str, rule: impl Into<String>) -> ParamError {
    ParamError::Invalid {
        name: name.to_string(),
        rule: rule.into(),
    }
}

/// How commands are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandType {
    /// `std_msgs/Float64MultiArray` (ros2_control forward controllers).
    Float64MultiArray,
    /// `trajectory_msgs/JointTrajectory`.
    JointTrajectory,
    /// `sensor_msgs/JointState`.
    JointState,
}

impl CommandType {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::Float64MultiArray => "float64_multi_array",
            CommandType::JointTrajectory => "joint_trajectory",
            CommandType::JointState => "joint_state",
        }
    }
}

/// Where the next chunk is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefillSetting {
    /// On a worker thread (default for the node).
    Async,
    /// On the tick that needs it (deterministic; benchmark baseline).
    Sync,
}

/// Validated node parameters. See `config/policy_node.yaml` for each one's documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeParams {
    pub export_dir: PathBuf,
    pub backend: String,
    pub device: String,
    pub control_rate_hz: f64,
    pub joint_names: Vec<String>,
    pub joint_state_topic: String,
    pub camera_topics: Vec<String>,
    /// Empty: the model's image inputs in order.
    pub camera_inputs: Vec<String>,
    pub command_topic: String,
    pub command_type: CommandType,
    pub max_observation_age_ms: f64,
    /// 0 = the export's value (else the chunk size).
    pub n_action_steps: usize,
    /// 0 = off (unless the export turns it on).
    pub temporal_ensemble_coeff: f64,
    pub enable_on_start: bool,
    /// Per-joint position limits; empty = none.
    pub joint_lower_limits: Vec<f64>,
    pub joint_upper_limits: Vec<f64>,
    /// Largest change of a command per tick, per joint (one value: all joints); empty = none.
    pub max_joint_delta: Vec<f64>,
    /// Queued actions left when the next chunk is requested; `None` = automatic (from the
    /// inference latency measured at start-up; 0 in replay).
    pub refill_ahead_steps: Option<usize>,
    pub refill_mode: RefillSetting,
    /// `joint_trajectory`: publish the rest of the chunk, not one point.
    pub trajectory_full_chunk: bool,
    /// CPU threads for the runtime; 0 = the runtime's default.
    pub threads: usize,
    pub openvino_cache_dir: String,
    pub onnx_optimization: String,
    /// Run one inference at start-up (first-call latency; sets the automatic refill).
    pub warmup: bool,
    /// Configure and activate at start (managed node); false: start unconfigured.
    pub autostart: bool,
    /// Publish each chunk switched in on `~/action_chunk`.
    pub publish_action_chunk: bool,
}

/// Every parameter name the node declares.
pub const PARAM_NAMES: &[&str] = &[
    "export_dir",
    "backend",
    "device",
    "control_rate_hz",
    "joint_names",
    "joint_state_topic",
    "camera_topics",
    "camera_inputs",
    "command_topic",
    "command_type",
    "max_observation_age_ms",
    "n_action_steps",
    "temporal_ensemble_coeff",
    "enable_on_start",
    "joint_lower_limits",
    "joint_upper_limits",
    "max_joint_delta",
    "refill_ahead_steps",
    "refill_mode",
    "trajectory_full_chunk",
    "threads",
    "openvino_cache_dir",
    "onnx_optimization",
    "warmup",
    "autostart",
    "publish_action_chunk",
];

/// The default of each parameter (`export_dir` and `joint_names` have none: required).
pub fn defaults() -> ParamMap {
    let mut m = ParamMap::new();
    let s = |v: &str| ParamValue::String(v.to_string());
    m.insert("backend".into(), s("auto"));
    m.insert("device".into(), s("auto"));
    m.insert("control_rate_hz".into(), ParamValue::Double(30.0));
    m.insert("joint_state_topic".into(), s("joint_states"));
    m.insert(
        "camera_topics".into(),
        ParamValue::StringArray(vec!["image_raw".into()]),
    );
    m.insert("camera_inputs".into(), ParamValue::StringArray(vec![]));
    m.insert("command_topic".into(), s("joint_commands"));
    m.insert("command_type".into(), s("float64_multi_array"));
    m.insert("max_observation_age_ms".into(), ParamValue::Double(500.0));
    m.insert("n_action_steps".into(), ParamValue::Int(0));
    m.insert("temporal_ensemble_coeff".into(), ParamValue::Double(0.0));
    m.insert("enable_on_start".into(), ParamValue::Bool(true));
    m.insert("joint_lower_limits".into(), ParamValue::DoubleArray(vec![]));
    m.insert("joint_upper_limits".into(), ParamValue::DoubleArray(vec![]));
    m.insert("max_joint_delta".into(), ParamValue::DoubleArray(vec![]));
    m.insert("refill_ahead_steps".into(), ParamValue::Int(-1));
    m.insert("refill_mode".into(), s("async"));
    m.insert("trajectory_full_chunk".into(), ParamValue::Bool(false));
    m.insert("threads".into(), ParamValue::Int(0));
    m.insert("openvino_cache_dir".into(), s(""));
    m.insert("onnx_optimization".into(), s("all"));
    m.insert("warmup".into(), ParamValue::Bool(true));
    m.insert("autostart".into(), ParamValue::Bool(true));
    m.insert("publish_action_chunk".into(), ParamValue::Bool(true));
    m
}

struct Reader<'a> {
    map: &'a ParamMap,
    defaults: ParamMap,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<&ParamValue> {
        self.map.get(name).or_else(|| self.defaults.get(name))
    }
    fn string(&self, name: &str) -> Result<String, ParamError> {
        match self.get(name) {
            Some(ParamValue::String(s)) => Ok(s.clone()),
            Some(v) => Err(invalid(
                name,
                format!("must be a string, got a {}", v.type_name()),
            )),
            None => Err(invalid(name, "is required")),
        }
    }
    fn double(&self, name: &str) -> Result<f64, ParamError> {
        match self.get(name) {
            Some(ParamValue::Double(v)) => Ok(*v),
            Some(ParamValue::Int(v)) => Ok(*v as f64),
            Some(v) => Err(invalid(
                name,
                format!("must be a number, got a {}", v.type_name()),
            )),
            None => Err(invalid(name, "is required")),
        }
    }
    fn int(&self, name: &str) -> Result<i64, ParamError> {
        match self.get(name) {
            Some(ParamValue::Int(v)) => Ok(*v),
            Some(v) => Err(invalid(
                name,
                format!("must be an integer, got a {}", v.type_name()),
            )),
            None => Err(invalid(name, "is required")),
        }
    }
    fn boolean(&self, name: &str) -> Result<bool, ParamError> {
        match self.get(name) {
            Some(ParamValue::Bool(v)) => Ok(*v),
            Some(v) => Err(invalid(
                name,
                format!("must be true or false, got a {}", v.type_name()),
            )),
            None => Err(invalid(name, "is required")),
        }
    }
    fn strings(&self, name: &str) -> Result<Vec<String>, ParamError> {
        match self.get(name) {
            Some(ParamValue::StringArray(v)) => Ok(v.clone()),
            // An empty YAML list has no element type.
            Some(ParamValue::BoolArray(v)) if v.is_empty() => Ok(vec![]),
            Some(ParamValue::DoubleArray(v)) if v.is_empty() => Ok(vec![]),
            Some(ParamValue::IntArray(v)) if v.is_empty() => Ok(vec![]),
            Some(v) => Err(invalid(
                name,
                format!("must be a string array, got a {}", v.type_name()),
            )),
            None => Err(invalid(name, "is required")),
        }
    }
    fn doubles(&self, name: &str) -> Result<Vec<f64>, ParamError> {
        match self.get(name) {
            Some(ParamValue::DoubleArray(v)) => Ok(v.clone()),
            Some(ParamValue::IntArray(v)) => Ok(v.iter().map(|x| *x as f64).collect()),
            Some(ParamValue::StringArray(v)) if v.is_empty() => Ok(vec![]),
            Some(ParamValue::BoolArray(v)) if v.is_empty() => Ok(vec![]),
            Some(v) => Err(invalid(
                name,
                format!("must be a double array, got a {}", v.type_name()),
            )),
            None => Err(invalid(name, "is required")),
        }
    }
}

impl NodeParams {
    /// Validates a parameter map (missing entries take their defaults). Unknown names are
    /// returned in the second element so the caller can warn about typos.
    pub fn from_map(map: &ParamMap) -> Result<(Self, Vec<String>), ParamError> {
        let r = Reader {
            map,
            defaults: defaults(),
        };
        let unknown = map
            .keys()
            .filter(|k| !PARAM_NAMES.contains(&k.as_str()) && k.as_str() != "use_sim_time")
            .cloned()
            .collect();
        let export_dir = r.string("export_dir")?;
        if export_dir.trim().is_empty() {
            return Err(invalid(
                "export_dir",
                "is required: the export directory of the policy",
            ));
        }
        let control_rate_hz = r.double("control_rate_hz")?;
        if !(control_rate_hz.is_finite() && control_rate_hz > 0.0 && control_rate_hz <= 10_000.0) {
            return Err(invalid(
                "control_rate_hz",
                format!("must be a finite rate in (0, 10000] Hz, got {control_rate_hz}"),
            ));
        }
        let joint_names = r.strings("joint_names")?;
        if joint_names.is_empty() {
            return Err(invalid(
                "joint_names",
                "is required: the joints of the state vector and the commands, in order",
            ));
        }
        for (i, n) in joint_names.iter().enumerate() {
            if n.trim().is_empty() {
                return Err(invalid("joint_names", format!("entry {i} is empty")));
            }
            if joint_names[..i].contains(n) {
                return Err(invalid("joint_names", format!("lists `{n}` twice")));
            }
        }
        let nonempty = |name: &str| -> Result<String, ParamError> {
            let v = r.string(name)?;
            if v.trim().is_empty() {
                Err(invalid(name, "must not be empty"))
            } else {
                Ok(v)
            }
        };
        let camera_topics = r.strings("camera_topics")?;
        if let Some(i) = camera_topics.iter().position(|t| t.trim().is_empty()) {
            return Err(invalid("camera_topics", format!("entry {i} is empty")));
        }
        let camera_inputs = r.strings("camera_inputs")?;
        if !camera_inputs.is_empty() && camera_inputs.len() != camera_topics.len() {
            return Err(invalid(
                "camera_inputs",
                format!(
                    "must name one model input per camera topic: {} topics, {} inputs",
                    camera_topics.len(),
                    camera_inputs.len()
                ),
            ));
        }
        let command_type = match r.string("command_type")?.as_str() {
            "float64_multi_array" => CommandType::Float64MultiArray,
            "joint_trajectory" => CommandType::JointTrajectory,
            "joint_state" => CommandType::JointState,
            other => {
                return Err(invalid(
                    "command_type",
                    format!(
                    "must be float64_multi_array, joint_trajectory or joint_state, got `{other}`"
                ),
                ))
            }
        };
        let max_age = r.double("max_observation_age_ms")?;
        if !(max_age.is_finite() && max_age > 0.0) {
            return Err(invalid(
                "max_observation_age_ms",
                format!("must be a finite number > 0, got {max_age}"),
            ));
        }
        let n_action_steps = r.int("n_action_steps")?;
        if n_action_steps < 0 {
            return Err(invalid(
                "n_action_steps",
                format!("must be >= 0 (0 = the chunk size), got {n_action_steps}"),
            ));
        }
        let coeff = r.double("temporal_ensemble_coeff")?;
        if !(coeff.is_finite() && coeff >= 0.0) {
            return Err(invalid(
                "temporal_ensemble_coeff",
                format!("must be a finite number >= 0, got {coeff}"),
            ));
        }
        let n = joint_names.len();
        let lower = r.doubles("joint_lower_limits")?;
        let upper = r.doubles("joint_upper_limits")?;
        for (name, v) in [
            ("joint_lower_limits", &lower),
            ("joint_upper_limits", &upper),
        ] {
            if !v.is_empty() && v.len() != n {
                return Err(invalid(
                    name,
                    format!("must have one value per joint ({n}), got {}", v.len()),
                ));
            }
            if let Some(i) = v.iter().position(|x| x.is_nan()) {
                return Err(invalid(name, format!("entry {i} is NaN")));
            }
        }
        if lower.is_empty() != upper.is_empty() {
            return Err(invalid(
                "joint_upper_limits",
                "and joint_lower_limits must be given together",
            ));
        }
        if let Some(i) = (0..lower.len()).find(|i| lower[*i] > upper[*i]) {
            return Err(invalid(
                "joint_lower_limits",
                format!(
                    "entry {i} ({}) exceeds joint_upper_limits ({}) for joint `{}`",
                    lower[i], upper[i], joint_names[i]
                ),
            ));
        }
        let max_delta = r.doubles("max_joint_delta")?;
        if !(max_delta.is_empty() || max_delta.len() == 1 || max_delta.len() == n) {
            return Err(invalid(
                "max_joint_delta",
                format!(
                    "must have one value, or one per joint ({n}), got {}",
                    max_delta.len()
                ),
            ));
        }
        if let Some(i) = max_delta.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
            return Err(invalid(
                "max_joint_delta",
                format!(
                    "entry {i} must be a finite number > 0, got {}",
                    max_delta[i]
                ),
            ));
        }
        let refill_ahead_steps = match r.int("refill_ahead_steps")? {
            -1 => None,
            v if v >= 0 => Some(v as usize),
            v => {
                return Err(invalid(
                    "refill_ahead_steps",
                    format!("must be >= 0, or -1 for automatic, got {v}"),
                ))
            }
        };
        let refill_mode = match r.string("refill_mode")?.as_str() {
            "async" => RefillSetting::Async,
            "sync" => RefillSetting::Sync,
            other => {
                return Err(invalid(
                    "refill_mode",
                    format!("must be async or sync, got `{other}`"),
                ))
            }
        };
        let threads = r.int("threads")?;
        if !(0..=1024).contains(&threads) {
            return Err(invalid(
                "threads",
                format!("must be in 0..=1024 (0 = runtime default), got {threads}"),
            ));
        }
        let backend = r.string("backend")?;
        if !matches!(backend.as_str(), "auto" | "")
            && backend.parse::<crate::export::ExportBackend>().is_err()
        {
            return Err(invalid(
                "backend",
                format!("must be auto, openvino, onnx or torchscript, got `{backend}`"),
            ));
        }
        let onnx_optimization = r.string("onnx_optimization")?;
        if onnx_optimization
            .parse::<crate::runtime::GraphOptimization>()
            .is_err()
        {
            return Err(invalid(
                "onnx_optimization",
                format!("must be disable, basic, extended or all, got `{onnx_optimization}`"),
            ));
        }
        Ok((
            Self {
                export_dir: PathBuf::from(export_dir),
                backend,
                device: r.string("device")?,
                control_rate_hz,
                joint_names,
                joint_state_topic: nonempty("joint_state_topic")?,
                camera_topics,
                camera_inputs,
                command_topic: nonempty("command_topic")?,
                command_type,
                max_observation_age_ms: max_age,
                n_action_steps: n_action_steps as usize,
                temporal_ensemble_coeff: coeff,
                enable_on_start: r.boolean("enable_on_start")?,
                joint_lower_limits: lower,
                joint_upper_limits: upper,
                max_joint_delta: max_delta,
                refill_ahead_steps,
                refill_mode,
                trajectory_full_chunk: r.boolean("trajectory_full_chunk")?,
                threads: threads as usize,
                openvino_cache_dir: r.string("openvino_cache_dir")?,
                onnx_optimization,
                warmup: r.boolean("warmup")?,
                autostart: r.boolean("autostart")?,
                publish_action_chunk: r.boolean("publish_action_chunk")?,
            },
            unknown,
        ))
    }

    /// The control period.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.control_rate_hz)
    }

    /// `max_observation_age_ms` as a duration.
    pub fn max_observation_age(&self) -> Duration {
        Duration::from_secs_f64(self.max_observation_age_ms / 1e3)
    }

    /// Whether a camera topic carries `sensor_msgs/CompressedImage`.
    pub fn is_compressed_topic(topic: &str) -> bool {
        topic.ends_with("/compressed")
    }
}

/// Reads a ROS 2 parameters file (`<node>: ros__parameters: {...}`, `/**:` or
/// `/<ns>/<node>:` keys) and returns the parameters meant for `node_name`.
pub fn read_params_file(path: &Path, node_name: &str) -> Result<ParamMap, ParamError> {
    let file_err = |detail: String| ParamError::File {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| file_err(format!("not valid YAML: {e}")))?;
    let serde_yaml::Value::Mapping(top) = doc else {
        return Err(file_err("top level must be a mapping of node names".into()));
    };
    let mut out = ParamMap::new();
    let mut matched = false;
    for (key, body) in &top {
        let Some(key) = key.as_str() else { continue };
        let applies = key == "/**"
            || key == node_name
            || key.trim_start_matches('/').rsplit('/').next() == Some(node_name);
        if !applies {
            continue;
        }
        let Some(params) = body.get("ros__parameters") else {
            return Err(file_err(format!(
                "`{key}` has no `ros__parameters` mapping"
            )));
        };
        let serde_yaml::Value::Mapping(params) = params else {
            return Err(file_err(format!(
                "`{key}.ros__parameters` must be a mapping"
            )));
        };
        matched = true;
        for (name, value) in params {
            let Some(name) = name.as_str() else { continue };
            out.insert(name.to_string(), yaml_param(name, value).map_err(file_err)?);
        }
    }
    if !matched {
        return Err(file_err(format!(
            "no `{node_name}:` or `/**:` section with ros__parameters"
        )));
    }
    Ok(out)
}

fn yaml_param(name: &str, v: &serde_yaml::Value) -> Result<ParamValue, String> {
    use serde_yaml::Value as V;
    Ok(match v {
        V::Bool(b) => ParamValue::Bool(*b),
        V::Number(n) if n.is_i64() => ParamValue::Int(n.as_i64().unwrap_or_default()),
        V::Number(n) => ParamValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        V::String(s) => ParamValue::String(s.clone()),
        V::Sequence(seq) if seq.is_empty() => ParamValue::StringArray(vec![]),
        V::Sequence(seq) => {
            if seq.iter().all(|x| x.is_bool()) {
                ParamValue::BoolArray(seq.iter().filter_map(|x| x.as_bool()).collect())
            } else if seq.iter().all(|x| x.is_i64()) {
                ParamValue::IntArray(seq.iter().filter_map(|x| x.as_i64()).collect())
            } else if seq.iter().all(|x| x.is_number()) {
                ParamValue::DoubleArray(seq.iter().filter_map(|x| x.as_f64()).collect())
            } else if seq.iter().all(|x| x.is_string()) {
                ParamValue::StringArray(
                    seq.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect(),
                )
            } else {
                return Err(format!("parameter `{name}` mixes element types"));
            }
        }
        other => {
            return Err(format!(
                "parameter `{name}` has an unsupported value {other:?}"
            ))
        }
    })
}
