//! Opening a physicalai policy package: the model artifact named by `model.artifacts`, and
//! the queue configuration derived from the runner and postprocessors.
//!
//! Where physicalai's runtime is looser than a robot can afford, this is stricter, on
//! purpose:
//! - the artifact **file name** is honoured (the runtime ignores it and globs for the
//!   extension); only when the named file is missing do we fall back to
//!   `{policy.name}{ext}`, then to the only file with the extension;
//! - every path resolves against the export directory and may not leave it (lexically, so
//!   Hugging Face cache snapshots, whose files are links into a sibling `blobs/`, still
//!   load);
//! - an artifact key that is not a backend name (`{"model": "model.onnx"}`, as LeRobot-style
//!   writers do) takes its backend from the file extension instead of failing.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::manifest::{JsonParser, Manifest};
use super::{
    check_not_empty, companion_files, ExportBackend, ExportDir, ExportError, ExportMetadata,
};

/// What an artifact entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArtifactKind {
    Runnable(ExportBackend),
    /// A physicalai `torch` artifact: a Lightning checkpoint.
    Lightning,
    ExecuTorch,
    Unknown,
}

fn artifact_kind(key: &str, file: &str) -> ArtifactKind {
    let ext = Path::new(file)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if ext == "pte" || key.eq_ignore_ascii_case("executorch") {
        return ArtifactKind::ExecuTorch;
    }
    match key.to_ascii_lowercase().as_str() {
        "torch" | "lightning" => ArtifactKind::Lightning,
        "onnx" => ArtifactKind::Runnable(ExportBackend::Onnx),
        "openvino" => ArtifactKind::Runnable(ExportBackend::OpenVino),
        "torchscript" | "jit" => ArtifactKind::Runnable(ExportBackend::TorchScript),
        // Not a backend name: the file extension decides.
        _ => match ext.as_str() {
            "ckpt" => ArtifactKind::Lightning,
            _ => ExportBackend::from_extension(&ext)
                .map_or(ArtifactKind::Unknown, ArtifactKind::Runnable),
        },
    }
}

/// Resolves `rel` (a manifest path) against `dir`. Absolute paths and paths that climb out
/// of `dir` are refused; the error names `named_in` (the manifest) and `key` (its entry).
/// The check is lexical, as physicalai's, so links inside the directory (Hugging Face
/// snapshots) are followed.
pub fn resolve_in_dir(
    dir: &Path,
    rel: &str,
    named_in: &Path,
    key: &str,
) -> Result<PathBuf, ExportError> {
    let escapes = || ExportError::PathEscapes {
        dir: named_in.to_path_buf(),
        key: key.to_string(),
        file: rel.to_string(),
    };
    let p = Path::new(rel);
    if rel.is_empty() || p.has_root() {
        return Err(escapes());
    }
    let mut depth = 0usize;
    let mut out = dir.to_path_buf();
    for c in p.components() {
        match c {
            Component::Normal(part) => {
                depth += 1;
                out.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return Err(escapes());
                }
                depth -= 1;
                out.pop();
            }
            Component::RootDir | Component::Prefix(_) => return Err(escapes()),
        }
    }
    if depth == 0 {
        return Err(escapes());
    }
    Ok(out)
}

pub(super) fn open_package(
    dir: PathBuf,
    _canonical: &Path,
    manifest_file: &Path,
    backend_override: Option<ExportBackend>,
) -> Result<ExportDir, ExportError> {
    let manifest = Manifest::from_file(manifest_file)?;
    if backend_override == Some(ExportBackend::Remote) {
        // The model runs on an inference server: the package gives its processors, features
        // and queue configuration; a local artifact is recorded when there is one.
        let model_file = locate_artifact(&dir, manifest_file, &manifest, None)
            .map(|(_, p)| p)
            .unwrap_or_else(|_| dir.clone());
        let metadata = derive_metadata(
            &manifest,
            manifest_file,
            ExportBackend::Remote,
            &dir,
            &model_file,
        )?;
        return Ok(ExportDir {
            dir,
            metadata,
            metadata_file: Some(manifest_file.to_path_buf()),
            manifest: Some(manifest),
            backend: ExportBackend::Remote,
            model_file,
            weights_file: None,
        });
    }
    let (backend, model_file) = locate_artifact(&dir, manifest_file, &manifest, backend_override)?;
    let weights_file = companion_files(backend, &model_file)?;
    check_not_empty(&model_file)?;
    let metadata = derive_metadata(&manifest, manifest_file, backend, &dir, &model_file)?;
    Ok(ExportDir {
        dir,
        metadata,
        metadata_file: Some(manifest_file.to_path_buf()),
        manifest: Some(manifest),
        backend,
        model_file,
        weights_file,
    })
}

fn unsupported(manifest_file: &Path, key: &str, file: &str, kind: ArtifactKind) -> ExportError {
    let (what, advice) = match kind {
        ArtifactKind::Lightning => (
            "a PyTorch Lightning checkpoint",
            "it needs Python and the training policy class; export the policy to ONNX or \
             OpenVINO (physicalai `export(backend=\"onnx\")` / `\"openvino\"`), or to \
             TorchScript with a legacy `metadata.yaml`",
        ),
        ArtifactKind::ExecuTorch => (
            "an ExecuTorch program",
            "ExecuTorch has no runtime in this node; export the policy to ONNX or OpenVINO \
             (physicalai `export(backend=\"onnx\")` / `\"openvino\"`)",
        ),
        _ => (
            "a file of no known model format",
            "name the backend in the artifact key (`onnx`, `openvino`) and give an `.onnx` or \
             `.xml` file",
        ),
    };
    ExportError::UnsupportedArtifact {
        path: manifest_file.to_path_buf(),
        key: format!("model.artifacts.{key}"),
        file: file.to_string(),
        what,
        advice,
    }
}

fn locate_artifact(
    dir: &Path,
    manifest_file: &Path,
    manifest: &Manifest,
    backend_override: Option<ExportBackend>,
) -> Result<(ExportBackend, PathBuf), ExportError> {
    let artifacts = &manifest.model.artifacts;
    if artifacts.is_empty() {
        // No artifacts: like a legacy export without metadata (file extensions decide).
        let meta = ExportMetadata::default();
        let canonical = dir.canonicalize().map_err(|source| ExportError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        return super::locate_model(
            dir,
            &canonical,
            &meta,
            Some(manifest_file),
            backend_override,
        );
    }
    let entries: Vec<(&String, &String, ArtifactKind)> = artifacts
        .iter()
        .map(|(k, f)| (k, f, artifact_kind(k, f)))
        .collect();
    // OpenVINO reads ONNX directly: an OpenVINO override on a package with an ONNX artifact
    // and no OpenVINO one runs that artifact on OpenVINO.
    if backend_override == Some(ExportBackend::OpenVino)
        && !entries
            .iter()
            .any(|(_, _, k)| *k == ArtifactKind::Runnable(ExportBackend::OpenVino))
        && entries
            .iter()
            .any(|(_, _, k)| *k == ArtifactKind::Runnable(ExportBackend::Onnx))
    {
        let (_, path) = locate_artifact(dir, manifest_file, manifest, Some(ExportBackend::Onnx))?;
        log::info!(
            "{}: no openvino artifact; OpenVINO reads the ONNX artifact {} directly",
            manifest_file.display(),
            path.display()
        );
        return Ok((ExportBackend::OpenVino, path));
    }
    let (key, file, kind) =
        match backend_override {
            Some(b) => *entries
                .iter()
                .find(|(_, _, kind)| *kind == ArtifactKind::Runnable(b))
                .ok_or_else(|| ExportError::InvalidKey {
                    path: manifest_file.to_path_buf(),
                    key: "model.artifacts".into(),
                    problem: format!(
                    "has no {b} artifact (it lists {}); drop the backend override or export to {b}",
                    artifacts.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                ),
                })?,
            // The first entry, as physicalai; a runnable one when the first is not.
            None => *entries
                .iter()
                .find(|(_, _, kind)| matches!(kind, ArtifactKind::Runnable(_)))
                .unwrap_or(&entries[0]),
        };
    let backend = match kind {
        ArtifactKind::Runnable(b) => b,
        other => return Err(unsupported(manifest_file, key, file, other)),
    };
    if let ArtifactKind::Runnable(from_key) = artifact_kind(key, "") {
        let from_ext = Path::new(file)
            .extension()
            .and_then(|e| e.to_str())
            .and_then(ExportBackend::from_extension);
        if let Some(ext_backend) = from_ext.filter(|e| *e != from_key) {
            return Err(ExportError::InvalidKey {
                path: manifest_file.to_path_buf(),
                key: format!("model.artifacts.{key}"),
                problem: format!(
                    "names `{file}`, an {ext_backend} model file, for the {from_key} backend"
                ),
            });
        }
    }
    let json_key = format!("model.artifacts.{key}");
    let named = resolve_in_dir(dir, file, manifest_file, &json_key)?;
    if named.is_file() {
        return Ok((backend, named));
    }
    // Fallbacks, as physicalai finds files: `{policy.name}{ext}`, then the only file with
    // the extension.
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(name) = manifest.policy_name() {
        for ext in backend.extensions() {
            let p = dir.join(format!("{name}.{ext}"));
            if p.is_file() {
                log::warn!(
                    "{}: `{json_key}` names `{file}`, which does not exist; using {}",
                    manifest_file.display(),
                    p.display()
                );
                return Ok((backend, p));
            }
        }
    }
    if let Ok(read) = std::fs::read_dir(dir) {
        for e in read.flatten() {
            let p = e.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if p.is_file() && ExportBackend::from_extension(ext) == Some(backend) {
                candidates.push(p);
            }
        }
    }
    candidates.sort();
    match candidates.as_slice() {
        [one] => {
            log::warn!(
                "{}: `{json_key}` names `{file}`, which does not exist; using {}, the only {backend} file",
                manifest_file.display(),
                one.display()
            );
            Ok((backend, one.clone()))
        }
        _ => Err(ExportError::MissingModelFile {
            dir: manifest_file.to_path_buf(),
            key: json_key,
            file: file.clone(),
        }),
    }
}

fn chunk_from(
    p: &JsonParser,
    c: &super::manifest::Component,
) -> Result<Option<usize>, ExportError> {
    match c.param("chunk_size") {
        None => Ok(None),
        Some(v) => {
            let at = if c.params.contains_key("chunk_size") {
                c.param_path("chunk_size")
            } else {
                format!("{}.chunk_size", c.json_path)
            };
            p.positive(v, &at, 1 << 20).map(Some)
        }
    }
}

/// The queue configuration and shapes the rest of the crate reads from
/// [`ExportMetadata`], derived from the manifest.
fn derive_metadata(
    manifest: &Manifest,
    manifest_file: &Path,
    backend: ExportBackend,
    dir: &Path,
    model_file: &Path,
) -> Result<ExportMetadata, ExportError> {
    let p = JsonParser {
        path: manifest_file.to_path_buf(),
    };
    // chunk_size: `runner.init_args.chunk_size`, a flat (or annotation) `chunk_size`, the
    // inner runner of an ActionChunking decorator; else the action output decides later.
    let mut chunk_size = None;
    if let Some(r) = &manifest.model.runner {
        chunk_size = chunk_from(&p, r)?;
        if chunk_size.is_none() && r.kind() == "action_chunking" {
            if let Some(Value::Object(inner)) = r.param("runner") {
                if let Some(v) = inner
                    .get("chunk_size")
                    .or_else(|| inner.get("init_args").and_then(|a| a.get("chunk_size")))
                {
                    chunk_size =
                        Some(p.positive(v, "model.runner.init_args.runner.chunk_size", 1 << 20)?);
                }
            }
        }
    }
    // n_action_steps: the (smallest) action_chunk_trimmer.
    let mut n_action_steps: Option<usize> = None;
    for c in &manifest.model.postprocessors {
        if c.kind() == "action_chunk_trimmer" {
            let n = match c.param("n_action_steps") {
                Some(v) => p.positive(v, &c.param_path("n_action_steps"), 1 << 20)?,
                None => {
                    return Err(p.invalid(&c.param_path("n_action_steps"), "is missing"));
                }
            };
            n_action_steps = Some(n_action_steps.map_or(n, |m| m.min(n)));
        }
    }
    let shapes = |features: &[super::manifest::Feature]| {
        features
            .iter()
            .filter(|f| f.ftype != "LANGUAGE")
            .map(|f| (f.name.clone(), f.shape.clone()))
            .collect()
    };
    let joint_names = manifest.robot_with_order().and_then(|r| {
        r.action
            .as_ref()
            .filter(|a| !a.order.is_empty())
            .or(r.state.as_ref().filter(|s| !s.order.is_empty()))
            .map(|s| s.order.clone())
    });
    let model_file_rel = model_file
        .strip_prefix(dir)
        .ok()
        .map(|p| p.display().to_string());
    let extra = manifest
        .extra
        .iter()
        .filter_map(|(k, v)| serde_yaml::to_value(v).ok().map(|v| (k.clone(), v)))
        .collect();
    let chunk = chunk_size.unwrap_or(1);
    if let Some(n) = n_action_steps {
        if chunk > 1 && n > chunk {
            log::info!(
                "{}: action_chunk_trimmer keeps {n} steps of a {chunk}-step chunk: nothing is trimmed",
                manifest_file.display()
            );
        }
    }
    Ok(ExportMetadata {
        backend: Some(backend),
        policy_class: (!manifest.policy.class_path.is_empty())
            .then(|| manifest.policy.class_path.clone()),
        chunk_size: chunk,
        n_action_steps,
        // physicalai's `select_action` always serves from a queue.
        use_action_queue: true,
        temporal_ensemble_coeff: None,
        input_shapes: shapes(&manifest.model.input_features),
        output_shapes: shapes(&manifest.model.output_features),
        joint_names,
        model_file: model_file_rel,
        getiaction_version: None,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        let d = Path::new("/exports/act");
        assert_eq!(
            resolve_in_dir(d, "sub/../stats.safetensors", d, "k").unwrap(),
            PathBuf::from("/exports/act/stats.safetensors")
        );
        for bad in ["../x", "/etc/passwd", "a/../../x", "", ".", "a/.."] {
            assert!(
                matches!(
                    resolve_in_dir(d, bad, d, "k"),
                    Err(ExportError::PathEscapes { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn artifact_kinds() {
        use ArtifactKind::*;
        assert_eq!(
            artifact_kind("onnx", "act.onnx"),
            Runnable(ExportBackend::Onnx)
        );
        assert_eq!(
            artifact_kind("model", "model.onnx"),
            Runnable(ExportBackend::Onnx)
        );
        assert_eq!(
            artifact_kind("model", "model.xml"),
            Runnable(ExportBackend::OpenVino)
        );
        assert_eq!(artifact_kind("torch", "act.pt"), Lightning);
        assert_eq!(artifact_kind("model", "act.ckpt"), Lightning);
        assert_eq!(artifact_kind("executorch", "act.pte"), ExecuTorch);
        assert_eq!(artifact_kind("onnx", "act.pte"), ExecuTorch);
        assert_eq!(artifact_kind("model", "act.bin"), Unknown);
    }
}
