//! ROS parameters given at start <-> the ROS-free [`ParamMap`] of
//! [`crate::control::params`], each parameter's description, and the command line outside
//! `--ros-args`. The parameter services are in [`super::param_services`].

use std::path::PathBuf;

use indexmap::IndexMap;
use r2r::{Parameter, ParameterValue};

use crate::control::param_specs::{spec, PARAM_SPECS};
use crate::control::params::defaults;
use crate::control::{ParamMap, ParamValue};

/// One line per parameter (its row in [`PARAM_SPECS`]): what `describe_parameters` answers
/// and `--help` prints. The same text, longer, is in `config/policy_node.yaml`.
pub fn description(name: &str) -> &'static str {
    spec(name).map_or("", |s| s.description)
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

/// The overrides the node received (`--ros-args -p`, `--params-file`) as a [`ParamMap`].
pub fn overrides(params: &IndexMap<String, Parameter>) -> ParamMap {
    params
        .iter()
        .filter_map(|(name, p)| from_ros(&p.value).map(|v| (name.clone(), v)))
        .collect()
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
             a managed (lifecycle) node: ~/change_state, ~/get_state, ~/get_available_states,\n\
             \x20 ~/get_available_transitions, ~/get_transition_graph (lifecycle_msgs), ~/transition_event;\n\
             \x20 autostart (default true) configures and activates it at start\n\
             services: ~/reset (std_srvs/srv/Trigger), ~/enable (std_srvs/srv/SetBool), in the active state\n\
             topics: commands on command_topic, the plan on ~/action_chunk (trajectory_msgs/JointTrajectory),\n\
             \x20 status on /diagnostics\n\
             parameters (live: settable any time; configure: settable when unconfigured; startup: at start):\n",
        );
        for spec in PARAM_SPECS {
            let name = spec.name;
            let default = match defaults.get(name) {
                Some(v) => format_value(v),
                None if name == "use_sim_time" => "false".into(),
                None => "(required)".into(),
            };
            let change = match spec.change {
                crate::control::param_specs::Change::Live => "live",
                crate::control::param_specs::Change::Configure => "configure",
                crate::control::param_specs::Change::Startup => "startup",
            };
            s.push_str(&format!(
                "  {name:<24} {default:<22} {change:<10} {}\n",
                spec.description
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
    use crate::control::params::PARAM_NAMES;
    use crate::control::NodeParams;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_parameter_has_a_description() {
        for name in PARAM_NAMES {
            assert!(!description(name).is_empty(), "{name}");
        }
    }

    #[test]
    fn values_convert_from_ros() {
        let values = [
            (ParameterValue::Bool(true), ParamValue::Bool(true)),
            (ParameterValue::Integer(-3), ParamValue::Int(-3)),
            (ParameterValue::Double(2.5), ParamValue::Double(2.5)),
            (
                ParameterValue::String("x".into()),
                ParamValue::String("x".into()),
            ),
            (
                ParameterValue::BoolArray(vec![true, false]),
                ParamValue::BoolArray(vec![true, false]),
            ),
            (
                ParameterValue::IntegerArray(vec![1, 2]),
                ParamValue::IntArray(vec![1, 2]),
            ),
            (
                ParameterValue::DoubleArray(vec![0.5]),
                ParamValue::DoubleArray(vec![0.5]),
            ),
            (
                ParameterValue::StringArray(vec!["a".into()]),
                ParamValue::StringArray(vec!["a".into()]),
            ),
        ];
        for (ros, v) in values {
            assert_eq!(from_ros(&ros), Some(v));
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
        assert_eq!(map.get("use_sim_time"), Some(&ParamValue::Bool(true)));
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
