//! The I/O map in the ROS-free control loop, on real policies with synchronous refill
//! (deterministic): a map that reads several sources and splits the action across channels
//! commands exactly what the flat parameters' loop commands, through each channel's
//! transform; each stop event (disable, reset, stale, an episode's end, deactivate) gives
//! each channel its `on_stop` message once; a silent or broken secondary source stops commands naming its topic; the environment state reaches
//! the policy; relative actions are anchored to the observation each chunk was computed from;
//! limits apply by action index.

use std::path::{Path, PathBuf};

use crate::common::{fixture, root};
use policy_node::control::{
    ControlLoop, ImageData, LoopOptions, NodeParams, ParamMap, ParamValue, TickStatus,
};
use policy_node::iomap::InputMessage;

const PERIOD_NS: i64 = 33_333_333;
const JOINTS: [&str; 6] = ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6"];
/// Published values of the map loop against the flat loop's commands through the channel
/// transforms: the same model on inputs equal up to the f32 rounding of `1000 x * 0.001`.
const TOL: f64 = 1e-5;

fn params(export: &Path, extra: &[(&str, ParamValue)]) -> NodeParams {
    let mut m = ParamMap::new();
    m.insert(
        "export_dir".into(),
        ParamValue::String(export.display().to_string()),
    );
    m.insert("refill_mode".into(), ParamValue::String("sync".into()));
    m.insert("refill_ahead_steps".into(), ParamValue::Int(0));
    m.insert("threads".into(), ParamValue::Int(1));
    for (k, v) in extra {
        m.insert(k.to_string(), v.clone());
    }
    NodeParams::from_map(&m).expect("valid parameters").0
}

fn flat_params() -> NodeParams {
    params(
        &fixture("act_tiny/onnx"),
        &[(
            "joint_names",
            ParamValue::StringArray(JOINTS.iter().map(|s| s.to_string()).collect()),
        )],
    )
}

fn map_params(map: &Path, export: &Path, extra: &[(&str, ParamValue)]) -> NodeParams {
    let mut all = vec![("io_map", ParamValue::String(map.display().to_string()))];
    all.extend(extra.iter().cloned());
    params(export, &all)
}

fn configure(p: NodeParams) -> Result<ControlLoop, String> {
    ControlLoop::new(
        p,
        LoopOptions {
            force_sync: true,
            auto_refill_from_warmup: false,
        },
    )
    .map_err(|e| e.to_string())
}

fn control(p: NodeParams) -> ControlLoop {
    let mut c = configure(p).unwrap_or_else(|e| panic!("configure: {e}"));
    c.activate();
    c
}

/// The error of a configuration that must be refused.
fn refused(p: NodeParams) -> String {
    match configure(p) {
        Ok(_) => panic!("the configuration was accepted"),
        Err(e) => e,
    }
}

fn state_at(t: i64) -> Vec<f64> {
    (0..6)
        .map(|j| 0.3 * ((t as f64) * 0.1 + j as f64).sin())
        .collect()
}

fn image_at(t: i64) -> ImageData {
    let (w, h) = (64u32, 64u32);
    let data: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i as i64 * 7 + t * 13) % 256) as u8)
        .collect();
    ImageData::raw(w, h, w * 3, "rgb8", data).unwrap()
}

/// The source index of `topic` in the loop's map.
fn sources(c: &ControlLoop, topic: &str) -> Vec<usize> {
    c.input_topics()
        .into_iter()
        .find(|(t, _, _)| t == topic)
        .unwrap_or_else(|| panic!("the map reads no `{topic}`"))
        .2
}

fn js(names: &[&str], positions: &[f64]) -> InputMessage {
    InputMessage::JointState {
        name: names.iter().map(|s| s.to_string()).collect(),
        position: positions.to_vec(),
        velocity: vec![],
        effort: vec![],
    }
}

/// `config/io_map_arm_gripper.yaml`: the arm from `/joint_states` (with a joint the policy
/// does not use, in another order), the gripper in millimetres.
fn feed_arm_gripper(c: &mut ControlLoop, t: i64, gripper: bool) {
    let now = t * PERIOD_NS;
    let q = state_at(t);
    let arm = sources(c, "/joint_states");
    c.on_input(
        &arm,
        now,
        &js(
            &["joint5", "joint4", "extra", "joint3", "joint2", "joint1"],
            &[q[4], q[3], 9.0, q[2], q[1], q[0]],
        ),
    )
    .unwrap();
    if gripper {
        let g = sources(c, "/gripper/opening_mm");
        c.on_input(&g, now, &InputMessage::Array(vec![q[5] * 1000.0]))
            .unwrap();
    }
    c.on_image(0, now, image_at(t)).unwrap();
}

fn feed_flat(c: &mut ControlLoop, t: i64) {
    let now = t * PERIOD_NS;
    c.on_joint_state(now, &JOINTS, &state_at(t)).unwrap();
    c.on_image(0, now, image_at(t)).unwrap();
}

fn command(status: TickStatus, what: &str) -> Vec<f64> {
    match status {
        TickStatus::Command(c) => c,
        other => panic!("{what}: {other:?}"),
    }
}

fn config(name: &str) -> PathBuf {
    root().join("config").join(name)
}

#[test]
fn arm_and_gripper_map_commands_what_the_flat_loop_commands_through_the_transforms() {
    let mut flat = control(flat_params());
    let mut map = control(map_params(
        &config("io_map_arm_gripper.yaml"),
        &fixture("act_tiny/onnx"),
        &[],
    ));
    assert_eq!(
        map.outputs().columns(),
        vec![
            "/arm_controller/commands[0]",
            "/arm_controller/commands[1]",
            "/arm_controller/commands[2]",
            "/arm_controller/commands[3]",
            "/arm_controller/commands[4]",
            "/gripper_controller/commands[0]"
        ]
    );
    for t in 0..40 {
        feed_flat(&mut flat, t);
        feed_arm_gripper(&mut map, t, true);
        let want = command(flat.tick(t * PERIOD_NS), "flat");
        let got = command(map.tick(t * PERIOD_NS), "map");
        let channels: Vec<(String, Vec<f64>)> = map
            .outputs()
            .split(&got)
            .map(|(c, v)| (c.topic.clone(), v.to_vec()))
            .collect();
        assert_eq!(channels.len(), 2);
        for j in 0..5 {
            assert!(
                (channels[0].1[j] - want[j]).abs() < TOL,
                "tick {t} joint {j}: {channels:?} vs {want:?}"
            );
        }
        // The gripper channel: topic value = 1000 * action value.
        assert!(
            (channels[1].1[0] - 1000.0 * want[5]).abs() < 1000.0 * TOL,
            "tick {t}: gripper {} vs 1000 * {}",
            channels[1].1[0],
            want[5]
        );
    }
}

#[test]
fn each_stop_event_gives_each_channel_its_on_stop_once() {
    // The mobile manipulator: the arm holds, the base gets zeros.
    let export = fixture("act_tiny/onnx");
    let mut c = control(map_params(&config("io_map_mobile.yaml"), &export, &[]));
    let feed = |c: &mut ControlLoop, t: i64| {
        let now = t * PERIOD_NS;
        let q = state_at(t);
        let arm = sources(c, "/joint_states");
        c.on_input(
            &arm,
            now,
            &js(&["joint1", "joint2", "joint3", "joint4"], &q[..4]),
        )
        .unwrap();
        let odom = sources(c, "/odom");
        let mut f = vec![0.0; 13];
        f[7] = q[4]; // twist.twist.linear.x
        f[12] = q[5]; // twist.twist.angular.z
        c.on_input(&odom, now, &InputMessage::Fields(f)).unwrap();
        c.on_image(0, now, image_at(t)).unwrap();
    };
    let mut t = 0;
    let run = |c: &mut ControlLoop, t: &mut i64, n: i64| -> Vec<f64> {
        let mut last = Vec::new();
        for _ in 0..n {
            feed(c, *t);
            last = command(c.tick(*t * PERIOD_NS), "run");
            assert!(c.take_stop().is_empty(), "no stop while commanding");
            *t += 1;
        }
        last
    };
    let check_stop = |stop: Vec<(usize, Vec<f64>)>, last: &[f64], why: &str| {
        assert_eq!(stop.len(), 2, "{why}: {stop:?}");
        assert_eq!(stop[0], (0, last[..4].to_vec()), "{why}: the arm holds");
        assert_eq!(stop[1], (1, vec![0.0, 0.0]), "{why}: the base gets zeros");
    };
    // Nothing published yet: a stop publishes nothing.
    c.set_enabled(false);
    assert!(c.take_stop().is_empty());
    c.set_enabled(true);

    let last = run(&mut c, &mut t, 5);
    c.set_enabled(false);
    check_stop(c.take_stop(), &last, "disable");
    assert!(c.take_stop().is_empty(), "once");
    assert_eq!(c.tick(t * PERIOD_NS), TickStatus::Disabled);
    assert!(c.take_stop().is_empty(), "once per stop");
    c.set_enabled(true);

    let last = run(&mut c, &mut t, 5);
    c.reset();
    check_stop(c.take_stop(), &last, "reset");

    let last = run(&mut c, &mut t, 5);
    // Stale: the odometry stops; the joints and the camera go on.
    let now = (t + 20) * PERIOD_NS;
    let arm = sources(&c, "/joint_states");
    c.on_input(
        &arm,
        now,
        &js(&["joint1", "joint2", "joint3", "joint4"], &[0.0; 4]),
    )
    .unwrap();
    c.on_image(0, now, image_at(t)).unwrap();
    match c.tick(now) {
        TickStatus::Stale { what, .. } => assert_eq!(what, "/odom"),
        other => panic!("{other:?}"),
    }
    check_stop(c.take_stop(), &last, "stale");
    t += 21;

    let last = run(&mut c, &mut t, 5);
    // An episode ends (`episode_mode: goal`): the loop goes idle until the next goal.
    c.set_idle(true);
    check_stop(c.take_stop(), &last, "episode end");
    feed(&mut c, t);
    assert_eq!(c.tick(t * PERIOD_NS), TickStatus::Idle);
    assert!(c.take_stop().is_empty(), "once per stop");
    t += 1;
    c.set_idle(false);

    let last = run(&mut c, &mut t, 5);
    c.deactivate();
    check_stop(c.take_stop(), &last, "deactivate");
}

#[test]
fn a_secondary_source_going_silent_or_missing_its_field_stops_commands_naming_it() {
    let mut c = control(map_params(
        &config("io_map_arm_gripper.yaml"),
        &fixture("act_tiny/onnx"),
        &[],
    ));
    for t in 0..5 {
        feed_arm_gripper(&mut c, t, true);
        command(c.tick(t * PERIOD_NS), "fresh");
    }
    // The gripper goes silent: max_observation_age_ms (500) later, stale naming it.
    let mut stale = None;
    for t in 5..30 {
        feed_arm_gripper(&mut c, t, false);
        match c.tick(t * PERIOD_NS) {
            TickStatus::Command(_) => assert!(stale.is_none(), "a command after the stale tick"),
            TickStatus::Stale { what, age_ms } => {
                assert_eq!(what, "/gripper/opening_mm");
                assert!(age_ms.unwrap() > 500.0);
                stale.get_or_insert(t);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(stale.is_some_and(|t| t >= 19), "stale from tick {stale:?}");
    // Back, then a message without the selected index: stale at once, with the reason.
    feed_arm_gripper(&mut c, 30, true);
    command(c.tick(30 * PERIOD_NS), "back");
    let g = sources(&c, "/gripper/opening_mm");
    let e = c
        .on_input(&g, 31 * PERIOD_NS, &InputMessage::Array(vec![]))
        .unwrap_err();
    assert!(e.to_string().contains("data.0"), "{e}");
    match c.tick(31 * PERIOD_NS) {
        TickStatus::Stale { what, .. } => assert!(
            what.starts_with("/gripper/opening_mm (its newest message was refused: `data.0`"),
            "{what}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.status().counters.rejected_messages, 1);
    // A non-finite value after scale: refused the same way.
    let e = c
        .on_input(&g, 32 * PERIOD_NS, &InputMessage::Array(vec![f64::NAN]))
        .unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
}

/// The environment-state policy (`tools/make_io_map_fixture.py`), made in a temporary
/// directory.
fn env_policy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::common::runtime_python())
        .arg(root().join("tools/make_io_map_fixture.py"))
        .arg(dir.path())
        .output()
        .expect("run make_io_map_fixture.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// `action[t, j] = 0.01 (t + 1)(j + 1) + 0.1 sum(environment_state)`.
fn env_chunk_row(t: usize, env: &[f64]) -> Vec<f64> {
    let s: f32 = env.iter().map(|v| *v as f32).sum();
    (0..4)
        .map(|j| f64::from(0.01f32 * (t as f32 + 1.0) * (j as f32 + 1.0) + 0.1f32 * s))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn environment_state_from_a_pose_reaches_the_policy_and_relative_actions_are_anchored() {
    let policy = env_policy();
    let map = write(
        policy.path(),
        "map.yaml",
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
    );
    let mut c = control(map_params(&map, policy.path(), &[]));
    let joints = sources(&c, "/joint_states");
    let pose = sources(&c, "/cube/pose");
    let names = ["joint1", "joint2", "joint3", "joint4"];
    let mut anchor = vec![0.0; 4];
    let mut env = vec![0.0; 3];
    for t in 0..12i64 {
        let now = t * PERIOD_NS;
        let q: Vec<f64> = (0..4).map(|j| 0.1 * t as f64 + j as f64).collect();
        c.on_input(&joints, now, &js(&names, &q)).unwrap();
        let e = [0.5 + 0.01 * t as f64, -0.25, 1.0];
        let mut fields = vec![0.0; 7];
        fields[..3].copy_from_slice(&e);
        c.on_input(&pose, now, &InputMessage::Fields(fields))
            .unwrap();
        let got = command(c.tick(now), "env");
        // Chunks of 5, computed on ticks 0, 5, 10: each row anchored to the state (and fed
        // the pose) of the tick its chunk was computed on, not the current tick's.
        let row = (t % 5) as usize;
        if row == 0 {
            anchor = q.iter().map(|v| f64::from(*v as f32)).collect();
            env = e.to_vec();
        }
        let delta = env_chunk_row(row, &env);
        for j in 0..4 {
            let want = f64::from((anchor[j] as f32) + (delta[j] as f32));
            assert!(
                (got[j] - want).abs() < 1e-6,
                "tick {t} joint {j}: {} vs {want} (delta {delta:?}, anchor {anchor:?})",
                got[j]
            );
        }
    }
}

#[test]
fn limits_apply_by_action_index_before_the_channel_transform() {
    let policy = env_policy();
    let map = write(
        policy.path(),
        "map.yaml",
        r"
inputs:
  state: {topic: /js, type: sensor_msgs/msg/JointState, select: [position.a, position.b, position.c, position.d]}
  environment_state: {topic: /env, type: std_msgs/msg/Float64MultiArray, select: [data.0, data.1, data.2]}
outputs:
  - {topic: /first, type: std_msgs/msg/Float64MultiArray, action: [3, 0], scale: [10.0, 1.0], offset: [0.0, 5.0]}
  - {topic: /rest, type: std_msgs/msg/Float64MultiArray, action: [1, 2]}
",
    );
    let lower = vec![-1.0, -1.0, -1.0, -1.0];
    let upper = vec![1.0, 1.0, 0.02, 0.03];
    let mut c = control(map_params(
        &map,
        policy.path(),
        &[
            ("joint_lower_limits", ParamValue::DoubleArray(lower)),
            ("joint_upper_limits", ParamValue::DoubleArray(upper)),
        ],
    ));
    let js_src = sources(&c, "/js");
    let env_src = sources(&c, "/env");
    for t in 0..3i64 {
        let now = t * PERIOD_NS;
        c.on_input(&js_src, now, &js(&["a", "b", "c", "d"], &[0.0; 4]))
            .unwrap();
        c.on_input(&env_src, now, &InputMessage::Array(vec![0.0, 0.0, 0.0]))
            .unwrap();
        let got = command(c.tick(now), "limits");
        let raw = env_chunk_row(t as usize, &[0.0; 3]);
        // Raw action 3 is 0.04 (t + 1) > 0.03: clamped, then scaled by 10.
        assert!((got[0] - 10.0 * 0.03).abs() < 1e-9, "{got:?}");
        assert!((got[1] - (raw[0] + 5.0)).abs() < 1e-6, "{got:?}");
        assert!((got[2] - raw[1]).abs() < 1e-6, "{got:?}");
        assert!((got[3] - raw[2].min(0.02)).abs() < 1e-9, "{got:?}");
    }
    // Limits of the wrong width are refused at configure, naming the parameter.
    let e = refused(map_params(
        &map,
        policy.path(),
        &[
            ("joint_lower_limits", ParamValue::DoubleArray(vec![-1.0; 3])),
            ("joint_upper_limits", ParamValue::DoubleArray(vec![1.0; 3])),
        ],
    ));
    assert!(e.contains("joint_lower_limits"), "{e}");
}

#[test]
fn a_map_that_does_not_fit_the_policy_is_refused_at_configure_naming_the_yaml_path() {
    let dir = tempfile::tempdir().unwrap();
    let map = write(
        dir.path(),
        "map.yaml",
        r"
inputs:
  observation.state:
    topic: /joint_states
    type: sensor_msgs/msg/JointState
    select: [position.joint1, position.joint2, position.joint3, position.joint4, position.joint5]
  observation.images: {topic: /image_raw}
outputs:
  - {topic: /cmd, type: std_msgs/msg/Float64MultiArray, action: [0, 1, 2, 3, 4, 5]}
",
    );
    let e = refused(map_params(&map, &fixture("act_tiny/onnx"), &[]));
    let s = e.to_string();
    assert!(
        s.contains("`inputs.observation.state`")
            && s.contains("selects 5 value(s)")
            && s.contains("takes 6"),
        "{s}"
    );
    // io_map together with a flat wiring parameter: an error naming both.
    let mut m = ParamMap::new();
    m.insert("export_dir".into(), ParamValue::String("x".into()));
    m.insert(
        "io_map".into(),
        ParamValue::String(map.display().to_string()),
    );
    m.insert("command_topic".into(), ParamValue::String("/other".into()));
    let e = NodeParams::from_map(&m).expect_err("refused").to_string();
    assert!(e.contains("command_topic") && e.contains("io_map"), "{e}");
}

/// A copy of the `act_tiny_pkg` ONNX package described as a bimanual robot: two robots in
/// `hardware.robots`, three joints each (the second pair reversed in its own order).
fn bimanual_package(dir: &Path) {
    let src = fixture("act_tiny_pkg/onnx");
    std::fs::copy(src.join("act.onnx"), dir.join("act.onnx")).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("manifest.json")).unwrap()).unwrap();
    let robot = |name: &str, joints: &[&str]| {
        let spec =
            serde_json::json!({"shape": [joints.len()], "dtype": "float32", "order": joints});
        serde_json::json!({"name": name, "type": "arm", "state": spec, "action": spec})
    };
    m["hardware"] = serde_json::json!({"robots": [
        robot("left", &["l_shoulder", "l_elbow", "l_gripper"]),
        robot("right", &["r_shoulder", "r_elbow", "r_gripper"]),
    ]});
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
}

const BIMANUAL_MAP: &str = r"
inputs:
  observation.state:
    - topic: /left/joint_states
      type: sensor_msgs/msg/JointState
      select: [position.l_shoulder, position.l_elbow, position.l_gripper]
    - topic: /right/joint_states
      type: sensor_msgs/msg/JointState
      select: [position.r_shoulder, position.r_elbow, position.r_gripper]
  observation.images: {topic: /top/image_raw}
outputs:
  - {topic: /left_arm/joint_trajectory, type: trajectory_msgs/msg/JointTrajectory, action: [0, 1], names: [l_shoulder, l_elbow]}
  - {topic: /left_gripper/commands, type: std_msgs/msg/Float64MultiArray, action: [2]}
  - {topic: /right_arm/joint_trajectory, type: trajectory_msgs/msg/JointTrajectory, action: [3, 4], names: [r_shoulder, r_elbow]}
  - {topic: /right_gripper/commands, type: std_msgs/msg/Float64MultiArray, action: [5]}
";

#[test]
fn a_bimanual_package_runs_from_two_joint_states_to_four_controllers() {
    let dir = tempfile::tempdir().unwrap();
    bimanual_package(dir.path());
    let map = write(dir.path(), "map.yaml", BIMANUAL_MAP);
    let mut c = control(map_params(&map, dir.path(), &[]));
    let mut flat = control(params(
        &fixture("act_tiny_pkg/onnx"),
        &[(
            "joint_names",
            ParamValue::StringArray(JOINTS.iter().map(|s| s.to_string()).collect()),
        )],
    ));
    let left = sources(&c, "/left/joint_states");
    let right = sources(&c, "/right/joint_states");
    assert_eq!(
        c.model_state_order(),
        [
            "l_shoulder",
            "l_elbow",
            "l_gripper",
            "r_shoulder",
            "r_elbow",
            "r_gripper"
        ]
    );
    for t in 0..25 {
        let now = t * PERIOD_NS;
        let q = state_at(t);
        c.on_input(
            &left,
            now,
            &js(&["l_gripper", "l_shoulder", "l_elbow"], &[q[2], q[0], q[1]]),
        )
        .unwrap();
        c.on_input(
            &right,
            now,
            &js(&["r_shoulder", "r_elbow", "r_gripper"], &q[3..]),
        )
        .unwrap();
        c.on_image(0, now, image_at(t)).unwrap();
        feed_flat(&mut flat, t);
        let got = command(c.tick(now), "bimanual");
        let want = command(flat.tick(now), "flat");
        let channels: Vec<Vec<f64>> = c.outputs().split(&got).map(|(_, v)| v.to_vec()).collect();
        assert_eq!(channels.len(), 4);
        let joined: Vec<f64> = channels.concat();
        for (j, (a, b)) in joined.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-6, "tick {t} value {j}: {a} vs {b}");
        }
    }
    // The right arm's joints in another order than the package's: refused at configure,
    // naming the robot, the joint and the YAML path.
    let swapped = write(
        dir.path(),
        "swapped.yaml",
        &BIMANUAL_MAP.replace(
            "[position.r_shoulder, position.r_elbow, position.r_gripper]",
            "[position.r_elbow, position.r_shoulder, position.r_gripper]",
        ),
    );
    let e = refused(map_params(&swapped, dir.path(), &[]));
    assert!(
        e.contains("`inputs.observation.state[1].select[0]`")
            && e.contains("robot `right` (hardware.robots[1]")
            && e.contains("takes `r_shoulder` at state index 3"),
        "{e}"
    );
    // A channel naming a joint of the other arm: refused, naming the robot.
    let crossed = write(
        dir.path(),
        "crossed.yaml",
        &BIMANUAL_MAP.replace(
            "names: [r_shoulder, r_elbow]",
            "names: [l_shoulder, r_elbow]",
        ),
    );
    let e = refused(map_params(&crossed, dir.path(), &[]));
    assert!(
        e.contains("`outputs[2].names[0]`") && e.contains("robot `right`"),
        "{e}"
    );
}
