//! The closed loop: policy_node drives the simulated ALOHA (gym-aloha's bimanual transfer
//! cube in MuJoCo, `tools/sim/bridge.py`) with the state-based package `tools/sim/policy`,
//! and does what physicalai's own runtime does in a plain Python loop; and the bridge's own
//! handling of bad commands.
#![cfg(all(feature = "ros", feature = "onnx"))]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::ros::{World, NODE};
use common::{python, root};
use serde_json::Value;

/// Joint trajectories of the node's lockstep episodes and the reference's agree within this
/// (rad; grippers: normalised units) until the first contact with the cube. Both run the same
/// ONNX graph on the same observations; what differs is the runtime build (ONNX Runtime in
/// Rust and in Python) and the f64 -> f32 -> f64 trips of the messages: float rounding, which
/// the physics carries but does not amplify before contact. After contact, small differences
/// may grow (contacts are discontinuous), so only the outcome is compared there.
const JOINT_TOLERANCE: f64 = 1e-3;

/// The package the evaluation runs (its ONNX manifest).
fn sim_package() -> PathBuf {
    let dir = root().join("tools/sim/policy");
    if dir.join("manifest.json").exists() {
        dir
    } else {
        dir.join("onnx")
    }
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns stdout.
fn run(mut cmd: std::process::Command, what: &str, timeout: Duration) -> String {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("{what}: no result in {timeout:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

fn result_line(stdout: &str, what: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("{what} printed no RESULT:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: RESULT is not JSON: {e}"))
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Three lockstep episodes through the node (sim time, synchronous refill, the bridge
/// stepping on each tick's four commands) against the reference (the same package run by
/// physicalai 0.3.0's runtime in a plain Python loop), episode by episode on cube seeds 0..3:
/// the same outcome, and joint trajectories and actions within [`JOINT_TOLERANCE`] until the
/// first contact (after it, the step of success may differ by a step or so).
#[test]
fn three_lockstep_episodes_through_the_node_equal_the_reference() {
    let world = World::new(150, 20);
    let dir = tempfile::tempdir().unwrap();
    let pkg = sim_package();
    let (ref_json, ref_npz) = (dir.path().join("ref.json"), dir.path().join("ref.npz"));
    let (node_json, node_npz) = (dir.path().join("node.json"), dir.path().join("node.npz"));
    let common_args = |json: &Path, npz: &Path| -> Vec<String> {
        vec![
            "--package".into(),
            pkg.display().to_string(),
            "--episodes".into(),
            "3".into(),
            "--seed".into(),
            "0".into(),
            "--json".into(),
            json.display().to_string(),
            "--trajectories".into(),
            npz.display().to_string(),
        ]
    };
    let mut reference = world.command(python());
    reference
        .arg(root().join("tools/sim/reference_eval.py"))
        .args(common_args(&ref_json, &ref_npz))
        .env("MUJOCO_GL", "egl");
    run(
        reference,
        "the reference (reference_eval.py)",
        Duration::from_secs(300),
    );

    let mut through_node = world.command(python());
    through_node
        .arg(root().join("tools/sim/node_eval.py"))
        .args(["--mode", "lockstep", "--node-bin", NODE])
        .args(common_args(&node_json, &node_npz))
        .env("MUJOCO_GL", "egl");
    run(
        through_node,
        "lockstep through the node (node_eval.py)",
        Duration::from_secs(600),
    );

    let node = read_json(&node_json);
    let reference = read_json(&ref_json);
    assert_eq!(node["mode"], "lockstep");
    assert_eq!(reference["mode"], "reference");
    // Every step of every episode applied the command of its own tick: none held, none
    // refused, no channel ahead of the others; the node published one command per step.
    assert_eq!(node["bridge"]["held_steps"], 0, "{node}");
    assert_eq!(node["bridge"]["desync"], 0, "{node}");
    for channel in node["bridge"]["refused"].as_object().unwrap().values() {
        assert!(channel.as_object().unwrap().is_empty(), "{node}");
    }
    for (e, r) in node["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(node["node_results"].as_array().unwrap())
    {
        assert_eq!(r["node_reason"], "ended", "{node}");
        assert_eq!(r["node_steps"], e["steps"], "one command per step: {node}");
    }
    assert_eq!(node["node"]["errors"], 0, "{node}");
    assert_eq!(node["node"]["stale"], 0, "{node}");

    let episodes = common::run_peer(
        "sim_compare.py",
        &[&ref_json, &ref_npz, &node_json, &node_npz],
    );
    let episodes = episodes.as_array().unwrap();
    assert_eq!(episodes.len(), 3, "{episodes:?}");
    for e in episodes {
        eprintln!("episode {e}");
        assert_eq!(e["success"][0], e["success"][1], "the same outcome: {e}");
        assert!(
            e["first_contact"].as_u64().unwrap() > 20,
            "a contact this early means the arms never moved to the cube: {e}"
        );
        let q = e["max_qpos_diff"].as_f64().unwrap();
        let a = e["max_action_diff"].as_f64().unwrap();
        assert!(
            q <= JOINT_TOLERANCE && a <= JOINT_TOLERANCE,
            "trajectories differ: {e}"
        );
    }
}

/// The bridge's own bad-input handling: commands of the wrong width, with non-finite values,
/// the other arm's joint names or no points are refused whole, counted by channel and
/// reason, and never applied; when the publisher stops, the bridge holds the last good
/// command and reports the gap.
#[test]
fn the_bridge_refuses_bad_commands_and_holds_the_last_good_one() {
    let world = World::new(170, 20);
    let mut cmd = world.command(python());
    cmd.arg(root().join("tests/peers/sim_bridge_check.py"))
        .env("MUJOCO_GL", "egl");
    let r = result_line(
        &run(cmd, "sim_bridge_check.py", Duration::from_secs(120)),
        "sim_bridge_check.py",
    );
    for c in ["left_arm", "left_gripper", "right_arm", "right_gripper"] {
        assert_eq!(r["accepted"][c], 1, "only the good command is taken: {r}");
    }
    let refused = |c: &str| -> u64 {
        r["refused"][c]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert_eq!(refused("left_arm"), 3, "{r}");
    assert_eq!(refused("right_arm"), 2, "{r}");
    assert_eq!(refused("left_gripper"), 1, "{r}");
    assert_eq!(refused("right_gripper"), 2, "{r}");
    let reasons = r["refused"].to_string();
    for reason in [
        "5 positions; expected 6",
        "non-finite position",
        "no points",
        "2 values; expected 1",
        "0 values; expected 1",
        "non-finite value",
        "are not [",
    ] {
        assert!(reasons.contains(reason), "no refusal for `{reason}`: {r}");
    }
    let good: Vec<f64> = serde_json::from_value(r["good"].clone()).unwrap();
    let applied: Vec<Vec<f64>> = serde_json::from_value(r["applied"].clone()).unwrap();
    assert_eq!(applied.len(), 25, "{r}");
    for (k, a) in applied.iter().enumerate() {
        assert_eq!(
            a, &good,
            "step {k} applied something else than the last good command"
        );
    }
    // The peer stopped before the first step: every step held the command, and the gap
    // (reported in ms) covers the 25 periods of 20 ms at least in part.
    assert_eq!(r["held_steps"], 25, "{r}");
    assert!(r["longest_gap_ms"].as_f64().unwrap() >= 250.0, "{r}");
}

/// `sim_input_wait_ms` makes a tick wait for inputs stamped at its ROS time, which only a
/// simulator's `/clock` makes possible: without `use_sim_time`, the node (autostart) exits at
/// its first configure with status 2, naming the parameter and the rule.
#[test]
fn sim_input_wait_without_sim_time_is_refused_at_configure() {
    let world = World::new(190, 10);
    let pkg = sim_package().display().to_string();
    let map = root()
        .join("config/io_map_sim_aloha.yaml")
        .display()
        .to_string();
    let mut node = world.node(&[
        "-p",
        &format!("export_dir:={pkg}"),
        "-p",
        &format!("io_map:={map}"),
        "-p",
        "sim_input_wait_ms:=500.0",
    ]);
    let (status, _) = node
        .wait_exit(Duration::from_secs(60))
        .expect("the node exits at its first configure");
    assert_eq!(status.code(), Some(2), "{}", node.log());
    let log = node.log();
    assert!(
        log.contains("sim_input_wait_ms") && log.contains("needs use_sim_time: true"),
        "{log}"
    );
    assert!(!log.contains("ready:"), "{log}");
}
