//! `policyctl` end to end: `info --json`, `predict` on `.npy` inputs against the PyTorch
//! reference, `bench --json`, and clear errors for bad arguments.

mod common;

use std::process::Command;

use common::*;
use ndarray::Axis;
use policy_node::export::ExportBackend;
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

#[cfg(feature = "onnx")]
#[test]
fn info_json_shows_the_package() {
    let out = policyctl()
        .args(["info", "--json"])
        .arg(fixture("act_tiny_lerobot/onnx"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["package"];
    assert_eq!(p["format"], "policy_package");
    assert_eq!(p["version"], "1.0");
    assert_eq!(p["runner"], "single_pass");
    let pre: Vec<&str> = p["preprocessors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        pre[0].starts_with("normalize min_max [observation.state]"),
        "{pre:?}"
    );
    assert!(
        pre[1].starts_with("normalize mean_std [observation.images.top]"),
        "{pre:?}"
    );
    let post: Vec<&str> = p["postprocessors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        post[0].starts_with("denormalize quantiles [action]"),
        "{post:?}"
    );
    assert_eq!(post[1], "action_chunk_trimmer n_action_steps 8");
    assert_eq!(p["hardware"]["robots"][0]["action"]["order"][5], "joint6");
    assert_eq!(
        p["hardware"]["cameras"][0]["shape"],
        serde_json::json!([3, 64, 64])
    );
    assert_eq!(v["n_action_steps"], 8);
    // Unknown top-level keys are kept and shown.
    let dir = tempfile::tempdir().unwrap();
    for f in ["manifest.json", "model.onnx", "stats.safetensors"] {
        std::fs::copy(fixture("act_tiny_lerobot/onnx").join(f), dir.path().join(f)).unwrap();
    }
    let m = dir.path().join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replacen('{', "{\"rtc\": {\"chunk_size\": 10},", 1)).unwrap();
    let out = policyctl().arg("info").arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("extra     rtc: {\"chunk_size\":10}"),
        "{text}"
    );
}

/// `chunk` runs the whole pipeline: aliases for the input names, denormalized and trimmed
/// actions, the same numbers as the library; bad inputs are named.
#[cfg(feature = "onnx")]
#[test]
fn chunk_runs_the_whole_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, a: ndarray::ArrayD<f32>| {
        let p = dir.path().join(name);
        let v: Vec<f32> = a.iter().copied().collect();
        std::fs::write(&p, encode_npy(a.shape(), NpyData::F32(&v))).unwrap();
        p
    };
    let s = write(
        "s.npy",
        reference("act_tiny_lerobot", "observation.state")
            .index_axis(Axis(0), 1)
            .to_owned(),
    );
    let i = write(
        "i.npy",
        reference("act_tiny_lerobot", "observation.images.top")
            .index_axis(Axis(0), 1)
            .to_owned(),
    );
    let want = reference("act_tiny_lerobot", "action")
        .index_axis(Axis(0), 1)
        .to_owned();
    // PAS names (`state`, `images.top`) for a package that says `observation.*`.
    for (sn, inn) in [
        ("observation.state", "observation.images.top"),
        ("state", "images.top"),
    ] {
        let out = dir.path().join("o.npz");
        let r = policyctl()
            .arg("chunk")
            .arg(fixture("act_tiny_lerobot/onnx"))
            .arg("--input")
            .arg(format!("{sn}={}", s.display()))
            .arg("--input")
            .arg(format!("{inn}={}", i.display()))
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "{sn}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let got = read_npz(&out).unwrap().remove(0).1;
        assert_eq!(got.shape(), &[8, 6]);
        assert!(
            max_abs_diff(&got, &want) <= 1e-4,
            "{sn}: {}",
            max_abs_diff(&got, &want)
        );
    }
    // A state of the wrong length names the tensor, the feature and both shapes.
    let bad = write("bad.npy", ndarray::ArrayD::zeros(vec![7]));
    let r = policyctl()
        .arg("chunk")
        .arg(fixture("act_tiny_lerobot/onnx"))
        .arg("--input")
        .arg(format!("observation.state={}", bad.display()))
        .arg("--input")
        .arg(format!("observation.images.top={}", i.display()))
        .arg("--output")
        .arg(dir.path().join("x.npz"))
        .output()
        .unwrap();
    assert!(!r.status.success());
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(e.contains("observation.state") && e.contains("[7]"), "{e}");
}

/// `bench` takes shapes from the package's features or `--input`, and says so when nothing
/// gives one (a TorchScript export without metadata shapes), instead of failing in libtorch.
#[cfg(feature = "torch")]
#[test]
fn bench_names_inputs_without_a_known_shape() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        act_tiny(policy_node::export::ExportBackend::TorchScript).join("model.pt"),
        dir.path().join("model.pt"),
    )
    .unwrap();
    let r = policyctl()
        .arg("bench")
        .arg(dir.path())
        .args(["--iterations", "1"])
        .output()
        .unwrap();
    assert!(!r.status.success());
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(
        e.contains("`state`") && e.contains("no known shape") && e.contains("--input state="),
        "{e}"
    );
    // With the shapes given as files, it runs.
    let write = |name: &str, shape: &[usize]| {
        let p = dir.path().join(name);
        let v = vec![0.5f32; shape.iter().product()];
        std::fs::write(&p, encode_npy(shape, NpyData::F32(&v))).unwrap();
        p
    };
    let (s, i) = (write("s.npy", &[1, 6]), write("i.npy", &[1, 3, 64, 64]));
    let r = policyctl()
        .arg("bench")
        .arg(dir.path())
        .args(["--iterations", "2", "--json"])
        .arg("--input")
        .arg(format!("state={}", s.display()))
        .arg("--input")
        .arg(format!("images={}", i.display()))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// A copy of the fixture export of `backend` whose metadata gives `images` the shape `dims`.
fn export_claiming(backend: policy_node::export::ExportBackend, dims: &[u64]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(act_tiny(backend)).unwrap().flatten() {
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let json = dir.path().join("metadata.json");
    if json.exists() {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        v["input_shapes"]["images"] = serde_json::json!(dims);
        std::fs::write(&json, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    } else {
        let yaml = dir.path().join("metadata.yaml");
        let mut v: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&yaml).unwrap()).unwrap();
        v["input_shapes"]["images"] = serde_yaml::to_value(dims).unwrap();
        std::fs::write(&yaml, serde_yaml::to_string(&v).unwrap()).unwrap();
    }
    dir
}

/// An export whose metadata claims an enormous image tensor is a clear error naming the key
/// and the limit, before anything is sized by it: `bench` used to abort in the allocator
/// (`[3, 100000, 100000]`) or panic inside ndarray (`[3, 2^40, 2^40]`, exit 101).
#[test]
fn enormous_metadata_shapes_are_clear_errors() {
    for backend in backends() {
        for (dims, limit) in [
            (vec![3, 100_000, 100_000], "MAX_TENSOR_ELEMENTS"),
            (vec![3, 1 << 40, 1 << 40], "MAX_DIM"),
        ] {
            let dir = export_claiming(backend, &dims);
            for cmd in ["bench", "info"] {
                let out = policyctl().arg(cmd).arg(dir.path()).output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{backend} {cmd} {dims:?}: {err}"
                );
                assert!(
                    err.contains("input_shapes.images")
                        && err.contains(limit)
                        && err.contains("metadata."),
                    "{backend} {cmd} {dims:?}: {err}"
                );
            }
        }
    }
}

/// A model whose own ports claim an enormous tensor (an ONNX graph declaring
/// `[1, 3, 100000, 100000]`) is refused at load, naming the port and the limit: `bench`
/// and the node build their input buffers from these shapes.
#[test]
fn enormous_model_ports_are_clear_errors() {
    if !backends().contains(&policy_node::export::ExportBackend::Onnx) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, onnx
from onnx import helper, TensorProto
x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 100000, 100000])
y = helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 3, 100000, 100000])
g = helper.make_graph([helper.make_node("Identity", ["images"], ["action"])], "huge", [x], [y])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.save(m, sys.argv[1])
"#;
    let status = Command::new(python())
        .args(["-c", script])
        .arg(dir.path().join("model.onnx"))
        .status()
        .unwrap();
    assert!(status.success());
    for cmd in ["bench", "info"] {
        let out = policyctl().arg(cmd).arg(dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.contains("model input `images`")
                && err.contains("[1, 3, 100000, 100000]")
                && err.contains("MAX_TENSOR_ELEMENTS"),
            "{cmd}: {err}"
        );
    }
}

// ---- tune ---------------------------------------------------------------------------------

fn tune_json(args: &[&str]) -> (bool, serde_json::Value, String) {
    let o = policyctl()
        .arg("tune")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (o.status.success(), v, stderr)
}

#[test]
fn tune_ranks_every_candidate_checks_it_and_writes_the_winners_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let params = dir.path().join("tuned.yaml");
    let export = act_tiny(ExportBackend::Onnx);
    let (ok, v, err) = tune_json(&[
        export.to_str().unwrap(),
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1,2",
        "--write-params",
        params.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let cands = v["candidates"].as_array().unwrap();
    let backends: std::collections::BTreeSet<&str> = cands
        .iter()
        .map(|c| c["backend"].as_str().unwrap())
        .collect();
    // ONNX Runtime's four optimisation levels at two thread counts at least; OpenVINO reads
    // the ONNX model too when it is compiled in.
    assert!(cands.len() >= 8, "{v}");
    assert!(backends.contains("onnx"), "{v}");
    if cfg!(feature = "openvino") {
        assert!(backends.contains("openvino"), "{v}");
    }
    for c in cands {
        let accepted = c["accepted"].as_bool().unwrap();
        if accepted {
            assert!(c["max_error"].as_f64().unwrap() <= 1e-4, "{c}");
            assert!(c["median_us"].as_f64().unwrap() > 0.0, "{c}");
            assert!(c["p99_us"].as_f64().unwrap() >= c["median_us"].as_f64().unwrap());
        } else {
            assert!(c["error"].as_str().is_some_and(|e| !e.is_empty()), "{c}");
        }
        assert!(
            [1, 2].contains(&c["settings"]["threads"].as_u64().unwrap()),
            "{c}"
        );
    }
    // The winner is the fastest accepted candidate.
    let w = v["winner"].as_u64().unwrap() as usize;
    let winner = &cands[w];
    assert!(winner["accepted"].as_bool().unwrap());
    let fastest = cands
        .iter()
        .filter(|c| c["accepted"].as_bool().unwrap())
        .map(|c| c["median_us"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(winner["median_us"].as_f64().unwrap(), fastest);
    // The parameter file names the winner, and the node's parameter reader takes it.
    let map = policy_node::control::read_params_file(&params, "policy_node").unwrap();
    let get = |k: &str| {
        format!(
            "{:?}",
            map.get(k).unwrap_or_else(|| panic!("{k} in {map:?}"))
        )
    };
    assert!(get("backend").contains(winner["backend"].as_str().unwrap()));
    assert!(get("threads").contains(&winner["settings"]["threads"].to_string()));
}

#[test]
fn tune_rejects_candidates_outside_the_tolerance_and_says_why() {
    // Tolerance 0: every candidate that computes differently from the reference (another
    // optimisation level reorders float operations; another backend; bf16) is rejected, with
    // its error; the reference's own settings match it exactly.
    let export = act_tiny(ExportBackend::Onnx);
    let (ok, v, err) = tune_json(&[
        export.to_str().unwrap(),
        "--iterations",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--tolerance",
        "0",
    ]);
    let cands = v["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("{err}"));
    for c in cands {
        let e = c["max_error"].as_f64();
        if c["accepted"].as_bool().unwrap() {
            assert_eq!(e, Some(0.0), "{c}");
        } else if let Some(e) = e {
            assert!(e > 0.0, "{c}");
            assert!(
                c["error"].as_str().unwrap().contains("above the tolerance"),
                "{c}"
            );
        }
    }
    assert_eq!(ok, v["winner"].is_u64(), "{err}");
}

#[test]
fn tune_bad_input_is_a_clear_error() {
    // A parameter file that cannot be written: an error before any timing.
    let export = act_tiny(ExportBackend::Onnx);
    let t = std::time::Instant::now();
    let o = policyctl()
        .args([
            "tune",
            export.to_str().unwrap(),
            "--write-params",
            "/nonexistent/dir/p.yaml",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("/nonexistent/dir/p.yaml"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(20));

    // Outputs that are NaN (the fault fixture: s1 > 5): every candidate says so, no winner.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.npy");
    let images = dir.path().join("images.npy");
    save_npy(
        &state,
        &ndarray::ArrayD::from_shape_vec(vec![6], vec![0.0, 9.0, 0.0, 0.0, 0.0, 0.0]).unwrap(),
    );
    save_npy(&images, &ndarray::ArrayD::zeros(vec![3, 32, 32]));
    let (ok, v, err) = tune_json(&[
        fixture("faults/onnx").to_str().unwrap(),
        "--input",
        &format!("state={}", state.display()),
        "--input",
        &format!("images={}", images.display()),
        "--iterations",
        "1",
        "--threads",
        "1",
    ]);
    assert!(!ok, "{v}");
    assert!(err.contains("no candidate"), "{err}");
    let cands = v["candidates"].as_array().unwrap();
    assert!(!cands.is_empty());
    for c in cands {
        assert!(!c["accepted"].as_bool().unwrap());
        let e = c["error"].as_str().unwrap();
        assert!(e.contains("non-finite") || e.contains("NaN"), "{c}");
    }
    assert!(v["winner"].is_null());

    // A model file no backend can read: every candidate says it does not load.
    let broken = tempfile::tempdir().unwrap();
    std::fs::copy(
        export.join("metadata.yaml"),
        broken.path().join("metadata.yaml"),
    )
    .unwrap();
    std::fs::write(broken.path().join("model.onnx"), b"not an onnx model").unwrap();
    let (ok, v, err) = tune_json(&[
        broken.path().to_str().unwrap(),
        "--iterations",
        "1",
        "--threads",
        "1",
    ]);
    assert!(!ok, "{v}");
    let cands = v["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("{err}"));
    assert!(!cands.is_empty());
    for c in cands {
        assert!(!c["accepted"].as_bool().unwrap());
        assert!(
            c["error"].as_str().unwrap().contains("does not load"),
            "{c}"
        );
    }
}
