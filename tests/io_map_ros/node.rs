//! The I/O map in the `policy_node` binary over DDS, with an rclpy peer
//! (`tests/peers/io_map_peer.py`) standing in for the robot's drivers (several state topics,
//! unit conversion, odometry, a camera) and controllers (several command channels, a
//! `Twist` base): the example maps of `config/` run as the README shows them.
//!
//! Asserted: the commands on every channel equal the ROS-free loop's on the same constant
//! observation (through each channel's transform); when commands stop (disable, reset, a
//! silent source, deactivate, shutdown) each channel's last message is its `on_stop` one:
//! the arm holds its last command, the base gets zeros, and nothing follows it while stopped;
//! a silent secondary source is named on `/diagnostics` and in the log.
//!
//! Private `ROS_DOMAIN_ID`s 142..=149 (`tests/node_integration.rs` uses 10..=141).

use std::time::Duration;

use crate::common::ros::{NodeProc, World};
use crate::common::{fixture, root};
use policy_node::control::{
    ControlLoop, ImageData, LoopOptions, NodeParams, ParamMap, ParamValue, TickStatus,
};
use policy_node::iomap::InputMessage;
use serde_json::{json, Value};

const TOL: f64 = 1e-5;
const CONST_T: f64 = 0.7;

fn world() -> World {
    World::new(142, 8)
}

fn config(name: &str) -> String {
    root().join("config").join(name).display().to_string()
}

fn start(world: &World, map: &str, extra: &[&str]) -> NodeProc {
    let export = format!("export_dir:={}", fixture("act_tiny/onnx").display());
    let map = format!("io_map:={}", config(map));
    let mut args = vec!["-p", &export, "-p", &map, "-p", "refill_mode:=sync"];
    args.extend_from_slice(extra);
    let mut node = world.node(&args);
    node.wait_for_log("ready:", Duration::from_secs(60));
    node
}

/// The synthetic demo's constant observation, as the peer publishes it: state and image.
fn observation() -> (Vec<f64>, ImageData) {
    let out = std::process::Command::new(crate::common::python())
        .arg("-c")
        .arg(format!(
            "import sys, json; sys.path.insert(0, 'tools'); import synthetic_demo as d; \
             print(json.dumps([float(v) for v in d.state_at({CONST_T})])); \
             sys.stdout.flush(); sys.stdout.buffer.write(d.render_image({CONST_T}, 64, 64, 'top').tobytes())"
        ))
        .current_dir(root())
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nl = out.stdout.iter().position(|b| *b == b'\n').unwrap();
    let state: Vec<f64> = serde_json::from_slice(&out.stdout[..nl]).unwrap();
    let pixels = out.stdout[nl + 1..].to_vec();
    (state, ImageData::raw(64, 64, 192, "rgb8", pixels).unwrap())
}

/// The first `n` published values of the ROS-free loop with `map` on the constant
/// observation, fed by `feed` (synchronous refill, as the node under test).
fn offline(
    map: &str,
    n: usize,
    feed: impl Fn(&mut ControlLoop, i64, &[f64], &ImageData),
) -> Vec<Vec<f64>> {
    let mut m = ParamMap::new();
    m.insert(
        "export_dir".into(),
        ParamValue::String(fixture("act_tiny/onnx").display().to_string()),
    );
    m.insert("io_map".into(), ParamValue::String(config(map)));
    m.insert("refill_mode".into(), ParamValue::String("sync".into()));
    m.insert("refill_ahead_steps".into(), ParamValue::Int(0));
    let mut c = ControlLoop::new(
        NodeParams::from_map(&m).unwrap().0,
        LoopOptions {
            force_sync: true,
            auto_refill_from_warmup: false,
        },
    )
    .unwrap();
    c.activate();
    let (state, image) = observation();
    (0..n as i64)
        .map(|t| {
            feed(&mut c, t * 33_333_333, &state, &image);
            match c.tick(t * 33_333_333) {
                TickStatus::Command(v) => v,
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

fn source(c: &ControlLoop, topic: &str) -> Vec<usize> {
    c.input_topics()
        .into_iter()
        .find(|(t, _, _)| t == topic)
        .unwrap()
        .2
}

fn js(names: &[&str], pos: Vec<f64>) -> InputMessage {
    InputMessage::JointState {
        name: names.iter().map(|s| s.to_string()).collect(),
        position: pos,
        velocity: vec![],
        effort: vec![],
    }
}

/// The messages of `topic` recorded in `phase`: (time, values).
fn in_phase(r: &Value, topic: &str, phase: &str) -> Vec<(f64, Vec<f64>)> {
    r["channels"][topic]
        .as_array()
        .unwrap_or_else(|| panic!("no channel {topic} in {r}"))
        .iter()
        .filter(|m| m[0] == json!(phase))
        .map(|m| {
            (
                m[1].as_f64().unwrap(),
                m[2].as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < TOL)
}

/// The end of `phase`: the next phase's start, else the end of the recording.
fn phase_end(r: &Value, phase: &str) -> f64 {
    let starts = r["phase_starts"].as_object().unwrap();
    let begin = starts[phase].as_f64().unwrap();
    starts
        .values()
        .filter_map(Value::as_f64)
        .filter(|t| *t > begin)
        .fold(r["end_t"].as_f64().unwrap(), f64::min)
}

/// In `phase`, where commands stop: the channel's last message is its on_stop message —
/// zeros, or (hold) the command before it again — and nothing follows it for the rest of
/// the phase (at least `quiet` seconds).
fn assert_stopped(r: &Value, topic: &str, phase: &str, before: &str, zeros: bool, quiet: f64) {
    let msgs = in_phase(r, topic, phase);
    let (t, last) = msgs
        .last()
        .unwrap_or_else(|| panic!("{phase}: no on_stop message on {topic}: {r}"));
    if zeros {
        assert!(
            close(last, &[0.0; 6]),
            "{phase}: {topic} ended with {last:?}, not zeros"
        );
    } else {
        let prev = if msgs.len() >= 2 {
            msgs[msgs.len() - 2].1.clone()
        } else {
            in_phase(r, topic, before)
                .last()
                .unwrap_or_else(|| panic!("{before}: no message on {topic}"))
                .1
                .clone()
        };
        assert!(
            close(last, &prev),
            "{phase}: {topic} ended with {last:?}, not the held {prev:?}"
        );
    }
    let end = phase_end(r, phase);
    assert!(
        end - t >= quiet,
        "{phase}: {topic} published until {t:.3} s, the phase ended at {end:.3} s: commands did not stop"
    );
}

#[test]
fn arm_and_gripper_with_unit_conversion_and_a_silent_gripper_source() {
    let _live = crate::live();
    let world = world();
    let node = start(
        &world,
        "io_map_arm_gripper.yaml",
        &["-p", "max_observation_age_ms:=200.0"],
    );
    let names = ["joint5", "extra", "joint1", "joint2", "joint3", "joint4"];
    let cfg = json!({
        "sources": [
            {"topic": "/joint_states", "type": "JointState", "names": names, "index": [4, -1, 0, 1, 2, 3]},
            {"topic": "/gripper/opening_mm", "type": "Float64MultiArray", "index": [5], "scale": 1000.0},
            {"topic": "/image_raw", "type": "Image"},
        ],
        "channels": [
            {"topic": "/arm_controller/commands", "type": "Float64MultiArray"},
            {"topic": "/gripper_controller/commands", "type": "Float64MultiArray"},
        ],
        "phases": [
            {"name": "run", "s": 1.5},
            {"name": "gripper_silent", "s": 1.5, "silent": ["/gripper/opening_mm"]},
            {"name": "resume", "s": 1.5},
            {"name": "disabled", "s": 1.0, "call": "enable_false"},
        ],
    });
    let r = world.peer("io_map_peer.py", "run", cfg).result(&node);
    let log = node.stop();

    let want = offline("io_map_arm_gripper.yaml", 12, |c, now, q, image| {
        let arm = source(c, "/joint_states");
        c.on_input(
            &arm,
            now,
            &js(&names, vec![q[4], 9.0, q[0], q[1], q[2], q[3]]),
        )
        .unwrap();
        let g = source(c, "/gripper/opening_mm");
        c.on_input(&g, now, &InputMessage::Array(vec![q[5] * 1000.0]))
            .unwrap();
        c.on_image(0, now, image.clone()).unwrap();
    });
    let arm = in_phase(&r, "/arm_controller/commands", "start")
        .into_iter()
        .chain(in_phase(&r, "/arm_controller/commands", "run"))
        .collect::<Vec<_>>();
    let gripper = in_phase(&r, "/gripper_controller/commands", "start")
        .into_iter()
        .chain(in_phase(&r, "/gripper_controller/commands", "run"))
        .collect::<Vec<_>>();
    assert!(
        arm.len() >= 12 && gripper.len() >= 12,
        "{} / {}",
        arm.len(),
        gripper.len()
    );
    for (k, w) in want.iter().enumerate() {
        assert!(
            close(&arm[k].1, &w[..5]),
            "arm command {k}: {:?} vs {:?}",
            arm[k].1,
            &w[..5]
        );
        assert!(
            (gripper[k].1[0] - w[5]).abs() < 1000.0 * TOL,
            "gripper command {k}: {:?} vs {}",
            gripper[k].1,
            w[5]
        );
    }
    // The gripper's millimetres: 1000 x the joint the policy commands (in metres), a value
    // far from the arm's radians.
    assert!(gripper[0].1[0].abs() > 10.0 * arm[0].1.iter().fold(0.0f64, |a, v| a.max(v.abs())));

    // Silent gripper source: commands stop, each channel holds its last command once.
    for topic in ["/arm_controller/commands", "/gripper_controller/commands"] {
        assert_stopped(&r, topic, "gripper_silent", "run", false, 0.5);
    }
    assert!(
        r["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["phase"] == json!("gripper_silent")
                && d["message"]
                    .as_str()
                    .unwrap()
                    .contains("(/gripper/opening_mm)")),
        "/diagnostics never named the silent gripper topic: {}",
        r["diagnostics"]
    );
    assert!(
        log.contains("no command: `/gripper/opening_mm` is stale"),
        "{log}"
    );
    // Back: commands again; disabled: held once more.
    let resumed = in_phase(&r, "/arm_controller/commands", "resume");
    assert!(resumed.len() >= 10, "{resumed:?}");
    assert_stopped(
        &r,
        "/arm_controller/commands",
        "disabled",
        "resume",
        false,
        0.5,
    );
    assert!(
        log.contains("`/arm_controller/commands` got its on_stop (hold) command"),
        "{log}"
    );
}

#[test]
fn mobile_base_gets_zeros_and_the_arm_holds_on_every_stop() {
    let _live = crate::live();
    let world = world();
    let mut node = start(&world, "io_map_mobile.yaml", &[]);
    let cfg = json!({
        "sources": [
            {"topic": "/joint_states", "type": "JointState", "names": ["joint1", "joint2", "joint3", "joint4"], "index": [0, 1, 2, 3]},
            {"topic": "/odom", "type": "Odometry", "linear_x": 4, "angular_z": 5},
            {"topic": "/camera/image_raw/compressed", "type": "CompressedImage"},
        ],
        "channels": [
            {"topic": "/arm_controller/commands", "type": "Float64MultiArray"},
            {"topic": "/cmd_vel", "type": "Twist"},
        ],
        "phases": [
            {"name": "run", "s": 1.0},
            {"name": "disabled", "s": 1.0, "call": "enable_false"},
            {"name": "enabled", "s": 1.0, "call": "enable_true"},
            {"name": "reset", "s": 1.0, "call": "reset"},
            {"name": "odom_silent", "s": 1.5, "silent": ["/odom"]},
            {"name": "resume", "s": 1.0},
            {"name": "deactivated", "s": 1.0, "call": "deactivate"},
            {"name": "activated", "s": 1.0, "call": "activate"},
            {"name": "shutdown", "s": 2.0, "call": "shutdown"},
        ],
    });
    let mut peer = world.peer("io_map_peer.py", "run", cfg);
    peer.wait_line("SHUTDOWN_NOW", Duration::from_secs(120), &node);
    node.signal("INT");
    let (status, _) = node.wait_exit(Duration::from_secs(20)).expect("exit");
    assert!(status.success(), "{}", node.log());
    let r = peer.result(&node);
    let log = node.log();

    let zeros = [0.0; 6];
    // Twist values in the order linear.xyz, angular.xyz: the policy's action 4 and 5.
    let first_twist = in_phase(&r, "/cmd_vel", "start")
        .into_iter()
        .chain(in_phase(&r, "/cmd_vel", "run"))
        .next()
        .unwrap()
        .1;
    assert!(
        first_twist[0] != 0.0 && first_twist[5] != 0.0,
        "{first_twist:?}"
    );
    assert_eq!(&first_twist[1..5], &[0.0; 4], "unselected fields stay zero");
    for (stop, before) in [
        ("disabled", "run"),
        ("odom_silent", "reset"),
        ("deactivated", "resume"),
        ("shutdown", "activated"),
    ] {
        assert_stopped(&r, "/cmd_vel", stop, before, true, 0.5);
        assert_stopped(&r, "/arm_controller/commands", stop, before, false, 0.5);
    }
    // ~/reset: the stop pair, then commands again (a fresh chunk) within the phase.
    let reset = in_phase(&r, "/cmd_vel", "reset");
    let z = reset
        .iter()
        .position(|m| close(&m.1, &zeros))
        .unwrap_or_else(|| panic!("no zeros after ~/reset: {reset:?}"));
    assert!(
        reset.len() > z + 5,
        "commands did not resume after ~/reset: {reset:?}"
    );
    assert!(log.contains("no command: `/odom` is stale"), "{log}");
}

/// The environment state from a `geometry_msgs/PoseStamped` topic, and actions relative to
/// the joint state: the policy of `tools/make_io_map_fixture.py` returns
/// `0.01 (t + 1)(j + 1) + 0.1 sum(environment_state)` per row `t`, joint `j`, and the node
/// adds the joints the chunk was computed from.
#[test]
fn environment_state_from_a_pose_and_relative_actions_over_dds() {
    let _live = crate::live();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::common::runtime_python())
        .arg(root().join("tools/make_io_map_fixture.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map = dir.path().join("map.yaml");
    std::fs::write(
        &map,
        r"
inputs:
  observation.state:
    topic: /joint_states
    type: sensor_msgs/msg/JointState
    select: [position.joint1, position.joint2, position.joint3, position.joint4]
  observation.environment_state:
    topic: /cube/pose
    type: geometry_msgs/msg/PoseStamped
    select: [pose.position.x, pose.position.y, pose.position.z]
outputs:
  - topic: /arm/commands
    type: std_msgs/msg/Float64MultiArray
    action: [0, 1, 2, 3]
    relative: {input: observation.state, index: [0, 1, 2, 3]}
",
    )
    .unwrap();
    let world = world();
    let export = format!("export_dir:={}", dir.path().display());
    let io_map = format!("io_map:={}", map.display());
    let mut node = world.node(&["-p", &export, "-p", &io_map, "-p", "refill_mode:=sync"]);
    node.wait_for_log("ready:", Duration::from_secs(60));
    let cfg = json!({
        "sources": [
            {"topic": "/joint_states", "type": "JointState", "names": ["joint1", "joint2", "joint3", "joint4"], "index": [0, 1, 2, 3]},
            {"topic": "/cube/pose", "type": "PoseStamped", "xyz": [3, 4, 5]},
        ],
        "channels": [{"topic": "/arm/commands", "type": "Float64MultiArray"}],
        "phases": [{"name": "run", "s": 1.0}],
    });
    let r = world.peer("io_map_peer.py", "run", cfg).result(&node);
    node.stop();
    let q: Vec<f64> = r["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let env: f32 = q[3..6].iter().map(|v| *v as f32).sum();
    let commands: Vec<Vec<f64>> = ["start", "run"]
        .iter()
        .flat_map(|p| in_phase(&r, "/arm/commands", p))
        .map(|(_, v)| v)
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    // Synchronous refill, chunks of 5: command k is row k % 5.
    for (k, cmd) in commands.iter().take(10).enumerate() {
        let t = (k % 5) as f32;
        for j in 0..4 {
            let delta = 0.01f32 * (t + 1.0) * (j as f32 + 1.0) + 0.1f32 * env;
            let want = f64::from(q[j] as f32 + delta);
            assert!(
                (cmd[j] - want).abs() < 1e-5,
                "command {k} joint {j}: {} vs {want}",
                cmd[j]
            );
        }
    }
}
