//! I/O map case files (`tests/cases/io_map/`): every `valid-*` parses and passes preflight
//! against a bimanual (ALOHA-like) policy; every `invalid-*` is refused with an error whose
//! YAML path is its `# error-path:` line and whose rule contains its `# error-rule:` line.
//! Also the example maps in `config/`. ROS-free: the node and `policyctl replay` run the same
//! checks at configure.

use std::path::{Path, PathBuf};

use policy_node::iomap::{IoMap, IoMapError, PolicyInput, PolicyPorts, RobotOrder};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const SIDE: [&str; 7] = [
    "waist",
    "shoulder",
    "elbow",
    "forearm_roll",
    "wrist_angle",
    "wrist_rotate",
    "gripper",
];

fn robot(index: usize, side: &str) -> RobotOrder {
    let joints: Vec<String> = SIDE.iter().map(|j| format!("{side}_{j}")).collect();
    RobotOrder {
        index,
        name: side.into(),
        state: joints.clone(),
        action: joints,
    }
}

/// 14 joints in two robots, a 3-value environment state, one camera, 14 actions.
fn aloha() -> PolicyPorts {
    let input = |name: &str, width: Option<usize>, image: bool| PolicyInput {
        name: name.into(),
        width,
        image,
        required: true,
    };
    PolicyPorts {
        inputs: vec![
            input("observation.state", Some(14), false),
            input("observation.environment_state", Some(3), false),
            input("observation.images.top", None, true),
        ],
        action_width: Some(14),
        robots: vec![robot(0, "left"), robot(1, "right")],
        package: "manifest.json".into(),
    }
}

fn check(path: &Path) -> Result<IoMap, IoMapError> {
    let map = IoMap::load(path)?;
    map.preflight(&aloha())?;
    Ok(map)
}

#[test]
fn io_map_case_files() {
    let dir = root().join("tests/cases/io_map");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    let (mut valid, mut invalid) = (0, 0);
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("valid-") {
            valid += 1;
            check(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.starts_with("invalid-") {
            invalid += 1;
            let text = std::fs::read_to_string(path).unwrap();
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or_else(|| panic!("{name}: no `{key}` line"))
                    .trim()
                    .to_string()
            };
            let (want_path, want_rule) = (field("# error-path:"), field("# error-rule:"));
            match check(path) {
                Ok(_) => panic!("{name}: accepted, expected `{want_path}`: {want_rule}"),
                Err(e) => {
                    assert_eq!(e.path, want_path, "{name}: wrong YAML path in: {e}");
                    assert!(
                        e.rule.contains(&want_rule),
                        "{name}: rule not `{want_rule}`: {e}"
                    );
                    let shown = e.to_string();
                    assert!(
                        shown.contains(&name)
                            && (want_path.is_empty() || shown.contains(&want_path)),
                        "{name}: the message names neither the file nor the path: {shown}"
                    );
                }
            }
        }
    }
    assert!(
        valid >= 2 && invalid >= 25,
        "{valid} valid, {invalid} invalid cases"
    );
}

/// The example maps of the README, as shipped in `config/`: each parses, and its selections
/// and channels are what the README says.
#[test]
fn config_example_maps_load() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("config")).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("io_map_") && name.ends_with(".yaml")) {
            continue;
        }
        n += 1;
        let map = IoMap::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!map.outputs.is_empty(), "{name}");
    }
    assert!(
        n >= 3,
        "expected the three README example maps in config/, found {n}"
    );
}

/// The README shows each example map of `config/` exactly as the file is.
#[test]
fn readme_shows_the_config_example_maps_as_they_are() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for name in [
        "io_map_arm_gripper.yaml",
        "io_map_aloha.yaml",
        "io_map_mobile.yaml",
        "io_map_sim_aloha.yaml",
    ] {
        let text = std::fs::read_to_string(root().join("config").join(name)).unwrap();
        let block = format!("```yaml\n{}\n```", text.trim_end());
        assert!(
            readme.contains(&block),
            "README.md does not show config/{name} as it is"
        );
    }
}
