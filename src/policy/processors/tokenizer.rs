//! `hf_tokenizer`: the task text to `tokenized_prompt` / `tokenized_prompt_mask`, with the
//! Hugging Face `tokenizers` library (the same Rust code behind transformers' fast
//! tokenizers), right-padded to `max_token_len` and truncated to it, as physicalai's
//! `HFTokenizer` calls `AutoTokenizer(..., padding_side="right")`.
//!
//! Robots are offline, so `tokenizer.json` is found locally, first match wins:
//! 1. the node's `tokenizer_dir` (a directory holding `tokenizer.json`, or a Hugging Face
//!    cache root holding `models--ORG--NAME/`);
//! 2. the package: its `artifact` entry, `tokenizer/` or `tokenizer.json` in the export
//!    directory;
//! 3. `tokenizer_name` as a local directory (absolute, or relative to the export directory);
//! 4. the Hugging Face cache (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`):
//!    `models--ORG--NAME/snapshots/REVISION/`, where the pinned `revision` must name the
//!    snapshot (a different revision present there is an error that names both).

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use serde_json::Value;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use super::vla::TASK;
use crate::export::manifest::Component;
use crate::policy::{Observation, PolicyError};

/// Longest task accepted, in bytes (a prompt, not a document).
pub const MAX_TASK_BYTES: usize = 2048;
/// Largest `max_token_len`.
pub const MAX_TOKEN_LEN: usize = 8192;

/// Where to look for tokenizers besides the package and the Hugging Face cache.
#[derive(Debug, Clone, Default)]
pub struct TokenizerSearch {
    /// The node's `tokenizer_dir` parameter.
    pub tokenizer_dir: Option<PathBuf>,
}

/// See the module docs.
#[derive(Clone)]
pub struct HfTokenizer {
    tokenizer: Tokenizer,
    max_len: usize,
    /// The `tokenizer.json` in use.
    pub file: PathBuf,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("file", &self.file)
            .field("max_len", &self.max_len)
            .finish()
    }
}

fn err(manifest: &Path, key: String, problem: String) -> PolicyError {
    PolicyError::Package {
        file: manifest.to_path_buf(),
        key,
        problem,
    }
}

/// The Hugging Face cache roots, in the order `huggingface_hub` uses them.
fn hf_cache_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        roots.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        roots.push(PathBuf::from(p).join("hub"));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        roots.push(PathBuf::from(p).join("huggingface/hub"));
    }
    if let Some(p) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(p).join(".cache/huggingface/hub"));
    }
    roots
}

/// `models--ORG--NAME/snapshots/<revision...>/tokenizer.json` under `root`: `Ok(None)` when
/// the cache has no such model, an error when it has it only at other revisions.
fn from_cache(root: &Path, name: &str, revision: &str) -> Result<Option<PathBuf>, String> {
    let model = root.join(format!("models--{}", name.replace('/', "--")));
    let snapshots = model.join("snapshots");
    let Ok(read) = std::fs::read_dir(&snapshots) else {
        return Ok(None);
    };
    let mut present = Vec::new();
    for e in read.flatten() {
        let rev = e.file_name().to_string_lossy().into_owned();
        if rev
            .to_ascii_lowercase()
            .starts_with(&revision.to_ascii_lowercase())
        {
            let f = e.path().join("tokenizer.json");
            if f.is_file() {
                return Ok(Some(f));
            }
            return Err(format!(
                "{} has revision {rev} but no tokenizer.json in it",
                snapshots.display()
            ));
        }
        present.push(rev);
    }
    present.sort();
    Err(format!(
        "{} holds `{name}` at revision(s) {} but the package pins revision {revision}; \
         download that revision (huggingface-cli download {name} --revision {revision}) or \
         re-export the package",
        model.display(),
        present.join(", ")
    ))
}

impl HfTokenizer {
    pub fn from_component(
        c: &Component,
        manifest: &Path,
        export_dir: &Path,
        search: &TokenizerSearch,
    ) -> Result<Self, PolicyError> {
        let text = |key: &str| -> Result<Option<String>, PolicyError> {
            match c.param(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(err(
                    manifest,
                    c.param_path(key),
                    format!("must be a string, got {other}"),
                )),
            }
        };
        let name = text("tokenizer_name")?;
        let revision = text("revision")?;
        if let Some(r) = &revision {
            if !(7..=40).contains(&r.len()) || !r.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(err(
                    manifest,
                    c.param_path("revision"),
                    format!("is `{r}`; it must be a pinned commit hash (7 to 40 hex characters), not a branch or tag"),
                ));
            }
        }
        let max_len = match c.param("max_token_len") {
            None => 512,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_TOKEN_LEN as u64).contains(n))
                .ok_or_else(|| {
                    err(
                        manifest,
                        c.param_path("max_token_len"),
                        format!("must be an integer from 1 to {MAX_TOKEN_LEN}, got {v}"),
                    )
                })? as usize,
        };
        let mut looked = Vec::new();
        let mut found: Option<PathBuf> = None;
        let in_dir = |d: &Path| -> Option<PathBuf> {
            let f = if d.is_file() {
                d.to_path_buf()
            } else {
                d.join("tokenizer.json")
            };
            f.is_file().then_some(f)
        };
        // 1. tokenizer_dir
        if let Some(d) = &search.tokenizer_dir {
            looked.push(format!("tokenizer_dir {}", d.display()));
            found = in_dir(d);
            if found.is_none() {
                if let (Some(n), Some(r)) = (&name, &revision) {
                    found = from_cache(d, n, r)
                        .map_err(|e| err(manifest, c.param_path("revision"), e))?;
                }
            }
        }
        // 2. the package
        if found.is_none() {
            if let Some(a) = text("artifact")? {
                let p = crate::export::resolve_in_dir(
                    export_dir,
                    &a,
                    manifest,
                    &c.param_path("artifact"),
                )?;
                looked.push(p.display().to_string());
                found = in_dir(&p);
            }
        }
        if found.is_none() {
            for d in [export_dir.join("tokenizer"), export_dir.to_path_buf()] {
                looked.push(d.join("tokenizer.json").display().to_string());
                if let Some(f) = in_dir(&d) {
                    found = Some(f);
                    break;
                }
            }
        }
        // 3. tokenizer_name as a directory
        if found.is_none() {
            if let Some(n) = &name {
                let p = Path::new(n);
                let candidate = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    export_dir.join(p)
                };
                if candidate.is_dir() {
                    looked.push(candidate.display().to_string());
                    found = in_dir(&candidate);
                }
            }
        }
        // 4. the Hugging Face cache
        if found.is_none() {
            if let (Some(n), Some(r)) = (&name, &revision) {
                for root in hf_cache_roots() {
                    looked.push(format!(
                        "{}/models--{}",
                        root.display(),
                        n.replace('/', "--")
                    ));
                    match from_cache(&root, n, r) {
                        Ok(Some(f)) => {
                            found = Some(f);
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => return Err(err(manifest, c.param_path("revision"), e)),
                    }
                }
            }
        }
        let Some(file) = found else {
            return Err(err(
                manifest,
                c.param_path("tokenizer_name"),
                format!(
                    "`{}`: no tokenizer.json found (looked in: {}); robots are offline: put the \
                     tokenizer in the package (`tokenizer/tokenizer.json`), point the node's \
                     `tokenizer_dir` at it, or fill the Hugging Face cache on this machine",
                    name.as_deref().unwrap_or("(no tokenizer_name)"),
                    looked.join("; ")
                ),
            ));
        };
        Self::from_file(&file, max_len)
    }

    /// Loads `tokenizer.json` (with `tokenizer_config.json` / `special_tokens_map.json` beside
    /// it for the padding token) for sequences of `max_len` tokens.
    pub fn from_file(file: &Path, max_len: usize) -> Result<Self, PolicyError> {
        let bad = |problem: String| {
            PolicyError::Preprocess(format!("tokenizer {}: {problem}", file.display()))
        };
        let mut tokenizer =
            Tokenizer::from_file(file).map_err(|e| bad(format!("cannot load: {e}")))?;
        let pad = match tokenizer.get_padding() {
            Some(p) => Some((p.pad_id, p.pad_token.clone())),
            None => {
                let dir = file.parent().unwrap_or(Path::new("."));
                let mut token = None;
                for side in ["tokenizer_config.json", "special_tokens_map.json"] {
                    if let Ok(text) = std::fs::read_to_string(dir.join(side)) {
                        let v: Value = serde_json::from_str(&text)
                            .map_err(|e| bad(format!("{side} is not valid JSON: {e}")))?;
                        token = match &v["pad_token"] {
                            Value::String(s) => Some(s.clone()),
                            Value::Object(o) => {
                                o.get("content").and_then(Value::as_str).map(str::to_string)
                            }
                            _ => None,
                        };
                        if token.is_some() {
                            break;
                        }
                    }
                }
                match token {
                    Some(t) => Some((
                        tokenizer.token_to_id(&t).ok_or_else(|| {
                            bad(format!("the pad token `{t}` is not in the vocabulary"))
                        })?,
                        t,
                    )),
                    None => None,
                }
            }
        };
        let Some((pad_id, pad_token)) = pad else {
            return Err(bad(
                "has no padding token (tokenizer.json `padding`, or `pad_token` in tokenizer_config.json)".into(),
            ));
        };
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| bad(format!("truncation: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_len),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        Ok(Self {
            tokenizer,
            max_len,
            file: file.to_path_buf(),
        })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids and attention mask of one text, `max_len` each.
    pub fn encode(&self, text: &str) -> Result<(Vec<i64>, Vec<bool>), PolicyError> {
        let e = self.tokenizer.encode(text, true).map_err(|e| {
            PolicyError::Preprocess(format!("tokenizer {}: {e}", self.file.display()))
        })?;
        Ok((
            e.get_ids().iter().map(|&i| i64::from(i)).collect(),
            e.get_attention_mask().iter().map(|&m| m != 0).collect(),
        ))
    }

    /// Replaces the task text by `tokenized_prompt` `[1, L]` and `tokenized_prompt_mask`
    /// `[1, L]` (token ids are exact in `f32` below 2^24; the adapters feed the ports' int64
    /// and bool).
    pub fn apply(&self, obs: &mut Observation) -> Result<(), PolicyError> {
        let task = obs
            .remove_text(TASK)
            .ok_or_else(|| PolicyError::Preprocess("hf_tokenizer: no task to tokenize".into()))?;
        let (ids, mask) = self.encode(&task)?;
        put_tokens(obs, &ids, &mask, &self.file)
    }
}

/// `ov_tokenizer`: an OpenVINO tokenizer model (`artifact`, e.g. `tokenizer.xml`), run
/// with the `openvino_tokenizers` extension. Shared behind a mutex, as the pipeline is.
#[derive(Clone)]
pub struct OvTokenizerStep {
    #[cfg(feature = "openvino")]
    inner: std::sync::Arc<std::sync::Mutex<crate::runtime::ov_tokenizer::OvTokenizer>>,
    pub file: PathBuf,
}

impl std::fmt::Debug for OvTokenizerStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OvTokenizerStep")
            .field("file", &self.file)
            .finish()
    }
}

const OV_ADVICE: &str = "re-export the package with the ONNX backend, whose exporter writes     `{\"type\": \"hf_tokenizer\", \"tokenizer_name\": ..., \"revision\": ..., \"max_token_len\": ...}`,     or replace this entry by that hf_tokenizer entry naming the same tokenizer";

impl OvTokenizerStep {
    pub fn from_component(
        c: &Component,
        manifest: &Path,
        export_dir: &Path,
    ) -> Result<Self, PolicyError> {
        let rel = match c.param("artifact") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(err(
                    manifest,
                    c.param_path("artifact"),
                    format!("must be a file name, got {other}"),
                ))
            }
            None => {
                return Err(err(
                    manifest,
                    c.param_path("artifact"),
                    "is missing (the tokenizer model, e.g. tokenizer.xml)".into(),
                ))
            }
        };
        let file =
            crate::export::resolve_in_dir(export_dir, &rel, manifest, &c.param_path("artifact"))?;
        if !file.is_file() {
            return Err(err(
                manifest,
                c.param_path("artifact"),
                format!("names {}, which does not exist", file.display()),
            ));
        }
        #[cfg(feature = "openvino")]
        {
            let t = crate::runtime::ov_tokenizer::OvTokenizer::load(&file).map_err(|e| {
                err(
                    manifest,
                    c.json_path.clone(),
                    format!("cannot load the OpenVINO tokenizer: {e}; or {OV_ADVICE}"),
                )
            })?;
            Ok(Self {
                inner: std::sync::Arc::new(std::sync::Mutex::new(t)),
                file,
            })
        }
        #[cfg(not(feature = "openvino"))]
        {
            Err(err(
                manifest,
                c.json_path.clone(),
                format!("is ov_tokenizer, which needs OpenVINO: rebuild with `--features openvino`, or {OV_ADVICE}"),
            ))
        }
    }

    /// As [`HfTokenizer::apply`], with the OpenVINO tokenizer.
    pub fn apply(&self, obs: &mut Observation) -> Result<(), PolicyError> {
        let task = obs
            .remove_text(TASK)
            .ok_or_else(|| PolicyError::Preprocess("ov_tokenizer: no task to tokenize".into()))?;
        #[cfg(feature = "openvino")]
        {
            let (ids, mask) = self
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .tokenize(&task)?;
            put_tokens(obs, &ids, &mask, &self.file)
        }
        #[cfg(not(feature = "openvino"))]
        {
            let _ = task;
            Err(PolicyError::Preprocess(
                "ov_tokenizer needs OpenVINO".into(),
            ))
        }
    }
}

/// `tokenized_prompt` / `tokenized_prompt_mask` `[1, L]` into the observation.
fn put_tokens(
    obs: &mut Observation,
    ids: &[i64],
    mask: &[bool],
    file: &Path,
) -> Result<(), PolicyError> {
    if let Some(big) = ids.iter().find(|i| !(0..1 << 24).contains(*i)) {
        return Err(PolicyError::Preprocess(format!(
            "tokenizer {}: token id {big} is outside what this build passes exactly (0 to 2^24)",
            file.display()
        )));
    }
    let n = ids.len();
    obs.insert(
        "tokenized_prompt",
        ArrayD::from_shape_vec(IxDyn(&[1, n]), ids.iter().map(|&i| i as f32).collect())
            .expect("1 x n"),
    );
    obs.insert(
        "tokenized_prompt_mask",
        ArrayD::from_shape_vec(
            IxDyn(&[1, mask.len()]),
            mask.iter().map(|&m| f32::from(u8::from(m))).collect(),
        )
        .expect("1 x n"),
    );
    Ok(())
}
