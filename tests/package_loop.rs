//! Policy packages in the control loop (the code the node and replay share): the preflight
//! of `hardware` joint orders and camera shapes against the node's parameters, commands in
//! `joint_names` order from a policy trained in another order, and cameras converted at
//! their own resolution when the package resizes.
#![cfg(feature = "onnx")]

mod common;

use std::fs;
use std::path::Path;

use common::{fixture, reference};
use ndarray::{ArrayD, Axis};
use policy_node::control::{
    ControlError, ControlLoop, ImageData, LoopOptions, NodeParams, ParamMap, ParamValue, TickStatus,
};
use policy_node::policy::{InferenceModel, Observation};
use serde_json::{json, Value};

const JOINTS: [&str; 6] = ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6"];

fn params(dir: &Path, joints: &[&str]) -> NodeParams {
    let mut m = ParamMap::new();
    m.insert(
        "export_dir".into(),
        ParamValue::String(dir.display().to_string()),
    );
    m.insert(
        "joint_names".into(),
        ParamValue::StringArray(joints.iter().map(|s| s.to_string()).collect()),
    );
    m.insert("refill_mode".into(), ParamValue::String("sync".into()));
    NodeParams::from_map(&m).unwrap().0
}

fn sync() -> LoopOptions {
    LoopOptions {
        force_sync: true,
        auto_refill_from_warmup: false,
    }
}

/// The LeRobot package with `edit` applied to its manifest, in a temp dir.
fn lerobot(edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("act_tiny_lerobot/onnx");
    for e in fs::read_dir(&src).unwrap().flatten() {
        fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let path = dir.path().join("manifest.json");
    let mut m: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut m);
    fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    dir
}

/// The reference sample 0 as an rgb8 camera frame (HWC u8) and its state.
fn sample() -> (Vec<f64>, ArrayD<f32>, Vec<u8>) {
    let state: Vec<f64> = reference("act_tiny_lerobot", "observation.state")
        .index_axis(Axis(0), 0)
        .iter()
        .map(|v| f64::from(*v))
        .collect();
    // A frame whose [0, 1] conversion is exact: quantise the reference image to u8.
    let chw = reference("act_tiny_lerobot", "observation.images.top")
        .index_axis(Axis(0), 0)
        .to_owned();
    let (h, w) = (chw.shape()[1], chw.shape()[2]);
    let mut rgb = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                rgb[(y * w + x) * 3 + c] = (chw[[c, y, x]] * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    let quantised = ArrayD::from_shape_fn(vec![3, h, w], |i| {
        f32::from(rgb[(i[1] * w + i[2]) * 3 + i[0]]) / 255.0
    });
    (state, quantised, rgb)
}

fn first_command(
    lp: &mut ControlLoop,
    names: &[&str],
    state: &[f64],
    rgb: &[u8],
    h: u32,
    w: u32,
) -> Vec<f64> {
    lp.on_joint_state(1_000, names, state).unwrap();
    lp.on_image(
        0,
        1_000,
        ImageData::raw(w, h, w * 3, "rgb8", rgb.to_vec()).unwrap(),
    )
    .unwrap();
    match lp.tick(2_000) {
        TickStatus::Command(c) => c,
        other => panic!("no command: {other:?}"),
    }
}

#[test]
fn commands_follow_joint_names_when_the_package_orders_joints_otherwise() {
    let (state, image, rgb) = sample();
    // Reference: the package's own order (joint1..6), offline.
    let mut model = InferenceModel::load(fixture("act_tiny_lerobot/onnx")).unwrap();
    let obs: Observation = [
        (
            "observation.state",
            ArrayD::from_shape_vec(vec![6], state.iter().map(|v| *v as f32).collect()).unwrap(),
        ),
        ("observation.images.top", image),
    ]
    .into_iter()
    .collect();
    let chunk = model.predict_chunk(&obs).unwrap();

    // The node lists the joints in another order; the robot's messages use that order too.
    let order = ["joint3", "joint1", "joint2", "joint6", "joint4", "joint5"];
    let perm: Vec<usize> = order
        .iter()
        .map(|j| JOINTS.iter().position(|n| n == j).unwrap())
        .collect();
    let msg_state: Vec<f64> = perm.iter().map(|&i| state[i]).collect();
    let mut lp =
        ControlLoop::new(params(&fixture("act_tiny_lerobot/onnx"), &order), sync()).unwrap();
    assert_eq!(
        lp.model_state_order(),
        JOINTS,
        "the model gets its state in the package's order"
    );
    let cmd = first_command(&mut lp, &order, &msg_state, &rgb, 64, 64);
    for (i, &j) in perm.iter().enumerate() {
        let want = f64::from(chunk[[0, j]]);
        assert!(
            (cmd[i] - want).abs() < 1e-5,
            "command for {} is {} (want the policy's {} = {want})",
            order[i],
            cmd[i],
            JOINTS[j]
        );
    }
}

#[test]
fn joint_names_must_match_the_package_joints() {
    let joints = ["joint1", "joint2", "joint3", "joint4", "joint5", "gripper"];
    let e = match ControlLoop::new(params(&fixture("act_tiny_lerobot/onnx"), &joints), sync()) {
        Err(e) => e,
        Ok(_) => panic!("loaded with a joint the package does not have"),
    };
    assert!(
        matches!(
            e,
            ControlError::Mismatch {
                name: "joint_names",
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    for needle in [
        "joint_names",
        "hardware.robots[0]",
        "missing from joint_names: joint6",
        "not in the package: gripper",
        "manifest.json",
    ] {
        assert!(msg.contains(needle), "`{needle}` not in: {msg}");
    }
}

#[test]
fn declared_camera_shape_must_fit_the_model() {
    let dir = lerobot(|m| m["hardware"]["cameras"][0]["shape"] = json!([3, 48, 64]));
    let e = ControlLoop::new(params(dir.path(), &JOINTS), sync())
        .err()
        .expect("an error");
    let msg = e.to_string();
    for needle in [
        "`top`",
        "[3, 48, 64]",
        "observation.images.top",
        "[3, 64, 64]",
    ] {
        assert!(msg.contains(needle), "`{needle}` not in: {msg}");
    }
}

#[test]
fn a_resizing_package_gets_frames_at_the_camera_resolution() {
    // The camera is 48x64; the package letterboxes it to the model's 64x64.
    let dir = lerobot(|m| {
        m["hardware"]["cameras"][0]["shape"] = json!([3, 48, 64]);
        m["model"]["preprocessors"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "resize", "image_resolution": [64, 64], "mode": "letterbox"}));
    });
    let mut lp = ControlLoop::new(params(dir.path(), &JOINTS), sync()).unwrap();
    let (state, _, _) = sample();
    let rgb: Vec<u8> = (0..48 * 64 * 3).map(|i| (i % 251) as u8).collect();
    let cmd = first_command(&mut lp, &JOINTS, &state, &rgb, 48, 64);
    assert_eq!(cmd.len(), 6);
    assert!(cmd.iter().all(|v| v.is_finite()));

    // The same through the library: the 48x64 frame letterboxed by the package itself.
    let mut model = InferenceModel::load(dir.path()).unwrap();
    let chw = ArrayD::from_shape_fn(vec![3, 48, 64], |i| {
        f32::from(rgb[(i[1] * 64 + i[2]) * 3 + i[0]]) / 255.0
    });
    let obs: Observation = [
        (
            "observation.state",
            ArrayD::from_shape_vec(vec![6], state.iter().map(|v| *v as f32).collect()).unwrap(),
        ),
        ("observation.images.top", chw),
    ]
    .into_iter()
    .collect();
    let chunk = model.predict_chunk(&obs).unwrap();
    for (i, c) in cmd.iter().enumerate() {
        assert!(
            (c - f64::from(chunk[[0, i]])).abs() < 1e-5,
            "joint {i}: {c} vs {}",
            chunk[[0, i]]
        );
    }
}
