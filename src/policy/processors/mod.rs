//! The processors of a policy package (`model.preprocessors` / `model.postprocessors` of
//! `manifest.json`), ROS-free, run in manifest order around the model:
//!
//! ```text
//! observation -> input-feature check -> preprocessors -> model (runner) -> postprocessors -> chunk
//! ```
//!
//! | type | where | what |
//! |---|---|---|
//! | `normalize` | pre | [`StatsTransform`] forward, per feature |
//! | `resize` | pre | [`Resize`]: letterbox / stretch every camera |
//! | `denormalize` | post | [`StatsTransform`] inverse, on the action chunk |
//! | `pi05` | pre | [`vla::Pi05`]: cameras stacked in [-1, 1] with masks, the Pi0.5 prompt |
//! | `smolvla_resize` | pre | [`vla::SmolvlaResize`]: cameras stacked, top/left padding |
//! | `new_line` | pre | the task ends with a newline |
//! | `hf_tokenizer` | pre | [`tokenizer::HfTokenizer`]: the task to token ids and mask |
//! | `action_chunk_trimmer` | post | `n_action_steps`: rows executed per chunk |
//!
//! Denormalization runs on the chunk before the action queue, the ensembler and the
//! command limits see it. The trimmer sets how many rows are executed (as physicalai's
//! cut of `action[:, :n]`), but the rows past it are kept for the scheduler: a chunk that
//! is switched in `k` ticks after it was requested (asynchronous refill) skips `k` rows and
//! still has `n` rows to execute; `policyctl chunk` returns exactly the trimmed rows.
//!
//! An unknown processor is an error naming it and listing the supported ones.

pub mod lerobot_relative;
pub mod normalize;
pub mod resize;
pub mod tokenizer;
pub mod vla;

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::ArrayD;

use super::binding::canonical_name;
use super::PolicyError;
use crate::export::manifest::{Component, Feature, FeatureDtype};
use crate::export::ExportDir;
use crate::runtime::{fmt_shape, DType, TensorSpec};

pub use normalize::{FeatureStats, NormMode, StatsSource, StatsTransform};

/// Statistics by feature name.
pub type FeatureStatsMap = BTreeMap<String, FeatureStats>;
pub use resize::{Layout, Resize, ResizeMode};

/// Preprocessor types this build runs.
pub const PREPROCESSORS: &[&str] = &[
    "normalize",
    "resize",
    "pi05",
    "smolvla_resize",
    "new_line",
    "hf_tokenizer",
    "ov_tokenizer",
    "relative_actions_processor",
];
/// Postprocessor types this build runs.
pub const POSTPROCESSORS: &[&str] = &[
    "denormalize",
    "action_chunk_trimmer",
    "absolute_actions_processor",
];
/// Runners this build runs.
pub const RUNNERS: &[&str] = &["single_pass", "two_stage", "action_chunking"];
/// Callbacks that only measure (our own diagnostics cover them): accepted and not run.
pub const MEASURING_CALLBACKS: &[&str] = &["latency_monitor", "throughput_monitor", "rtc_latency"];

/// One processing step.
#[derive(Debug, Clone)]
pub enum Step {
    Normalize(StatsTransform),
    Resize(Resize),
    /// `action_chunk_trimmer`: rows executed per chunk.
    Trim(usize),
    Pi05(vla::Pi05),
    SmolvlaResize(vla::SmolvlaResize),
    NewLine,
    HfTokenizer(Box<tokenizer::HfTokenizer>),
    OvTokenizer(tokenizer::OvTokenizerStep),
    /// LeRobot's `relative_actions_processor` (remembers the state; the mask).
    RelativeActions(lerobot_relative::RelativeStep),
    /// LeRobot's `absolute_actions_processor`, `enabled` or not: applied by the predictor
    /// ([`Pipeline::relative_actions`]).
    AbsoluteActions(bool),
}

impl Step {
    /// A one-line description for `policyctl info`.
    pub fn describe(&self) -> String {
        match self {
            Step::Normalize(t) => format!(
                "{} {} [{}] from {}",
                if t.is_inverse() {
                    "denormalize"
                } else {
                    "normalize"
                },
                t.mode().as_str(),
                t.features().join(", "),
                t.source()
            ),
            Step::Resize(r) => format!(
                "resize {}x{} ({}, pad {})",
                r.height,
                r.width,
                match r.mode {
                    ResizeMode::Letterbox => "letterbox",
                    ResizeMode::Stretch => "stretch",
                },
                r.pad_value
            ),
            Step::Trim(n) => format!("action_chunk_trimmer n_action_steps {n}"),
            Step::Pi05(p) => format!(
                "pi05 {}x{} (empty cameras {})",
                p.height, p.width, p.empty_cameras
            ),
            Step::SmolvlaResize(p) => format!(
                "smolvla_resize {}x{} (camera slots {})",
                p.height, p.width, p.num_cameras
            ),
            Step::NewLine => "new_line".into(),
            Step::OvTokenizer(t) => format!("ov_tokenizer {}", t.file.display()),
            Step::RelativeActions(r) => format!(
                "relative_actions_processor (enabled {}, exclude_joints {:?})",
                r.enabled, r.exclude_joints
            ),
            Step::AbsoluteActions(on) => format!("absolute_actions_processor (enabled {on})"),
            Step::HfTokenizer(t) => format!(
                "hf_tokenizer {} (max {} tokens)",
                t.file.display(),
                t.max_len()
            ),
        }
    }
}

/// The processors of a package (empty for legacy exports).
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub pre: Vec<Step>,
    pub post: Vec<Step>,
    /// `model.input_features`, checked against every observation.
    pub input_features: Vec<Feature>,
    pub output_features: Vec<Feature>,
    manifest_file: Option<std::path::PathBuf>,
}

fn unknown(manifest: &Path, c: &Component, role: &str, supported: &[&str]) -> PolicyError {
    PolicyError::Package {
        file: manifest.to_path_buf(),
        key: c.json_path.clone(),
        problem: format!(
            "is {}, a {role} this build does not run (supported: {})",
            c.describe(),
            supported.join(", ")
        ),
    }
}

impl Pipeline {
    /// The processors declared by `export`'s manifest (none for a legacy export).
    pub fn from_export(
        export: &ExportDir,
        search: &tokenizer::TokenizerSearch,
    ) -> Result<Self, PolicyError> {
        let (Some(m), Some(file)) = (&export.manifest, &export.metadata_file) else {
            return Ok(Self::default());
        };
        let cameras = camera_order(m);
        let mut pre = Vec::new();
        for c in &m.model.preprocessors {
            pre.push(match c.kind() {
                "normalize" => {
                    Step::Normalize(StatsTransform::from_component(c, &export.dir, file, false)?)
                }
                "resize" => Step::Resize(Resize::from_component(c, file)?),
                "pi05" => Step::Pi05(vla::Pi05::from_component(c, file, cameras.clone())?),
                "smolvla_resize" => Step::SmolvlaResize(vla::SmolvlaResize::from_component(
                    c,
                    file,
                    cameras.clone(),
                )?),
                "new_line" => Step::NewLine,
                "hf_tokenizer" => Step::HfTokenizer(Box::new(
                    tokenizer::HfTokenizer::from_component(c, file, &export.dir, search)?,
                )),
                "ov_tokenizer" => Step::OvTokenizer(tokenizer::OvTokenizerStep::from_component(
                    c,
                    file,
                    &export.dir,
                )?),
                "relative_actions_processor" => {
                    Step::RelativeActions(lerobot_relative::RelativeStep::from_component(c, file)?)
                }
                _ => return Err(unknown(file, c, "preprocessor", PREPROCESSORS)),
            });
        }
        let mut post = Vec::new();
        for c in &m.model.postprocessors {
            post.push(match c.kind() {
                "denormalize" => {
                    Step::Normalize(StatsTransform::from_component(c, &export.dir, file, true)?)
                }
                "action_chunk_trimmer" => Step::Trim(
                    c.param("n_action_steps")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(1) as usize,
                ),
                "absolute_actions_processor" => {
                    Step::AbsoluteActions(lerobot_relative::absolute_enabled(c, file)?)
                }
                _ => return Err(unknown(file, c, "postprocessor", POSTPROCESSORS)),
            });
        }
        for c in &m.model.callbacks {
            if MEASURING_CALLBACKS.contains(&c.kind()) {
                log::info!(
                    "{}: `{}` ({}) only measures; the node's own diagnostics cover it, so it is not run",
                    file.display(),
                    c.json_path,
                    c.kind()
                );
            } else {
                return Err(unknown(file, c, "callback", MEASURING_CALLBACKS));
            }
        }
        if let Some(r) = &m.model.runner {
            if !RUNNERS.contains(&r.kind()) {
                return Err(unknown(file, r, "runner", RUNNERS));
            }
        }
        Ok(Self {
            pre,
            post,
            input_features: m.model.input_features.clone(),
            output_features: m.model.output_features.clone(),
            manifest_file: Some(file.clone()),
        })
    }

    /// An enabled `absolute_actions_processor`: the actions it makes absolute, against the
    /// state input (LeRobot's rules: [`lerobot_relative`]), for an action of `action_width`
    /// values. Empty without one. Errors name the manifest key.
    pub fn relative_actions(
        &self,
        action_width: usize,
    ) -> Result<Vec<super::relative::RelativeAction>, PolicyError> {
        let file = self.manifest_file.clone().unwrap_or_default();
        let Some(i) = self
            .post
            .iter()
            .position(|s| matches!(s, Step::AbsoluteActions(true)))
        else {
            return Ok(Vec::new());
        };
        let key = format!("model.postprocessors[{i}]");
        let Some(relative) = self.pre.iter().find_map(|s| match s {
            Step::RelativeActions(r) => Some(r),
            _ => None,
        }) else {
            return Err(PolicyError::Package {
                file,
                key,
                problem: "absolute_actions_processor is enabled but no relative_actions_processor \
                          in model.preprocessors gives its mask"
                    .into(),
            });
        };
        let state = self
            .input_features
            .iter()
            .find(|f| f.ftype == "STATE" || canonical_name(&f.name) == "state");
        let (name, width) = match state {
            Some(f) => (f.name.clone(), f.shape.last().copied()),
            None => ("observation.state".to_string(), None),
        };
        lerobot_relative::anchors(&relative.mask(action_width), &name, width)
            .map_err(|problem| PolicyError::Package { file, key, problem })
    }

    pub fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.post.is_empty() && self.input_features.is_empty()
    }

    /// Whether a step stacks the cameras into one `images` input (`pi05`,
    /// `smolvla_resize`): the cameras are then the package's, not the model's ports.
    pub fn stacks_cameras(&self) -> bool {
        self.pre
            .iter()
            .any(|s| matches!(s, Step::Pi05(_) | Step::SmolvlaResize(_)))
    }

    /// Whether a step consumes the task text (the policy then needs one).
    pub fn needs_task(&self) -> bool {
        self.pre.iter().any(|s| {
            matches!(
                s,
                Step::Pi05(_) | Step::NewLine | Step::HfTokenizer(_) | Step::OvTokenizer(_)
            )
        })
    }

    /// Whether a preprocessor changes image sizes (the model's image ports then do not
    /// give the camera resolution).
    pub fn resizes_images(&self) -> bool {
        self.pre
            .iter()
            .any(|s| matches!(s, Step::Resize(_) | Step::Pi05(_) | Step::SmolvlaResize(_)))
    }

    fn feature_error(&self, f: &Feature, problem: String) -> PolicyError {
        PolicyError::Package {
            file: self.manifest_file.clone().unwrap_or_default(),
            key: f.json_path.clone(),
            problem: format!("(feature `{}`) {problem}", f.name),
        }
    }

    /// Checks the declared features against the model's ports (at load). A feature binds
    /// to the port of the same (alias) name; features without a port (consumed by a
    /// processor) are not checked here. Images are not size-checked when a preprocessor
    /// resizes them.
    pub fn check_ports(
        &self,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
    ) -> Result<(), PolicyError> {
        let resizes = self.resizes_images();
        for f in &self.input_features {
            let Some(port) = find_port(inputs, &f.name) else {
                continue;
            };
            let c = canonical_name(&f.name);
            let is_image = c == "images" || c.starts_with("images.");
            if !(shape_fits(&port.shape, &f.shape) || is_image && resizes) {
                return Err(self.feature_error(
                    f,
                    format!(
                        "declares shape {:?}, but the model's input `{}` is {}",
                        f.shape,
                        port.name,
                        fmt_shape(&port.shape)
                    ),
                ));
            }
            check_dtype(f, port).map_err(|p| self.feature_error(f, p))?;
        }
        for f in &self.output_features {
            let Some(port) = find_port(outputs, &f.name) else {
                continue;
            };
            // Trimmed chunks may declare fewer steps: compare the action width.
            let fits = shape_fits(&port.shape, &f.shape)
                || (f.shape.last().is_some()
                    && port.shape.last().copied().flatten() == f.shape.last().copied());
            if !fits {
                return Err(self.feature_error(
                    f,
                    format!(
                        "declares shape {:?}, but the model's output `{}` is {}",
                        f.shape,
                        port.name,
                        fmt_shape(&port.shape)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks an observation against the declared input features: a tensor named like a
    /// feature must have its shape (with or without the batch dimension).
    pub fn check_observation(
        &self,
        tensors: &BTreeMap<String, ArrayD<f32>>,
    ) -> Result<(), PolicyError> {
        for f in &self.input_features {
            if f.dtype == FeatureDtype::String {
                continue;
            }
            let c = canonical_name(&f.name);
            let Some((key, t)) = tensors
                .iter()
                .find(|(k, _)| k.as_str() == f.name)
                .or_else(|| tensors.iter().find(|(k, _)| canonical_name(k) == c))
            else {
                continue;
            };
            let s = t.shape();
            let ok = s == f.shape.as_slice()
                || (s.len() == f.shape.len() + 1 && s[0] == 1 && s[1..] == f.shape[..]);
            if !ok {
                return Err(PolicyError::Shape {
                    tensor: key.clone(),
                    input: format!("feature `{}` ({})", f.name, f.json_path),
                    expected: format!("{:?}", f.shape),
                    actual: s.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Runs the preprocessors on `obs`. A policy that needs a task refuses to run without
    /// one (physicalai's Pi0.5 would run with an empty task, its SmolVLA would fail).
    pub fn preprocess(&self, obs: &mut super::Observation) -> Result<(), PolicyError> {
        if self.needs_task() {
            check_task(obs.text(vla::TASK))?;
        }
        for s in &self.pre {
            match s {
                Step::Normalize(t) => t.apply(obs.tensors_mut(), None)?,
                Step::Resize(r) => r.apply(obs.tensors_mut())?,
                Step::Pi05(p) => p.apply(obs)?,
                Step::SmolvlaResize(p) => p.apply(obs)?,
                Step::NewLine => vla::new_line(obs),
                Step::HfTokenizer(t) => t.apply(obs)?,
                Step::OvTokenizer(t) => t.apply(obs)?,
                Step::Trim(_) | Step::RelativeActions(_) | Step::AbsoluteActions(_) => {}
            }
        }
        Ok(())
    }

    /// Runs the postprocessors on the model outputs (`action_key`: the action output).
    pub fn postprocess(
        &self,
        outputs: &mut BTreeMap<String, ArrayD<f32>>,
        action_key: &str,
    ) -> Result<(), PolicyError> {
        for s in &self.post {
            if let Step::Normalize(t) = s {
                t.apply(outputs, Some(action_key))?;
            }
        }
        Ok(())
    }

    /// One line per step, pre then post.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.pre
            .iter()
            .map(|s| ("pre".to_string(), s.describe()))
            .chain(self.post.iter().map(|s| ("post".to_string(), s.describe())))
            .collect()
    }
}

/// The task a policy runs with: present, not blank, at most [`tokenizer::MAX_TASK_BYTES`].
pub fn check_task(task: Option<&str>) -> Result<(), PolicyError> {
    match task {
        None => Err(PolicyError::Task(
            "this policy needs a task (its package tokenizes a language instruction): set the \
             `task` parameter, publish on `~/task`, or pass `--task`"
                .into(),
        )),
        Some(t) if t.trim().is_empty() => Err(PolicyError::Task(
            "the task is empty; this policy needs a language instruction".into(),
        )),
        Some(t) if t.len() > tokenizer::MAX_TASK_BYTES => Err(PolicyError::Task(format!(
            "the task is {} bytes long, above the limit of {} bytes",
            t.len(),
            tokenizer::MAX_TASK_BYTES
        ))),
        Some(_) => Ok(()),
    }
}

/// The package's camera order: its visual `input_features`, else `hardware.cameras`, as
/// canonical `images.<cam>` names.
fn camera_order(m: &crate::export::Manifest) -> Vec<String> {
    let from_features: Vec<String> = m
        .model
        .input_features
        .iter()
        .filter(|f| f.ftype == "VISUAL" || canonical_name(&f.name).starts_with("images"))
        .map(|f| canonical_name(&f.name))
        .collect();
    if !from_features.is_empty() {
        return from_features;
    }
    m.hardware
        .cameras
        .iter()
        .map(|c| format!("images.{}", c.name))
        .collect()
}

fn find_port<'a>(ports: &'a [TensorSpec], name: &str) -> Option<&'a TensorSpec> {
    ports.iter().find(|p| p.name == name).or_else(|| {
        let c = canonical_name(name);
        let mut hits = ports.iter().filter(|p| canonical_name(&p.name) == c);
        match (hits.next(), hits.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        }
    })
}

/// A declared shape (no batch) fits a port shape `[1, ...]` or `[...]` (dynamic dims fit).
fn shape_fits(port: &[Option<usize>], feature: &[usize]) -> bool {
    let fits = |p: &[Option<usize>]| {
        p.len() == feature.len()
            && p.iter()
                .zip(feature)
                .all(|(p, f)| p.is_none_or(|p| p == *f))
    };
    fits(port)
        || (port.len() == feature.len() + 1 && port[0].is_none_or(|b| b == 1) && fits(&port[1..]))
}

fn check_dtype(f: &Feature, port: &TensorSpec) -> Result<(), String> {
    let ok = match &f.dtype {
        FeatureDtype::Float32 => matches!(port.dtype, DType::F32 | DType::F16 | DType::F64),
        FeatureDtype::Int64 => matches!(port.dtype, DType::I64 | DType::I32),
        FeatureDtype::Bool => matches!(port.dtype, DType::Bool),
        FeatureDtype::String | FeatureDtype::Other(_) => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "declares dtype {}, but the model's input `{}` takes {}",
            f.dtype.as_str(),
            port.name,
            port.dtype
        ))
    }
}
