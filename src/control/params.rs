//! The node's parameters (the contract of `design.md`, plus optional safety limits), their
//! defaults, and their validation. ROS-free: the node fills a [`ParamMap`] from ROS
//! parameters, replay from the node's own `--params-file` YAML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::blend::{ChunkBlend, ACT_ENSEMBLE_COEFF};

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
    /// Real-time chunking: on a worker thread, each request told the unexecuted rest of the
    /// plan and the delay (graphs exported with RTC inputs).
    Rtc,
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
    /// Watchdog on `~/heartbeat` (ms; 0 = off): see [`super::safety`].
    pub heartbeat_timeout_ms: f64,
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
    /// `f32` (default), `bf16` or `f16`: the precision OpenVINO computes in.
    pub inference_precision: String,
    /// ONNX Runtime: idle intra-op threads spin (default) or sleep.
    pub onnx_spinning: bool,
    /// Run one inference at start-up (first-call latency; sets the automatic refill).
    pub warmup: bool,
    /// `refill_mode: rtc`: actions of each chunk guided towards the previous plan.
    pub rtc_execution_horizon: usize,
    /// `refill_mode: rtc`: strength of that guidance.
    pub rtc_max_guidance_weight: f64,
    /// The language instruction of a VLA policy (empty: none).
    pub task: String,
    /// A directory holding `tokenizer.json` (or a Hugging Face cache root); empty: the
    /// package and the Hugging Face cache only.
    pub tokenizer_dir: String,
    /// Backend `remote`: the inference server, `http://host:port` or `https://host:port`
    /// (KServe v2), `ws://host:port` (openpi).
    pub remote_url: String,
    /// Backend `remote`: `kserve` or `openpi`; empty = implied by `remote_url`.
    pub remote_protocol: String,
    /// Backend `remote`: the model's name on the server; empty = the policy's name.
    pub remote_model: String,
    /// Backend `remote`: the model version; empty = the server's choice.
    pub remote_model_version: String,
    /// Backend `remote`: deadline of each inference call.
    pub remote_timeout_ms: f64,
    /// Backend `remote` with `https://`: PEM file of the certificate authority; empty = the
    /// system's roots.
    pub remote_ca_file: String,
    /// How a new chunk takes over from the plan it replaces (`ensemble`: ACT's coefficient
    /// 0.01, or `temporal_ensemble_coeff` when that is > 0).
    pub chunk_blend: ChunkBlend,
    /// Ticks of the `linear` crossfade.
    pub chunk_blend_steps: usize,
    /// Output low-pass filter `alpha` in (0, 1]; 1 = off.
    pub low_pass_alpha: f64,
    /// Configure and activate at start (managed node); false: start unconfigured.
    pub autostart: bool,
    /// Publish each chunk switched in on `~/action_chunk`.
    pub publish_action_chunk: bool,
    /// What a chunk breaking the limits gets ([`super::chunk_check`]).
    pub chunk_check: super::chunk_check::ChunkCheck,
    /// Policies loaded at configure besides `export_dir` (`name=export_dir` each), switched
    /// per `~/run_policy` goal.
    pub policies: Vec<(String, PathBuf)>,
    /// When the node commands: always, or only while a `~/run_policy` goal runs.
    pub episode_mode: super::episode::EpisodeMode,
    /// A running episode whose inputs stay stale longer than this (s) is aborted.
    pub episode_stale_timeout_s: f64,
    /// With `use_sim_time`: how long (wall clock, ms) each tick first waits for every input
    /// stamped at or after the tick's time (lockstep simulation); 0 = no wait.
    pub sim_input_wait_ms: f64,
    /// Where recorded episodes go (`~/run_policy` goals with `record`); empty: none.
    pub record_dir: String,
    /// The home position in command space (`[]`: none), and the move's duration.
    pub home_position: Vec<f64>,
    pub home_duration_s: f64,
    /// Move home before each episode's policy runs, and after each episode that ends
    /// without a fault (duration, ended, cancelled).
    pub home_before_episode: bool,
    pub home_after_episode: bool,
    /// The I/O map file (empty: the map of the flat parameters `joint_names`,
    /// `joint_state_topic`, `camera_topics`, `camera_inputs`, `command_topic`,
    /// `command_type`).
    pub io_map: String,
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
    "heartbeat_timeout_ms",
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
    "inference_precision",
    "onnx_spinning",
    "warmup",
    "task",
    "tokenizer_dir",
    "rtc_execution_horizon",
    "rtc_max_guidance_weight",
    "remote_url",
    "remote_protocol",
    "remote_model",
    "remote_model_version",
    "remote_timeout_ms",
    "remote_ca_file",
    "chunk_blend",
    "chunk_blend_steps",
    "low_pass_alpha",
    "autostart",
    "publish_action_chunk",
    "chunk_check",
    "episode_mode",
    "episode_stale_timeout_s",
    "sim_input_wait_ms",
    "policies",
    "record_dir",
    "home_position",
    "home_duration_s",
    "home_before_episode",
    "home_after_episode",
    "io_map",
];

/// The flat parameters an I/O map replaces: with `io_map` set, each must keep its default.
pub const FLAT_WIRING: &[&str] = &[
    "joint_names",
    "joint_state_topic",
    "camera_topics",
    "camera_inputs",
    "command_topic",
    "command_type",
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
    m.insert("io_map".into(), s(""));
    m.insert("max_observation_age_ms".into(), ParamValue::Double(500.0));
    m.insert("heartbeat_timeout_ms".into(), ParamValue::Double(0.0));
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
    m.insert("inference_precision".into(), s("f32"));
    m.insert("onnx_spinning".into(), ParamValue::Bool(true));
    m.insert("warmup".into(), ParamValue::Bool(true));
    m.insert("task".into(), s(""));
    m.insert(
        "rtc_execution_horizon".into(),
        ParamValue::Int(crate::policy::rtc::DEFAULT_EXECUTION_HORIZON as i64),
    );
    m.insert(
        "rtc_max_guidance_weight".into(),
        ParamValue::Double(crate::policy::rtc::DEFAULT_MAX_GUIDANCE_WEIGHT),
    );
    m.insert("tokenizer_dir".into(), s(""));
    m.insert("remote_url".into(), s(""));
    m.insert("remote_protocol".into(), s(""));
    m.insert("remote_model".into(), s(""));
    m.insert("remote_model_version".into(), s(""));
    m.insert(
        "remote_timeout_ms".into(),
        ParamValue::Double(crate::runtime::DEFAULT_REMOTE_TIMEOUT.as_secs_f64() * 1e3),
    );
    m.insert("remote_ca_file".into(), s(""));
    m.insert("chunk_blend".into(), s("none"));
    m.insert(
        "chunk_blend_steps".into(),
        ParamValue::Int(DEFAULT_CHUNK_BLEND_STEPS as i64),
    );
    m.insert("low_pass_alpha".into(), ParamValue::Double(1.0));
    m.insert("autostart".into(), ParamValue::Bool(true));
    m.insert("publish_action_chunk".into(), ParamValue::Bool(true));
    m.insert("chunk_check".into(), ParamValue::String("clamp".into()));
    m.insert("episode_mode".into(), s("continuous"));
    m.insert("policies".into(), ParamValue::StringArray(vec![]));
    m.insert("record_dir".into(), s(""));
    m.insert("home_position".into(), ParamValue::DoubleArray(vec![]));
    m.insert("home_duration_s".into(), ParamValue::Double(3.0));
    m.insert("home_before_episode".into(), ParamValue::Bool(false));
    m.insert("home_after_episode".into(), ParamValue::Bool(false));
    m.insert("episode_stale_timeout_s".into(), ParamValue::Double(2.0));
    m.insert("sim_input_wait_ms".into(), ParamValue::Double(0.0));
    m
}

/// Default `chunk_blend_steps` (physicalai's default `duration_frames`).
pub const DEFAULT_CHUNK_BLEND_STEPS: usize = 5;

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

/// `policies`: `name=export_dir` entries; names are unique, non-empty, of letters, digits,
/// `_`, `-` and `.`.
fn parse_policies(entries: &[String]) -> Result<Vec<(String, PathBuf)>, ParamError> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let bad = |why: &str| invalid("policies", format!("entry {i} `{e}`: {why}"));
        let Some((name, dir)) = e.split_once('=') else {
            return Err(bad("must be name=export_dir"));
        };
        let (name, dir) = (name.trim(), dir.trim());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(bad(
                "the name must be non-empty, of letters, digits, `_`, `-` and `.`",
            ));
        }
        if dir.is_empty() {
            return Err(bad("the export directory is empty"));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad(&format!("the name `{name}` is given twice")));
        }
        out.push((name.to_string(), PathBuf::from(dir)));
    }
    Ok(out)
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
        let mut export_dir = match r.get("export_dir") {
            None => String::new(),
            Some(_) => r.string("export_dir")?,
        };
        let policies = parse_policies(&r.strings("policies")?)?;
        // Without export_dir, the first of `policies` is the active one at start.
        if export_dir.trim().is_empty() {
            if let Some((_, dir)) = policies.first() {
                export_dir = dir.display().to_string();
            }
        }
        // Without an export, the I/O map's `openpi:` section describes an openpi server's
        // policy (checked when the policy loads).
        if export_dir.trim().is_empty() && r.string("io_map")?.trim().is_empty() {
            return Err(invalid(
                "export_dir",
                "is required: the export directory of the policy (or, for an openpi server \
                 without an export, an `io_map` with an `openpi:` section)",
            ));
        }
        let control_rate_hz = r.double("control_rate_hz")?;
        if !(control_rate_hz.is_finite() && control_rate_hz > 0.0 && control_rate_hz <= 10_000.0) {
            return Err(invalid(
                "control_rate_hz",
                format!("must be a finite rate in (0, 10000] Hz, got {control_rate_hz}"),
            ));
        }
        let io_map = r.string("io_map")?.trim().to_string();
        if !io_map.is_empty() {
            let defaults = defaults();
            for name in FLAT_WIRING {
                let given = r.get(name);
                let default = defaults.get(*name);
                let is_default = match (given, default) {
                    (None, _) => true,
                    (Some(ParamValue::StringArray(v)), None) => v.is_empty(),
                    (Some(v), Some(d)) => v == d,
                    (Some(_), None) => false,
                };
                if !is_default {
                    return Err(invalid(
                        name,
                        format!(
                            "is set together with `io_map` ({io_map}): the map names the topics, the joints and the \
                             command channels; leave `{name}` at its default or drop `io_map`"
                        ),
                    ));
                }
            }
        }
        let joint_names = if io_map.is_empty() || r.get("joint_names").is_some() {
            r.strings("joint_names")?
        } else {
            Vec::new()
        };
        if joint_names.is_empty() && io_map.is_empty() {
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
        // Bounded so the duration built from it cannot overflow (`Duration::from_secs_f64`
        // panics past u64 seconds): 1e9 ms is over 11 days, far beyond any staleness rule.
        if !(max_age.is_finite() && max_age > 0.0 && max_age <= 1e9) {
            return Err(invalid(
                "max_observation_age_ms",
                format!("must be a number in (0, 1e9] ms, got {max_age}"),
            ));
        }
        let heartbeat_timeout_ms = r.double("heartbeat_timeout_ms")?;
        if !(heartbeat_timeout_ms.is_finite() && (0.0..=1e9).contains(&heartbeat_timeout_ms)) {
            return Err(invalid(
                "heartbeat_timeout_ms",
                format!(
                    "must be a number in [0, 1e9] ms (0 = no watchdog), got {heartbeat_timeout_ms}"
                ),
            ));
        }
        let home_position = r.doubles("home_position")?;
        if let Some(i) = home_position.iter().position(|v| !v.is_finite()) {
            return Err(invalid(
                "home_position",
                format!("entry {i} is not a finite number"),
            ));
        }
        let home_duration_s = r.double("home_duration_s")?;
        if !(home_duration_s.is_finite() && home_duration_s > 0.0 && home_duration_s <= 1e4) {
            return Err(invalid(
                "home_duration_s",
                format!("must be a number in (0, 1e4] s, got {home_duration_s}"),
            ));
        }
        let home_before_episode = r.boolean("home_before_episode")?;
        let home_after_episode = r.boolean("home_after_episode")?;
        for (name, on) in [
            ("home_before_episode", home_before_episode),
            ("home_after_episode", home_after_episode),
        ] {
            if on && home_position.is_empty() {
                return Err(invalid(
                    name,
                    "is true but home_position is empty: set the home position (one value per action index)",
                ));
            }
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
            if !v.is_empty() && v.len() != n && io_map.is_empty() {
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
        if lower.len() != upper.len() {
            return Err(invalid(
                "joint_upper_limits",
                format!(
                    "must have as many values as joint_lower_limits ({}), got {}",
                    lower.len(),
                    upper.len()
                ),
            ));
        }
        if let Some(i) = (0..lower.len()).find(|i| lower[*i] > upper[*i]) {
            return Err(invalid(
                "joint_lower_limits",
                format!(
                    "entry {i} ({}) exceeds joint_upper_limits ({}) for {}",
                    lower[i],
                    upper[i],
                    joint_names
                        .get(i)
                        .map_or_else(|| format!("action index {i}"), |j| format!("joint `{j}`"))
                ),
            ));
        }
        let max_delta = r.doubles("max_joint_delta")?;
        if !(max_delta.is_empty()
            || max_delta.len() == 1
            || max_delta.len() == n
            || !io_map.is_empty())
        {
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
            "rtc" => RefillSetting::Rtc,
            other => {
                return Err(invalid(
                    "refill_mode",
                    format!("must be async, sync or rtc, got `{other}`"),
                ))
            }
        };
        let rtc_execution_horizon = r.int("rtc_execution_horizon")?;
        if !(1..=100_000).contains(&rtc_execution_horizon) {
            return Err(invalid(
                "rtc_execution_horizon",
                format!(
                    "must be at least 1 (and at most half the chunk), got {rtc_execution_horizon}"
                ),
            ));
        }
        let rtc_max_guidance_weight = r.double("rtc_max_guidance_weight")?;
        if !(rtc_max_guidance_weight.is_finite() && (0.0..=1e6).contains(&rtc_max_guidance_weight))
        {
            return Err(invalid(
                "rtc_max_guidance_weight",
                format!("must be a finite number in [0, 1e6], got {rtc_max_guidance_weight}"),
            ));
        }
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
                format!("must be auto, openvino, onnx, torchscript or remote, got `{backend}`"),
            ));
        }
        let remote = backend.trim().eq_ignore_ascii_case("remote");
        let remote_url = r.string("remote_url")?.trim().to_string();
        if remote && remote_url.is_empty() {
            return Err(invalid(
                "remote_url",
                "is required with backend remote: the inference server, e.g. http://gpu-host:8001",
            ));
        }
        let remote_protocol = r.string("remote_protocol")?.trim().to_ascii_lowercase();
        let protocol = crate::runtime::RemoteProtocol::resolve(&remote_protocol, &remote_url)
            .map_err(|_| {
                invalid(
                    "remote_protocol",
                    format!("must be kserve or openpi (empty: implied by remote_url), got `{remote_protocol}`"),
                )
            })?;
        if !remote_url.is_empty() {
            use crate::runtime::RemoteProtocol;
            let lower = remote_url.to_ascii_lowercase();
            let ws = lower.starts_with("ws://") || lower.starts_with("wss://");
            let http = lower.starts_with("http://") || lower.starts_with("https://");
            match protocol {
                RemoteProtocol::Kserve if !http => {
                    return Err(invalid(
                        "remote_url",
                        format!(
                            "must start with http:// (plain gRPC) or https:// (TLS) for remote_protocol kserve, or ws:// for openpi, got `{remote_url}`"
                        ),
                    ))
                }
                RemoteProtocol::Openpi if !ws => {
                    return Err(invalid(
                        "remote_url",
                        format!("must start with ws:// for remote_protocol openpi, got `{remote_url}`"),
                    ))
                }
                _ => {}
            }
        }
        let remote_timeout_ms = r.double("remote_timeout_ms")?;
        if !(remote_timeout_ms.is_finite()
            && remote_timeout_ms > 0.0
            && remote_timeout_ms <= 3_600_000.0)
        {
            return Err(invalid(
                "remote_timeout_ms",
                format!("must be a finite number of milliseconds in (0, 3600000], got {remote_timeout_ms}"),
            ));
        }
        // A version is often written unquoted (`remote_model_version: 2`).
        let remote_model_version = match r.get("remote_model_version") {
            Some(ParamValue::Int(v)) if *v >= 0 => v.to_string(),
            _ => r.string("remote_model_version")?.trim().to_string(),
        };
        let chunk_blend_steps = r.int("chunk_blend_steps")?;
        if !(1..=100_000).contains(&chunk_blend_steps) {
            return Err(invalid(
                "chunk_blend_steps",
                format!("must be in 1..=100000 ticks, got {chunk_blend_steps}"),
            ));
        }
        let chunk_blend = ChunkBlend::from_name(
            &r.string("chunk_blend")?,
            chunk_blend_steps as usize,
            if coeff > 0.0 {
                coeff
            } else {
                ACT_ENSEMBLE_COEFF
            },
        )
        .map_err(|rule| invalid("chunk_blend", rule))?;
        let low_pass_alpha = r.double("low_pass_alpha")?;
        if !(low_pass_alpha.is_finite() && low_pass_alpha > 0.0 && low_pass_alpha <= 1.0) {
            return Err(invalid(
                "low_pass_alpha",
                format!("must be in (0, 1] (1 = off), got {low_pass_alpha}"),
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
        let inference_precision = r.string("inference_precision")?.trim().to_ascii_lowercase();
        if inference_precision
            .parse::<crate::runtime::Precision>()
            .is_err()
        {
            return Err(invalid(
                "inference_precision",
                format!("must be f32, bf16 or f16, got `{inference_precision}`"),
            ));
        }
        Ok((
            Self {
                export_dir: PathBuf::from(export_dir),
                backend,
                device: r.string("device")?,
                control_rate_hz,
                joint_names,
                io_map,
                joint_state_topic: nonempty("joint_state_topic")?,
                camera_topics,
                camera_inputs,
                command_topic: nonempty("command_topic")?,
                command_type,
                max_observation_age_ms: max_age,
                heartbeat_timeout_ms,
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
                inference_precision,
                onnx_spinning: r.boolean("onnx_spinning")?,
                warmup: r.boolean("warmup")?,
                task: {
                    let t = r.string("task")?;
                    if t.len() > crate::policy::processors::tokenizer::MAX_TASK_BYTES {
                        return Err(invalid(
                            "task",
                            format!(
                                "is {} bytes long, above the limit of {} bytes",
                                t.len(),
                                crate::policy::processors::tokenizer::MAX_TASK_BYTES
                            ),
                        ));
                    }
                    t
                },
                tokenizer_dir: r.string("tokenizer_dir")?,
                rtc_execution_horizon: rtc_execution_horizon as usize,
                rtc_max_guidance_weight,
                remote_url,
                remote_protocol,
                remote_model: r.string("remote_model")?.trim().to_string(),
                remote_model_version,
                remote_timeout_ms,
                remote_ca_file: r.string("remote_ca_file")?.trim().to_string(),
                chunk_blend,
                chunk_blend_steps: chunk_blend_steps as usize,
                low_pass_alpha,
                autostart: r.boolean("autostart")?,
                publish_action_chunk: r.boolean("publish_action_chunk")?,
                chunk_check: {
                    let v = r.string("chunk_check")?;
                    super::chunk_check::ChunkCheck::parse(&v).ok_or_else(|| {
                        invalid("chunk_check", format!("must be clamp or reject, got `{v}`"))
                    })?
                },
                policies,
                record_dir: r.string("record_dir")?.trim().to_string(),
                home_position: home_position.clone(),
                home_duration_s,
                home_before_episode,
                home_after_episode,
                episode_mode: {
                    let v = r.string("episode_mode")?;
                    super::episode::EpisodeMode::parse(&v).ok_or_else(|| {
                        invalid(
                            "episode_mode",
                            format!("must be continuous or goal, got `{v}`"),
                        )
                    })?
                },
                episode_stale_timeout_s: {
                    let v = r.double("episode_stale_timeout_s")?;
                    if !(v.is_finite() && v > 0.0 && v <= 1e6) {
                        return Err(invalid(
                            "episode_stale_timeout_s",
                            format!("must be a number in (0, 1e6] s, got {v}"),
                        ));
                    }
                    v
                },
                sim_input_wait_ms: {
                    let v = r.double("sim_input_wait_ms")?;
                    if !(v.is_finite() && (0.0..=60_000.0).contains(&v)) {
                        return Err(invalid(
                            "sim_input_wait_ms",
                            format!("must be a number in [0, 60000] ms, got {v}"),
                        ));
                    }
                    v
                },
            },
            unknown,
        ))
    }

    /// The name the `export_dir` policy answers to in a goal: its `policies` entry's, else
    /// `default`.
    pub fn export_policy_name(&self) -> String {
        self.policies
            .iter()
            .find(|(_, d)| *d == self.export_dir)
            .map_or_else(|| "default".to_string(), |(n, _)| n.clone())
    }

    /// The `policies` entries loaded besides `export_dir`.
    pub fn other_policies(&self) -> impl Iterator<Item = &(String, PathBuf)> {
        self.policies.iter().filter(|(_, d)| *d != self.export_dir)
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
    let text = std::fs::read_to_string(path).map_err(|e| ParamError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    parse_params_yaml(&text, path, node_name)
}

/// [`read_params_file`] on the file's text; `path` only names the file in errors.
pub fn parse_params_yaml(text: &str, path: &Path, node_name: &str) -> Result<ParamMap, ParamError> {
    let file_err = |detail: String| ParamError::File {
        path: path.to_path_buf(),
        detail,
    };
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| file_err(format!("not valid YAML: {e}")))?;
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
