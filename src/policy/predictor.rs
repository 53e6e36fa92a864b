//! One inference: observation -> preprocessing hook -> input binding -> adapter -> action
//! chunk `[chunk, A]`.

use std::time::{Duration, Instant};

use ndarray::Array2;

use super::binding::{action_output, extract_chunk, fit_input, InputBinding};
use super::{Observation, PolicyError};
use crate::runtime::{RuntimeAdapter, TensorSpec};

/// The extension point getiaction calls `_preprocess_observation`: runs on every observation
/// before it is bound to the model inputs (e.g. to crop, normalise or add derived tensors).
pub trait Preprocess: Send {
    fn preprocess(&mut self, observation: &mut Observation) -> Result<(), PolicyError>;
}

impl<F> Preprocess for F
where
    F: FnMut(&mut Observation) -> Result<(), PolicyError> + Send,
{
    fn preprocess(&mut self, observation: &mut Observation) -> Result<(), PolicyError> {
        self(observation)
    }
}

/// A loaded adapter plus everything needed to turn an [`Observation`] into an action chunk.
/// `Send`, so the asynchronous refill worker can own it.
pub struct Predictor {
    adapter: Box<dyn RuntimeAdapter>,
    /// The adapter's input specs, copied so a predict can borrow them while the adapter is
    /// borrowed mutably.
    specs: Vec<TensorSpec>,
    metadata_order: Vec<String>,
    action_output: String,
    binding: Option<InputBinding>,
    preprocess: Option<Box<dyn Preprocess>>,
    last_latency: Duration,
}

impl Predictor {
    /// Wraps a loaded adapter. `metadata_order`: the metadata's `input_shapes` keys in file
    /// order (for ports a runtime renamed).
    pub fn new(
        adapter: Box<dyn RuntimeAdapter>,
        metadata_order: Vec<String>,
        preprocess: Option<Box<dyn Preprocess>>,
    ) -> Result<Self, PolicyError> {
        let action_output = action_output(adapter.outputs())?;
        Ok(Self {
            specs: adapter.inputs().to_vec(),
            adapter,
            metadata_order,
            action_output,
            binding: None,
            preprocess,
            last_latency: Duration::ZERO,
        })
    }

    pub fn adapter(&self) -> &dyn RuntimeAdapter {
        self.adapter.as_ref()
    }

    pub fn inputs(&self) -> &[TensorSpec] {
        &self.specs
    }

    /// The output holding the action chunk.
    pub fn action_output(&self) -> &str {
        &self.action_output
    }

    /// Wall time of the last adapter call.
    pub fn last_latency(&self) -> Duration {
        self.last_latency
    }

    /// The binding used for the last observation, if any.
    pub fn binding(&self) -> Option<&InputBinding> {
        self.binding.as_ref()
    }

    /// Resolves (and caches) the input binding for `obs` without running the model; this is
    /// how callers validate the first observations against the export.
    pub fn check(&mut self, obs: &Observation) -> Result<(), PolicyError> {
        self.bind(obs)?;
        let binding = self.binding.as_ref().expect("bound above");
        for (spec, (_, key)) in self.specs.iter().zip(&binding.pairs) {
            let t = obs.get(key).expect("binding applies");
            fit_input(spec, key, t)?;
        }
        Ok(())
    }

    fn bind(&mut self, obs: &Observation) -> Result<(), PolicyError> {
        if !self.binding.as_ref().is_some_and(|b| b.applies_to(obs)) {
            let b = InputBinding::resolve(&self.specs, &self.metadata_order, obs)?;
            for (input, key) in &b.pairs {
                log::debug!("model input `{input}` <- observation `{key}`");
            }
            self.binding = Some(b);
        }
        Ok(())
    }

    /// Runs the model on `obs` and returns the action chunk `[chunk, A]`.
    pub fn predict_chunk(&mut self, obs: &Observation) -> Result<Array2<f32>, PolicyError> {
        if let Some(p) = self.preprocess.as_mut() {
            let mut owned = obs.clone();
            p.preprocess(&mut owned)?;
            return self.run(&owned);
        }
        self.run(obs)
    }

    fn run(&mut self, obs: &Observation) -> Result<Array2<f32>, PolicyError> {
        self.bind(obs)?;
        let binding = self.binding.as_ref().expect("bound above");
        let mut inputs = Vec::with_capacity(self.specs.len());
        for (spec, (_, key)) in self.specs.iter().zip(&binding.pairs) {
            let t = obs.get(key).expect("binding applies");
            if let Some(index) = t.iter().position(|v| !v.is_finite()) {
                return Err(PolicyError::NonFinite {
                    tensor: key.clone(),
                    index,
                });
            }
            inputs.push((spec.name.as_str(), fit_input(spec, key, t)?));
        }
        let start = Instant::now();
        let outputs = self.adapter.predict(&inputs)?;
        self.last_latency = start.elapsed();
        extract_chunk(outputs, &self.action_output)
    }
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("backend", &self.adapter.backend())
            .field("device", &self.adapter.device())
            .field("action_output", &self.action_output)
            .finish()
    }
}
