//! The VLA processors (`pi05`, `smolvla_resize`, `new_line`) against physicalai 0.3.0's own
//! (`tests/peers/physicalai_oracle.py`) on edge cases: odd aspect ratios, one and three
//! cameras, empty camera slots, same-size images, states outside [-1, 1] and on bin edges,
//! non-finite pixels, and task text with non-ASCII characters, underscores and newlines.

mod common;

use common::{physicalai_oracle, save_npy};
use ndarray::ArrayD;
use policy_node::npy::read_npy;
use policy_node::policy::processors::vla::{new_line, Pi05, SmolvlaResize, TASK};
use policy_node::policy::Observation;
use serde_json::{json, Value};

/// |ours - physicalai| on images: the same bilinear sampling in f32 (OpenCV computes its
/// weights slightly differently: a few 1e-6).
const TOL: f32 = 1e-5;

/// A deterministic image in [0, 1] (or with some values outside and non-finite ones).
fn image(c: usize, h: usize, w: usize, seed: usize, wild: bool) -> ArrayD<f32> {
    ArrayD::from_shape_fn(vec![1, c, h, w], |i| {
        let k = i[1] * 7919 + i[2] * 131 + i[3] * 17 + seed * 31;
        if wild && k % 53 == 0 {
            [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.7, -0.4][k % 5]
        } else {
            (k % 101) as f32 / 100.0
        }
    })
}

struct Case {
    what: &'static str,
    kind: &'static str,
    params: Value,
    cameras: Vec<(&'static str, ArrayD<f32>)>,
    state: Option<Vec<f32>>,
    task: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let edge_state = vec![
        -1.5, -1.0, -0.9921875, -1e-30, 0.0, 0.5, 0.9921875, 1.0, 2.0,
    ];
    vec![
        Case {
            what: "pi05, one camera of odd aspect, non-ASCII task",
            kind: "pi05",
            params: json!({"image_resolution": [32, 32], "empty_cameras": 0}),
            cameras: vec![("images.top", image(3, 37, 91, 1, false))],
            state: Some(edge_state.clone()),
            task: Some("  Pick the café_cup up,\nthen stack it — 杯子 "),
        },
        Case {
            what: "pi05, three cameras (one already the right size), two empty slots",
            kind: "pi05",
            params: json!({"image_resolution": [24, 32], "empty_cameras": 2}),
            cameras: vec![
                ("images.top", image(3, 48, 64, 2, false)),
                ("images.wrist", image(3, 40, 40, 3, false)),
                ("images.side", image(3, 24, 32, 4, false)),
            ],
            state: Some(vec![0.1, -0.2, 0.3]),
            task: Some("fold the towel"),
        },
        Case {
            what: "smolvla_resize, one camera, wild pixel values",
            kind: "smolvla_resize",
            params: json!({"image_resolution": [32, 32]}),
            cameras: vec![("images.top", image(3, 30, 50, 5, true))],
            state: None,
            task: None,
        },
        Case {
            what: "smolvla_resize, three cameras in four slots",
            kind: "smolvla_resize",
            params: json!({"image_resolution": [20, 28], "num_cameras": 4}),
            cameras: vec![
                ("images.top", image(3, 48, 64, 6, false)),
                ("images.wrist", image(3, 64, 48, 7, false)),
                ("images.side", image(3, 20, 28, 8, false)),
            ],
            state: None,
            task: None,
        },
    ]
}

#[test]
fn vla_image_and_prompt_steps_equal_physicalai() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = cases();
    let mut jobs = Vec::new();
    for (k, c) in cases.iter().enumerate() {
        let mut inputs = serde_json::Map::new();
        for (name, img) in &c.cameras {
            let p = tmp.path().join(format!("{k}.{name}.npy"));
            save_npy(&p, img);
            inputs.insert(name.to_string(), json!(p));
        }
        if let Some(s) = &c.state {
            let p = tmp.path().join(format!("{k}.state.npy"));
            save_npy(
                &p,
                &ArrayD::from_shape_vec(vec![1, s.len()], s.clone()).unwrap(),
            );
            inputs.insert("state".into(), json!(p));
        }
        jobs.push(
            json!({"what": "processor", "type": c.kind, "params": c.params,
            "inputs": inputs, "task": c.task, "out": tmp.path().join(format!("{k}.out"))}),
        );
    }
    let results = physicalai_oracle(&jobs);
    assert_eq!(results.len(), cases.len(), "one oracle answer per case");
    for (k, (c, r)) in cases.iter().zip(&results).enumerate() {
        assert_eq!(r["ok"], json!(true), "{}: physicalai failed: {r}", c.what);
        let mut obs = Observation::new();
        for (name, img) in &c.cameras {
            // Ours takes [C, H, W] (no batch), as the node produces.
            obs.insert(*name, img.index_axis(ndarray::Axis(0), 0).to_owned());
        }
        if let Some(s) = &c.state {
            obs.insert(
                "state",
                ArrayD::from_shape_vec(vec![s.len()], s.clone()).unwrap(),
            );
        }
        if let Some(t) = c.task {
            obs.set_text(TASK, t);
        }
        let order: Vec<String> = c.cameras.iter().map(|(n, _)| n.to_string()).collect();
        let hw = |i: usize| c.params["image_resolution"][i].as_u64().unwrap() as usize;
        match c.kind {
            "pi05" => Pi05::new(
                hw(0),
                hw(1),
                c.params["empty_cameras"].as_u64().unwrap() as usize,
                order,
            )
            .apply(&mut obs)
            .unwrap(),
            _ => SmolvlaResize::new(
                hw(0),
                hw(1),
                c.params["num_cameras"].as_u64().unwrap_or(0) as usize,
                order,
            )
            .apply(&mut obs)
            .unwrap(),
        }
        let want = read_npy(tmp.path().join(format!("{k}.out.images.npy"))).unwrap();
        let got = obs.get("images").unwrap();
        assert_eq!(got.shape(), want.shape(), "{}: images shape", c.what);
        let d = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{}: images {:?}, |ours - physicalai| = {d:.2e}",
            c.what,
            got.shape()
        );
        assert!(d <= TOL, "{}: {d}", c.what);
        let masks = read_npy(tmp.path().join(format!("{k}.out.image_masks.npy"))).unwrap();
        assert_eq!(obs.get("image_masks").unwrap(), &masks, "{}: masks", c.what);
        if c.kind == "pi05" {
            assert_eq!(
                obs.text(TASK).unwrap(),
                r["task"].as_str().unwrap(),
                "{}: prompt",
                c.what
            );
        }
    }
}

#[test]
fn new_line_equals_physicalai() {
    let r = physicalai_oracle(&[
        json!({"what": "processor", "type": "new_line", "inputs": {}, "task": "stack it", "out": "/dev/null"}),
        json!({"what": "processor", "type": "new_line", "inputs": {}, "task": "stack it\n", "out": "/dev/null"}),
    ]);
    assert_eq!(r.len(), 2, "one oracle answer per task");
    for (task, r) in ["stack it", "stack it\n"].iter().zip(&r) {
        let mut obs = Observation::new();
        obs.set_text(TASK, *task);
        new_line(&mut obs);
        assert_eq!(obs.text(TASK).unwrap(), r["task"].as_str().unwrap());
    }
}
