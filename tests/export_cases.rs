//! Export-directory case files: every `tests/cases/metadata/valid-*` loads, every
//! `invalid-*` fails with an error naming the key given in its `error-key` line; plus the
//! directory-level cases (missing files, weights, state dicts, escaping paths).

use std::fs;
use std::path::{Path, PathBuf};

use policy_node::export::{ExportBackend, ExportDir, ExportError};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// A temp export dir holding `metadata` (named like `meta_name`) and a copy of the fixture's
/// ONNX model.
fn export_with(meta_src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let name = if meta_src.extension().is_some_and(|e| e == "json") {
        "metadata.json"
    } else {
        "metadata.yaml"
    };
    fs::copy(meta_src, dir.path().join(name)).unwrap();
    fs::copy(
        fixture("act_tiny/onnx/model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    dir
}

fn error_key(text: &str) -> String {
    let start = text
        .find("error-key")
        .expect("invalid case without an error-key line")
        + "error-key".len();
    text[start..]
        .trim_start_matches(|c: char| c == '"' || c == ':' || c.is_whitespace())
        .split(|c: char| c == '"' || c.is_whitespace())
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn metadata_case_files() {
    let mut seen = (0, 0);
    let mut entries: Vec<_> = fs::read_dir(root().join("tests/cases/metadata"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let dir = export_with(&path);
        let result = ExportDir::open(dir.path());
        if name.starts_with("valid-") {
            seen.0 += 1;
            let e = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(e.backend, ExportBackend::Onnx, "{name}");
            assert!(e.model_file.ends_with("model.onnx"), "{name}");
        } else if name.starts_with("invalid-") {
            seen.1 += 1;
            let key = error_key(&fs::read_to_string(&path).unwrap());
            let err = match result {
                Ok(_) => panic!("{name}: expected an error naming `{key}`"),
                Err(e) => e.to_string(),
            };
            let named = err.contains(&format!("`{key}`")) || err.contains(&key);
            assert!(named, "{name}: error does not name `{key}`: {err}");
            let file_named = err.contains("metadata.");
            assert!(file_named, "{name}: error does not name the file: {err}");
        }
    }
    assert!(seen.0 >= 4 && seen.1 >= 10, "cases found: {seen:?}");
}

#[test]
fn both_schemas_parse_to_the_same_concepts() {
    let cases = root().join("tests/cases/metadata");
    let d = ExportDir::open(export_with(&cases.join("valid-design-schema.yaml")).path()).unwrap();
    assert_eq!(d.metadata.chunk_size, 100);
    assert!(d.metadata.use_action_queue);
    assert_eq!(
        d.metadata.input_shapes.keys().collect::<Vec<_>>(),
        ["state", "images"]
    );
    assert_eq!(d.metadata.output_shapes["action"], vec![100, 14]);

    let g =
        ExportDir::open(export_with(&cases.join("valid-getiaction-exporter.yaml")).path()).unwrap();
    assert_eq!(
        g.metadata.chunk_size, 50,
        "chunk_size from config.init_args"
    );
    assert_eq!(g.metadata.n_action_steps, Some(25));
    assert_eq!(g.metadata.temporal_ensemble_coeff, Some(0.01));
    assert!(g.metadata.use_action_queue, "defaults to chunk_size > 1");
    assert_eq!(g.metadata.getiaction_version.as_deref(), Some("0.3.1"));
    assert!(
        g.metadata.extra.contains_key("some_future_key"),
        "unknown keys are kept"
    );

    let m = ExportDir::open(export_with(&cases.join("valid-minimal.yaml")).path()).unwrap();
    assert_eq!(m.metadata.chunk_size, 1);
    assert!(!m.metadata.use_action_queue);

    let j = ExportDir::open(export_with(&cases.join("valid-metadata.json")).path()).unwrap();
    assert_eq!(j.metadata.chunk_size, 10);
    assert!(!j.metadata.use_action_queue);
    assert!(j.metadata_file.unwrap().ends_with("metadata.json"));

    // JSON keeps the file's key order too (positional input fallback relies on it).
    let t = ExportDir::open(fixture("act_tiny/torchscript")).unwrap();
    assert_eq!(
        t.metadata.input_shapes.keys().collect::<Vec<_>>(),
        ["state", "images"]
    );
}

#[test]
fn backend_from_extension_when_metadata_is_silent() {
    for (sub, backend) in [
        ("onnx", ExportBackend::Onnx),
        ("openvino", ExportBackend::OpenVino),
        ("torchscript", ExportBackend::TorchScript),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for f in fs::read_dir(fixture(&format!("act_tiny/{sub}")))
            .unwrap()
            .flatten()
        {
            let name = f.file_name();
            if !name.to_string_lossy().starts_with("metadata") {
                fs::copy(f.path(), dir.path().join(&name)).unwrap();
            }
        }
        let e = ExportDir::open(dir.path()).unwrap();
        assert_eq!(e.backend, backend);
        assert!(e.metadata_file.is_none());
        assert_eq!(e.weights_file.is_some(), backend == ExportBackend::OpenVino);
    }
}

#[test]
fn metadata_backend_and_override_win_over_extension() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        fixture("act_tiny/onnx/model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    fs::write(dir.path().join("metadata.yaml"), "backend: onnx\n").unwrap();
    let ok = ExportDir::open(dir.path()).unwrap();
    assert_eq!(ok.backend, ExportBackend::Onnx);
    // OpenVINO reads ONNX directly: backend openvino (metadata or override) on an ONNX
    // export runs the .onnx file, with no weights file.
    let ov = ExportDir::open_with_backend(dir.path(), Some(ExportBackend::OpenVino)).unwrap();
    assert_eq!(ov.backend, ExportBackend::OpenVino);
    assert_eq!(ov.model_file, dir.path().join("model.onnx"));
    assert!(ov.weights_file.is_none());
    fs::write(dir.path().join("metadata.yaml"), "backend: openvino\n").unwrap();
    let ov = ExportDir::open(dir.path()).unwrap();
    assert_eq!(ov.backend, ExportBackend::OpenVino);
    // Neither an IR nor an ONNX model: the error says what OpenVINO looked for.
    fs::remove_file(dir.path().join("model.onnx")).unwrap();
    fs::copy(
        fixture("act_tiny/torchscript/model.pt"),
        dir.path().join("model.pt"),
    )
    .unwrap();
    let err = ExportDir::open(dir.path()).unwrap_err();
    assert!(matches!(err, ExportError::NoModelFile { .. }), "{err}");
    assert!(err.to_string().contains("*.xml, *.onnx"), "{err}");
    let ok = ExportDir::open_with_backend(dir.path(), Some(ExportBackend::TorchScript)).unwrap();
    assert_eq!(ok.backend, ExportBackend::TorchScript);
}

#[test]
fn missing_model_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("metadata.yaml"), "backend: onnx\n").unwrap();
    let err = ExportDir::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("no model file") && err.contains("*.onnx"),
        "{err}"
    );

    fs::write(
        dir.path().join("metadata.yaml"),
        "backend: onnx\nmodel_file: policy.onnx\n",
    )
    .unwrap();
    let err = ExportDir::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("`model_file`") && err.contains("policy.onnx"),
        "{err}"
    );
}

#[test]
fn openvino_xml_without_bin() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        fixture("act_tiny/openvino/model.xml"),
        dir.path().join("model.xml"),
    )
    .unwrap();
    let err = ExportDir::open(dir.path()).unwrap_err();
    assert!(matches!(err, ExportError::MissingWeights { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("model.xml") && msg.contains("model.bin"),
        "{msg}"
    );
}

#[test]
fn state_dict_is_not_torchscript() {
    let err = ExportDir::open(fixture("cases/invalid-state-dict-pt")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ExportError::NotTorchScript { .. }), "{msg}");
    assert!(
        msg.contains("model.pt") && msg.contains("state dict"),
        "{msg}"
    );

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("model.pt"), b"\x80\x02}q\x00.").unwrap(); // a legacy pickle
    let msg = ExportDir::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("not a TorchScript archive"), "{msg}");
}

#[test]
fn ambiguous_and_empty_models() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        fixture("act_tiny/onnx/model.onnx"),
        dir.path().join("a.onnx"),
    )
    .unwrap();
    fs::copy(
        fixture("act_tiny/onnx/model.onnx"),
        dir.path().join("b.onnx"),
    )
    .unwrap();
    let msg = ExportDir::open(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("a.onnx") && msg.contains("b.onnx") && msg.contains("model_file"),
        "{msg}"
    );
    // `model.*` is preferred among several
    fs::copy(
        fixture("act_tiny/onnx/model.onnx"),
        dir.path().join("model.onnx"),
    )
    .unwrap();
    assert!(ExportDir::open(dir.path())
        .unwrap()
        .model_file
        .ends_with("model.onnx"));

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("model.onnx"), b"").unwrap();
    let msg = ExportDir::open(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn symlink_leaving_the_directory_is_rejected() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("model.onnx");
    fs::copy(fixture("act_tiny/onnx/model.onnx"), &target).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("model.onnx")).unwrap();
    let err = ExportDir::open(dir.path()).unwrap_err();
    assert!(matches!(err, ExportError::PathEscapes { .. }), "{err}");
}

#[test]
fn not_a_directory() {
    let err = ExportDir::open("/nonexistent/export")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/export"), "{err}");
}

/// Backend `remote`: the model runs on a server, so the directory needs its metadata only; a
/// local model file is recorded when there is one. The policy's name (the default model name
/// on the server) comes from `policy_class`, else the model file, else the directory.
#[test]
fn remote_exports_need_no_model_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("metadata.yaml"),
        "policy_class: getiaction.policies.act.policy.ACT\nchunk_size: 10\n",
    )
    .unwrap();
    let e = ExportDir::open_with_backend(dir.path(), Some(ExportBackend::Remote)).unwrap();
    assert_eq!(e.backend, ExportBackend::Remote);
    assert_eq!(e.model_file, dir.path());
    assert_eq!(e.metadata.chunk_size, 10);
    assert_eq!(e.policy_name(), "act");
    // Without the override the same directory is an export without a model.
    assert!(ExportDir::open(dir.path()).is_err());
    // `backend: remote` in the metadata selects it too.
    fs::write(dir.path().join("metadata.yaml"), "backend: remote\n").unwrap();
    let e = ExportDir::open(dir.path()).unwrap();
    assert_eq!(e.backend, ExportBackend::Remote);
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(e.policy_name(), name);

    let onnx = ExportDir::open_with_backend(fixture("act_tiny/onnx"), Some(ExportBackend::Remote))
        .unwrap();
    assert!(onnx.model_file.ends_with("model.onnx"));
    assert_eq!(
        "remote".parse::<ExportBackend>().unwrap(),
        ExportBackend::Remote
    );
    assert!(ExportBackend::from_extension("onnx") != Some(ExportBackend::Remote));
}
