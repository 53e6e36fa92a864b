//! ROS parameters <-> the ROS-free [`ParamMap`] of [`crate::control::params`], each
//! parameter's description, and the command line outside `--ros-args`.

use std::path::PathBuf;

use indexmap::IndexMap;
use r2r::{Parameter, ParameterValue};

use crate::control::params::{defaults, PARAM_NAMES};
use crate::control::{ParamMap, ParamValue};

/// One line per parameter: what `describe_parameters` answers and `--help` prints. The same
/// text, longer, is in `config/policy_node.yaml`.
pub fn description(name: &str) -> &'static str {
    match name {
        "export_dir" => "export directory of the policy (model + metadata.yaml); required",
        "backend" => {
            "auto (metadata, else file extension), openvino, onnx, torchscript, or remote (a \
             KServe v2 inference server: remote_url)"
        }
        "device" => {
            "auto (first available in priority order) or an explicit device (cpu, cuda, GPU, ...)"
        }
        "control_rate_hz" => {
            "control timer rate in Hz (ROS time: follows /clock with use_sim_time)"
        }
        "joint_names" => "joints of the state vector and of the commands, in order; required",
        "joint_state_topic" => "sensor_msgs/JointState input",
        "camera_topics" => {
            "sensor_msgs/Image inputs; a topic ending in /compressed is sensor_msgs/CompressedImage"
        }
        "camera_inputs" => {
            "model image input fed by each camera topic; [] = the model's image inputs in order"
        }
        "command_topic" => "where commands are published",
        "command_type" => "float64_multi_array, joint_trajectory or joint_state",
        "max_observation_age_ms" => "inputs older than this: no command on that tick",
        "n_action_steps" => {
            "actions executed per chunk; 0 = the export's value (else the chunk size)"
        }
        "temporal_ensemble_coeff" => "ACT temporal ensembling coefficient; 0 = off",
        "enable_on_start" => "command output gate at start (~/enable changes it)",
        "joint_lower_limits" => "per-joint lower position limits; [] = none",
        "joint_upper_limits" => "per-joint upper position limits; [] = none",
        "max_joint_delta" => {
            "largest change of a command per tick (one value or one per joint); [] = none"
        }
        "refill_ahead_steps" => {
            "queued actions left when the next chunk is requested; -1 = automatic, following the inference latency"
        }
        "refill_mode" => {
            "async (next chunk on a worker thread), sync (on the tick that needs it) or rtc (real-time chunking)"
        }
        "trajectory_full_chunk" => "joint_trajectory: publish the rest of the chunk, not one point",
        "threads" => "CPU threads for the runtime; 0 = the runtime's default",
        "openvino_cache_dir" => "OpenVINO compiled-model cache directory; empty = none",
        "onnx_optimization" => "ONNX Runtime graph optimisation: disable, basic, extended or all",
        "warmup" => "run inference at start-up (first-call latency; sets refill_ahead_steps -1)",
        "remote_url" => {
            "backend remote: the inference server, http://host:port (gRPC) or https://host:port (TLS)"
        }
        "remote_model" => "backend remote: the model's name on the server; empty = the policy's name",
        "remote_model_version" => "backend remote: the model version; empty = the server's choice",
        "remote_timeout_ms" => "backend remote: deadline of each inference call in milliseconds",
        "remote_ca_file" => {
            "backend remote with https://: PEM file of the certificate authority; empty = system roots"
        }
        "chunk_blend" => "chunk hand-over: none, linear, ensemble, weighted_average, latest_only or average",
        "chunk_blend_steps" => "ticks of the linear crossfade (chunk_blend linear)",
        "low_pass_alpha" => "output low-pass filter y = a x + (1 - a) y_prev, a in (0, 1]; 1 = off",
        "use_sim_time" => "use /clock (rosgraph_msgs/Clock) as ROS time",
        "rtc_execution_horizon" => "refill_mode rtc: steps of each chunk guided towards the previous plan (<= chunk / 2)",
        "rtc_max_guidance_weight" => "refill_mode rtc: strength of that guidance (>= 0)",
        "task" => "language instruction of a VLA policy (also the ~/task topic); applies from the next chunk",
        "tokenizer_dir" => "directory with tokenizer.json, or a Hugging Face cache root; empty = package, cache",
        _ => "",
    }
}

/// An r2r parameter value as a [`ParamValue`]; `None` for "not set" (an override without a
/// value, e.g. an empty YAML list, which then takes its default).
pub fn from_ros(value: &ParameterValue) -> Option<ParamValue> {
    Some(match value {
        ParameterValue::NotSet => return None,
        ParameterValue::Bool(v) => ParamValue::Bool(*v),
        ParameterValue::Integer(v) => ParamValue::Int(*v),
        ParameterValue::Double(v) => ParamValue::Double(*v),
        ParameterValue::String(v) => ParamValue::String(v.clone()),
        ParameterValue::BoolArray(v) => ParamValue::BoolArray(v.clone()),
        ParameterValue::ByteArray(v) => {
            ParamValue::IntArray(v.iter().map(|b| i64::from(*b)).collect())
        }
        ParameterValue::IntegerArray(v) => ParamValue::IntArray(v.clone()),
        ParameterValue::DoubleArray(v) => ParamValue::DoubleArray(v.clone()),
        ParameterValue::StringArray(v) => ParamValue::StringArray(v.clone()),
    })
}

/// A [`ParamValue`] as an r2r parameter value.
pub fn to_ros(value: &ParamValue) -> ParameterValue {
    match value {
        ParamValue::Bool(v) => ParameterValue::Bool(*v),
        ParamValue::Int(v) => ParameterValue::Integer(*v),
        ParamValue::Double(v) => ParameterValue::Double(*v),
        ParamValue::String(v) => ParameterValue::String(v.clone()),
        ParamValue::BoolArray(v) => ParameterValue::BoolArray(v.clone()),
        ParamValue::IntArray(v) => ParameterValue::IntegerArray(v.clone()),
        ParamValue::DoubleArray(v) => ParameterValue::DoubleArray(v.clone()),
        ParamValue::StringArray(v) => ParameterValue::StringArray(v.clone()),
    }
}

/// The overrides the node received (`--ros-args -p`, `--params-file`) as a [`ParamMap`].
/// `use_sim_time` is left out (r2r's time source handles it).
pub fn overrides(params: &IndexMap<String, Parameter>) -> ParamMap {
    params
        .iter()
        .filter(|(name, _)| name.as_str() != "use_sim_time")
        .filter_map(|(name, p)| from_ros(&p.value).map(|v| (name.clone(), v)))
        .collect()
}

/// Declares every parameter of [`PARAM_NAMES`] (and `use_sim_time`) on the node with its
/// effective value (the override, else the default) and description, so `list_parameters`
/// / `get_parameters` show the whole configuration.
pub fn declare_all(params: &mut IndexMap<String, Parameter>, effective: &ParamMap) {
    let defaults = defaults();
    for name in PARAM_NAMES.iter().copied().chain(["use_sim_time"]) {
        let value = match effective.get(name).or_else(|| defaults.get(name)) {
            Some(v) => to_ros(v),
            None if name == "use_sim_time" => match params.get(name) {
                Some(p) => p.value.clone(),
                None => ParameterValue::Bool(false),
            },
            None => ParameterValue::NotSet,
        };
        let entry = params
            .entry(name.to_string())
            .or_insert_with(Parameter::empty);
        if !matches!(entry.value, ParameterValue::NotSet) && name == "use_sim_time" {
            // keep the override as given
        } else {
            entry.value = value;
        }
        entry.description = description(name);
    }
}

/// The node's side of the parameter services: parameters are read once at start (the
/// control loop, subscriptions and timer are built from them), so a run-time
/// `set_parameters` is refused with a reason instead of being accepted and ignored.
/// `get_parameters` / `list_parameters` / `describe_parameters` answer from the values
/// [`declare_all`] put on the node.
pub struct ReadOnlyParams;

impl ReadOnlyParams {
    fn refuse(name: &str) -> r2r::Error {
        r2r::Error::ParameterValueConv {
            name: name.to_string(),
            msg: "policy_node reads its parameters at start only; restart it with the new value"
                .into(),
        }
    }
}

impl r2r::RosParams for ReadOnlyParams {
    fn register_parameters(
        &mut self,
        _prefix: &str,
        _param: Option<Parameter>,
        _params: &mut IndexMap<String, Parameter>,
    ) -> r2r::Result<()> {
        Ok(())
    }
    fn get_parameter(&mut self, name: &str) -> r2r::Result<ParameterValue> {
        // Not held here: the services fall back to the node's parameter map.
        Err(r2r::Error::InvalidParameterName {
            name: name.to_string(),
        })
    }
    fn set_parameter(&mut self, name: &str, _value: &ParameterValue) -> r2r::Result<()> {
        Err(Self::refuse(name))
    }
    fn check_parameter(&self, name: &str, _value: &ParameterValue) -> r2r::Result<()> {
        Err(Self::refuse(name))
    }
}

/// The command line outside `--ros-args ... [--]` (which rcl reads itself).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cli {
    /// `-h` / `--help`.
    pub help: bool,
    /// `-V` / `--version`.
    pub version: bool,
    /// Every `--params-file` among the ROS arguments (checked before rcl sees them: rcl
    /// aborts on a missing file).
    pub params_files: Vec<PathBuf>,
    /// `--log-level LEVEL` among the ROS arguments (the node-wide form), so that `log`
    /// records at that level reach ROS logging.
    pub log_level: Option<String>,
}

impl Cli {
    /// Parses `args` (without the program name).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, String> {
        let mut cli = Cli::default();
        let mut in_ros = false;
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if in_ros {
                match a.as_str() {
                    "--" => in_ros = false,
                    "--params-file" => match it.next() {
                        Some(f) => cli.params_files.push(PathBuf::from(f)),
                        None => return Err("--params-file needs a file name".into()),
                    },
                    "--log-level" => {
                        if let Some(level) = it.next() {
                            if !level.contains(":=") {
                                cli.log_level = Some(level.to_ascii_lowercase());
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match a.as_str() {
                "--ros-args" => in_ros = true,
                "-h" | "--help" => cli.help = true,
                "-V" | "--version" => cli.version = true,
                other => {
                    return Err(format!(
                        "unexpected argument `{other}`: parameters go after --ros-args, e.g. \
                         `policy_node --ros-args -p export_dir:=DIR -p \"joint_names:=[a, b]\"` \
                         (see --help)"
                    ))
                }
            }
        }
        Ok(cli)
    }

    /// The `--help` text: usage and every parameter with its default and description.
    pub fn help_text() -> String {
        let defaults = defaults();
        let mut s = String::from(
            "policy_node: runs an action-chunking policy export as a ROS 2 node\n\n\
             usage: policy_node --ros-args -p export_dir:=DIR -p \"joint_names:=[j1, j2]\" [-p NAME:=VALUE ...]\n\
             \x20      policy_node --ros-args --params-file config/policy_node.yaml\n\n\
             services: ~/reset (std_srvs/srv/Trigger), ~/enable (std_srvs/srv/SetBool); status on /diagnostics\n\n\
             parameters:\n",
        );
        for name in PARAM_NAMES.iter().copied().chain(["use_sim_time"]) {
            let default = match defaults.get(name) {
                Some(v) => format_value(v),
                None if name == "use_sim_time" => "false".into(),
                None => "(required)".into(),
            };
            s.push_str(&format!(
                "  {name:<24} {default:<22} {}\n",
                description(name)
            ));
        }
        s
    }
}

fn format_value(v: &ParamValue) -> String {
    fn list<T: std::fmt::Display>(v: &[T]) -> String {
        format!(
            "[{}]",
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
    match v {
        ParamValue::Bool(b) => b.to_string(),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Double(d) => format!("{d:?}"),
        ParamValue::String(s) if s.is_empty() => "\"\"".into(),
        ParamValue::String(s) => s.clone(),
        ParamValue::BoolArray(v) => list(v),
        ParamValue::IntArray(v) => list(v),
        ParamValue::DoubleArray(v) => list(v),
        ParamValue::StringArray(v) => list(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::NodeParams;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parameters_are_read_only_at_run_time() {
        use r2r::RosParams;
        let mut p = ReadOnlyParams;
        let e = p
            .set_parameter("control_rate_hz", &ParameterValue::Double(50.0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("control_rate_hz") && e.contains("restart"),
            "{e}"
        );
        assert!(p.check_parameter("x", &ParameterValue::Bool(true)).is_err());
        assert!(p.get_parameter("export_dir").is_err());
    }

    #[test]
    fn every_parameter_has_a_description() {
        for name in PARAM_NAMES {
            assert!(!description(name).is_empty(), "{name}");
        }
    }

    #[test]
    fn values_convert_both_ways() {
        let values = [
            ParamValue::Bool(true),
            ParamValue::Int(-3),
            ParamValue::Double(2.5),
            ParamValue::String("x".into()),
            ParamValue::BoolArray(vec![true, false]),
            ParamValue::IntArray(vec![1, 2]),
            ParamValue::DoubleArray(vec![0.5]),
            ParamValue::StringArray(vec!["a".into()]),
        ];
        for v in values {
            assert_eq!(from_ros(&to_ros(&v)), Some(v));
        }
        assert_eq!(from_ros(&ParameterValue::NotSet), None);
        assert_eq!(
            from_ros(&ParameterValue::ByteArray(vec![1, 255])),
            Some(ParamValue::IntArray(vec![1, 255]))
        );
    }

    #[test]
    fn overrides_then_validation_names_the_parameter() {
        let mut params = IndexMap::new();
        params.insert(
            "export_dir".to_string(),
            Parameter::new(ParameterValue::String("/x".into())),
        );
        params.insert(
            "joint_names".to_string(),
            Parameter::new(ParameterValue::StringArray(vec!["a".into()])),
        );
        params.insert(
            "use_sim_time".to_string(),
            Parameter::new(ParameterValue::Bool(true)),
        );
        params.insert(
            "control_rate_hz".to_string(),
            Parameter::new(ParameterValue::Integer(50)),
        );
        params.insert(
            "camera_inputs".to_string(),
            Parameter::new(ParameterValue::NotSet),
        );
        params.insert(
            "contol_rate_hz".to_string(),
            Parameter::new(ParameterValue::Double(1.0)),
        );
        let map = overrides(&params);
        assert!(!map.contains_key("use_sim_time"));
        assert!(!map.contains_key("camera_inputs"));
        let (p, unknown) = NodeParams::from_map(&map).unwrap();
        assert_eq!(p.control_rate_hz, 50.0);
        assert_eq!(unknown, vec!["contol_rate_hz".to_string()]);

        params.insert(
            "control_rate_hz".to_string(),
            Parameter::new(ParameterValue::Double(-1.0)),
        );
        let e = NodeParams::from_map(&overrides(&params))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`control_rate_hz`"), "{e}");
    }

    #[test]
    fn declare_all_fills_defaults_and_keeps_overrides() {
        let mut params = IndexMap::new();
        params.insert(
            "use_sim_time".to_string(),
            Parameter::new(ParameterValue::Bool(true)),
        );
        params.insert(
            "export_dir".to_string(),
            Parameter::new(ParameterValue::String("/x".into())),
        );
        let effective = overrides(&params);
        declare_all(&mut params, &effective);
        assert_eq!(params["use_sim_time"].value, ParameterValue::Bool(true));
        assert_eq!(
            params["export_dir"].value,
            ParameterValue::String("/x".into())
        );
        assert_eq!(
            params["control_rate_hz"].value,
            ParameterValue::Double(30.0)
        );
        assert_eq!(params["joint_names"].value, ParameterValue::NotSet);
        assert_eq!(
            params["camera_topics"].value,
            ParameterValue::StringArray(vec!["image_raw".into()])
        );
        for name in PARAM_NAMES {
            assert!(params.contains_key(*name), "{name}");
            assert!(!params[*name].description.is_empty());
        }
        let mut fresh = IndexMap::new();
        declare_all(&mut fresh, &ParamMap::new());
        assert_eq!(fresh["use_sim_time"].value, ParameterValue::Bool(false));
    }

    /// `config/policy_node.yaml` sets every parameter, each after a comment, and is valid
    /// once `export_dir` is given.
    #[test]
    fn shipped_config_has_every_parameter_with_a_comment() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy_node.yaml");
        let mut map = crate::control::params::read_params_file(&path, "policy_node").unwrap();
        for name in PARAM_NAMES.iter().copied().chain(["use_sim_time"]) {
            assert!(
                map.contains_key(name),
                "config/policy_node.yaml lacks `{name}`"
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let is_param = line.starts_with("    ") && !t.starts_with('#') && t.contains(':');
            if is_param {
                // The comment may cover a pair (lower / upper limits): look back over
                // parameter lines to the nearest comment.
                let commented = lines[..i]
                    .iter()
                    .rev()
                    .map(|l| l.trim_start())
                    .find(|l| !l.contains(':') || l.starts_with('#'));
                assert!(
                    commented.is_some_and(|l| l.starts_with('#')),
                    "no comment above `{t}`"
                );
            }
        }
        map.insert(
            "export_dir".into(),
            ParamValue::String("/some/export".into()),
        );
        let (p, unknown) = NodeParams::from_map(&map).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(p.joint_names.len(), 6);
    }

    #[test]
    fn command_line() {
        assert_eq!(Cli::parse(args(&[])).unwrap(), Cli::default());
        let c = Cli::parse(args(&[
            "--ros-args",
            "-p",
            "a:=1",
            "--params-file",
            "/p.yaml",
            "-r",
            "x:=y",
        ]))
        .unwrap();
        assert_eq!(c.params_files, vec![PathBuf::from("/p.yaml")]);
        assert_eq!(c.log_level, None);
        let c = Cli::parse(args(&[
            "--ros-args",
            "--log-level",
            "DEBUG",
            "--log-level",
            "rcl:=warn",
        ]))
        .unwrap();
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert!(!c.help);
        let c = Cli::parse(args(&["--help"])).unwrap();
        assert!(c.help);
        let c = Cli::parse(args(&["--ros-args", "--", "-V"])).unwrap();
        assert!(c.version);
        let e = Cli::parse(args(&["export_dir:=x"])).unwrap_err();
        assert!(e.contains("--ros-args"), "{e}");
        assert!(Cli::parse(args(&["--ros-args", "--params-file"])).is_err());
        let help = Cli::help_text();
        for name in PARAM_NAMES {
            assert!(help.contains(name), "{name}");
        }
        assert!(help.contains("(required)"));
    }
}
