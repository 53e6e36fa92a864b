//! Node parameter case files (`tests/cases/params/`): every `valid-*` validates, every
//! `invalid-*` is rejected with a message naming the parameter in its `error-param` line.
//! ROS-free: the same validation runs in the node and in `policyctl replay`.

use std::path::PathBuf;

use policy_node::control::params::{read_params_file, CommandType, NodeParams, RefillSetting};
use policy_node::policy::ChunkBlend;

fn cases() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cases/params");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn validate(path: &std::path::Path) -> Result<NodeParams, String> {
    let map = read_params_file(path, "policy_node").map_err(|e| e.to_string())?;
    NodeParams::from_map(&map)
        .map(|(p, _)| p)
        .map_err(|e| e.to_string())
}

#[test]
fn param_case_files() {
    let (mut valid, mut invalid) = (0, 0);
    for path in cases() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("valid-") {
            valid += 1;
            validate(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.starts_with("invalid-") {
            invalid += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let param = text
                .lines()
                .find_map(|l| l.strip_prefix("# error-param:"))
                .unwrap_or_else(|| panic!("{name}: no error-param line"))
                .trim()
                .to_string();
            match validate(&path) {
                Ok(_) => panic!("{name}: accepted, expected an error naming `{param}`"),
                Err(e) => assert!(
                    e.contains(&param),
                    "{name}: error does not name `{param}`: {e}"
                ),
            }
        }
    }
    assert!(
        valid >= 2 && invalid >= 15,
        "{valid} valid, {invalid} invalid cases"
    );
}

#[test]
fn defaults_and_full_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cases/params");
    let p = validate(&dir.join("valid-minimal.yaml")).unwrap();
    assert_eq!(p.control_rate_hz, 30.0);
    assert_eq!(p.camera_topics, ["image_raw"]);
    assert_eq!(p.joint_state_topic, "joint_states");
    assert_eq!(p.command_topic, "joint_commands");
    assert_eq!(p.command_type, CommandType::Float64MultiArray);
    assert_eq!(p.max_observation_age_ms, 500.0);
    assert_eq!(p.n_action_steps, 0);
    assert!(p.enable_on_start);
    assert_eq!(p.refill_ahead_steps, None);
    assert_eq!(p.refill_mode, RefillSetting::Async);
    assert_eq!(p.chunk_blend, ChunkBlend::None);
    assert_eq!(p.chunk_blend_steps, 5);
    assert_eq!(p.low_pass_alpha, 1.0);

    let f = validate(&dir.join("valid-full.yaml")).unwrap();
    assert_eq!(
        f.control_rate_hz, 50.0,
        "an integer is accepted for a double"
    );
    assert_eq!(f.camera_inputs, ["images.top", "images.wrist"]);
    assert!(NodeParams::is_compressed_topic(&f.camera_topics[1]));
    assert_eq!(f.command_type, CommandType::JointTrajectory);
    assert_eq!(f.refill_ahead_steps, Some(4));
    assert_eq!(f.max_joint_delta, [0.05]);
    assert!(!f.enable_on_start);

    // The remote backend's settings; an unquoted version is read as its text.
    assert_eq!(p.remote_url, "");
    assert_eq!(p.remote_timeout_ms, 1000.0);
    let r = validate(&dir.join("valid-remote.yaml")).unwrap();
    assert_eq!(r.backend, "remote");
    assert_eq!(r.remote_url, "https://gpu-host:8001");
    assert_eq!(r.remote_model, "act");
    assert_eq!(r.remote_model_version, "2");
    assert_eq!(r.remote_timeout_ms, 250.0);
    assert_eq!(r.remote_ca_file, "/etc/policy_node/ca.pem");
    // `ensemble` takes temporal_ensemble_coeff (0.01 in the file) as its coefficient.
    assert_eq!(f.chunk_blend, ChunkBlend::Ensemble { coeff: 0.01 });
    assert_eq!(f.chunk_blend_steps, 8);
    assert_eq!(f.low_pass_alpha, 0.6);
}

#[test]
fn shipped_config_is_valid_once_required_values_are_set() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/policy_node.yaml");
    let mut map = read_params_file(&path, "policy_node").unwrap();
    map.insert(
        "export_dir".into(),
        policy_node::control::params::ParamValue::String("/x".into()),
    );
    let (p, unknown) = NodeParams::from_map(&map).unwrap();
    assert!(
        unknown.is_empty(),
        "unknown parameters in config/policy_node.yaml: {unknown:?}"
    );
    assert!(!p.joint_names.is_empty());
}
