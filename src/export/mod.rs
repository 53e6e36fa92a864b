//! Export directories: physicalai policy packages (`manifest.json`, see [`manifest`]),
//! `metadata.yaml` / `metadata.json`, the model file, backend detection and validation.
//!
//! A `manifest.json` is preferred when present; its queue configuration and shapes are
//! derived into an [`ExportMetadata`] so the rest of the crate reads one structure.
//! Two legacy metadata schemas are accepted:
//! - the design document's: `backend, policy_class, chunk_size, use_action_queue,
//!   input_shapes, output_shapes`;
//! - the one getiaction's exporter writes: `getiaction_version, policy_class, backend,
//!   config: {class_path, init_args: {chunk_size, n_action_steps, ...}}` with optional
//!   top-level `chunk_size` and `use_action_queue`.
//!
//! Unknown keys are kept (in [`ExportMetadata::extra`]); wrong types and impossible values are
//! errors naming the file and the key.

pub mod manifest;
mod metadata;
mod package;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use manifest::{Manifest, MANIFEST_FILE};
pub use metadata::{read_dir_metadata, ExportMetadata};
pub use package::resolve_in_dir;

/// Where a policy's model runs: the model formats an export can hold, run in-process, or
/// `remote`, a KServe v2 inference server (Triton, OpenVINO Model Server, KServe, MLServer)
/// that holds the model while the export directory supplies everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExportBackend {
    OpenVino,
    Onnx,
    TorchScript,
    /// The model runs on an inference server (feature `remote`); never detected from files.
    Remote,
}

impl ExportBackend {
    /// The model formats run in-process (every backend but [`Remote`](Self::Remote)).
    pub const ALL: [ExportBackend; 3] = [Self::OpenVino, Self::Onnx, Self::TorchScript];

    /// The name used in metadata, parameters and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenVino => "openvino",
            Self::Onnx => "onnx",
            Self::TorchScript => "torchscript",
            Self::Remote => "remote",
        }
    }

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Self::OpenVino => "openvino",
            Self::Onnx => "onnx",
            Self::TorchScript => "torch",
            Self::Remote => "remote",
        }
    }

    /// Whether this build has the backend compiled in.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::OpenVino => cfg!(feature = "openvino"),
            Self::Onnx => cfg!(feature = "onnx"),
            Self::TorchScript => cfg!(feature = "torch"),
            Self::Remote => cfg!(feature = "remote"),
        }
    }

    /// The model file extensions of this backend.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::OpenVino => &["xml"],
            Self::Onnx => &["onnx"],
            Self::TorchScript => &["pt", "pth", "ptc"],
            Self::Remote => &[],
        }
    }

    /// The backend a model file extension belongs to.
    pub fn from_extension(ext: &str) -> Option<Self> {
        let ext = ext.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|b| b.extensions().contains(&ext.as_str()))
    }
}

impl fmt::Display for ExportBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportBackend {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openvino" | "ov" | "openvino_ir" => Ok(Self::OpenVino),
            "onnx" | "onnxruntime" => Ok(Self::Onnx),
            "torchscript" | "torch" | "jit" => Ok(Self::TorchScript),
            "remote" => Ok(Self::Remote),
            _ => Err(ExportError::UnknownBackend(s.to_string())),
        }
    }
}

/// Errors of the export layer; each names the file and, where it applies, the key.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export directory {} does not exist or is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid {format}: {detail}", path.display())]
    Syntax {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
    #[error("{}: key `{key}` {problem}", path.display())]
    InvalidKey {
        path: PathBuf,
        key: String,
        problem: String,
    },
    #[error("unknown backend `{0}` (expected openvino, onnx, torchscript or remote)")]
    UnknownBackend(String),
    #[error("{}: no model file for backend {backend} (looked for {looked_for})", dir.display())]
    NoModelFile {
        dir: PathBuf,
        backend: String,
        looked_for: String,
    },
    #[error("{}: several model files could be the model ({candidates}); name one with the metadata key `model_file`", dir.display())]
    AmbiguousModel { dir: PathBuf, candidates: String },
    #[error("{}: model file `{file}` named by key `{key}` does not exist", dir.display())]
    MissingModelFile {
        dir: PathBuf,
        key: String,
        file: String,
    },
    /// `dir` is the metadata file naming the path, or the export directory for a model file
    /// found there (a symlink leading out).
    #[error("{}: path `{file}` (key `{key}`) leaves the export directory", dir.display())]
    PathEscapes {
        dir: PathBuf,
        key: String,
        file: String,
    },
    #[error("{}: OpenVINO IR without its weights: expected {}", xml.display(), bin.display())]
    MissingWeights { xml: PathBuf, bin: PathBuf },
    #[error("{}: {detail}", path.display())]
    NotTorchScript { path: PathBuf, detail: String },
    #[error("{}: model file is empty", .0.display())]
    EmptyModel(PathBuf),
    #[error("{}: `{key}` is {what} (`{file}`), which cannot run here: {advice}", path.display())]
    UnsupportedArtifact {
        path: PathBuf,
        key: String,
        file: String,
        what: &'static str,
        advice: &'static str,
    },
}

/// A validated export directory.
#[derive(Debug, Clone)]
pub struct ExportDir {
    /// The directory as given.
    pub dir: PathBuf,
    /// Parsed metadata (defaults when the directory has no metadata file).
    pub metadata: ExportMetadata,
    /// The file the metadata came from: `manifest.json`, `metadata.yaml` or
    /// `metadata.json`, when present.
    pub metadata_file: Option<PathBuf>,
    /// The physicalai policy package (`manifest.json`), when the directory has one; it is
    /// preferred over `metadata.yaml` / `metadata.json`, and [`metadata`](Self::metadata)
    /// is derived from it.
    pub manifest: Option<Manifest>,
    /// The backend: the override, else metadata `backend`, else the model file extension.
    pub backend: ExportBackend,
    /// The model file (`.xml`, `.onnx` or `.pt`). With backend `remote` the model lives on the
    /// server: this is the local model file when the directory has one, else the directory.
    pub model_file: PathBuf,
    /// OpenVINO weights (`.bin`) next to the `.xml`.
    pub weights_file: Option<PathBuf>,
}

impl ExportDir {
    /// Reads and validates an export directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ExportError> {
        Self::open_with_backend(dir, None)
    }

    /// Like [`open`](Self::open), with a backend override (parameter `backend`, CLI
    /// `--backend`) that wins over the metadata.
    pub fn open_with_backend(
        dir: impl AsRef<Path>,
        backend: Option<ExportBackend>,
    ) -> Result<Self, ExportError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(ExportError::NotADirectory(dir));
        }
        let canonical = dir.canonicalize().map_err(|source| ExportError::Io {
            path: dir.clone(),
            source,
        })?;
        let manifest_file = dir.join(MANIFEST_FILE);
        if manifest_file.is_file() {
            return package::open_package(dir, &canonical, &manifest_file, backend);
        }
        let (metadata, metadata_file) = metadata::read_dir_metadata(&dir)?;
        let backend = backend.or(metadata.backend);
        if backend == Some(ExportBackend::Remote) {
            return Ok(Self::remote(dir, &canonical, metadata, metadata_file));
        }
        let (backend, model_file) = locate_model(
            &dir,
            &canonical,
            &metadata,
            metadata_file.as_deref(),
            backend,
        )?;
        let weights_file = companion_files(backend, &model_file)?;
        check_not_empty(&model_file)?;
        Ok(Self {
            dir,
            metadata,
            metadata_file,
            manifest: None,
            backend,
            model_file,
            weights_file,
        })
    }
}

/// The weights beside an OpenVINO `.xml`; TorchScript archives checked for code.
fn companion_files(
    backend: ExportBackend,
    model_file: &Path,
) -> Result<Option<PathBuf>, ExportError> {
    Ok(match backend {
        // OpenVINO reading an ONNX model: no weights file.
        ExportBackend::OpenVino
            if model_file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("onnx")) =>
        {
            None
        }
        ExportBackend::OpenVino => {
            let bin = model_file.with_extension("bin");
            if !bin.is_file() {
                return Err(ExportError::MissingWeights {
                    xml: model_file.to_path_buf(),
                    bin,
                });
            }
            Some(bin)
        }
        ExportBackend::TorchScript => {
            check_torchscript(model_file)?;
            None
        }
        ExportBackend::Onnx | ExportBackend::Remote => None,
    })
}

fn check_not_empty(model_file: &Path) -> Result<(), ExportError> {
    let len = std::fs::metadata(model_file)
        .map_err(|source| ExportError::Io {
            path: model_file.to_path_buf(),
            source,
        })?
        .len();
    if len == 0 {
        return Err(ExportError::EmptyModel(model_file.to_path_buf()));
    }
    Ok(())
}

impl ExportDir {
    /// An export whose model runs on an inference server: metadata (and processors) from the
    /// directory; a local model file is optional (recorded when there is exactly one).
    fn remote(
        dir: PathBuf,
        canonical: &Path,
        metadata: ExportMetadata,
        metadata_file: Option<PathBuf>,
    ) -> Self {
        let mut local = metadata.clone();
        local.backend = None;
        let model_file = locate_model(&dir, canonical, &local, metadata_file.as_deref(), None)
            .map(|(_, path)| path)
            .unwrap_or_else(|_| dir.clone());
        Self {
            dir,
            metadata,
            metadata_file,
            manifest: None,
            backend: ExportBackend::Remote,
            model_file,
            weights_file: None,
        }
    }

    /// The policy's name: the package's `policy.name`, else the last part of `policy_class` in lower case (`...act.policy.ACT`
    /// -> `act`), else the model file's stem, else the directory's name. It is the default
    /// model name on an inference server (`remote_model`).
    pub fn policy_name(&self) -> String {
        if let Some(name) = self.manifest.as_ref().and_then(Manifest::policy_name) {
            return name;
        }
        if let Some(class) = &self.metadata.policy_class {
            if let Some(last) = class.rsplit('.').next().filter(|s| !s.is_empty()) {
                return last.to_ascii_lowercase();
            }
        }
        let stem = if self.model_file.is_file() {
            self.model_file.file_stem()
        } else {
            None
        };
        stem.or_else(|| self.dir.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn locate_model(
    dir: &Path,
    canonical: &Path,
    meta: &ExportMetadata,
    meta_file: Option<&Path>,
    backend: Option<ExportBackend>,
) -> Result<(ExportBackend, PathBuf), ExportError> {
    if let Some(file) = &meta.model_file {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(ExportError::MissingModelFile {
                dir: dir.to_path_buf(),
                key: "model_file".into(),
                file: file.clone(),
            });
        }
        let real = path.canonicalize().map_err(|source| ExportError::Io {
            path: path.clone(),
            source,
        })?;
        if !real.starts_with(canonical) {
            return Err(ExportError::PathEscapes {
                dir: dir.to_path_buf(),
                key: "model_file".into(),
                file: file.clone(),
            });
        }
        let from_ext = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(ExportBackend::from_extension);
        let backend = match (backend, from_ext) {
            (Some(b), _) => b,
            (None, Some(b)) => b,
            (None, None) => {
                return Err(ExportError::InvalidKey {
                    path: meta_file.unwrap_or(dir).to_path_buf(),
                    key: "model_file".into(),
                    problem: format!(
                        "names `{file}`, whose extension is not .xml, .onnx or .pt, and no `backend` is set"
                    ),
                })
            }
        };
        return Ok((backend, path));
    }

    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ExportError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let candidates_for = |b: ExportBackend| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .and_then(ExportBackend::from_extension)
                    == Some(b)
            })
            .cloned()
            .collect()
    };
    let backend = match backend {
        Some(b) => b,
        None => {
            let present: Vec<ExportBackend> = ExportBackend::ALL
                .into_iter()
                .filter(|b| !candidates_for(*b).is_empty())
                .collect();
            match present.as_slice() {
                [b] => *b,
                [] => {
                    return Err(ExportError::NoModelFile {
                        dir: dir.to_path_buf(),
                        backend: "any".into(),
                        looked_for: "*.xml, *.onnx, *.pt".into(),
                    })
                }
                _ => {
                    return Err(ExportError::AmbiguousModel {
                        dir: dir.to_path_buf(),
                        candidates: names(
                            &present
                                .iter()
                                .flat_map(|b| candidates_for(*b))
                                .collect::<Vec<_>>(),
                        ),
                    })
                }
            }
        }
    };
    let mut candidates = candidates_for(backend);
    if candidates.is_empty() && backend == ExportBackend::OpenVino {
        // OpenVINO reads ONNX directly: an OpenVINO override on an ONNX export runs the
        // `.onnx` file on OpenVINO.
        candidates = candidates_for(ExportBackend::Onnx);
        if !candidates.is_empty() {
            log::info!(
                "{}: no OpenVINO IR; OpenVINO reads the ONNX model directly",
                dir.display()
            );
        }
    }
    let pick = match candidates.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(ExportError::NoModelFile {
                dir: dir.to_path_buf(),
                backend: backend.to_string(),
                looked_for: if backend == ExportBackend::OpenVino {
                    "*.xml, *.onnx".to_string()
                } else {
                    backend
                        .extensions()
                        .iter()
                        .map(|e| format!("*.{e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
        }
        many => match many
            .iter()
            .find(|p| p.file_stem().is_some_and(|s| s == "model"))
        {
            Some(p) => p.clone(),
            None => {
                return Err(ExportError::AmbiguousModel {
                    dir: dir.to_path_buf(),
                    candidates: names(many),
                })
            }
        },
    };
    let real = pick.canonicalize().map_err(|source| ExportError::Io {
        path: pick.clone(),
        source,
    })?;
    if !real.starts_with(canonical) {
        return Err(ExportError::PathEscapes {
            dir: dir.to_path_buf(),
            key: "model file".into(),
            file: pick.display().to_string(),
        });
    }
    Ok((backend, pick))
}

fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// TorchScript files are zip archives with a `code/` tree (and `constants.pkl`); a
/// `torch.save`d state dict is a zip without `code/` (or a legacy raw pickle).
fn check_torchscript(path: &Path) -> Result<(), ExportError> {
    let file = std::fs::File::open(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let archive =
        match zip::ZipArchive::new(std::io::BufReader::new(file)) {
            Ok(a) => a,
            Err(_) => return Err(ExportError::NotTorchScript {
                path: path.to_path_buf(),
                detail:
                    "not a TorchScript archive (not a zip file; a legacy pickle from torch.save?); \
                         export with torch.jit.trace/torch.jit.script and torch.jit.save"
                        .into(),
            }),
        };
    let has_code = archive
        .file_names()
        .any(|n| n.contains("/code/") || n.ends_with("constants.pkl"));
    if has_code {
        Ok(())
    } else {
        Err(ExportError::NotTorchScript {
            path: path.to_path_buf(),
            detail: "is a pickled state dict / torch.save archive with no TorchScript code, not a \
                     TorchScript module; export with torch.jit.trace/torch.jit.script and torch.jit.save"
                .into(),
        })
    }
}
