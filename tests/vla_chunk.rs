//! VLA packages through the whole pipeline: `policyctl chunk --task` on the Pi0.5- and
//! SmolVLA-shaped fixtures (`tools/make_vla_fixture.py`) equals what physicalai 0.3.0's
//! `InferenceModel(...).predict_action_chunk` computed for the same observation and task
//! (`reference/action.npy`), on ONNX and OpenVINO; the task reaches the graph; and the
//! task / tokenizer errors name the key, the file or the limit. Also the `ov_tokenizer`
//! step against OpenVINO's own tokenizer runtime.
#![cfg(feature = "onnx")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fixture, reference, save_npy};
use ndarray::{ArrayD, Axis};
use policy_node::npy::read_npz;

/// |ours - physicalai|: the same graphs on the same runtimes; the processors' arithmetic
/// (resize weights, normalisation in f64) differs by ~1e-6 at most (measured 3.6e-7).
const TOL: f32 = 1e-4;

fn tasks(pkg: &str) -> Vec<String> {
    serde_json::from_str(
        &fs::read_to_string(fixture(&format!("{pkg}/reference/tasks.json"))).unwrap(),
    )
    .unwrap()
}

/// Sample `i` of a package's reference inputs as .npy files (no batch dimension).
fn inputs(pkg: &str, i: usize, dir: &Path) -> Vec<(String, PathBuf)> {
    ["state", "images.top", "images.wrist"]
        .iter()
        .map(|n| {
            let p = dir.join(format!("{pkg}.{i}.{n}.npy"));
            save_npy(&p, &reference(pkg, n).index_axis(Axis(0), i).to_owned());
            (n.to_string(), p)
        })
        .collect()
}

fn chunk_cmd(
    export: &Path,
    inputs: &[(String, PathBuf)],
    task: Option<&str>,
    out: &Path,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_policyctl"));
    c.arg("chunk")
        .arg(export)
        .args(["--threads", "1"])
        .arg("--output")
        .arg(out);
    for (n, p) in inputs {
        c.arg("--input").arg(format!("{n}={}", p.display()));
    }
    if let Some(t) = task {
        c.arg("--task").arg(t);
    }
    c
}

fn run_chunk(
    export: &Path,
    inputs: &[(String, PathBuf)],
    task: Option<&str>,
    out: &Path,
) -> Result<ArrayD<f32>, String> {
    let o: Output = chunk_cmd(export, inputs, task, out)
        .arg("--tokenizer-dir")
        .arg(fixture("vla_hf_home/hub"))
        .output()
        .unwrap();
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(read_npz(out).unwrap().remove(0).1)
}

fn backends() -> Vec<&'static str> {
    let mut b = vec!["onnx"];
    if cfg!(feature = "openvino") {
        b.push("openvino");
    }
    b
}

#[test]
fn chunk_with_a_task_equals_physicalai() {
    let tmp = tempfile::tempdir().unwrap();
    for pkg in ["vla_pi05", "vla_smolvla"] {
        let want = reference(pkg, "action");
        let tasks = tasks(pkg);
        for backend in backends() {
            let export = fixture(&format!("{pkg}/{backend}"));
            let mut worst = 0.0f32;
            for (i, task) in tasks.iter().enumerate() {
                let got = run_chunk(
                    &export,
                    &inputs(pkg, i, tmp.path()),
                    Some(task),
                    &tmp.path().join("o.npz"),
                )
                .unwrap_or_else(|e| panic!("{pkg}/{backend} sample {i}: {e}"));
                let w = want.index_axis(Axis(0), i).to_owned();
                assert_eq!(got.shape(), w.shape(), "{pkg}/{backend}");
                worst = worst.max(
                    got.iter()
                        .zip(w.iter())
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max),
                );
            }
            println!(
                "{pkg}/{backend}: max |policyctl chunk - physicalai| = {worst:.2e} over {} tasks",
                tasks.len()
            );
            assert!(worst <= TOL, "{pkg}/{backend}: {worst}");
        }
    }
}

#[test]
fn the_task_reaches_the_graph() {
    let tmp = tempfile::tempdir().unwrap();
    for pkg in ["vla_pi05", "vla_smolvla"] {
        let export = fixture(&format!("{pkg}/onnx"));
        let inp = inputs(pkg, 0, tmp.path());
        let a = run_chunk(
            &export,
            &inp,
            Some("pick up the red cube"),
            &tmp.path().join("a.npz"),
        )
        .unwrap();
        let b = run_chunk(
            &export,
            &inp,
            Some("open the drawer"),
            &tmp.path().join("b.npz"),
        )
        .unwrap();
        let d = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        println!("{pkg}: another task moves the chunk by up to {d:.3}");
        assert!(d > 1e-2, "{pkg}: the task does not reach the graph ({d})");
    }
}

#[test]
fn task_and_tokenizer_errors_name_the_key_the_file_or_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let export = fixture("vla_pi05/onnx");
    let inp = inputs("vla_pi05", 0, tmp.path());
    let out = tmp.path().join("x.npz");
    let long = "x".repeat(3000);
    for (task, needles) in [
        (None, vec!["needs a task", "--task"]),
        (Some("   "), vec!["task is empty"]),
        (Some(long.as_str()), vec!["3000 bytes", "2048"]),
    ] {
        let e = run_chunk(&export, &inp, task, &out).unwrap_err();
        for n in needles {
            assert!(e.contains(n), "`{n}` not in: {e}");
        }
    }
    // No tokenizer anywhere: the package, `tokenizer_dir` and the Hugging Face cache all empty.
    let empty = tempfile::tempdir().unwrap();
    let o = chunk_cmd(&export, &inp, Some("go"), &out)
        .env("HOME", empty.path())
        .env("HF_HOME", empty.path())
        .env("HF_HUB_CACHE", empty.path())
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for n in [
        "manifest.json",
        "model.preprocessors[2].tokenizer_name",
        "policy-node/tiny-vla-tokenizer",
        "no tokenizer.json found",
    ] {
        assert!(e.contains(n), "`{n}` not in: {e}");
    }
    // The cache holds another revision than the package pins.
    let cache = tempfile::tempdir().unwrap();
    let snap = cache.path().join("models--policy-node--tiny-vla-tokenizer/snapshots/0123456789abcdef0123456789abcdef01234567");
    fs::create_dir_all(&snap).unwrap();
    let src = fixture("vla_hf_home/hub/models--policy-node--tiny-vla-tokenizer/snapshots/56970fdc8d7dab29016539388a970973edbf1a0f");
    fs::copy(src.join("tokenizer.json"), snap.join("tokenizer.json")).unwrap();
    let o = chunk_cmd(&export, &inp, Some("go"), &out)
        .arg("--tokenizer-dir")
        .arg(cache.path())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for n in [
        "model.preprocessors[2].revision",
        "0123456789abcdef",
        "56970fdc8d7dab29016539388a970973edbf1a0f",
    ] {
        assert!(e.contains(n), "`{n}` not in: {e}");
    }
}

/// `ov_tokenizer`: a tokenizer converted by openvino_tokenizers, run through the OpenVINO C
/// API with the extension, gives the ids and mask OpenVINO's Python runtime gives.
#[cfg(feature = "openvino")]
#[test]
fn ov_tokenizer_equals_openvino_tokenizers() {
    use policy_node::runtime::ov_tokenizer::OvTokenizer;
    let tmp = tempfile::tempdir().unwrap();
    let texts = [
        "Task: pick up the cube, State: 1 2 3 255;\nAction: ",
        "stack the block",
        "Lege den Würfel 🙂 in die Schüssel",
    ];
    let mut args = vec![tmp.path().as_os_str().to_owned()];
    args.extend(texts.iter().map(std::ffi::OsString::from));
    let want: Vec<(Vec<i64>, Vec<i64>)> =
        serde_json::from_value(common::run_peer("ov_tokenizer_peer.py", &args)).unwrap();
    let mut tok = OvTokenizer::load(&tmp.path().join("tokenizer.xml")).unwrap();
    assert_eq!(
        want.len(),
        texts.len(),
        "one openvino_tokenizers answer per text"
    );
    for (text, (ids, mask)) in texts.iter().zip(&want) {
        let (got_ids, got_mask) = tok.tokenize(text).unwrap();
        assert_eq!(&got_ids, ids, "{text}");
        assert_eq!(
            got_mask.iter().map(|m| i64::from(*m)).collect::<Vec<_>>(),
            *mask,
            "{text}"
        );
    }
    // A missing model names the file.
    let e = OvTokenizer::load(&tmp.path().join("missing.xml"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.xml"), "{e}");
}
