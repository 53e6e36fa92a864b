//! The VLA package fixtures (`tools/make_vla_fixture.py`: `vla_pi05`, `vla_smolvla`,
//! `vla_pi05_rtc`, tokenizer in `vla_hf_home`) mean what their READMEs say:
//! - physicalai 0.3.0 loads every package offline (tokenizer from the fixture's Hugging Face
//!   cache at the pinned revision) and reproduces `reference/action.npy` and the recorded graph
//!   inputs, on ONNX and OpenVINO;
//! - the task reaches the graph: another task moves the chunk far beyond any test tolerance;
//! - the RTC sequence replays with physicalai's RTC execution code, and guidance makes the
//!   chunk switches smoother than the same run without it;
//! - the tokenizer revision in the manifests, `refs/main` and the snapshot agree.
//!
//! Runs the peer `tests/peers/vla_fixture_check.py` with the test venv's Python.

mod common;

use std::fs;
use std::path::Path;

use common::{fixture, reference};
use ndarray::{ArrayD, Axis};
use serde_json::Value;

/// Same graph, same runtime, same inputs: only run-to-run arithmetic may differ.
const TOL: f64 = 1e-5;
/// Changing the task must move some action by at least this much (rad): 100x the 1e-4
/// tolerance the node's comparisons with physicalai use.
const TASK_EFFECT: f64 = 1e-2;

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn check() -> Value {
    common::run_peer("vla_fixture_check.py", &[fixture("")])
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn vla_fixtures_reproduce_with_physicalai_and_the_task_reaches_the_graph() {
    let result = check();
    let packages = result["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 4, "{result}");
    for p in packages {
        let what = format!("{} {}", p["package"], p["backend"]);
        assert_eq!(p["ok"], true, "{what}: {p}");
        assert_eq!(p["finite"], true, "{what}");
        assert_eq!(p["shape"], serde_json::json!([4, 12, 6]), "{what}");
        assert!(num(p, "max_diff") <= TOL, "{what}: {p}");
        for (port, d) in p["graph_input_max_diff"].as_object().unwrap() {
            // -1 marks a dtype that differs from the recorded one.
            let d = d.as_f64().unwrap();
            assert!((0.0..=1e-6).contains(&d), "{what}: graph input {port}: {d}");
        }
        assert!(
            num(p, "task_delta_max") >= TASK_EFFECT,
            "{what}: another task moves the chunk by only {}",
            p["task_delta_max"]
        );
    }
    let rtc = &result["rtc"];
    assert_eq!(rtc["ok"], true, "{rtc}");
    assert_eq!(rtc["schedule_equal"], true, "{rtc}");
    for key in [
        "state_max_diff",
        "noise_max_diff",
        "chunk_max_diff",
        "executed_max_diff",
        "onnx_chunk_max_diff",
    ] {
        assert!(num(rtc, key) <= TOL, "vla_pi05_rtc {key}: {rtc}");
    }
}

/// Mean |a[t] - a[t-1]| over the ticks where a new chunk took over.
fn switch_jump(executed: &ArrayD<f32>, merges: &[usize]) -> f64 {
    let mut total = 0.0;
    for &t in merges {
        let a = executed.index_axis(Axis(0), t);
        let b = executed.index_axis(Axis(0), t - 1);
        total += a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| f64::from((x - y).abs()))
            .sum::<f64>()
            / a.len() as f64;
    }
    total / merges.len() as f64
}

#[test]
fn rtc_reference_continues_the_previous_chunk() {
    let schedule = json(&fixture("vla_pi05_rtc/reference/schedule.json"));
    let merges: Vec<usize> = schedule["merge_tick"].as_array().unwrap()[1..]
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert!(merges.len() >= 5, "{schedule}");
    let guided = switch_jump(&reference("vla_pi05_rtc", "executed"), &merges);
    let unguided = switch_jump(&reference("vla_pi05_rtc", "executed_unguided"), &merges);
    assert!(
        guided < 0.6 * unguided,
        "guided switches jump {guided:.4} rad, unguided {unguided:.4}"
    );
    // The leftover physicalai handed the graph is the previous chunk's unexecuted rest.
    let left = reference("vla_pi05_rtc", "prev_chunk_left_over");
    let chunk = reference("vla_pi05_rtc", "chunk");
    let requests: Vec<usize> = schedule["request_tick"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    for k in 1..requests.len() {
        // Chunk k-1 was merged at merge_tick[k-1] keeping it from index inference_delay[k-1] on
        // (the actions popped while it ran); one action was popped per tick since.
        let merged_at = schedule["merge_tick"][k - 1].as_u64().unwrap() as usize;
        let first_kept = schedule["inference_delay"][k - 1].as_u64().unwrap() as usize;
        let executed_since = requests[k] - merged_at;
        let start = first_kept + executed_since;
        let rest = chunk.index_axis(Axis(0), k - 1);
        let fed = left.index_axis(Axis(0), k);
        let n = rest.shape()[0] - start;
        for i in 0..fed.shape()[1] {
            for j in 0..fed.shape()[2] {
                let want = if i < n { rest[[start + i, j]] } else { 0.0 };
                assert_eq!(fed[[0, i, j]], want, "inference {k}, step {i}, joint {j}");
            }
        }
    }
}

#[test]
fn tokenizer_revision_is_pinned_in_every_manifest_and_the_cache() {
    let repo = fixture("vla_hf_home/hub/models--policy-node--tiny-vla-tokenizer");
    let main = fs::read_to_string(repo.join("refs/main")).unwrap();
    assert_eq!(main.len(), 40, "refs/main: {main:?}");
    for file in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
        assert!(
            repo.join("snapshots").join(&main).join(file).is_file(),
            "{file}"
        );
    }
    for pkg in ["vla_pi05", "vla_smolvla", "vla_pi05_rtc"] {
        for backend in ["onnx", "openvino"] {
            let m = json(&fixture(&format!("{pkg}/{backend}/manifest.json")));
            let steps = m["model"]["preprocessors"].as_array().unwrap();
            let tok = steps.iter().find(|s| s["type"] == "hf_tokenizer").unwrap();
            assert_eq!(
                tok["tokenizer_name"], "policy-node/tiny-vla-tokenizer",
                "{pkg}/{backend}"
            );
            assert_eq!(tok["revision"], main.as_str(), "{pkg}/{backend}");
        }
    }
}
