//! LeRobot's relative actions against LeRobot itself: `tests/cases/relative_actions.json`
//! was run through LeRobot 0.6.1's own `RelativeActionsProcessorStep` /
//! `AbsoluteActionsProcessorStep` (`tools/lerobot_relative_oracle.py`, Python 3.12, kept in
//! `tests/cases/relative_actions.expected.json`); our mask and our per-chunk anchoring must
//! give the same masks, the same chunks (f32 cases, within 1e-6) and the same refusals.
//! Then a package with the two steps in its manifest: its chunks equal the plain package's
//! plus the state on the unmasked joints.

use std::path::Path;

use crate::common::{fixture, root};
use ndarray::{Array2, ArrayD};
use policy_node::policy::processors::lerobot_relative::{anchors, mask};
use policy_node::policy::relative::to_absolute;
use policy_node::policy::{InferenceModel, Observation};
use serde_json::{json, Value};

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
}

#[test]
fn chunks_and_masks_equal_lerobots_own_steps() {
    let cases = read(&root().join("tests/cases/relative_actions.json"));
    let expected = read(&root().join("tests/cases/relative_actions.expected.json"));
    let cases = cases["cases"].as_array().unwrap();
    let results = expected["results"].as_array().unwrap();
    let masks = expected["masks"].as_array().unwrap();
    let errors = expected["errors"].as_array().unwrap();
    assert_eq!(expected["lerobot"], json!("0.6.1"));
    assert_eq!(results.len(), cases.len(), "one result per case");
    assert_eq!(masks.len(), cases.len());
    assert_eq!(errors.len(), cases.len());
    let (mut compared, mut refused) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap_or("?");
        // Our chunks are f32, as LeRobot's are for a float32 policy; a float64 case has
        // no counterpart here.
        if case["dtype"] == json!("float64") {
            continue;
        }
        let state = floats(&case["state"]);
        let rows: Vec<Vec<f64>> = case["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let d = rows[0].len();
        let names = strings(&case["action_names"]);
        let exclude = strings(&case["exclude_joints"]).unwrap_or_default();
        let m = mask(names.as_deref(), &exclude, d);
        let anchored = anchors(&m, "observation.state", Some(state.len()));
        if results[i].is_null() {
            assert!(
                anchored.is_err(),
                "{name}: LeRobot refused ({}), we did not",
                errors[i]
            );
            refused += 1;
            continue;
        }
        let want_mask: Vec<bool> = masks[i]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        assert_eq!(m, want_mask, "{name}: mask");
        let rel = anchored.unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut chunk = Array2::from_shape_fn((rows.len(), d), |(t, j)| rows[t][j] as f32);
        let mut obs = Observation::new();
        obs.insert(
            "observation.state",
            ArrayD::from_shape_vec(vec![state.len()], state.iter().map(|v| *v as f32).collect())
                .unwrap(),
        );
        to_absolute(&mut chunk, &obs, &rel).unwrap();
        let want: Vec<Vec<f64>> = results[i].as_array().unwrap().iter().map(floats).collect();
        assert_eq!(want.len(), rows.len(), "{name}: rows");
        for (t, row) in want.iter().enumerate() {
            for (j, w) in row.iter().enumerate() {
                let got = f64::from(chunk[[t, j]]);
                assert!(
                    (got - w).abs() < 1e-6,
                    "{name} row {t} value {j}: {got} vs LeRobot {w}"
                );
            }
        }
        compared += 1;
    }
    assert!(
        compared >= 8 && refused >= 1,
        "{compared} compared, {refused} refused"
    );
}

/// A copy of the `act_tiny_pkg` ONNX package whose manifest adds LeRobot's two steps.
fn package_with_steps(dir: &Path, enabled: bool, with_relative: bool) {
    let src = fixture("act_tiny_pkg/onnx");
    std::fs::copy(src.join("act.onnx"), dir.join("act.onnx")).unwrap();
    let mut m = read(&src.join("manifest.json"));
    if with_relative {
        m["model"]["preprocessors"] = json!([{
            "type": "relative_actions_processor",
            "enabled": true,
            "exclude_joints": ["Gripper"],
            "action_names": ["joint1", "joint2", "joint3", "joint4", "joint5", "gripper"],
        }]);
    }
    let post = m["model"]["postprocessors"].as_array_mut().unwrap();
    post.push(json!({"type": "absolute_actions_processor", "enabled": enabled}));
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
}

#[test]
fn a_package_with_lerobots_steps_adds_the_state_to_each_chunk() {
    let plain = InferenceModel::builder(fixture("act_tiny_pkg/onnx"))
        .threads(1)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    package_with_steps(dir.path(), true, true);
    let relative = InferenceModel::builder(dir.path())
        .threads(1)
        .build()
        .unwrap();
    let state = [0.5f32, -0.25, 1.0, 0.125, -2.0, 3.0];
    let mut obs = Observation::new();
    obs.insert(
        "state",
        ArrayD::from_shape_vec(vec![6], state.to_vec()).unwrap(),
    );
    obs.insert(
        "images",
        ArrayD::from_shape_fn(vec![3, 64, 64], |i| ((i[1] + 2 * i[2]) % 7) as f32 / 7.0),
    );
    let mut p = plain.into_parts().1;
    let mut r = relative.into_parts().1;
    let a = p.predict_chunk(&obs).unwrap();
    let b = r.predict_chunk(&obs).unwrap();
    assert_eq!(a.dim(), b.dim());
    for t in 0..a.nrows() {
        for j in 0..6 {
            let want = if j < 5 {
                a[[t, j]] + state[j]
            } else {
                a[[t, j]]
            };
            assert!(
                (b[[t, j]] - want).abs() < 1e-6,
                "row {t} joint {j}: {} vs {want}",
                b[[t, j]]
            );
        }
    }
    // Disabled: nothing added. Enabled without the relative step: refused at load, naming
    // the key.
    let off = tempfile::tempdir().unwrap();
    package_with_steps(off.path(), false, true);
    let mut o = InferenceModel::builder(off.path())
        .threads(1)
        .build()
        .unwrap()
        .into_parts()
        .1;
    assert_eq!(o.predict_chunk(&obs).unwrap(), a);
    let bad = tempfile::tempdir().unwrap();
    package_with_steps(bad.path(), true, false);
    let e = InferenceModel::builder(bad.path())
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.postprocessors[1]") && e.contains("relative_actions_processor"),
        "{e}"
    );
}
