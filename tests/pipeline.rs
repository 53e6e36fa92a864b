//! Train -> export -> inference, end to end: `tools/make_fixture.py` trains a tiny ACT-style
//! policy on the synthetic demonstration and exports it to all three formats in a fresh
//! directory; each compiled backend then loads its export through `InferenceModel`, matches
//! the PyTorch outputs the script recorded, agrees with the other backends, and tracks the
//! demonstration it learned.

mod common;

use std::process::Command;

use common::*;
use ndarray::{ArrayD, Axis};
use policy_node::npy::read_npy;
use policy_node::policy::{InferenceModel, Observation};

#[test]
fn train_export_infer() {
    let out = tempfile::tempdir().unwrap();
    let py = python();
    assert!(
        py.exists(),
        "{} is missing: run tools/setup.sh",
        py.display()
    );
    let status = Command::new(&py)
        .arg(root().join("tools/make_fixture.py"))
        .args(["--no-2cam", "--steps", "300", "--seed", "7", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "make_fixture.py failed: {status}");

    let ref_dir = out.path().join("act_tiny/reference");
    let state = read_npy(ref_dir.join("state.npy")).unwrap();
    let images = read_npy(ref_dir.join("images.npy")).unwrap();
    let torch_action = read_npy(ref_dir.join("action.npy")).unwrap();
    let expert = read_npy(ref_dir.join("expert.npy")).unwrap();
    let n = state.shape()[0];

    let mut per_backend: Vec<(String, Vec<ArrayD<f32>>)> = Vec::new();
    for backend in backends() {
        let dir = out.path().join("act_tiny").join(backend.as_str());
        let mut m = InferenceModel::load(&dir).unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(m.backend(), backend);
        assert_eq!(
            m.config().chunk_size,
            10,
            "{backend}: chunk_size from either metadata schema"
        );
        let mut chunks = Vec::new();
        for i in 0..n {
            let mut obs = Observation::new();
            obs.insert("state", state.index_axis(Axis(0), i).to_owned());
            obs.insert("images", images.index_axis(Axis(0), i).to_owned());
            let chunk = m.predict_chunk(&obs).unwrap().into_dyn();
            let want = torch_action.index_axis(Axis(0), i).to_owned();
            let d = max_abs_diff(&chunk, &want);
            assert!(d <= 1e-4, "{backend} sample {i}: |rust - torch| = {d}");
            chunks.push(chunk);
        }
        per_backend.push((backend.to_string(), chunks));
    }
    for w in per_backend.windows(2) {
        for i in 0..n {
            let d = max_abs_diff(&w[0].1[i], &w[1].1[i]);
            assert!(d <= 1e-4, "{} vs {} sample {i}: {d}", w[0].0, w[1].0);
        }
    }
    // The same weights as policy packages: normalisation outside the graph (LeRobot style)
    // reproduces the PyTorch policy through normalize -> graph -> denormalize -> trimmer.
    for backend in backends() {
        if backend == policy_node::export::ExportBackend::TorchScript {
            continue;
        }
        let pkg = out.path().join("act_tiny_lerobot");
        let mut m = InferenceModel::load(pkg.join(backend.as_str())).unwrap();
        let want = read_npy(pkg.join("reference/action.npy")).unwrap();
        let s = read_npy(pkg.join("reference/observation.state.npy")).unwrap();
        let im = read_npy(pkg.join("reference/observation.images.top.npy")).unwrap();
        for i in 0..want.shape()[0] {
            let mut obs = Observation::new();
            obs.insert("observation.state", s.index_axis(Axis(0), i).to_owned());
            obs.insert(
                "observation.images.top",
                im.index_axis(Axis(0), i).to_owned(),
            );
            let chunk = m.predict_chunk(&obs).unwrap();
            let n = m.config().n_action_steps;
            let got = chunk.slice(ndarray::s![..n, ..]).to_owned().into_dyn();
            let d = max_abs_diff(&got, &want.index_axis(Axis(0), i).to_owned());
            assert!(
                d <= 1e-4,
                "package {backend} sample {i}: |rust - torch| = {d}"
            );
        }
    }

    // It learned the demonstration: chunk error well below the do-nothing baseline.
    let (_, chunks) = &per_backend[0];
    let mut err = 0.0f64;
    let mut base = 0.0f64;
    let mut count = 0.0f64;
    for (i, chunk) in chunks.iter().enumerate() {
        let e = expert.index_axis(Axis(0), i);
        let s = state.index_axis(Axis(0), i);
        for ((c, x), j) in chunk.iter().zip(e.iter()).zip((0..).cycle()) {
            err += f64::from(c - x).powi(2);
            base += f64::from(s[j % s.len()] - x).powi(2);
            count += 1.0;
        }
    }
    let (rmse, base_rmse) = ((err / count).sqrt(), (base / count).sqrt());
    println!("policy RMSE {rmse:.4} rad vs repeat-state baseline {base_rmse:.4} rad");
    assert!(
        rmse < 0.25 * base_rmse,
        "the exported policy does not track the demonstration: {rmse} vs {base_rmse}"
    );
}
