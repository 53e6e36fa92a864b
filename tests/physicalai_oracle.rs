//! physicalai's own runtime (PyPI `physicalai` 0.3.0) as the oracle: for every package
//! fixture on ONNX and OpenVINO, `policyctl chunk` equals
//! `physicalai.inference.InferenceModel(dir).predict_action_chunk(obs)` (after its trimmer)
//! within 1e-5. Where we differ on purpose, the test asserts the difference:
//! - the artifact file named in `model.artifacts` is the one loaded (physicalai takes
//!   `{policy.name}{ext}` or the first file with the extension);
//! - a relative `stats_path` resolves against the export directory (physicalai resolves it
//!   against the working directory);
//! - a manifest with the removed `ActionChunking` runner loads (physicalai cannot import it).
//!
//! Runs the peer `tests/peers/physicalai_oracle.py` with the test venv's Python.
#![cfg(all(feature = "onnx", feature = "openvino"))]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, physicalai_oracle, reference, root, save_npy};
use ndarray::{ArrayD, Axis};
use policy_node::npy::{read_npy, read_npz};
use serde_json::{json, Value};

const POLICYCTL: &str = env!("CARGO_BIN_EXE_policyctl");
/// |ours - physicalai|: both run the same graph with the same runtime on the same inputs;
/// only the normalisation arithmetic (f64 here, the statistics' dtype there) differs.
const TOL: f32 = 1e-5;

/// `policyctl chunk` on per-sample .npy inputs; returns `action`.
fn policyctl_chunk(
    dir: &Path,
    inputs: &[(String, PathBuf)],
    cwd: &Path,
) -> Result<ArrayD<f32>, String> {
    let out_file = tempfile::Builder::new().suffix(".npz").tempfile().unwrap();
    let mut cmd = Command::new(POLICYCTL);
    cmd.current_dir(cwd)
        .arg("chunk")
        .arg(dir)
        .args(["--threads", "1"])
        .arg("--output")
        .arg(out_file.path());
    for (n, p) in inputs {
        cmd.arg("--input").arg(format!("{n}={}", p.display()));
    }
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let arrays = read_npz(out_file.path()).unwrap();
    Ok(arrays.into_iter().find(|(n, _)| n == "action").unwrap().1)
}

struct Sample {
    inputs: Vec<(String, PathBuf)>,
}

/// The package's reference inputs, one .npy per sample and input (no batch dimension for
/// ours, batch 1 for physicalai: each is fed as a runtime user would).
fn samples(package: &str, names: &[&str], tmp: &Path) -> (Vec<Sample>, Vec<Sample>) {
    let n = reference(package, names[0]).shape()[0];
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..n {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for name in names {
            let x = reference(package, name).index_axis(Axis(0), i).to_owned();
            let p = tmp.join(format!("{package}.{i}.{name}.npy"));
            save_npy(&p, &x);
            a.push((name.to_string(), p));
            let p1 = tmp.join(format!("{package}.{i}.{name}.b1.npy"));
            save_npy(&p1, &x.insert_axis(Axis(0)));
            b.push((name.to_string(), p1));
        }
        ours.push(Sample { inputs: a });
        theirs.push(Sample { inputs: b });
    }
    (ours, theirs)
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn chunk_job(dir: &Path, backend: &str, s: &Sample, out: &Path, cwd: Option<&Path>) -> Value {
    let inputs: serde_json::Map<String, Value> = s
        .inputs
        .iter()
        .map(|(n, p)| (n.clone(), json!(p)))
        .collect();
    json!({"what": "chunk", "dir": dir, "backend": backend, "inputs": inputs, "out": out, "cwd": cwd})
}

#[test]
fn policyctl_chunk_equals_physicalai_on_every_package_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    let mut ours = Vec::new();
    for (package, names) in [
        ("act_tiny_pkg", vec!["state", "images"]),
        (
            "act_tiny_lerobot",
            vec!["observation.state", "observation.images.top"],
        ),
    ] {
        let (mine, theirs) = samples(package, &names, tmp.path());
        for backend in ["onnx", "openvino"] {
            let dir = fixture(&format!("{package}/{backend}"));
            for (i, (m, t)) in mine.iter().zip(&theirs).enumerate() {
                let out = tmp
                    .path()
                    .join(format!("oracle.{package}.{backend}.{i}.npy"));
                jobs.push(chunk_job(&dir, backend, t, &out, None));
                let got = policyctl_chunk(&dir, &m.inputs, &root()).unwrap();
                ours.push((format!("{package}/{backend}#{i}"), got, out));
            }
        }
    }
    let results = physicalai_oracle(&jobs);
    assert_eq!(results.len(), ours.len(), "one oracle answer per case");
    let samples = reference("act_tiny_pkg", "state").shape()[0]
        + reference("act_tiny_lerobot", "observation.state").shape()[0];
    assert_eq!(ours.len(), 2 * samples, "every sample on both backends");
    let mut worst = 0.0f32;
    for ((what, got, out), r) in ours.iter().zip(&results) {
        assert_eq!(r["ok"], json!(true), "{what}: physicalai failed: {r}");
        let want = read_npy(out).unwrap();
        let d = max_diff(got, &want);
        println!(
            "{what}: |policyctl chunk - physicalai| = {d:.2e}, shape {:?}",
            got.shape()
        );
        worst = worst.max(d);
    }
    assert!(worst <= TOL, "worst difference {worst} > {TOL}");
}

/// A copy of a fixture package directory in a temp dir, with `edit` applied to its manifest.
fn copy_package(src: &Path, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in fs::read_dir(src).unwrap().flatten() {
        fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let path = dir.path().join("manifest.json");
    let mut m: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut m);
    fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    dir
}

#[test]
fn deliberate_differences_from_physicalai() {
    let tmp = tempfile::tempdir().unwrap();
    let names = ["observation.state", "observation.images.top"];
    let (mine, theirs) = samples("act_tiny_lerobot", &names, tmp.path());
    let want = reference("act_tiny_lerobot", "action")
        .index_axis(Axis(0), 0)
        .to_owned();

    // 1. The named artifact is loaded. A decoy `act.onnx` (`{policy.name}.onnx`, another
    //    graph with other inputs) sits beside the named `model.onnx`.
    let decoy = copy_package(&fixture("act_tiny_lerobot/onnx"), |_| {});
    fs::copy(
        fixture("act_tiny_pkg/onnx/act.onnx"),
        decoy.path().join("act.onnx"),
    )
    .unwrap();
    // 2. A class_path normalizer with a relative `stats_path`.
    let stats_path = copy_package(&fixture("act_tiny_lerobot/onnx"), |m| {
        let pre = m["model"]["preprocessors"].as_array_mut().unwrap();
        for p in pre.iter_mut() {
            *p = json!({
                "class_path": "physicalai.inference.preprocessors.StatsNormalizer",
                "init_args": {"stats_path": "stats.safetensors", "mode": p["mode"], "features": p["features"]},
            });
        }
    });
    // 3. The ActionChunking runner of manifests written before it was removed.
    let chunking = copy_package(&fixture("act_tiny_pkg/onnx"), |m| {
        m["model"]["runner"] = json!({
            "class_path": "physicalai.inference.runners.action_chunking.ActionChunking",
            "init_args": {
                "runner": {"class_path": "physicalai.inference.runners.single_pass.SinglePass", "init_args": {}},
                "chunk_size": 10,
            },
        });
    });
    let elsewhere = tempfile::tempdir().unwrap();
    let jobs = vec![
        json!({"what": "model_path", "dir": decoy.path(), "backend": "onnx"}),
        chunk_job(
            decoy.path(),
            "onnx",
            &theirs[0],
            &tmp.path().join("decoy.npy"),
            None,
        ),
        chunk_job(
            stats_path.path(),
            "onnx",
            &theirs[0],
            &tmp.path().join("sp_else.npy"),
            Some(elsewhere.path()),
        ),
        chunk_job(
            stats_path.path(),
            "onnx",
            &theirs[0],
            &tmp.path().join("sp_here.npy"),
            Some(stats_path.path()),
        ),
        json!({"what": "load", "dir": chunking.path(), "backend": "onnx"}),
    ];
    let r = physicalai_oracle(&jobs);

    // 1: physicalai picks the decoy and cannot feed it; we load the named file.
    assert!(
        r[0]["model_path"].as_str().unwrap().ends_with("act.onnx"),
        "physicalai picked {}",
        r[0]
    );
    assert_eq!(
        r[1]["ok"],
        json!(false),
        "physicalai on the decoy: {}",
        r[1]
    );
    let e = policy_node::export::ExportDir::open(decoy.path()).unwrap();
    assert!(e.model_file.ends_with("model.onnx"), "{:?}", e.model_file);
    let got = policyctl_chunk(decoy.path(), &mine[0].inputs, &root()).unwrap();
    assert!(
        max_diff(&got, &want) <= 1e-4,
        "named artifact: {}",
        max_diff(&got, &want)
    );

    // 2: physicalai finds the statistics only from inside the export directory; we do
    //    from anywhere, and agree with it there.
    assert_eq!(
        r[2]["ok"],
        json!(false),
        "physicalai from elsewhere: {}",
        r[2]
    );
    assert!(
        r[2]["error"]
            .as_str()
            .unwrap()
            .contains("stats.safetensors"),
        "{}",
        r[2]
    );
    assert_eq!(
        r[3]["ok"],
        json!(true),
        "physicalai from the export dir: {}",
        r[3]
    );
    let got = policyctl_chunk(stats_path.path(), &mine[0].inputs, elsewhere.path()).unwrap();
    let theirs_here = read_npy(tmp.path().join("sp_here.npy")).unwrap();
    assert!(
        max_diff(&got, &theirs_here) <= TOL,
        "stats_path: {}",
        max_diff(&got, &theirs_here)
    );

    // 3: physicalai cannot build the removed runner; we run it as the action queue.
    assert_eq!(
        r[4]["ok"],
        json!(false),
        "physicalai with ActionChunking: {}",
        r[4]
    );
    let model = policy_node::policy::InferenceModel::load(chunking.path()).unwrap();
    assert_eq!(model.config().chunk_size, 10);
    assert!(model.config().serves_single_actions());
}

/// The `resize` processor against physicalai's `ResizePreprocessor` (OpenCV bilinear):
/// letterbox and stretch, down and up, odd aspect ratios, a pad value.
#[test]
fn resize_equals_physicalai() {
    use policy_node::policy::processors::{Layout, Resize, ResizeMode};
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            (3usize, 48usize, 64usize),
            (64usize, 64usize),
            "letterbox",
            0.0f32,
        ),
        ((3, 37, 91), (32, 40), "letterbox", 0.25),
        ((3, 30, 20), (64, 48), "letterbox", -1.0),
        ((3, 30, 20), (17, 23), "stretch", 0.0),
        ((3, 64, 64), (224, 224), "stretch", 0.0),
    ];
    let mut jobs = Vec::new();
    let mut ours = Vec::new();
    for (k, ((c, h, w), (th, tw), mode, pad)) in cases.iter().enumerate() {
        let img = ArrayD::from_shape_fn(vec![1, *c, *h, *w], |i| {
            ((i[1] * 131 + i[2] * 17 + i[3] * 7) % 97) as f32 / 97.0
        });
        let input = tmp.path().join(format!("in{k}.npy"));
        save_npy(&input, &img);
        let out = tmp.path().join(format!("out{k}.npy"));
        jobs.push(json!({"what": "resize", "input": input, "out": out,
            "params": {"image_resolution": [th, tw], "mode": mode, "pad_value": pad, "image_layout": "BCHW"}}));
        let m = if *mode == "letterbox" {
            ResizeMode::Letterbox
        } else {
            ResizeMode::Stretch
        };
        let mut t = std::collections::BTreeMap::new();
        t.insert("images".to_string(), img);
        Resize::new(*th, *tw, m, *pad, Layout::ChannelsFirst)
            .apply(&mut t)
            .unwrap();
        ours.push((
            format!("{:?} -> {:?} {mode}", (c, h, w), (th, tw)),
            t.remove("images").unwrap(),
            out,
        ));
    }
    let r = physicalai_oracle(&jobs);
    assert_eq!(r.len(), ours.len(), "one oracle answer per case");
    for ((what, got, out), r) in ours.iter().zip(&r) {
        assert_eq!(r["ok"], json!(true), "{what}: {r}");
        let want = read_npy(out).unwrap();
        let d = max_diff(got, &want);
        println!("{what}: |ours - physicalai| = {d:.2e}");
        assert!(d <= TOL, "{what}: {d}");
    }
}
