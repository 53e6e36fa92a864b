//! The control loop, ROS-free: latest observation per input, freshness, the policy tick,
//! command limits and counters. The r2r node and `policyctl replay` both drive this same
//! code — the node from subscriptions and a wall/sim-time timer, replay from a bag on bag
//! time — so what a replay shows is what the robot would have been commanded.

pub mod chunk_check;
pub mod episode;
pub mod home;
mod inputs;
mod limits;
mod live;
mod openpi;
pub mod param_specs;
pub mod params;
pub mod policies;
pub mod safety;
mod wiring;

use wiring::JointMap;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ndarray::ArrayD;

use crate::iomap::{InputMessage, InputType, Inputs, IoMap, IoMapError, Outputs};
use crate::observation::{
    Freshness, ImageEncoding, ImagePreprocessor, ObservationError, RawImage, Staleness,
};
use crate::policy::{
    AutoRefill, ChunkBlend, ControlPolicy, InferenceModel, LatencyStats, Observation, PolicyError,
    RefillMode, TickOutcome,
};
use crate::runtime::{DeviceRequest, GraphOptimization, LinkStatus, RemoteOptions, ServerLink};
pub use params::{
    read_params_file, CommandType, NodeParams, ParamError, ParamMap, ParamValue, RefillSetting,
};

/// Errors that stop the loop from starting; each names the parameter or input at fault.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("cannot load the policy from `export_dir`: {0}")]
    Policy(#[from] PolicyError),
    #[error("parameter `{name}` does not fit the export: {problem}")]
    Mismatch { name: &'static str, problem: String },
    #[error(transparent)]
    IoMap(#[from] IoMapError),
    #[error("parameter `policies`, entry `{name}` ({dir}): {problem}")]
    OtherPolicy {
        name: String,
        dir: String,
        problem: String,
    },
}

/// One camera message as received (owned bytes, validated at arrival).
#[derive(Debug, Clone)]
pub enum ImageData {
    /// `sensor_msgs/Image`.
    Raw {
        width: u32,
        height: u32,
        step: u32,
        encoding: ImageEncoding,
        data: Vec<u8>,
    },
    /// `sensor_msgs/CompressedImage`.
    Compressed { format: String, data: Vec<u8> },
    /// A message kept serialized, decoded only when an observation uses it (replay: most
    /// camera messages are never part of an observation, so their pixels are never copied).
    /// `decode` (supplied by the reader, e.g. `bag::decode`) returns a `Raw` or `Compressed`
    /// image, or why the message cannot be used; its error is reported on the tick that
    /// needed the image, with the camera topic and `origin`.
    Deferred {
        /// The serialized message.
        bytes: Vec<u8>,
        decode: fn(&[u8]) -> Result<ImageData, String>,
        /// Where the message came from, for errors.
        origin: Origin,
    },
}

/// Where a [`Deferred`](ImageData::Deferred) message came from: a source (e.g. the bag file,
/// shared by all its messages) and the message's time in it. Displayed as
/// `message at log time {at_ns} ns in {source}`; formatted only when an error needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: Arc<str>,
    pub at_ns: i64,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "message at log time {} ns in {}",
            self.at_ns, self.source
        )
    }
}

impl ImageData {
    /// Builds and validates a raw image (encoding, step, data length).
    pub fn raw(
        width: u32,
        height: u32,
        step: u32,
        encoding: &str,
        data: Vec<u8>,
    ) -> Result<Self, ObservationError> {
        let encoding: ImageEncoding = encoding.parse()?;
        RawImage {
            width,
            height,
            step,
            encoding,
            data: &data,
        }
        .validate()?;
        Ok(ImageData::Raw {
            width,
            height,
            step,
            encoding,
            data,
        })
    }

    /// The image itself: a [`Deferred`](Self::Deferred) one decoded (the error names its
    /// `origin`), the others as they are.
    pub fn resolve(&self) -> Result<std::borrow::Cow<'_, ImageData>, String> {
        use std::borrow::Cow;
        match self {
            ImageData::Deferred {
                bytes,
                decode,
                origin,
            } => match decode(bytes) {
                Ok(ImageData::Deferred { .. }) => {
                    Err(format!("{origin}: the decoder returned a serialized image"))
                }
                Ok(image) => Ok(Cow::Owned(image)),
                Err(e) => Err(format!("{origin}: {e}")),
            },
            other => Ok(Cow::Borrowed(other)),
        }
    }
}

/// One model input fed by one camera topic.
struct Camera {
    topic: String,
    input: String,
    preprocessor: Arc<Mutex<ImagePreprocessor>>,
    latest: Option<(Arc<ImageData>, i64)>,
}

/// Why a tick published nothing, or what it published.
#[derive(Debug, Clone, PartialEq)]
pub enum TickStatus {
    /// A command for the robot.
    Command(Vec<f64>),
    /// Output is disabled (`~/enable`).
    Disabled,
    /// An input is missing or too old: `what` names the topic.
    Stale { what: String, age_ms: Option<f64> },
    /// No action was ready: the next chunk missed its deadline (the plan ran out first).
    Overrun,
    /// No action yet: the plan's first chunk is being computed (at start, after a reset, a
    /// stale gap, a disable or a clock jump). Not a missed deadline.
    Waiting,
    /// The policy failed on this tick's data.
    Error(String),
    /// Commands are held back by the e-stop or the watchdog ([`safety`]): the reason.
    Halted(String),
    /// `episode_mode: goal` and no episode runs ([`ControlLoop::set_idle`]).
    Idle,
}

impl TickStatus {
    /// One word for the status (`command`, `stale`, ...), as episode recordings store it.
    pub fn label(&self) -> &'static str {
        match self {
            TickStatus::Command(_) => "command",
            TickStatus::Disabled => "disabled",
            TickStatus::Stale { .. } => "stale",
            TickStatus::Overrun => "overrun",
            TickStatus::Waiting => "waiting",
            TickStatus::Error(_) => "error",
            TickStatus::Halted(_) => "halted",
            TickStatus::Idle => "idle",
        }
    }
}

/// Counters since start (reset by `~/reset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub ticks: u64,
    pub commands: u64,
    pub stale: u64,
    pub overruns: u64,
    /// Ticks without an action while the plan's first chunk was computed
    /// ([`TickStatus::Waiting`]).
    pub waiting: u64,
    pub errors: u64,
    pub rejected_messages: u64,
    /// Ticks whose time was earlier than the previous tick's (ROS time jumped back).
    pub clock_jumps: u64,
    /// Ticks held back by the e-stop or the watchdog ([`TickStatus::Halted`]).
    pub halted: u64,
    /// Chunks refused whole by `chunk_check: reject`.
    pub rejected_chunks: u64,
    /// Ticks without an episode (`episode_mode: goal`).
    pub idle: u64,
}

/// A status snapshot for `/diagnostics` and summaries.
#[derive(Debug, Clone)]
pub struct Status {
    pub backend: String,
    pub device: String,
    pub enabled: bool,
    pub queue_depth: usize,
    pub latency: LatencyStats,
    pub counters: Counters,
    pub refill_ahead: usize,
    /// Whether `refill_ahead` follows the inference latency (`refill_ahead_steps: -1`).
    pub refill_ahead_auto: bool,
    /// p99 inference latency over the recent chunks the automatic refill-ahead looks at
    /// (zero when it is off).
    pub latency_recent_p99: Duration,
    pub mode: RefillMode,
    /// The chunk hand-over (`chunk_blend`) and the low-pass `alpha`.
    pub chunk_blend: ChunkBlend,
    pub low_pass_alpha: f64,
    /// Chunks switched in, and chunks dropped because they arrived after every row they had
    /// for execution had passed, since the last reset.
    pub switches: u64,
    pub late_chunks: u64,
    pub last_error: Option<String>,
    /// The task chunks are computed with.
    pub task: Option<String>,
    /// Real-time chunking is on.
    pub rtc: bool,
    /// Backend `remote`: the link to the inference server (state, round trips, errors).
    pub remote: Option<LinkStatus>,
}

/// How long [`ControlLoop::new`] took: loading the export (metadata, runtime, model) and the
/// warm-up inferences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupTimes {
    pub load: Duration,
    pub warmup: Duration,
}

/// What the export says about the action queue, for resolving `n_action_steps: 0` and
/// `temporal_ensemble_coeff: 0` again when they change at run time.
#[derive(Debug, Clone, Copy)]
struct ExportQueue {
    chunk_size: usize,
    n_action_steps: Option<usize>,
    temporal_ensemble_coeff: Option<f64>,
}

impl ExportQueue {
    /// (rows executed per chunk, ensembling coefficient) for `params`, as the model builder
    /// resolves them at load.
    fn resolve(&self, params: &NodeParams) -> Result<(usize, Option<f64>), String> {
        let n = match params.n_action_steps {
            0 => self.n_action_steps.unwrap_or(self.chunk_size),
            n => n,
        };
        if n > self.chunk_size {
            return Err(format!(
                "parameter `n_action_steps` must not exceed the chunk size of the loaded export \
                 ({}), got {n}",
                self.chunk_size
            ));
        }
        let coeff = if params.temporal_ensemble_coeff > 0.0 {
            Some(params.temporal_ensemble_coeff)
        } else {
            self.temporal_ensemble_coeff.filter(|c| *c > 0.0)
        };
        Ok((n, coeff))
    }
}

/// How the loop computes chunks.
#[derive(Debug, Clone, Copy)]
pub struct LoopOptions {
    /// Overrides `refill_mode` (replay always runs synchronously, for determinism).
    pub force_sync: bool,
    /// Whether `refill_ahead_steps: -1` may be derived from the warm-up latency (node), or
    /// means 0 (replay: no timing may leak into results).
    pub auto_refill_from_warmup: bool,
}

/// See the module docs.
pub struct ControlLoop {
    params: NodeParams,
    policy: ControlPolicy,
    backend: String,
    device: String,
    /// The I/O map the loop runs (the `io_map` file, else the flat parameters' map).
    map: IoMap,
    /// The non-image inputs: newest values per source, assembled per policy input.
    inputs: Inputs,
    /// The observation key of each of `inputs`' policy inputs.
    keys: Vec<String>,
    /// The action split across the output channels.
    outputs: Outputs,
    action_width: usize,
    /// Per action index: the index of the same joint in the state input (rate limit
    /// reference before the first command).
    state_ref: Vec<Option<usize>>,
    state_feature: Option<usize>,
    state_order: Vec<String>,
    /// Package joint orders (`hardware.robots[].state/action.order`) against `joint_names`
    /// (the flat parameters' map only).
    joint_map: JointMap,
    cameras: Vec<Camera>,
    freshness: Freshness,
    max_delta: Vec<f64>,
    last_command: Option<Vec<f64>>,
    enabled: bool,
    was_stale: bool,
    counters: Counters,
    last_error: Option<String>,
    first_observation_checked: bool,
    preprocess_ns: Arc<AtomicU64>,
    last_tick_requested: bool,
    /// The task the next chunk is computed with (`None`: the policy takes none).
    task: Option<Arc<str>>,
    needs_task: bool,
    link: Option<ServerLink>,
    last_tick_switched: bool,
    last_tick_ns: Option<i64>,
    export_queue: ExportQueue,
    startup: StartupTimes,
    /// The chunk switched in on the last tick, as executed (after limits).
    plan: Option<Vec<Vec<f64>>>,
    /// The published values of the last command (every channel), for `on_stop: hold`.
    last_published: Option<Vec<f64>>,
    /// Commands were published since the last stop.
    commanding: bool,
    /// Commands stopped: the channels' `on_stop` messages are due.
    stop_due: bool,
    /// The last tick was [`halt`](Self::halt)ed.
    halted: bool,
    /// No episode runs (`episode_mode: goal`): nothing is commanded.
    idle: bool,
    /// A move home in progress ([`start_home`](Self::start_home)).
    home: Option<home::HomeMove>,
    /// The last tick's command was a waypoint of a move home.
    last_tick_home: bool,
}

impl ControlLoop {
    /// Loads the policy named by `params` and checks the parameters against it.
    pub fn new(params: NodeParams, options: LoopOptions) -> Result<Self, ControlError> {
        let mut builder = InferenceModel::builder(&params.export_dir)
            .device(params.device.parse::<DeviceRequest>().unwrap_or_default())
            .onnx_optimization(
                params
                    .onnx_optimization
                    .parse::<GraphOptimization>()
                    .unwrap_or_default(),
            )
            .onnx_spinning(params.onnx_spinning)
            .precision(
                params
                    .inference_precision
                    .parse::<crate::runtime::Precision>()
                    .unwrap_or_default(),
            )
            .n_action_steps(params.n_action_steps);
        if !matches!(params.backend.as_str(), "auto" | "") {
            let backend = params.backend.parse().map_err(|_| ParamError::Invalid {
                name: "backend".into(),
                rule: format!(
                    "must be auto, openvino, onnx, torchscript or remote, got `{}`",
                    params.backend
                ),
            })?;
            builder = builder.backend(backend);
        }
        builder = builder.remote(RemoteOptions {
            url: params.remote_url.clone(),
            model: params.remote_model.clone(),
            model_version: params.remote_model_version.clone(),
            timeout: Duration::from_secs_f64(params.remote_timeout_ms / 1e3),
            ca_file: (!params.remote_ca_file.is_empty())
                .then(|| PathBuf::from(&params.remote_ca_file)),
            protocol: crate::runtime::RemoteProtocol::resolve(
                &params.remote_protocol,
                &params.remote_url,
            )
            .ok(),
            ..Default::default()
        });
        if params.threads > 0 {
            builder = builder.threads(params.threads);
        }
        if !params.openvino_cache_dir.is_empty() {
            builder = builder.openvino_cache_dir(&params.openvino_cache_dir);
        }
        if params.temporal_ensemble_coeff > 0.0 {
            builder = builder.temporal_ensemble_coeff(params.temporal_ensemble_coeff);
        }
        if !params.tokenizer_dir.is_empty() {
            builder = builder.tokenizer_dir(&params.tokenizer_dir);
        }
        builder = builder
            .chunk_blend(params.chunk_blend)
            .low_pass_alpha(params.low_pass_alpha);
        builder = openpi::without_export(&params, builder)?;
        let load_start = Instant::now();
        let mut model = builder.build()?;
        let load = load_start.elapsed();
        let export_queue = ExportQueue {
            chunk_size: model.config().chunk_size,
            n_action_steps: model.export().metadata.n_action_steps,
            temporal_ensemble_coeff: model.export().metadata.temporal_ensemble_coeff,
        };
        let needs_task = model.predictor().pipeline().needs_task();
        if needs_task {
            crate::policy::processors::check_task(
                Some(params.task.as_str()).filter(|t| !t.is_empty()),
            )
            .map_err(|e| ControlError::Mismatch {
                name: "task",
                problem: format!(
                    "{e} (the package {} tokenizes it)",
                    model.export().dir.display()
                ),
            })?;
        }
        let specs = model.predictor().inputs().to_vec();
        let wiring = wiring::wire(&params, &mut model)?;

        // Warm-up: the first inference is slow in every runtime; take that hit now, and
        // measure the latency the refill should hide.
        let sync = options.force_sync || params.refill_mode == RefillSetting::Sync;
        let auto = params.refill_ahead_steps.is_none() && options.auto_refill_from_warmup && !sync;
        let mut refill_ahead = params.refill_ahead_steps.unwrap_or(0);
        let mut warmup_latency = None;
        let warmup_start = Instant::now();
        if params.warmup {
            let mut latency = Duration::ZERO;
            for _ in 0..2 {
                latency = model.warm_up()?;
            }
            warmup_latency = Some(latency);
        }
        let warmup = warmup_start.elapsed();
        let mode = if sync {
            RefillMode::Synchronous
        } else {
            RefillMode::Asynchronous
        };
        let backend = model.backend().to_string();
        let device = model.device().to_string();
        let link = model.adapter().server_link();
        let chunk_size = model.config().chunk_size;
        let rtc = rtc_settings(&params, &specs)?;
        let mut policy = ControlPolicy::new(model, mode, refill_ahead);
        if let Some(settings) = rtc {
            log::info!(
                "real-time chunking: execution horizon {}, max guidance weight {}{}",
                settings.execution_horizon,
                settings.max_guidance_weight,
                if settings.noise_shape.is_some() {
                    ", seeded noise"
                } else {
                    ""
                }
            );
            policy = policy.with_rtc(settings);
        }
        if auto {
            // Seeded from the warm-up (none: from zero), then following the latency observed.
            let max = chunk_size.saturating_sub(1);
            policy = policy.with_auto_refill(AutoRefill::new(
                params.period(),
                warmup_latency.unwrap_or_default(),
                max,
            ));
        }
        refill_ahead = policy.scheduler().refill_ahead();
        if let Some(latency) = warmup_latency {
            log::info!(
                "warm-up inference {:.1} ms; refill {} step(s) ahead at {} Hz{}",
                latency.as_secs_f64() * 1e3,
                refill_ahead,
                params.control_rate_hz,
                if auto {
                    " (automatic: follows the p99 inference latency of the last chunks)"
                } else {
                    ""
                }
            );
        }
        let config = policy.config().clone();
        if config.chunk_blend.blends() || config.low_pass_alpha < 1.0 {
            let overlap = config
                .chunk_size
                .saturating_sub(refill_ahead + config.n_action_steps);
            log::info!(
                "chunk hand-over: {}; low-pass alpha {}; order: queue -> blend -> low-pass -> command limits",
                config.chunk_blend,
                config.low_pass_alpha
            );
            if config.chunk_blend.blends() && overlap == 0 && !sync {
                log::warn!(
                    "chunk_blend `{}` has nothing to blend: with chunk_size {}, n_action_steps {} and {} step(s) \
                     refilled ahead, no row of a chunk is left past the switch to the next one; lower \
                     n_action_steps (e.g. to {}) so that chunks overlap",
                    config.chunk_blend.name(),
                    config.chunk_size,
                    config.n_action_steps,
                    refill_ahead,
                    (config.chunk_size / 2).max(1)
                );
            }
        }
        let n = wiring.action_width;
        let max_delta = match params.max_joint_delta.as_slice() {
            [] => vec![],
            [one] => vec![*one; n],
            many => many.to_vec(),
        };
        let task = (!params.task.is_empty()).then(|| Arc::from(params.task.as_str()));
        let idle = params.episode_mode == episode::EpisodeMode::Goal;
        Ok(Self {
            map: wiring.map,
            inputs: wiring.inputs,
            keys: wiring.keys,
            outputs: wiring.outputs,
            action_width: wiring.action_width,
            state_ref: wiring.state_ref,
            state_feature: wiring.state_feature,
            state_order: wiring.state_order,
            joint_map: wiring.joint_map,
            cameras: wiring.cameras,
            freshness: Freshness::new(params.max_observation_age()),
            enabled: params.enable_on_start,
            params,
            policy,
            backend,
            device,
            max_delta,
            last_command: None,
            was_stale: false,
            counters: Counters::default(),
            last_error: None,
            first_observation_checked: false,
            preprocess_ns: Arc::new(AtomicU64::new(0)),
            last_tick_requested: false,
            task,
            needs_task,
            link,
            last_tick_switched: false,
            last_tick_ns: None,
            export_queue,
            startup: StartupTimes { load, warmup },
            plan: None,
            last_published: None,
            commanding: false,
            stop_due: false,
            halted: false,
            idle,
            home: None,
            last_tick_home: false,
        })
    }

    /// How long loading and warming up took.
    pub fn startup_times(&self) -> StartupTimes {
        self.startup
    }

    /// Starts commanding (the lifecycle `activate`): output gated by `enable_on_start`, a
    /// fresh chunk from the first tick.
    pub fn activate(&mut self) {
        self.policy.reset();
        self.enabled = self.params.enable_on_start;
        self.idle = self.params.episode_mode == episode::EpisodeMode::Goal;
        self.last_command = None;
        self.last_tick_requested = false;
        self.plan = None;
    }

    /// Stops commanding (the lifecycle `deactivate`): the queued plan and an in-flight chunk
    /// are dropped, and so are the inputs received so far, so that nothing from before can
    /// drive a command after the next activation. Returns what was dropped, in words.
    pub fn deactivate(&mut self) -> String {
        let (dropped, in_flight) = self.policy.reset();
        self.inputs.clear();
        for c in &mut self.cameras {
            c.latest = None;
        }
        self.last_command = None;
        self.was_stale = false;
        self.plan = None;
        self.home = None;
        self.commands_stopped();
        format!(
            "dropped {dropped} queued action(s){} and the inputs received so far",
            if in_flight {
                " and the in-flight chunk"
            } else {
                ""
            }
        )
    }

    /// The chunk switched in on the last tick, as it will be executed from that tick on:
    /// position and rate limits applied row after row as the ticks will apply them (row 0 is
    /// that tick's command), while nothing interrupts it (reset, stale inputs, disable, a
    /// live change of a limit). Once per switch; `None` with `publish_action_chunk: false`
    /// and with temporal ensembling (an action then averages chunks still to come).
    pub fn take_plan(&mut self) -> Option<Vec<Vec<f64>>> {
        self.plan.take()
    }

    pub fn params(&self) -> &NodeParams {
        &self.params
    }

    /// The map the loop runs.
    pub fn io_map(&self) -> &IoMap {
        &self.map
    }

    /// The output channels.
    pub fn outputs(&self) -> &Outputs {
        &self.outputs
    }

    /// The channels' `on_stop` messages, once after commands stopped (disable, reset,
    /// deactivate, stale or bad data): channel index and values. Empty otherwise.
    pub fn take_stop(&mut self) -> Vec<(usize, Vec<f64>)> {
        if !std::mem::take(&mut self.stop_due) {
            return Vec::new();
        }
        self.outputs.stop_values(self.last_published.as_deref())
    }

    /// Commands stop: the `on_stop` messages become due (once per stop).
    fn commands_stopped(&mut self) {
        if self.commanding {
            self.commanding = false;
            self.stop_due = true;
        }
    }

    /// Sets the task (language instruction) the next chunk is computed with; a chunk being
    /// computed keeps the task it started with, so no inference mixes two prompts. Refused
    /// when it breaks the task rules of the policy (empty where one is needed, too long).
    pub fn set_task(&mut self, task: &str) -> Result<(), PolicyError> {
        if self.needs_task || !task.is_empty() {
            crate::policy::processors::check_task(Some(task))?;
        }
        self.task = (!task.is_empty()).then(|| Arc::from(task));
        Ok(())
    }

    /// The current task, if any.
    pub fn task(&self) -> Option<&str> {
        self.task.as_deref()
    }

    /// Enables or disables command output. Re-enabling starts from a fresh chunk.
    pub fn set_enabled(&mut self, on: bool) {
        if on && !self.enabled {
            self.policy.reset();
            self.last_command = None;
        }
        if !on {
            self.commands_stopped();
        }
        self.enabled = on;
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `episode_mode: goal`: `true` between episodes (nothing is commanded; the channels'
    /// `on_stop` goes out once when commands stop), `false` while one runs. Either change
    /// drops the plan, so that an episode starts from a fresh chunk.
    pub fn set_idle(&mut self, idle: bool) {
        if idle == self.idle {
            return;
        }
        self.policy.reset();
        self.last_command = None;
        self.plan = None;
        self.home = None;
        if idle {
            self.commands_stopped();
        }
        self.idle = idle;
    }

    /// Queued actions left when the next chunk is requested, now.
    pub fn refill_ahead(&self) -> usize {
        self.policy.scheduler().refill_ahead()
    }

    /// Sets it (a replay following a recorded episode's ticks).
    pub fn set_refill_ahead(&mut self, k: usize) {
        self.policy.set_refill_ahead(k);
    }

    /// The policy's inference latency statistics since the last reset.
    pub fn inference_latency(&self) -> LatencyStats {
        self.policy.latency()
    }

    /// Whether no episode runs (`episode_mode: goal`).
    pub fn idle(&self) -> bool {
        self.idle
    }

    /// Clears queue, in-flight refill, ensembling state, rate-limit memory and counters.
    /// Returns a human-readable summary for the service response.
    pub fn reset(&mut self) -> String {
        let (dropped, in_flight) = self.policy.reset();
        let before = self.counters;
        self.counters = Counters::default();
        self.preprocess_ns.store(0, Ordering::Relaxed);
        self.last_command = None;
        self.last_error = None;
        self.was_stale = false;
        self.commands_stopped();
        format!(
            "reset: cleared {dropped} queued action(s){}, ensembling state and counters ({} command(s), {} stale, {} overrun(s) before)",
            if in_flight { " and discarded the in-flight refill" } else { "" },
            before.commands,
            before.stale,
            before.overruns
        )
    }

    /// A tick on which the e-stop, the watchdog or a takeover holds commands back (instead
    /// of [`tick`](Self::tick)): no command, each channel's `on_stop` due once (`on_stop`;
    /// not during a takeover), the plan dropped so that commands resume from a fresh chunk.
    pub fn halt(&mut self, now_ns: i64, reason: String, on_stop: bool) -> TickStatus {
        self.counters.ticks += 1;
        self.counters.halted += 1;
        self.last_tick_requested = false;
        self.last_tick_switched = false;
        self.plan = None;
        self.last_tick_ns = Some(now_ns);
        if let Some(m) = self.home.take() {
            // A move after an episode ends here: nothing more is commanded.
            self.idle = m.then == home::AfterHome::Idle || self.idle;
        }
        if !self.halted {
            self.policy.reset();
            self.last_command = None;
        }
        self.halted = true;
        if on_stop {
            self.commands_stopped();
        } else {
            // A takeover: the operator drives; nothing of ours goes out, not even on_stop.
            self.commanding = false;
        }
        TickStatus::Halted(reason)
    }

    /// One control tick at time `now_ns` (the same clock as the message stamps). A time
    /// earlier than the previous tick's (sim time jumping back, e.g. a bag that loops) ends the
    /// plan and drops the newest inputs, which belong to the abandoned timeline: commands
    /// resume from a fresh chunk once inputs stamped on the new timeline arrive.
    pub fn tick(&mut self, now_ns: i64) -> TickStatus {
        self.halted = false;
        self.counters.ticks += 1;
        self.last_tick_requested = false;
        self.last_tick_switched = false;
        self.last_tick_home = false;
        if let Some(last) = self.last_tick_ns.filter(|last| now_ns < *last) {
            self.clock_jumped(last - now_ns);
        }
        self.last_tick_ns = Some(now_ns);
        if self.idle {
            self.commands_stopped();
            self.counters.idle += 1;
            return TickStatus::Idle;
        }
        if !self.enabled {
            self.commands_stopped();
            return TickStatus::Disabled;
        }
        if let Some(status) = self.home_tick() {
            return status;
        }
        if let Some((what, age_ms)) = self.stale_input(now_ns) {
            self.commands_stopped();
            self.counters.stale += 1;
            if !self.was_stale {
                // Never resume an old plan after a gap in the data.
                self.policy.reset();
                self.was_stale = true;
            }
            return TickStatus::Stale { what, age_ms };
        }
        self.was_stale = false;
        let observation = self.observation_fn();
        let served = self.policy.scheduler().tick();
        let outcome = self.policy.tick(observation);
        self.last_tick_requested = self.policy.requested_on_last_tick();
        self.last_tick_switched = self.policy.scheduler().last_switch() == Some(served);
        let switched = self.policy.take_switched_plan();
        self.plan = None;
        let rejected = match &outcome {
            Ok(TickOutcome::Action(_)) => self.rejects(switched.as_ref()),
            _ => None,
        };
        let status = match outcome {
            Ok(TickOutcome::Action(_)) if rejected.is_some() => {
                let why = rejected.unwrap_or_default();
                self.counters.rejected_chunks += 1;
                self.policy.reset();
                TickStatus::Error(format!("chunk rejected (chunk_check reject): {why}"))
            }
            Ok(TickOutcome::Action(a)) => {
                self.first_observation_checked = true;
                let reference = self.rate_reference();
                match self.limit(self.joint_map.to_command(&a), reference.as_deref()) {
                    Ok(cmd) => {
                        if let (Some(plan), true) = (switched, self.params.publish_action_chunk) {
                            self.plan = Some(self.limit_plan(&plan.rows, reference));
                        }
                        self.counters.commands += 1;
                        let published = self.outputs.encode(&cmd);
                        self.last_command = Some(cmd);
                        self.last_published = Some(published.clone());
                        self.commanding = true;
                        TickStatus::Command(published)
                    }
                    Err(e) => {
                        self.counters.errors += 1;
                        TickStatus::Error(e)
                    }
                }
            }
            Ok(TickOutcome::Overrun) if self.policy.scheduler().waiting() => {
                self.counters.waiting += 1;
                TickStatus::Waiting
            }
            Ok(TickOutcome::Overrun) => {
                self.counters.overruns += 1;
                TickStatus::Overrun
            }
            Err(e) => {
                self.counters.errors += 1;
                TickStatus::Error(e.to_string())
            }
        };
        if let TickStatus::Error(e) = &status {
            self.last_error = Some(e.clone());
            self.commands_stopped();
        }
        status
    }

    fn clock_jumped(&mut self, back_ns: i64) {
        self.counters.clock_jumps += 1;
        let (dropped, in_flight) = self.policy.reset();
        self.last_command = None;
        self.inputs.clear();
        for c in &mut self.cameras {
            c.latest = None;
        }
        self.was_stale = false;
        log::warn!(
            "time jumped back by {:.3} s (a looping bag or a restarted simulation?): plan reset ({dropped} queued action(s){}), \
             inputs received before the jump dropped; commands resume on inputs stamped after it",
            back_ns as f64 / 1e9,
            if in_flight { ", in-flight refill discarded" } else { "" }
        );
    }

    /// Whether the last [`tick`](Self::tick) requested the next chunk (in synchronous mode:
    /// computed it on the tick). False after a tick that did not reach the policy (disabled,
    /// stale).
    pub fn last_tick_requested_chunk(&self) -> bool {
        self.last_tick_requested
    }

    /// The rest of the current plan after this tick's command (for `joint_trajectory`
    /// with `trajectory_full_chunk`), as it will be served (blended, low-pass filtered) and
    /// clamped to the position limits. Empty with per-tick ensembling.
    pub fn remaining_plan(&self) -> Vec<Vec<f64>> {
        let limits = &self.params;
        self.policy
            .scheduler()
            .planned()
            .iter()
            .map(|a| {
                let row: Vec<f64> = self
                    .joint_map
                    .to_command(a)
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        match (
                            limits.joint_lower_limits.get(i),
                            limits.joint_upper_limits.get(i),
                        ) {
                            (Some(lo), Some(hi)) => v.clamp(*lo, *hi),
                            _ => v,
                        }
                    })
                    .collect();
                self.outputs.encode(&row)
            })
            .collect()
    }

    /// Whether the last [`tick`](Self::tick) switched to a new chunk (its command is the
    /// first of a new plan).
    pub fn last_tick_switched(&self) -> bool {
        self.last_tick_switched
    }

    /// The joint order of the state vector fed to the model (`joint_names`, or the
    /// package's `hardware` state order).
    pub fn model_state_order(&self) -> &[String] {
        if self.params.io_map.is_empty() {
            &self.joint_map.state_order
        } else {
            &self.state_order
        }
    }

    /// A status snapshot.
    pub fn status(&self) -> Status {
        Status {
            backend: self.backend.clone(),
            device: self.device.clone(),
            enabled: self.enabled,
            queue_depth: self.policy.scheduler().queue_len(),
            latency: self.policy.latency(),
            counters: self.counters,
            refill_ahead: self.policy.scheduler().refill_ahead(),
            refill_ahead_auto: self.policy.auto_refill().is_some(),
            latency_recent_p99: self
                .policy
                .auto_refill()
                .map_or(Duration::ZERO, |a| a.p99()),
            mode: self.policy.mode(),
            chunk_blend: self.policy.scheduler().blend(),
            low_pass_alpha: f64::from(self.policy.scheduler().low_pass().alpha()),
            switches: self.policy.scheduler().stats().switches,
            late_chunks: self.policy.scheduler().stats().late_chunks,
            last_error: self.last_error.clone(),
            task: self.task.as_deref().map(str::to_string),
            rtc: self.policy.rtc().is_some(),
            remote: self.link.as_ref().map(ServerLink::snapshot),
        }
    }

    /// Time spent turning the newest inputs into observations (image conversion), in total
    /// since the last reset; it is part of `Status::latency`, which also covers inference.
    pub fn preprocess_time(&self) -> Duration {
        Duration::from_nanos(self.preprocess_ns.load(Ordering::Relaxed))
    }

    /// Blocks until an in-flight refill has arrived (tests, shutdown).
    pub fn wait_for_refill(&mut self, timeout: Duration) -> Result<bool, PolicyError> {
        self.policy.wait_for_refill(timeout)
    }
}

/// `refill_mode: rtc` needs a graph exported with RTC inputs, and such a graph needs it.
fn rtc_settings(
    params: &NodeParams,
    specs: &[crate::runtime::TensorSpec],
) -> Result<Option<crate::policy::rtc::RtcSettings>, ControlError> {
    use crate::policy::rtc::{is_rtc_graph, RtcSettings};
    let graph = is_rtc_graph(specs);
    match (params.refill_mode == RefillSetting::Rtc, graph) {
        (false, false) => Ok(None),
        (false, true) => Err(ControlError::Mismatch {
            name: "refill_mode",
            problem: "the model was exported for real-time chunking (it takes \
                      `prev_chunk_left_over`): set refill_mode to rtc"
                .into(),
        }),
        (true, false) => Err(ControlError::Mismatch {
            name: "refill_mode",
            problem: "rtc needs a model exported with real-time-chunking inputs \
                      (`prev_chunk_left_over`, `inference_delay`, ...); this one has none"
                .into(),
        }),
        (true, true) => RtcSettings::from_ports(
            specs,
            params.rtc_execution_horizon,
            params.rtc_max_guidance_weight,
            0,
        )
        .map(Some)
        .map_err(|problem| ControlError::Mismatch {
            name: "rtc_execution_horizon",
            problem,
        }),
    }
}
