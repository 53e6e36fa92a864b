//! `metadata.yaml` / `metadata.json` parsing in both schemas (see the module docs of
//! [`crate::export`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_yaml::{Mapping, Value};

use super::{ExportBackend, ExportError};

/// Parsed export metadata. Absent keys take the defaults documented per field.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportMetadata {
    /// `backend`, when given.
    pub backend: Option<ExportBackend>,
    /// `policy_class` (e.g. `getiaction.policies.act.policy.ACT`).
    pub policy_class: Option<String>,
    /// `chunk_size` (top level, else `config.init_args.chunk_size`); default 1.
    pub chunk_size: usize,
    /// `n_action_steps` (top level, else `config.init_args.n_action_steps`): actions executed
    /// per chunk; `None` = the whole chunk.
    pub n_action_steps: Option<usize>,
    /// `use_action_queue`; default `chunk_size > 1`.
    pub use_action_queue: bool,
    /// `temporal_ensemble_coeff` (top level or `config.init_args`), when given.
    pub temporal_ensemble_coeff: Option<f64>,
    /// `input_shapes`: per input, in file order, the shape without the batch dimension.
    pub input_shapes: IndexMap<String, Vec<usize>>,
    /// `output_shapes`: per output, the shape without the batch dimension.
    pub output_shapes: IndexMap<String, Vec<usize>>,
    /// `joint_names`, when the exporter recorded them.
    pub joint_names: Option<Vec<String>>,
    /// `model_file`: the model file, relative to the export directory.
    pub model_file: Option<String>,
    /// `getiaction_version`, when written by getiaction's exporter.
    pub getiaction_version: Option<String>,
    /// Every other top-level key, kept as read.
    pub extra: BTreeMap<String, Value>,
}

impl Default for ExportMetadata {
    fn default() -> Self {
        Self {
            backend: None,
            policy_class: None,
            chunk_size: 1,
            n_action_steps: None,
            use_action_queue: false,
            temporal_ensemble_coeff: None,
            input_shapes: IndexMap::new(),
            output_shapes: IndexMap::new(),
            joint_names: None,
            model_file: None,
            getiaction_version: None,
            extra: BTreeMap::new(),
        }
    }
}

const KNOWN: &[&str] = &[
    "backend",
    "policy_class",
    "chunk_size",
    "n_action_steps",
    "use_action_queue",
    "temporal_ensemble_coeff",
    "input_shapes",
    "output_shapes",
    "joint_names",
    "model_file",
    "getiaction_version",
    "config",
];

/// Reads `metadata.yaml`, `metadata.yml` or `metadata.json` from `dir` (the first present).
pub fn read_dir_metadata(dir: &Path) -> Result<(ExportMetadata, Option<PathBuf>), ExportError> {
    for name in ["metadata.yaml", "metadata.yml", "metadata.json"] {
        let path = dir.join(name);
        if path.is_file() {
            let meta = ExportMetadata::from_file(&path)?;
            return Ok((meta, Some(path)));
        }
    }
    Ok((ExportMetadata::default(), None))
}

impl ExportMetadata {
    /// Parses a metadata file; JSON when the extension is `.json`, YAML otherwise.
    pub fn from_file(path: &Path) -> Result<Self, ExportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Self::parse(&text, is_json, path)
    }

    /// Parses metadata text; `path` only names the file in errors.
    pub fn parse(text: &str, json: bool, path: &Path) -> Result<Self, ExportError> {
        let value: Value = if json {
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| ExportError::Syntax {
                    path: path.to_path_buf(),
                    format: "JSON",
                    detail: e.to_string(),
                })?;
            serde_yaml::to_value(v).map_err(|e| ExportError::Syntax {
                path: path.to_path_buf(),
                format: "JSON",
                detail: e.to_string(),
            })?
        } else {
            serde_yaml::from_str(text).map_err(|e| ExportError::Syntax {
                path: path.to_path_buf(),
                format: "YAML",
                detail: e.to_string(),
            })?
        };
        let p = Parser { path };
        let root = match value {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            other => {
                return Err(p.invalid(
                    "(top level)",
                    format!("must be a mapping, got {}", kind(&other)),
                ))
            }
        };
        let init_args = p.init_args(&root)?;

        let backend = match p.string(&root, "backend", "backend")? {
            Some(s) => Some(s.parse::<ExportBackend>().map_err(|_| {
                p.invalid(
                    "backend",
                    format!("must be openvino, onnx or torchscript, got `{s}`"),
                )
            })?),
            None => None,
        };
        let chunk_size = match p.positive(&root, "chunk_size", "chunk_size")? {
            Some(c) => {
                if let Some(inner) = init_args.and_then(|a| {
                    p.positive(a, "chunk_size", "config.init_args.chunk_size")
                        .transpose()
                }) {
                    let inner = inner?;
                    if inner != c {
                        log::warn!(
                            "{}: chunk_size {c} and config.init_args.chunk_size {inner} differ; using {c}",
                            path.display()
                        );
                    }
                }
                c
            }
            None => match init_args {
                Some(a) => p
                    .positive(a, "chunk_size", "config.init_args.chunk_size")?
                    .unwrap_or(1),
                None => 1,
            },
        };
        if chunk_size > crate::shape::MAX_DIM {
            return Err(p.invalid(
                "chunk_size",
                format!(
                    "is {chunk_size}, above the limit of {} actions per chunk (MAX_DIM)",
                    crate::shape::MAX_DIM
                ),
            ));
        }
        let n_action_steps = match p.positive(&root, "n_action_steps", "n_action_steps")? {
            Some(n) => Some(n),
            None => match init_args {
                Some(a) => p.positive(a, "n_action_steps", "config.init_args.n_action_steps")?,
                None => None,
            },
        };
        if let Some(n) = n_action_steps {
            if n > chunk_size {
                return Err(p.invalid(
                    "n_action_steps",
                    format!("must not exceed chunk_size ({chunk_size}), got {n}"),
                ));
            }
        }
        let temporal_ensemble_coeff =
            match p.float(&root, "temporal_ensemble_coeff", "temporal_ensemble_coeff")? {
                Some(c) => Some(c),
                None => match init_args {
                    Some(a) => p.float(
                        a,
                        "temporal_ensemble_coeff",
                        "config.init_args.temporal_ensemble_coeff",
                    )?,
                    None => None,
                },
            };
        let use_action_queue = p
            .boolean(&root, "use_action_queue")?
            .unwrap_or(chunk_size > 1);
        let model_file = p.string(&root, "model_file", "model_file")?;
        if let Some(f) = &model_file {
            let rel = Path::new(f);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(ExportError::PathEscapes {
                    dir: path.to_path_buf(),
                    key: "model_file".into(),
                    file: f.clone(),
                });
            }
        }
        let joint_names = match root.get("joint_names") {
            None | Some(Value::Null) => None,
            Some(Value::Sequence(seq)) => Some(
                seq.iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(p.invalid(
                            &format!("joint_names[{i}]"),
                            format!("must be a string, got {}", kind(other)),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(other) => {
                return Err(p.invalid(
                    "joint_names",
                    format!("must be a list of strings, got {}", kind(other)),
                ))
            }
        };
        let extra = root
            .iter()
            .filter_map(|(k, v)| {
                let k = k.as_str()?;
                (!KNOWN.contains(&k)).then(|| (k.to_string(), v.clone()))
            })
            .collect();
        Ok(Self {
            backend,
            policy_class: p.string(&root, "policy_class", "policy_class")?,
            chunk_size,
            n_action_steps,
            use_action_queue,
            temporal_ensemble_coeff,
            input_shapes: p.shapes(&root, "input_shapes")?,
            output_shapes: p.shapes(&root, "output_shapes")?,
            joint_names,
            model_file,
            getiaction_version: p.scalar_string(&root, "getiaction_version")?,
            extra,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

struct Parser<'a> {
    path: &'a Path,
}

impl Parser<'_> {
    fn invalid(&self, key: &str, problem: String) -> ExportError {
        ExportError::InvalidKey {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            problem,
        }
    }

    fn init_args<'m>(&self, root: &'m Mapping) -> Result<Option<&'m Mapping>, ExportError> {
        match root.get("config") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Mapping(cfg)) => match cfg.get("init_args") {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Mapping(a)) => Ok(Some(a)),
                Some(other) => Err(self.invalid(
                    "config.init_args",
                    format!("must be a mapping, got {}", kind(other)),
                )),
            },
            Some(other) => {
                Err(self.invalid("config", format!("must be a mapping, got {}", kind(other))))
            }
        }
    }

    fn string(&self, m: &Mapping, key: &str, shown: &str) -> Result<Option<String>, ExportError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(self.invalid(shown, format!("must be a string, got {}", kind(other))))
            }
        }
    }

    /// A string or a number written unquoted (versions such as `0.1`).
    fn scalar_string(&self, m: &Mapping, key: &str) -> Result<Option<String>, ExportError> {
        match m.get(key) {
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            _ => self.string(m, key, key),
        }
    }

    fn boolean(&self, m: &Mapping, key: &str) -> Result<Option<bool>, ExportError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => {
                Err(self.invalid(key, format!("must be true or false, got {}", kind(other))))
            }
        }
    }

    fn positive(&self, m: &Mapping, key: &str, shown: &str) -> Result<Option<usize>, ExportError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if v > 0 => Ok(Some(v as usize)),
                Some(v) => Err(self.invalid(shown, format!("must be a positive integer, got {v}"))),
                None => Err(self.invalid(shown, format!("must be a positive integer, got {n}"))),
            },
            Some(other) => Err(self.invalid(
                shown,
                format!("must be a positive integer, got {}", kind(other)),
            )),
        }
    }

    fn float(&self, m: &Mapping, key: &str, shown: &str) -> Result<Option<f64>, ExportError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
                _ => Err(self.invalid(shown, format!("must be a finite number >= 0, got {n}"))),
            },
            Some(other) => {
                Err(self.invalid(shown, format!("must be a number, got {}", kind(other))))
            }
        }
    }

    fn shapes(&self, m: &Mapping, key: &str) -> Result<IndexMap<String, Vec<usize>>, ExportError> {
        let map = match m.get(key) {
            None | Some(Value::Null) => return Ok(IndexMap::new()),
            Some(Value::Mapping(map)) => map,
            Some(other) => {
                return Err(self.invalid(
                    key,
                    format!("must be a mapping of name to shape, got {}", kind(other)),
                ))
            }
        };
        let mut out = IndexMap::new();
        for (name, shape) in map {
            let name = match name {
                Value::String(s) => s.clone(),
                other => {
                    return Err(self.invalid(
                        key,
                        format!("has a key that is {}, not a tensor name", kind(other)),
                    ))
                }
            };
            let shown = format!("{key}.{name}");
            let dims = match shape {
                Value::Sequence(seq) => seq
                    .iter()
                    .map(|d| match d.as_u64() {
                        Some(v) if v > 0 => Ok(v),
                        _ => Err(self.invalid(
                            &shown,
                            format!("dimensions must be positive integers, got {}", render(d)),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => {
                    return Err(self.invalid(
                        &shown,
                        format!("must be a list of dimensions, got {}", kind(other)),
                    ))
                }
            };
            // Buffers are built from these shapes: bound them before anything is sized by them.
            crate::shape::check_dims_u64(&dims).map_err(|e| self.invalid(&shown, e.to_string()))?;
            out.insert(name, dims.into_iter().map(|d| d as usize).collect());
        }
        Ok(out)
    }
}

fn render(v: &Value) -> String {
    serde_yaml::to_string(v).map_or_else(|_| kind(v).to_string(), |s| s.trim().to_string())
}
