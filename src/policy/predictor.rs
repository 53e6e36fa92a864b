//! One inference: observation -> preprocessing hook -> input binding -> adapter -> action
//! chunk `[chunk, A]`.

use std::time::{Duration, Instant};

use ndarray::Array2;

use super::binding::{action_output, extract_chunk, fit_input, InputBinding};
use super::processors::Pipeline;
use super::relative::{to_absolute, RelativeAction};
use super::{Observation, PolicyError};
use crate::runtime::{RuntimeAdapter, TensorMap, TensorSpec};

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
    /// The package's processors (empty for legacy exports).
    pipeline: Pipeline,
    /// A `two_stage` runner's second model, fed from the first one's outputs by name.
    second: Option<Box<dyn RuntimeAdapter>>,
    /// Actions relative to an input, made absolute per chunk ([`super::relative`]).
    relative: Vec<RelativeAction>,
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
            pipeline: Pipeline::default(),
            second: None,
            relative: Vec::new(),
            last_latency: Duration::ZERO,
        })
    }

    /// Adds a package's processors and, for a `two_stage` runner, the second model (whose
    /// inputs must all be outputs of the first; its outputs then hold the action).
    pub fn with_pipeline(
        mut self,
        pipeline: Pipeline,
        second: Option<Box<dyn RuntimeAdapter>>,
    ) -> Result<Self, PolicyError> {
        if let Some(second) = &second {
            let produced: Vec<&str> = self
                .adapter
                .outputs()
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            if let Some(missing) = second
                .inputs()
                .iter()
                .find(|i| !produced.contains(&i.name.as_str()))
            {
                return Err(PolicyError::Config {
                    key: "model.runner",
                    problem: format!(
                        "two_stage: the second model's input `{}` is not an output of the first model (it produces {})",
                        missing.name,
                        produced.join(", ")
                    ),
                });
            }
            self.action_output = action_output(second.outputs())?;
        }
        pipeline.check_ports(self.adapter.inputs(), self.outputs())?;
        self.pipeline = pipeline;
        self.second = second;
        Ok(self)
    }

    /// One model call on zeros shaped like the ports (dynamic dimensions 1), processors
    /// bypassed: the first call of every runtime is slow; this takes it before the first
    /// tick. Returns the call's duration.
    pub fn warm_up(&mut self) -> Result<Duration, PolicyError> {
        let zeros: Vec<(String, ndarray::ArrayD<f32>)> = self
            .specs
            .iter()
            .map(|s| {
                let shape: Vec<usize> = s.shape.iter().map(|d| d.unwrap_or(1)).collect();
                (s.name.clone(), ndarray::ArrayD::zeros(shape))
            })
            .collect();
        let inputs: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
            zeros.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
        let start = Instant::now();
        let outputs = self.adapter.predict(&inputs)?;
        if let Some(second) = self.second.as_mut() {
            run_second(second.as_mut(), outputs)?;
        }
        Ok(start.elapsed())
    }

    /// The outputs the action is read from (the second model's for a two-stage runner).
    pub fn outputs(&self) -> &[TensorSpec] {
        match &self.second {
            Some(s) => s.outputs(),
            None => self.adapter.outputs(),
        }
    }

    /// The package's processors.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
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
        self.pipeline.check_observation(obs.tensors())?;
        if !self.pipeline.pre.is_empty() {
            let mut owned = obs.clone();
            self.pipeline.preprocess(&mut owned)?;
            return self.check_bound(&owned);
        }
        self.check_bound(obs)
    }

    fn check_bound(&mut self, obs: &Observation) -> Result<(), PolicyError> {
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
    /// Relative actions are made absolute against `obs` as given (before any processor).
    pub fn predict_chunk(&mut self, obs: &Observation) -> Result<Array2<f32>, PolicyError> {
        if !self.relative.is_empty() && obs.text(super::relative::LEFT_OVER_ROWS).is_some() {
            let mut owned = obs.clone();
            super::relative::reanchor_left_over(&mut owned, &self.relative)?;
            return self.predict_chunk_anchored(&owned);
        }
        self.predict_chunk_anchored(obs)
    }

    fn predict_chunk_anchored(&mut self, obs: &Observation) -> Result<Array2<f32>, PolicyError> {
        let mut chunk = if self.preprocess.is_none() && self.pipeline.pre.is_empty() {
            self.pipeline.check_observation(obs.tensors())?;
            self.run(obs)?
        } else {
            let mut owned = obs.clone();
            if let Some(p) = self.preprocess.as_mut() {
                p.preprocess(&mut owned)?;
            }
            self.pipeline.check_observation(owned.tensors())?;
            self.pipeline.preprocess(&mut owned)?;
            self.run(&owned)?
        };
        if !self.relative.is_empty() {
            to_absolute(&mut chunk, obs, &self.relative)?;
        }
        Ok(chunk)
    }

    /// Actions relative to inputs of the observation (an I/O map's `relative`, a package's
    /// absolute-actions step): made absolute on every chunk from now on.
    pub fn set_relative_actions(&mut self, relative: Vec<RelativeAction>) {
        self.relative = relative;
    }

    pub fn relative_actions(&self) -> &[RelativeAction] {
        &self.relative
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
        self.adapter.set_task(obs.text("task"));
        let start = Instant::now();
        let mut outputs = self.adapter.predict(&inputs)?;
        if let Some(second) = self.second.as_mut() {
            outputs = run_second(second.as_mut(), outputs)?;
        }
        self.last_latency = start.elapsed();
        self.pipeline
            .postprocess(&mut outputs, &self.action_output)?;
        extract_chunk(outputs, &self.action_output)
    }
}

/// Feeds a second model the first one's outputs, matched by input name.
fn run_second(second: &mut dyn RuntimeAdapter, first: TensorMap) -> Result<TensorMap, PolicyError> {
    let names: Vec<String> = second.inputs().iter().map(|s| s.name.clone()).collect();
    let mut inputs = Vec::with_capacity(names.len());
    for n in &names {
        let t = first.get(n).ok_or_else(|| PolicyError::Config {
            key: "model.runner",
            problem: format!("two_stage: the first model produced no `{n}`"),
        })?;
        inputs.push((n.as_str(), t.view()));
    }
    Ok(second.predict(&inputs)?)
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
