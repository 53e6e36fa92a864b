//! What each node parameter is, as data: one row per parameter in [`PARAM_SPECS`] (type,
//! when it may change, range, one-line description), and the rules a run-time change goes
//! through ([`ParamStore`]). ROS-free: the node turns a row into an
//! `rcl_interfaces/msg/ParameterDescriptor` and `set_parameters` requests into
//! [`ParamStore::check`]; `--help` prints the descriptions.
//!
//! A new parameter is one row here (plus its default and validation in
//! [`super::params`]); a unit test checks that every name in [`PARAM_NAMES`] has a row.
//!
//! When a parameter may change ([`Change`]):
//! - `Live`: any time; the new value is validated together with every other parameter
//!   (the validation at start) and used from the next control tick.
//! - `Configure`: it shapes what configure builds (model, topics, timer), so it is refused
//!   while the node is configured (inactive or active) and settable in the unconfigured
//!   state, taking effect at the next configure.
//! - `Startup`: read once when the process starts.

use super::params::{ParamError, ParamMap, ParamValue, PARAM_NAMES};
use super::NodeParams;

/// The ROS type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Double,
    String,
    DoubleArray,
    StringArray,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "integer",
            Kind::Double => "double",
            Kind::String => "string",
            Kind::DoubleArray => "double array",
            Kind::StringArray => "string array",
        }
    }
}

/// When a parameter may change. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Live,
    Configure,
    Startup,
}

impl Change {
    /// The rule in words (`additional_constraints` of the descriptor).
    pub fn rule(self) -> &'static str {
        match self {
            Change::Live => {
                "live: a new value is validated with the whole configuration and takes effect \
                 from the next control tick"
            }
            Change::Configure => {
                "read-only while the node is configured (inactive or active): set it in the \
                 unconfigured state (after cleanup); it takes effect at the next configure"
            }
            Change::Startup => {
                "read-only: set it when the node starts (--ros-args -p, --params-file)"
            }
        }
    }
}

/// The range of a numeric parameter, both ends included (the `ParameterDescriptor` ranges).
/// The validation in [`super::params`] may be stricter (e.g. a rate must be `> 0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    None,
    Double { from: f64, to: f64 },
    Int { from: i64, to: i64 },
}

/// One parameter: see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub change: Change,
    pub range: Range,
    /// One line: what `ros2 param describe` and `--help` show. The longer text is in
    /// `config/policy_node.yaml`.
    pub description: &'static str,
}

const fn row(
    name: &'static str,
    kind: Kind,
    change: Change,
    range: Range,
    description: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        kind,
        change,
        range,
        description,
    }
}

const INF: f64 = f64::INFINITY;
const ANY: Range = Range::None;
const fn f(from: f64, to: f64) -> Range {
    Range::Double { from, to }
}
const fn i(from: i64, to: i64) -> Range {
    Range::Int { from, to }
}

use Change::{Configure, Live, Startup};
use Kind::{Bool, Double, DoubleArray, Int, String as Str, StringArray as StrArray};

/// Every parameter of the node, one row each, in `--help` and `list_parameters` order:
/// name, type, when it may change, range, description.
#[rustfmt::skip]
pub const PARAM_SPECS: &[ParamSpec] = &[
    row("export_dir", Str, Configure, ANY, "export directory of the policy (model + metadata.yaml); required unless io_map has an `openpi:` section (an openpi server, no export)"),
    row("backend", Str, Configure, ANY, "auto (metadata, else file extension), openvino, onnx, torchscript, or remote (a KServe v2 inference server: remote_url)"),
    row("device", Str, Configure, ANY, "auto (first available in priority order) or an explicit device (cpu, cuda, GPU, ...)"),
    row("control_rate_hz", Double, Configure, f(0.0, 10_000.0), "control timer rate in Hz, > 0 (ROS time: follows /clock with use_sim_time)"),
    row("joint_names", StrArray, Configure, ANY, "joints of the state vector and of the commands, in order; required"),
    row("joint_state_topic", Str, Configure, ANY, "sensor_msgs/JointState input"),
    row("camera_topics", StrArray, Configure, ANY, "sensor_msgs/Image inputs; a topic ending in /compressed is sensor_msgs/CompressedImage"),
    row("camera_inputs", StrArray, Configure, ANY, "model image input fed by each camera topic; [] = the model's image inputs in order"),
    row("command_topic", Str, Configure, ANY, "where commands are published"),
    row("command_type", Str, Configure, ANY, "float64_multi_array, joint_trajectory or joint_state"),
    row("io_map", Str, Configure, ANY, "I/O map file (YAML): topics to policy inputs, the action to command channels; empty = the flat parameters above"),
    row("max_observation_age_ms", Double, Live, f(0.0, INF), "inputs older than this (ms, > 0): no command on that tick"),
    row("heartbeat_timeout_ms", Double, Live, f(0.0, INF), "watchdog: no ~/heartbeat (std_msgs/Empty) for this long (ms) stops commands until ~/reset; 0 = off"),
    row("n_action_steps", Int, Live, i(0, i64::MAX), "actions executed per chunk; 0 = the export's value (else the chunk size); a change starts a fresh chunk"),
    row("temporal_ensemble_coeff", Double, Live, f(0.0, INF), "ACT temporal ensembling coefficient; 0 = off; a change starts a fresh chunk"),
    row("enable_on_start", Bool, Live, ANY, "command output gate at start and at each activation (~/enable changes it while active)"),
    row("joint_lower_limits", DoubleArray, Live, ANY, "per-joint lower position limits; [] = none (set together with joint_upper_limits)"),
    row("joint_upper_limits", DoubleArray, Live, ANY, "per-joint upper position limits; [] = none (set together with joint_lower_limits)"),
    row("max_joint_delta", DoubleArray, Live, ANY, "largest change of a command per tick (one value or one per joint); [] = none"),
    row("refill_ahead_steps", Int, Configure, i(-1, i64::MAX), "queued actions left when the next chunk is requested (rtc: the delay in ticks); -1 = automatic, following the inference latency"),
    row("refill_mode", Str, Configure, ANY, "async (next chunk on a worker thread), sync (on the tick that needs it) or rtc (real-time chunking)"),
    row("trajectory_full_chunk", Bool, Live, ANY, "joint_trajectory: publish the rest of the chunk, not one point"),
    row("threads", Int, Configure, i(0, 1024), "CPU threads for the runtime; 0 = the runtime's default"),
    row("openvino_cache_dir", Str, Configure, ANY, "OpenVINO compiled-model cache directory; empty = none"),
    row("onnx_optimization", Str, Configure, ANY, "ONNX Runtime graph optimisation: disable, basic, extended or all"),
    row("onnx_spinning", Bool, Configure, ANY, "ONNX Runtime: idle intra-op threads spin (true, lower latency) or sleep (false, less CPU)"),
    row("inference_precision", Str, Configure, ANY, "f32 (default), bf16 or f16: the precision OpenVINO computes in (CPU: bf16 / f16 where the CPU has them); other backends f32 only"),
    row("warmup", Bool, Configure, ANY, "run inference at configure (first-call latency; sets refill_ahead_steps -1)"),
    row("autostart", Bool, Configure, ANY, "configure and activate at start; false: start unconfigured, wait for ~/change_state"),
    row("publish_action_chunk", Bool, Live, ANY, "publish each chunk switched in on ~/action_chunk (trajectory_msgs/JointTrajectory)"),
    row("chunk_check", Str, Live, ANY, "a chunk breaking the joint limits or max_joint_delta: clamp (each command limited) or reject (refused whole, no command from it)"),
    row("policies", StrArray, Configure, ANY, "more policies loaded at configure, name=export_dir each, switched per ~/run_policy goal (its `policy` field) without a reload; export_dir empty: the first is active at start"),
    row("record_dir", Str, Live, ANY, "where ~/run_policy goals with record: true write their episode (a rosbag2 MCAP directory each); empty = recording refused"),
    row("home_position", DoubleArray, Live, ANY, "home position, one value per action index (command space); [] = none"),
    row("home_duration_s", Double, Live, f(0.0, 1e4), "duration of a move home (s, > 0); longer where max_joint_delta allows less per tick"),
    row("home_before_episode", Bool, Live, ANY, "move home before each ~/run_policy episode's policy runs (needs home_position)"),
    row("home_after_episode", Bool, Live, ANY, "move home after each episode that ends by duration, ~/end_episode or cancel (never after e-stop, watchdog, stale, error)"),
    row("episode_mode", Str, Configure, ANY, "continuous (commands whenever active and enabled) or goal (commands only while a ~/run_policy goal runs)"),
    row("episode_stale_timeout_s", Double, Live, f(0.0, 1e6), "a running episode whose inputs stay stale longer than this (s) is aborted (reason stale)"),
    row("sim_input_wait_ms", Double, Configure, f(0.0, 60_000.0), "with use_sim_time: each tick first waits up to this long (wall clock, ms) for every input stamped at or after the tick's time, so a lockstep simulation's result does not depend on machine speed; 0 = no wait"),
    row("use_sim_time", Bool, Startup, ANY, "use /clock (rosgraph_msgs/Clock) as ROS time"),
    row("remote_url", Str, Configure, ANY, "backend remote: the inference server, http://host:port (KServe v2 gRPC), https://host:port (TLS), or ws://host:port / wss://host:port (openpi)"),
    row("remote_protocol", Str, Configure, ANY, "backend remote: kserve or openpi; empty = implied by remote_url (ws://, wss:// are openpi)"),
    row("remote_model", Str, Configure, ANY, "backend remote: the model's name on the server; empty = the policy's name"),
    row("remote_model_version", Str, Configure, ANY, "backend remote: the model version; empty = the server's choice"),
    row("remote_timeout_ms", Double, Configure, f(0.0, 3_600_000.0), "backend remote: deadline of each inference call in milliseconds"),
    row("remote_ca_file", Str, Configure, ANY, "backend remote with https:// or wss://: PEM file of the certificate authority; empty = system roots"),
    row("chunk_blend", Str, Configure, ANY, "chunk hand-over: none, linear, ensemble, weighted_average, latest_only or average"),
    row("chunk_blend_steps", Int, Configure, i(1, 100_000), "ticks of the linear crossfade (chunk_blend linear)"),
    row("low_pass_alpha", Double, Configure, f(0.0, 1.0), "output low-pass filter y = a x + (1 - a) y_prev, a in (0, 1]; 1 = off"),
    row("task", Str, Live, ANY, "language instruction of a VLA policy (also the ~/task topic); applies from the next chunk"),
    row("tokenizer_dir", Str, Configure, ANY, "directory with tokenizer.json, or a Hugging Face cache root; empty = the package, then the cache"),
    row("rtc_execution_horizon", Int, Configure, i(1, 100_000), "refill_mode rtc: steps of each chunk guided towards the previous plan (<= chunk / 2)"),
    row("rtc_max_guidance_weight", Double, Configure, f(0.0, 1e6), "refill_mode rtc: strength of that guidance (>= 0)"),
];

/// The row of `name`.
pub fn spec(name: &str) -> Option<&'static ParamSpec> {
    PARAM_SPECS.iter().find(|s| s.name == name)
}

fn kind_of(value: &ParamValue) -> &'static str {
    value.type_name()
}

/// `value` as the parameter's type: an integer where a double is expected (what `ros2 param
/// set NAME 50` sends) becomes a double, an empty list of any type an empty list of the
/// expected type; any other mismatch is refused.
pub fn coerce(spec: &ParamSpec, value: &ParamValue) -> Result<ParamValue, String> {
    use ParamValue as V;
    let empty = matches!(value, V::BoolArray(v) if v.is_empty())
        || matches!(value, V::IntArray(v) if v.is_empty())
        || matches!(value, V::DoubleArray(v) if v.is_empty())
        || matches!(value, V::StringArray(v) if v.is_empty());
    let ok = match (spec.kind, value) {
        (Kind::Bool, V::Bool(_))
        | (Kind::Int, V::Int(_))
        | (Kind::Double, V::Double(_))
        | (Kind::String, V::String(_))
        | (Kind::DoubleArray, V::DoubleArray(_))
        | (Kind::StringArray, V::StringArray(_)) => Some(value.clone()),
        (Kind::Double, V::Int(i)) => Some(V::Double(*i as f64)),
        (Kind::DoubleArray, V::IntArray(v)) => {
            Some(V::DoubleArray(v.iter().map(|i| *i as f64).collect()))
        }
        (Kind::DoubleArray, _) if empty => Some(V::DoubleArray(vec![])),
        (Kind::StringArray, _) if empty => Some(V::StringArray(vec![])),
        _ => None,
    };
    ok.ok_or_else(|| {
        format!(
            "parameter `{}` has type {}, got a value of type {}",
            spec.name,
            spec.kind.name(),
            kind_of(value)
        )
    })
}

/// Checks a (coerced) value against the row's range.
pub fn check_range(spec: &ParamSpec, value: &ParamValue) -> Result<(), String> {
    let out = match (spec.range, value) {
        (Range::Double { from, to }, ParamValue::Double(v)) => {
            (v.is_nan() || *v < from || *v > to).then(|| format!("{v} is outside [{from}, {to}]"))
        }
        (Range::Int { from, to }, ParamValue::Int(v)) => {
            (*v < from || *v > to).then(|| format!("{v} is outside [{from}, {to}]"))
        }
        _ => None,
    };
    match out {
        Some(why) => Err(format!("parameter `{}`: {why}", spec.name)),
        None => Ok(()),
    }
}

/// Where the node is, for the rules of [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No policy loaded: `Configure` parameters may change.
    Unconfigured,
    /// Inactive or active (the label names the state, for the reason given).
    Configured(&'static str),
    /// A lifecycle transition is running (its state's label): nothing may change.
    Transition(&'static str),
}

/// A change that passed [`ParamStore::check`], ready to [`commit`](ParamStore::commit).
#[derive(Debug, Clone)]
pub struct Checked {
    /// The new values, as stored (coerced).
    pub values: Vec<(String, ParamValue)>,
    /// The whole configuration with the change, when it is valid (always, when configured).
    pub params: Option<NodeParams>,
    /// In the unconfigured state, what configure would refuse with these values, if anything
    /// (about another parameter than the ones changed).
    pub note: Option<String>,
}

/// The node's parameter values: every parameter of [`PARAM_SPECS`] with its value (an
/// override, else its default; `None` for a required one not given).
#[derive(Debug, Clone)]
pub struct ParamStore {
    values: ParamMap,
}

impl ParamStore {
    /// From the overrides the node received; returns the names that are not parameters of
    /// the node (typos), which are left out. Values are kept as given (coerced where the
    /// type allows), so a wrong type is reported by the validation at configure, naming the
    /// parameter.
    pub fn new(overrides: &ParamMap) -> (Self, Vec<String>) {
        let defaults = super::params::defaults();
        let mut values = ParamMap::new();
        let mut unknown = Vec::new();
        for (name, value) in overrides {
            match spec(name) {
                Some(s) => {
                    values.insert(
                        name.clone(),
                        coerce(s, value).unwrap_or_else(|_| value.clone()),
                    );
                }
                None => unknown.push(name.clone()),
            }
        }
        for s in PARAM_SPECS {
            if !values.contains_key(s.name) {
                if let Some(v) = defaults.get(s.name) {
                    values.insert(s.name.to_string(), v.clone());
                } else if s.name == "use_sim_time" {
                    values.insert(s.name.to_string(), ParamValue::Bool(false));
                }
            }
        }
        (ParamStore { values }, unknown)
    }

    /// The current value of `name` (`None`: not a parameter, or required and not set).
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    /// Every value, by name (what [`NodeParams::from_map`] reads).
    pub fn map(&self) -> &ParamMap {
        &self.values
    }

    /// The node's parameters, validated as at start.
    pub fn params(&self) -> Result<NodeParams, ParamError> {
        NodeParams::from_map(&self.values).map(|(p, _)| p)
    }

    /// Checks `changes` (name, new value; `None` = unset) together, all or nothing: each
    /// name is a parameter, may change in `phase`, has the right type and range, and the
    /// whole configuration with the changes passes the validation at start. Configured, the
    /// caller still checks the result against the loaded export before committing.
    pub fn check(
        &self,
        changes: &[(String, Option<ParamValue>)],
        phase: Phase,
    ) -> Result<Checked, String> {
        let mut values = Vec::new();
        for (name, value) in changes {
            let Some(s) = spec(name) else {
                return Err(format!("policy_node has no parameter `{name}`"));
            };
            match (s.change, phase) {
                (_, Phase::Transition(state)) => {
                    return Err(format!(
                        "parameter `{name}` cannot change while a lifecycle transition runs \
                         (state `{state}`); try again when it has finished"
                    ))
                }
                (Change::Startup, _) => {
                    return Err(format!(
                        "parameter `{name}` is read-only: {}",
                        s.change.rule()
                    ))
                }
                (Change::Configure, Phase::Configured(state)) => {
                    return Err(format!(
                        "parameter `{name}` is read-only while the node is configured (state \
                         `{state}`): deactivate and clean up the node, set it, then configure \
                         again"
                    ))
                }
                _ => {}
            }
            let Some(value) = value else {
                return Err(format!(
                    "parameter `{name}` cannot be unset (it is declared)"
                ));
            };
            let value = coerce(s, value)?;
            check_range(s, &value)?;
            values.push((name.clone(), value));
        }
        let mut candidate = self.values.clone();
        for (name, value) in &values {
            candidate.insert(name.clone(), value.clone());
        }
        match NodeParams::from_map(&candidate) {
            Ok((params, _)) => Ok(Checked {
                values,
                params: Some(params),
                note: None,
            }),
            Err(e) => {
                let about_a_change = match &e {
                    ParamError::Invalid { name, .. } => values.iter().any(|(n, _)| n == name),
                    ParamError::File { .. } => true,
                };
                if about_a_change || matches!(phase, Phase::Configured(_)) {
                    Err(e.to_string())
                } else {
                    // Unconfigured, and what is wrong is another parameter (e.g. export_dir
                    // not set yet): accepted; configure reports the rest.
                    Ok(Checked {
                        values,
                        params: None,
                        note: Some(e.to_string()),
                    })
                }
            }
        }
    }

    /// Stores a checked change.
    pub fn commit(&mut self, checked: &Checked) {
        for (name, value) in &checked.values {
            self.values.insert(name.clone(), value.clone());
        }
    }
}

/// Checks that the table and [`PARAM_NAMES`] agree (a unit test runs it).
pub fn missing_rows() -> Vec<&'static str> {
    PARAM_NAMES
        .iter()
        .copied()
        .filter(|n| spec(n).is_none())
        .chain(
            PARAM_SPECS
                .iter()
                .map(|s| s.name)
                .filter(|n| *n != "use_sim_time" && !PARAM_NAMES.contains(n)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ParamStore {
        let mut o = ParamMap::new();
        o.insert("export_dir".into(), ParamValue::String("/x".into()));
        o.insert(
            "joint_names".into(),
            ParamValue::StringArray(vec!["a".into(), "b".into()]),
        );
        o.insert("control_rate_hz".into(), ParamValue::Int(50));
        o.insert("contol_rate_hz".into(), ParamValue::Int(50));
        let (s, unknown) = ParamStore::new(&o);
        assert_eq!(unknown, ["contol_rate_hz"]);
        s
    }

    fn set(name: &str, v: ParamValue) -> Vec<(String, Option<ParamValue>)> {
        vec![(name.to_string(), Some(v))]
    }

    #[test]
    fn every_parameter_has_one_row_and_its_default_the_rows_type() {
        assert_eq!(missing_rows(), Vec::<&str>::new());
        for (i, s) in PARAM_SPECS.iter().enumerate() {
            assert!(!s.description.is_empty(), "{}", s.name);
            assert!(
                PARAM_SPECS[i + 1..].iter().all(|o| o.name != s.name),
                "{} twice",
                s.name
            );
        }
        for (name, v) in super::super::params::defaults() {
            let s = spec(&name).unwrap_or_else(|| panic!("no row for {name}"));
            assert_eq!(coerce(s, &v).as_ref(), Ok(&v), "{name}");
            assert!(check_range(s, &v).is_ok(), "{name}");
        }
    }

    #[test]
    fn store_holds_defaults_overrides_and_coerces() {
        let s = store();
        assert_eq!(s.get("control_rate_hz"), Some(&ParamValue::Double(50.0)));
        assert_eq!(
            s.get("refill_mode"),
            Some(&ParamValue::String("async".into()))
        );
        assert_eq!(s.get("use_sim_time"), Some(&ParamValue::Bool(false)));
        assert!(s.params().is_ok());
        let (empty, _) = ParamStore::new(&ParamMap::new());
        assert_eq!(empty.get("export_dir"), None);
        assert!(empty
            .params()
            .unwrap_err()
            .to_string()
            .contains("`export_dir`"));
    }

    #[test]
    fn live_changes_are_validated_whole() {
        let s = store();
        let active = Phase::Configured("active");
        let ok = s
            .check(&set("max_observation_age_ms", ParamValue::Int(200)), active)
            .unwrap();
        assert_eq!(ok.values[0].1, ParamValue::Double(200.0));
        assert_eq!(ok.params.unwrap().max_observation_age_ms, 200.0);
        // Range from the row, then the rule of the validation at start.
        let e = s
            .check(
                &set("max_observation_age_ms", ParamValue::Double(-1.0)),
                active,
            )
            .unwrap_err();
        assert!(
            e.contains("`max_observation_age_ms`") && e.contains("outside"),
            "{e}"
        );
        let e = s
            .check(
                &set(
                    "max_joint_delta",
                    ParamValue::DoubleArray(vec![0.1, 0.2, 0.3]),
                ),
                active,
            )
            .unwrap_err();
        assert!(
            e.contains("`max_joint_delta`") && e.contains("one per joint"),
            "{e}"
        );
        let e = s
            .check(&set("n_action_steps", ParamValue::Double(2.0)), active)
            .unwrap_err();
        assert_eq!(
            e,
            "parameter `n_action_steps` has type integer, got a value of type double"
        );
        // Limits go together: one alone is refused, both at once accepted.
        let e = s
            .check(
                &set(
                    "joint_lower_limits",
                    ParamValue::DoubleArray(vec![-1.0, -1.0]),
                ),
                active,
            )
            .unwrap_err();
        assert!(e.contains("joint_upper_limits"), "{e}");
        let both = vec![
            (
                "joint_lower_limits".to_string(),
                Some(ParamValue::DoubleArray(vec![-1.0, -1.0])),
            ),
            (
                "joint_upper_limits".to_string(),
                Some(ParamValue::IntArray(vec![1, 1])),
            ),
        ];
        let ok = s.check(&both, active).unwrap();
        assert_eq!(ok.params.unwrap().joint_upper_limits, [1.0, 1.0]);
        // An empty list from the command line (typed bool array) clears a list.
        let ok = s
            .check(
                &set("max_joint_delta", ParamValue::BoolArray(vec![])),
                active,
            )
            .unwrap();
        assert_eq!(ok.values[0].1, ParamValue::DoubleArray(vec![]));
    }

    #[test]
    fn read_only_rules_follow_the_state() {
        let s = store();
        let e = s
            .check(
                &set("control_rate_hz", ParamValue::Double(60.0)),
                Phase::Configured("active"),
            )
            .unwrap_err();
        assert!(
            e.contains("read-only while the node is configured (state `active`)"),
            "{e}"
        );
        let ok = s
            .check(
                &set("control_rate_hz", ParamValue::Double(60.0)),
                Phase::Unconfigured,
            )
            .unwrap();
        assert_eq!(ok.params.unwrap().control_rate_hz, 60.0);
        let e = s
            .check(
                &set("use_sim_time", ParamValue::Bool(true)),
                Phase::Unconfigured,
            )
            .unwrap_err();
        assert!(e.contains("read-only: set it when the node starts"), "{e}");
        let e = s
            .check(
                &set("n_action_steps", ParamValue::Int(3)),
                Phase::Transition("configuring"),
            )
            .unwrap_err();
        assert!(e.contains("configuring"), "{e}");
        let e = s
            .check(&[("export_dir".to_string(), None)], Phase::Unconfigured)
            .unwrap_err();
        assert!(e.contains("cannot be unset"), "{e}");
        let e = s
            .check(
                &set("exportdir", ParamValue::Bool(true)),
                Phase::Unconfigured,
            )
            .unwrap_err();
        assert_eq!(e, "policy_node has no parameter `exportdir`");
    }

    #[test]
    fn unconfigured_accepts_a_value_while_another_parameter_is_missing() {
        let (mut s, _) = ParamStore::new(&ParamMap::new());
        // export_dir is missing: setting joint_names is accepted with a note...
        let ok = s
            .check(
                &set("joint_names", ParamValue::StringArray(vec!["a".into()])),
                Phase::Unconfigured,
            )
            .unwrap();
        assert!(ok.params.is_none());
        assert!(ok.note.as_deref().unwrap().contains("`export_dir`"));
        s.commit(&ok);
        // ...a value that breaks its own rule is refused...
        let e = s
            .check(
                &set("export_dir", ParamValue::String(" ".into())),
                Phase::Unconfigured,
            )
            .unwrap_err();
        assert!(e.contains("`export_dir`"), "{e}");
        // ...and the last missing piece makes the whole configuration valid.
        let ok = s
            .check(
                &set("export_dir", ParamValue::String("/y".into())),
                Phase::Unconfigured,
            )
            .unwrap();
        assert!(ok.note.is_none());
        s.commit(&ok);
        assert_eq!(
            s.params().unwrap().export_dir,
            std::path::PathBuf::from("/y")
        );
    }
}
