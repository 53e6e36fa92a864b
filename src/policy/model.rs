//! `InferenceModel`: the Rust form of getiaction's `InferenceModel`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayD};

use super::processors::{tokenizer::TokenizerSearch, Pipeline};
use super::{ChunkBlend, Observation, PolicyError, Predictor, Preprocess, Scheduler};
use crate::export::{ExportBackend, ExportDir};
use crate::runtime::{
    get_adapter, DeviceRequest, GraphOptimization, RemoteOptions, RuntimeAdapter, RuntimeOptions,
};

/// How actions are served, resolved from metadata and overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Actions per model call.
    pub chunk_size: usize,
    /// Actions executed per chunk (`<= chunk_size`).
    pub n_action_steps: usize,
    /// Serve single actions from a queue (true when `chunk_size > 1` unless disabled).
    pub use_action_queue: bool,
    /// ACT temporal ensembling coefficient, inferring every tick; `None` = off (always off
    /// with a `chunk_blend` other than `none`).
    pub temporal_ensemble_coeff: Option<f64>,
    /// How a new chunk takes over from the plan it replaces.
    pub chunk_blend: ChunkBlend,
    /// Output low-pass filter `alpha` (1 = off).
    pub low_pass_alpha: f64,
}

impl PolicyConfig {
    /// Whether `select_action` returns single actions (queue or ensembling) rather than the
    /// whole chunk.
    pub fn serves_single_actions(&self) -> bool {
        self.temporal_ensemble_coeff.is_some() || (self.use_action_queue && self.chunk_size > 1)
    }
}

/// Builder for [`InferenceModel`]: backend, device and runtime options, queue overrides and
/// the preprocessing hook.
pub struct InferenceModelBuilder {
    dir: PathBuf,
    backend: Option<ExportBackend>,
    options: RuntimeOptions,
    n_action_steps: Option<usize>,
    use_action_queue: Option<bool>,
    temporal_ensemble_coeff: Option<f64>,
    chunk_blend: ChunkBlend,
    low_pass_alpha: f64,
    preprocess: Option<Box<dyn Preprocess>>,
    tokenizers: TokenizerSearch,
    /// An export described by something other than a directory (an I/O map's `openpi:`
    /// section); used instead of opening `dir`.
    export: Option<ExportDir>,
}

impl InferenceModelBuilder {
    /// The policy of an openpi server described by an I/O map's `openpi:` section, with no
    /// export on the robot: the map's inputs are the observation (their shapes from the
    /// section and the sources' widths), its action extent the width of `actions`; the chunk
    /// size comes from the section or from the server's answer to a probe at load. Sets
    /// backend `remote` with protocol openpi.
    pub fn openpi_map(
        mut self,
        map: &crate::iomap::IoMap,
        probe_prompt: Option<&str>,
    ) -> Result<Self, PolicyError> {
        self.export = Some(openpi_export(map, probe_prompt, &mut self.options.remote)?);
        self.backend = Some(ExportBackend::Remote);
        Ok(self)
    }

    /// A directory holding `tokenizer.json` (or a Hugging Face cache root) for packages that
    /// tokenize a task; searched before the package and the cache.
    pub fn tokenizer_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tokenizers.tokenizer_dir = Some(dir.into());
        self
    }
    /// Overrides the backend from metadata / file extension.
    pub fn backend(mut self, backend: ExportBackend) -> Self {
        self.backend = Some(backend);
        self
    }
    /// `auto` (default) or an explicit device.
    pub fn device(mut self, device: DeviceRequest) -> Self {
        self.options.device = device;
        self
    }
    /// Intra-op CPU threads.
    pub fn threads(mut self, threads: usize) -> Self {
        self.options.threads = Some(threads);
        self
    }
    /// OpenVINO compiled-model cache directory.
    pub fn openvino_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.openvino_cache_dir = Some(dir.into());
        self
    }
    /// ONNX Runtime graph optimisation level.
    pub fn onnx_optimization(mut self, level: GraphOptimization) -> Self {
        self.options.onnx_optimization = level;
        self
    }
    /// ONNX Runtime: whether idle intra-op threads spin.
    pub fn onnx_spinning(mut self, spin: bool) -> Self {
        self.options.onnx_spinning = Some(spin);
        self
    }
    /// The precision the runtime computes in (OpenVINO; the others accept only `f32`).
    pub fn precision(mut self, precision: crate::runtime::Precision) -> Self {
        self.options.precision = precision;
        self
    }
    /// The inference server of backend `remote` (URL, model, version, deadline, TLS). What
    /// [`openpi_map`](Self::openpi_map) set (schema, ports) is kept.
    pub fn remote(mut self, remote: RemoteOptions) -> Self {
        let old = std::mem::replace(&mut self.options.remote, remote);
        if old.openpi_schema.is_some() {
            let r = &mut self.options.remote;
            r.openpi_schema = old.openpi_schema;
            r.expected_inputs = old.expected_inputs;
            r.expected_outputs = old.expected_outputs;
            r.protocol = old.protocol;
        }
        self
    }
    /// All runtime options at once.
    pub fn runtime_options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }
    /// Actions executed per chunk (0 = the whole chunk).
    pub fn n_action_steps(mut self, n: usize) -> Self {
        self.n_action_steps = Some(n);
        self
    }
    /// Overrides the metadata's `use_action_queue`.
    pub fn use_action_queue(mut self, on: bool) -> Self {
        self.use_action_queue = Some(on);
        self
    }
    /// ACT temporal ensembling (`coeff > 0` turns it on, 0 turns it off).
    pub fn temporal_ensemble_coeff(mut self, coeff: f64) -> Self {
        self.temporal_ensemble_coeff = Some(coeff);
        self
    }
    /// How a new chunk takes over from the plan it replaces (default `none`). With
    /// `ensemble`, a temporal ensembling coefficient from [`temporal_ensemble_coeff`] or the
    /// metadata replaces the mode's and per-tick ensembling stays off; other modes cannot be
    /// combined with per-tick ensembling.
    ///
    /// [`temporal_ensemble_coeff`]: Self::temporal_ensemble_coeff
    pub fn chunk_blend(mut self, blend: ChunkBlend) -> Self {
        self.chunk_blend = blend;
        self
    }
    /// Output low-pass filter `y = alpha x + (1 - alpha) y_prev`, `alpha` in (0, 1] (1 = off,
    /// the default).
    pub fn low_pass_alpha(mut self, alpha: f64) -> Self {
        self.low_pass_alpha = alpha;
        self
    }
    /// Sets the preprocessing hook.
    pub fn preprocess(mut self, hook: impl Preprocess + 'static) -> Self {
        self.preprocess = Some(Box::new(hook));
        self
    }

    /// Reads the export, creates and loads the adapter, and resolves the queue configuration.
    pub fn build(self) -> Result<InferenceModel, PolicyError> {
        let export = match self.export {
            Some(e) => e,
            None => ExportDir::open_with_backend(&self.dir, self.backend)?,
        };
        let start = Instant::now();
        let mut options = self.options;
        if export.backend == ExportBackend::Remote {
            // The export declares the ports the server's model must have; the model's name
            // on the server defaults to the policy's.
            options.remote = options.remote.for_export(&export);
        }
        let mut adapter = get_adapter(export.backend, &options)?;
        adapter.load(&export.model_file)?;
        crate::runtime::check_port_shapes(adapter.as_ref())?;
        let second = second_stage(&export, &options)?;
        let load_time = start.elapsed();
        let pipeline = Pipeline::from_export(&export, &self.tokenizers)?;
        let order = export.metadata.input_shapes.keys().cloned().collect();
        let mut predictor =
            Predictor::new(adapter, order, self.preprocess)?.with_pipeline(pipeline, second)?;
        let action_width = predictor
            .outputs()
            .iter()
            .find(|o| o.name == predictor.action_output())
            .and_then(|o| o.shape.last().copied().flatten());
        if let Some(width) = action_width {
            let relative = predictor.pipeline().relative_actions(width)?;
            if !relative.is_empty() {
                log::info!(
                    "relative actions (absolute_actions_processor): {} of {width} action value(s) get the state of the observation each chunk was computed from",
                    relative.len()
                );
                predictor.set_relative_actions(relative);
            }
        }
        let config = resolve_config(
            &export,
            &predictor,
            self.n_action_steps,
            self.use_action_queue,
            self.temporal_ensemble_coeff,
            self.chunk_blend,
            self.low_pass_alpha,
        )?;
        log::info!(
            "loaded {} ({} on {}) in {:.1} ms: chunk {} x {} steps, queue {}",
            export.model_file.display(),
            export.backend,
            predictor.adapter().device(),
            load_time.as_secs_f64() * 1e3,
            config.chunk_size,
            config.n_action_steps,
            if config.serves_single_actions() {
                "on"
            } else {
                "off"
            }
        );
        let scheduler = Scheduler::new(config.n_action_steps, 0, config.temporal_ensemble_coeff)
            .with_blend(config.chunk_blend, config.low_pass_alpha);
        Ok(InferenceModel {
            export,
            predictor,
            scheduler,
            config,
            load_time,
        })
    }
}

/// The export an I/O map's `openpi:` section stands for (no files: the map's inputs with the
/// section's shapes, `actions` `[H, D]` with `D` the map's action extent and `H` from the
/// section or a probe), and the openpi settings it implies on `remote` (protocol, schema,
/// the ports the server's answers are checked against).
pub fn openpi_export(
    map: &crate::iomap::IoMap,
    probe_prompt: Option<&str>,
    remote: &mut RemoteOptions,
) -> Result<ExportDir, PolicyError> {
    use crate::runtime::{PortExpectation, RemoteProtocol};
    let (Some(section), Some(inputs)) = (map.openpi.as_ref(), map.openpi_inputs()) else {
        return Err(PolicyError::Config {
            key: "io_map",
            problem: format!(
                "{}: has no `openpi:` section, which describes the server's observation when no export does",
                map.file.as_ref().map_or("the map".into(), |f| f.display().to_string())
            ),
        });
    };
    let width = map.action_extent();
    if width == 0 {
        return Err(PolicyError::Config {
            key: "io_map",
            problem: "publishes no action index: the width of the server's `actions` is the map's"
                .into(),
        });
    }
    let chunk = section.chunk_size;
    let mut metadata = crate::export::ExportMetadata {
        backend: Some(ExportBackend::Remote),
        policy_class: Some("openpi".into()),
        use_action_queue: true,
        ..Default::default()
    };
    for (name, shape) in &inputs {
        metadata.input_shapes.insert(name.clone(), shape.clone());
    }
    metadata
        .output_shapes
        .insert("actions".into(), vec![chunk.unwrap_or(1), width]);
    // The cameras, whatever their names say (`images/cam_high`, `observation/image`).
    metadata.extra.insert(
        "image_inputs".into(),
        serde_yaml::Value::Sequence(
            section
                .images
                .iter()
                .map(|i| serde_yaml::Value::String(i.input.clone()))
                .collect(),
        ),
    );
    let source = map.file.clone().unwrap_or_else(|| PathBuf::from("io_map"));
    let export = ExportDir {
        dir: source.clone(),
        metadata,
        metadata_file: None,
        manifest: None,
        backend: ExportBackend::Remote,
        model_file: source,
        weights_file: None,
    };
    remote.protocol = Some(RemoteProtocol::Openpi);
    let mut schema = section.schema();
    schema.probe_prompt = probe_prompt.map(str::to_string);
    remote.openpi_schema = Some(schema);
    remote.expected_inputs = inputs
        .iter()
        .map(|(name, shape)| PortExpectation {
            name: name.clone(),
            shape: std::iter::once(1)
                .chain(shape.iter().copied())
                .map(Some)
                .collect(),
            dtype: None,
        })
        .collect();
    remote.expected_outputs = vec![PortExpectation {
        name: "actions".into(),
        shape: vec![Some(1), chunk, Some(width)],
        dtype: None,
    }];
    if remote.model.trim().is_empty() {
        remote.model = "openpi".into();
    }
    Ok(export)
}

/// The second model of a `two_stage` runner (`backend`, `artifact`, `device`), loaded now so
/// that a broken package fails at start, not on the first inference.
fn second_stage(
    export: &ExportDir,
    options: &RuntimeOptions,
) -> Result<Option<Box<dyn RuntimeAdapter>>, PolicyError> {
    let (Some(m), Some(file)) = (&export.manifest, &export.metadata_file) else {
        return Ok(None);
    };
    let Some(r) = m.model.runner.as_ref().filter(|r| r.kind() == "two_stage") else {
        return Ok(None);
    };
    let text = |key: &str| -> Result<Option<String>, PolicyError> {
        match r.param(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(PolicyError::Package {
                file: file.clone(),
                key: r.param_path(key),
                problem: format!("must be a string, got {other}"),
            }),
        }
    };
    let missing = |key: &str| PolicyError::Package {
        file: file.clone(),
        key: r.param_path(key),
        problem: "is missing (two_stage needs `backend` and `artifact`)".into(),
    };
    let backend: ExportBackend = text("backend")?
        .ok_or_else(|| missing("backend"))?
        .parse()
        .map_err(|_| PolicyError::Package {
            file: file.clone(),
            key: r.param_path("backend"),
            problem: "must be onnx, openvino or torchscript".into(),
        })?;
    let artifact = text("artifact")?.ok_or_else(|| missing("artifact"))?;
    let path =
        crate::export::resolve_in_dir(&export.dir, &artifact, file, &r.param_path("artifact"))?;
    let mut opts = options.clone();
    if let Some(d) = text("device")?.filter(|d| d != "auto") {
        opts.device = d.parse().map_err(|_| PolicyError::Package {
            file: file.clone(),
            key: r.param_path("device"),
            problem: format!("`{d}` is not a device"),
        })?;
    }
    let mut second = get_adapter(backend, &opts)?;
    second.load(&path)?;
    crate::runtime::check_port_shapes(second.as_ref())?;
    log::info!(
        "two_stage: second model {} ({backend} on {})",
        path.display(),
        second.device()
    );
    Ok(Some(second))
}

fn resolve_config(
    export: &ExportDir,
    predictor: &Predictor,
    n_action_steps: Option<usize>,
    use_action_queue: Option<bool>,
    ensemble: Option<f64>,
    chunk_blend: ChunkBlend,
    low_pass_alpha: f64,
) -> Result<PolicyConfig, PolicyError> {
    let meta = &export.metadata;
    let (outputs, out_name) = (predictor.outputs(), predictor.action_output());
    let out_chunk =
        outputs
            .iter()
            .find(|o| o.name == out_name)
            .and_then(|o| match o.shape.as_slice() {
                [_, Some(c), _] => Some(*c),
                _ => None,
            });
    let chunk_size = match out_chunk {
        Some(c) if meta.chunk_size != 1 && c != meta.chunk_size => {
            return Err(PolicyError::Config {
                key: "chunk_size",
                problem: format!(
                    "is {} in the metadata but the model's `{out_name}` output holds {c} actions",
                    meta.chunk_size
                ),
            })
        }
        Some(c) => c,
        None => meta.chunk_size,
    };
    // A package's trimmer keeping more rows than the chunk has trims nothing (physicalai cuts
    // only longer chunks); a legacy metadata value or a parameter that large is an error.
    let from_export = match meta.n_action_steps {
        Some(n) if export.manifest.is_some() => Some(n.min(chunk_size)),
        other => other,
    };
    let n = match n_action_steps.filter(|n| *n > 0).or(from_export) {
        Some(n) if n > chunk_size => {
            return Err(PolicyError::Config {
                key: "n_action_steps",
                problem: format!("must not exceed chunk_size ({chunk_size}), got {n}"),
            })
        }
        Some(n) => n,
        None => chunk_size,
    };
    let coeff = ensemble.or(meta.temporal_ensemble_coeff);
    if let Some(c) = coeff {
        if !c.is_finite() || c < 0.0 {
            return Err(PolicyError::Config {
                key: "temporal_ensemble_coeff",
                problem: format!("must be a finite number >= 0, got {c}"),
            });
        }
    }
    if !(low_pass_alpha.is_finite() && low_pass_alpha > 0.0 && low_pass_alpha <= 1.0) {
        return Err(PolicyError::Config {
            key: "low_pass_alpha",
            problem: format!("must be in (0, 1] (1 = off), got {low_pass_alpha}"),
        });
    }
    let mut per_tick = coeff.filter(|c| *c > 0.0);
    let chunk_blend = match (chunk_blend, per_tick) {
        (blend, None) | (blend @ ChunkBlend::None, _) => blend,
        (ChunkBlend::Ensemble { .. }, Some(c)) => {
            per_tick = None;
            ChunkBlend::Ensemble { coeff: c }
        }
        (blend, Some(c)) => {
            return Err(PolicyError::Config {
                key: "chunk_blend",
                problem: format!(
                    "`{}` cannot be combined with per-tick temporal ensembling \
                     (temporal_ensemble_coeff {c}, from the parameters or the export's metadata): \
                     set temporal_ensemble_coeff to 0, or chunk_blend to `ensemble` to use {c} as its coefficient",
                    blend.name()
                ),
            })
        }
    };
    Ok(PolicyConfig {
        chunk_size,
        n_action_steps: n,
        use_action_queue: use_action_queue.unwrap_or(meta.use_action_queue || chunk_size > 1),
        temporal_ensemble_coeff: per_tick,
        chunk_blend,
        low_pass_alpha,
    })
}

/// A loaded policy: `load`, `reset`, `select_action`, as in getiaction.
pub struct InferenceModel {
    export: ExportDir,
    predictor: Predictor,
    scheduler: Scheduler,
    config: PolicyConfig,
    load_time: Duration,
}

impl InferenceModel {
    /// Loads an export directory with auto-detected backend and device.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, PolicyError> {
        Self::builder(dir).build()
    }

    /// A builder with overrides.
    pub fn builder(dir: impl AsRef<Path>) -> InferenceModelBuilder {
        InferenceModelBuilder {
            dir: dir.as_ref().to_path_buf(),
            backend: None,
            options: RuntimeOptions::default(),
            n_action_steps: None,
            use_action_queue: None,
            temporal_ensemble_coeff: None,
            chunk_blend: ChunkBlend::None,
            low_pass_alpha: 1.0,
            preprocess: None,
            tokenizers: TokenizerSearch::default(),
            export: None,
        }
    }

    /// Clears the action queue and ensembling state (call between episodes).
    pub fn reset(&mut self) {
        self.scheduler.reset();
    }

    /// The next action. With an action queue (or temporal ensembling) this is one action
    /// `[A]`: the first call runs the model and queues the rest of the chunk, later calls pop
    /// from the queue, and the model runs again when it is empty. Without a queue it runs the
    /// model and returns the whole chunk `[chunk, A]`.
    pub fn select_action(&mut self, observation: &Observation) -> Result<ArrayD<f32>, PolicyError> {
        if !self.config.serves_single_actions() {
            return Ok(self.predictor.predict_chunk(observation)?.into_dyn());
        }
        if self.scheduler.needs_refill() {
            let tick = self.scheduler.tick();
            let chunk = self.predictor.predict_chunk(observation)?;
            self.scheduler.requested();
            self.scheduler.deliver(tick, chunk);
        }
        match self.scheduler.next_action() {
            Some(a) => Ok(a.into_dyn()),
            // Unreachable with inline inference: a chunk was just delivered if the queue was
            // empty. Kept as an error rather than a panic.
            None => Err(PolicyError::Config {
                key: "n_action_steps",
                problem: "left no action to execute".into(),
            }),
        }
    }

    /// Runs the model once and returns the action chunk `[chunk, A]` (queue untouched).
    pub fn predict_chunk(&mut self, observation: &Observation) -> Result<Array2<f32>, PolicyError> {
        self.predictor.predict_chunk(observation)
    }

    /// One model call on zeros (processors bypassed) to take the runtime's slow first call;
    /// returns its duration.
    pub fn warm_up(&mut self) -> Result<Duration, PolicyError> {
        self.predictor.warm_up()
    }

    /// Checks an observation against the model inputs without running it.
    pub fn check_observation(&mut self, observation: &Observation) -> Result<(), PolicyError> {
        self.predictor.check(observation)
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }
    pub fn export(&self) -> &ExportDir {
        &self.export
    }
    pub fn backend(&self) -> ExportBackend {
        self.export.backend
    }
    pub fn device(&self) -> &str {
        self.predictor.adapter().device()
    }
    pub fn adapter(&self) -> &dyn RuntimeAdapter {
        self.predictor.adapter()
    }
    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }
    /// Actions relative to inputs of the observation, made absolute per chunk (see
    /// [`Predictor::set_relative_actions`]).
    pub fn set_relative_actions(&mut self, relative: Vec<super::relative::RelativeAction>) {
        self.predictor.set_relative_actions(relative);
    }
    /// Time spent creating and loading the adapter.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
    /// Actions left in the queue.
    pub fn queue_len(&self) -> usize {
        self.scheduler.queue_len()
    }
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Splits into the predictor (for a worker thread) and the resolved configuration.
    pub fn into_parts(self) -> (ExportDir, Predictor, PolicyConfig) {
        (self.export, self.predictor, self.config)
    }
}

impl std::fmt::Debug for InferenceModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceModel")
            .field("export", &self.export.dir)
            .field("predictor", &self.predictor)
            .field("config", &self.config)
            .finish()
    }
}
