//! `policyctl` end to end: `info --json`, `predict` on `.npy` inputs against the PyTorch
//! reference, `bench --json`, and clear errors for bad arguments.

mod common;

use std::process::Command;

use common::*;
use ndarray::Axis;
use policy_node::npy::{encode_npy, read_npz, NpyData};

fn policyctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_policyctl"))
}

#[test]
fn info_json_describes_every_backend() {
    for backend in backends() {
        let out = policyctl()
            .args(["info", "--json"])
            .arg(act_tiny(backend))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["backend"], backend.as_str());
        assert_eq!(v["chunk_size"], 10);
        assert_eq!(v["use_action_queue"], true);
        assert_eq!(v["inputs"][0]["name"], "state");
        assert_eq!(v["inputs"][0]["shape"], serde_json::json!([1, 6]));
        assert_eq!(v["inputs"][1]["shape"], serde_json::json!([1, 3, 64, 64]));
        assert_eq!(v["outputs"][0]["name"], "action");
        assert!(v["device"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

#[test]
fn predict_writes_the_model_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let state = reference("act_tiny", "state")
        .index_axis(Axis(0), 2)
        .insert_axis(Axis(0))
        .to_owned();
    let images = reference("act_tiny", "images")
        .index_axis(Axis(0), 2)
        .insert_axis(Axis(0))
        .to_owned();
    let write = |name: &str, a: &ndarray::ArrayD<f32>| {
        let p = dir.path().join(format!("{name}.npy"));
        std::fs::write(
            &p,
            encode_npy(a.shape(), NpyData::F32(a.as_slice().unwrap())),
        )
        .unwrap();
        p
    };
    let (sp, ip) = (write("state", &state), write("images", &images));
    for backend in backends() {
        let out_path = dir.path().join(format!("out-{backend}.npz"));
        let out = policyctl()
            .arg("predict")
            .arg(act_tiny(backend))
            .arg("--input")
            .arg(format!("state={}", sp.display()))
            .arg("--input")
            .arg(format!("images={}", ip.display()))
            .arg("--output")
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let arrays = read_npz(&out_path).unwrap();
        assert_eq!(arrays.len(), 1);
        assert_eq!(arrays[0].0, "action");
        let want = act_tiny_action(2).insert_axis(Axis(0));
        assert!(max_abs_diff(&arrays[0].1, &want) <= 1e-4, "{backend}");
    }
    // A wrong input name is named in the error, and nothing is written.
    let backend = backends()[0];
    let out_path = dir.path().join("bad.npz");
    let out = policyctl()
        .arg("predict")
        .arg(act_tiny(backend))
        .arg("--input")
        .arg(format!("stat={}", sp.display()))
        .arg("--input")
        .arg(format!("images={}", ip.display()))
        .arg("--output")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`stat`"), "{err}");
    assert!(!out_path.exists());
}

#[test]
fn bench_json_reports_latency_statistics() {
    let backend = backends()[0];
    let out = policyctl()
        .args([
            "bench",
            "--json",
            "--iterations",
            "5",
            "--warmup",
            "1",
            "--threads",
            "1",
        ])
        .arg(act_tiny(backend))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = &v["latency_us"];
    let (min, med, p99, max) = (
        l["min"].as_f64().unwrap(),
        l["median"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(0.0 < min && min <= med && med <= p99 && p99 <= max, "{v}");
    assert_eq!(v["iterations"], 5);
    assert!(v["load_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = policyctl()
        .args(["info", "/nonexistent/export"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/export"));

    let out = policyctl()
        .args(["info", "--backend", "tflite"])
        .arg(act_tiny(backends()[0]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tflite"));

    let out = policyctl()
        .args(["bench", "--iterations", "0"])
        .arg(act_tiny(backends()[0]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--iterations"));
}
