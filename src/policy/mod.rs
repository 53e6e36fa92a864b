//! `InferenceModel`: load an export, bind observations to model inputs, and serve actions
//! from an action queue (with optional ACT temporal ensembling and asynchronous refill).
//!
//! The layer is ROS-free and clock-free: time is the control tick index, so queue, refill
//! and ensembling logic are deterministic and testable without sleeping.
//!
//! ```no_run
//! use policy_node::policy::{InferenceModel, Observation};
//! let mut policy = InferenceModel::load("tests/fixtures/act_tiny/onnx")?;
//! policy.reset();
//! let mut obs = Observation::new();
//! obs.insert("state", ndarray::ArrayD::zeros(vec![6]));
//! obs.insert("images", ndarray::ArrayD::zeros(vec![3, 64, 64]));
//! let action = policy.select_action(&obs)?; // runs the model, queues the rest of the chunk
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod binding;
pub mod blend;
mod ensemble;
mod model;
mod predictor;
pub mod processors;
mod refill;
pub mod relative;
pub mod rtc;
mod scheduler;

use std::collections::BTreeMap;

use ndarray::ArrayD;

#[cfg(feature = "remote")]
pub(crate) use binding::action_output as action_output_name;
pub use binding::{canonical_name, InputBinding, ACTION_OUTPUT_NAMES};
pub use blend::{ChunkBlend, LowPass};
pub use ensemble::TemporalEnsembler;
pub use model::{openpi_export, InferenceModel, InferenceModelBuilder, PolicyConfig};
pub use predictor::{Predictor, Preprocess};
pub use refill::{
    AutoRefill, ControlPolicy, LatencyStats, ObservationFn, RefillMode, TickOutcome,
    AUTO_REFILL_HORIZON, AUTO_REFILL_MAX_SAMPLES, WORKER_JOIN_TIMEOUT,
};
pub use scheduler::{Scheduler, SchedulerStats, SwitchedPlan};

use crate::export::ExportError;
use crate::runtime::RuntimeError;

/// An observation: named f32 tensors, e.g. `state` `[S]` and `images` `[3, H, W]`, with or
/// without the batch dimension. Names may use any alias the model accepts
/// (`observation.state`, `observation.images.top`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    tensors: BTreeMap<String, ArrayD<f32>>,
    /// Text inputs: `task`, the language instruction of a VLA policy.
    texts: BTreeMap<String, String>,
}

impl Observation {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: ArrayD<f32>) -> &mut Self {
        self.tensors.insert(name.into(), tensor);
        self
    }
    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.tensors.get(name)
    }
    pub fn get_mut(&mut self, name: &str) -> Option<&mut ArrayD<f32>> {
        self.tensors.get_mut(name)
    }
    pub fn remove(&mut self, name: &str) -> Option<ArrayD<f32>> {
        self.tensors.remove(name)
    }
    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArrayD<f32>)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    /// The tensors by name (processors work on them in place).
    pub fn tensors_mut(&mut self) -> &mut BTreeMap<String, ArrayD<f32>> {
        &mut self.tensors
    }
    pub fn tensors(&self) -> &BTreeMap<String, ArrayD<f32>> {
        &self.tensors
    }
    /// Sets a text input (e.g. `task`).
    pub fn set_text(&mut self, name: impl Into<String>, text: impl Into<String>) -> &mut Self {
        self.texts.insert(name.into(), text.into());
        self
    }
    pub fn text(&self, name: &str) -> Option<&str> {
        self.texts.get(name).map(String::as_str)
    }
    pub fn remove_text(&mut self, name: &str) -> Option<String> {
        self.texts.remove(name)
    }
}

impl<S: Into<String>> FromIterator<(S, ArrayD<f32>)> for Observation {
    fn from_iter<I: IntoIterator<Item = (S, ArrayD<f32>)>>(iter: I) -> Self {
        Self {
            tensors: iter.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            texts: BTreeMap::new(),
        }
    }
}

/// Errors of the policy layer. Shape errors name the tensor and both shapes.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("model input `{input}` has no matching observation (observation has: {available}; accepted names: {accepted})")]
    MissingObservation {
        input: String,
        available: String,
        accepted: String,
    },
    #[error("observation `{tensor}` (model input `{input}`) has shape {actual:?}, the model expects {expected}")]
    Shape {
        tensor: String,
        input: String,
        expected: String,
        actual: Vec<usize>,
    },
    #[error("observation `{tensor}` contains a non-finite value at flat index {index}")]
    NonFinite { tensor: String, index: usize },
    #[error("model has no action output (outputs: {outputs}; looked for {looked_for})")]
    NoActionOutput { outputs: String, looked_for: String },
    #[error("action output `{output}` has shape {actual:?}; expected [1, chunk, A], [chunk, A], [1, A] or [A]")]
    ActionShape { output: String, actual: Vec<usize> },
    #[error(
        "action output `{output}` holds a non-finite value at chunk step {step}, joint {joint}"
    )]
    NonFiniteAction {
        output: String,
        step: usize,
        joint: usize,
    },
    #[error("{}: `{key}` {problem}", file.display())]
    Package {
        file: std::path::PathBuf,
        key: String,
        problem: String,
    },
    #[error("statistics {source_desc}: {problem}")]
    Stats {
        source_desc: String,
        feature: String,
        stat: String,
        problem: String,
    },
    #[error("task: {0}")]
    Task(String),
    #[error("invalid configuration: `{key}` {problem}")]
    Config { key: &'static str, problem: String },
    #[error("preprocessing failed: {0}")]
    Preprocess(String),
    #[error("the inference worker thread stopped")]
    WorkerGone,
    #[error("the inference panicked: {0}")]
    Panicked(String),
}
