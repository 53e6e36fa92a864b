//! Policy-package case files: every `tests/cases/manifest/valid-*.json` loads (and meets its
//! `_expect`), every `invalid-*.json` fails with an error naming the JSON path, feature or
//! file of its `_error_key`. Each case runs in a fresh export directory holding the case as
//! `manifest.json`, the `act_tiny` ONNX graph as `act.onnx`, statistics files, and a
//! `metadata.yaml` that points elsewhere (so every case also shows the manifest is preferred).
#![cfg(feature = "onnx")]

use std::fs;
use std::path::{Path, PathBuf};

use policy_node::export::ExportDir;
use policy_node::policy::InferenceModel;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// A safetensors file with `{feature}/{stat}` f32 tensors.
fn write_stats(path: &Path, tensors: &[(&str, Vec<f32>)]) {
    let bytes: Vec<(String, Vec<u8>, usize)> = tensors
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.len(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, b, n)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*n], b).unwrap(),
            )
        })
        .collect();
    fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn case_dir(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("manifest.json"), manifest).unwrap();
    fs::copy(fixture("act_tiny/onnx/model.onnx"), d.join("act.onnx")).unwrap();
    fs::copy(
        fixture("act_tiny_lerobot/onnx/stats.safetensors"),
        d.join("stats.safetensors"),
    )
    .unwrap();
    write_stats(
        &d.join("nan.safetensors"),
        &[
            ("observation.state/mean", vec![0.0; 6]),
            (
                "observation.state/std",
                vec![1.0, 1.0, f32::NAN, 1.0, 1.0, 1.0],
            ),
        ],
    );
    write_stats(
        &d.join("stats_state.safetensors"),
        &[("state/mean", vec![0.0; 6]), ("state/std", vec![1.0; 6])],
    );
    // Legacy metadata that would pick another backend: the manifest must win.
    fs::write(
        d.join("metadata.yaml"),
        "backend: openvino\nchunk_size: 3\n",
    )
    .unwrap();
    dir
}

#[test]
fn manifest_case_files() {
    let mut entries: Vec<PathBuf> = fs::read_dir(root().join("tests/cases/manifest"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    let (mut valid, mut invalid) = (0, 0);
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        let dir = case_dir(&text);
        let result = InferenceModel::load(dir.path());
        if name.starts_with("valid-") {
            valid += 1;
            let model = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            let expect: Value = serde_json::from_str::<Value>(&text).unwrap()["_expect"].clone();
            if let Some(c) = expect["chunk_size"].as_u64() {
                assert_eq!(model.config().chunk_size as u64, c, "{name}: chunk_size");
            }
            if let Some(n) = expect["n_action_steps"].as_u64() {
                assert_eq!(
                    model.config().n_action_steps as u64,
                    n,
                    "{name}: n_action_steps"
                );
            }
            if let Some(f) = expect["model_file"].as_str() {
                assert!(
                    model.export().model_file.ends_with(f),
                    "{name}: {:?}",
                    model.export().model_file
                );
            }
            if let Some(keys) = expect["extra"].as_array() {
                let m = model.export().manifest.as_ref().unwrap();
                let got: Vec<&str> = m.extra.keys().map(String::as_str).collect();
                let want: Vec<&str> = keys.iter().map(|k| k.as_str().unwrap()).collect();
                assert_eq!(got, want, "{name}: extra keys kept in order");
            }
            assert!(
                model.export().manifest.is_some(),
                "{name}: manifest preferred"
            );
        } else if name.starts_with("invalid-") {
            invalid += 1;
            let key = text
                .split("\"_error_key\": \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_else(|| panic!("{name}: no _error_key"));
            let e = match result {
                Ok(_) => panic!("{name}: loaded, expected an error naming `{key}`"),
                Err(e) => format!("{:#}", anyhow::Error::new(e)),
            };
            println!("{name}: {e}");
            assert!(e.contains(key), "{name}: error does not name `{key}`: {e}");
            assert!(
                e.contains("manifest.json") || e.contains(".safetensors"),
                "{name}: error does not name the file: {e}"
            );
        }
    }
    println!("{valid} valid, {invalid} invalid manifest cases");
    assert!(
        valid >= 5 && invalid >= 30,
        "{valid} valid, {invalid} invalid"
    );
}

/// `ExportDir` alone (no runtime): the manifest's metadata, derived.
#[test]
fn package_metadata_is_derived_from_the_manifest() {
    let e = ExportDir::open(fixture("act_tiny_lerobot/onnx")).unwrap();
    assert!(e.metadata_file.unwrap().ends_with("manifest.json"));
    assert_eq!(e.metadata.n_action_steps, Some(8));
    assert!(e.metadata.use_action_queue);
    assert_eq!(
        e.metadata.joint_names.as_deref().unwrap(),
        ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6"]
    );
    assert!(e.model_file.ends_with("model.onnx"));
    let m = e.manifest.unwrap();
    assert_eq!(m.model.preprocessors.len(), 2);
    assert_eq!(m.hardware.cameras[0].shape, vec![3, 64, 64]);
}

/// A `two_stage` runner feeds the second model the first one's outputs by name.
#[test]
fn two_stage_runner_chains_a_second_model() {
    let dir = case_dir(
        r#"{"version": "1.0", "model": {"artifacts": {"onnx": "act.onnx"},
            "runner": {"type": "two_stage", "backend": "onnx", "artifact": "head/head.onnx"}}}"#,
    );
    fs::create_dir(dir.path().join("head")).unwrap();
    fs::copy(
        fixture("ports/two_stage_head.onnx"),
        dir.path().join("head/head.onnx"),
    )
    .unwrap();
    let mut two = InferenceModel::load(dir.path()).unwrap();
    let mut one = InferenceModel::load(fixture("act_tiny/onnx")).unwrap();
    let obs: policy_node::policy::Observation = [
        ("state", ndarray::ArrayD::from_elem(vec![6], 0.1f32)),
        (
            "images",
            ndarray::ArrayD::from_elem(vec![3, 64, 64], 0.5f32),
        ),
    ]
    .into_iter()
    .collect();
    let a = one.predict_chunk(&obs).unwrap();
    let b = two.predict_chunk(&obs).unwrap();
    // The head computes 2 * action + 1.
    let d = (&a * 2.0 + 1.0 - &b)
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(d < 1e-5, "two-stage output differs from 2a + 1 by {d}");
}
