//! The control-loop front of a policy: one call per control tick, with the next chunk
//! computed either inline (synchronous) or on a worker thread (asynchronous refill), so a
//! tick never waits for a whole inference while queued actions remain.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use ndarray::{Array1, Array2};

use super::{
    InferenceModel, Observation, PolicyConfig, PolicyError, Predictor, Scheduler, SwitchedPlan,
};

/// Where chunks are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefillMode {
    /// On the tick that needs them (the tick waits; deterministic; used by replay).
    Synchronous,
    /// On a worker thread; the tick only hands over the observation.
    Asynchronous,
}

/// What one tick produced.
#[derive(Debug, Clone, PartialEq)]
pub enum TickOutcome {
    /// The action for this tick.
    Action(Array1<f32>),
    /// No action was ready (queue empty, chunk still being computed).
    Overrun,
}

/// Builds the observation for a refill; runs on the worker thread in asynchronous mode, so
/// image conversion stays off the control tick.
pub type ObservationFn = Box<dyn FnOnce() -> Result<Observation, PolicyError> + Send>;

struct Request {
    generation: u64,
    tick: u64,
    observation: ObservationFn,
}

struct Response {
    generation: u64,
    tick: u64,
    result: Result<Array2<f32>, PolicyError>,
    latency: Duration,
}

enum Executor {
    Inline(Box<Predictor>),
    Worker {
        tx: Option<Sender<Request>>,
        rx: Receiver<Response>,
        handle: Option<JoinHandle<()>>,
    },
}

/// Inference latency statistics since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyStats {
    pub count: u64,
    pub last: Duration,
    pub max: Duration,
    pub total: Duration,
}

impl LatencyStats {
    fn record(&mut self, d: Duration) {
        self.count += 1;
        self.last = d;
        self.max = self.max.max(d);
        self.total += d;
    }
    /// Mean latency (zero before the first inference).
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            self.total / self.count as u32
        }
    }
}

/// A policy driven by control ticks. See the module docs.
pub struct ControlPolicy {
    scheduler: Scheduler,
    executor: Executor,
    config: PolicyConfig,
    generation: u64,
    latency: LatencyStats,
    /// Whether the last tick requested a chunk (for the node's tick-latency breakdown).
    requested_on_last_tick: bool,
}

impl ControlPolicy {
    /// Wraps a loaded model. `refill_ahead`: queued actions left when the next chunk is
    /// requested (see [`Scheduler`]); clamped below `chunk_size`.
    pub fn new(model: InferenceModel, mode: RefillMode, refill_ahead: usize) -> Self {
        let (_, predictor, config) = model.into_parts();
        let refill_ahead = refill_ahead.min(config.chunk_size.saturating_sub(1));
        let ensemble = config.temporal_ensemble_coeff;
        let scheduler = Scheduler::new(config.n_action_steps, refill_ahead, ensemble);
        let executor = match mode {
            RefillMode::Synchronous => Executor::Inline(Box::new(predictor)),
            RefillMode::Asynchronous => spawn_worker(predictor),
        };
        Self {
            scheduler,
            executor,
            config,
            generation: 0,
            latency: LatencyStats::default(),
            requested_on_last_tick: false,
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }
    pub fn latency(&self) -> LatencyStats {
        self.latency
    }
    /// Whether the last [`tick`](Self::tick) requested the next chunk (in synchronous mode:
    /// computed it).
    pub fn requested_on_last_tick(&self) -> bool {
        self.requested_on_last_tick
    }
    pub fn mode(&self) -> RefillMode {
        match self.executor {
            Executor::Inline(_) => RefillMode::Synchronous,
            Executor::Worker { .. } => RefillMode::Asynchronous,
        }
    }

    /// One control tick. `observation` is called only when a new chunk is needed (so images
    /// are converted only then), on the worker thread in asynchronous mode. An error means
    /// no action this tick.
    pub fn tick<F>(&mut self, observation: F) -> Result<TickOutcome, PolicyError>
    where
        F: FnOnce() -> Result<Observation, PolicyError> + Send + 'static,
    {
        self.requested_on_last_tick = false;
        if let Err(e) = self.collect() {
            self.scheduler.skip();
            return Err(e);
        }
        if self.scheduler.needs_refill() {
            let tick = self.scheduler.tick();
            self.scheduler.requested();
            self.requested_on_last_tick = true;
            match &mut self.executor {
                Executor::Inline(p) => {
                    let start = Instant::now();
                    match observation().and_then(|obs| p.predict_chunk(&obs)) {
                        Ok(chunk) => {
                            self.latency.record(start.elapsed());
                            self.scheduler.deliver(tick, chunk);
                        }
                        Err(e) => {
                            self.scheduler.failed();
                            self.scheduler.skip();
                            return Err(e);
                        }
                    }
                }
                Executor::Worker { tx, .. } => {
                    let req = Request {
                        generation: self.generation,
                        tick,
                        observation: Box::new(observation),
                    };
                    if tx.as_ref().is_none_or(|tx| tx.send(req).is_err()) {
                        self.scheduler.failed();
                        return Err(PolicyError::WorkerGone);
                    }
                }
            }
        }
        Ok(match self.scheduler.next_action() {
            Some(a) => TickOutcome::Action(a),
            None => TickOutcome::Overrun,
        })
    }

    /// Delivers finished chunks from the worker (no-op when synchronous).
    fn collect(&mut self) -> Result<(), PolicyError> {
        let rx = match &self.executor {
            Executor::Worker { rx, .. } => rx.clone(),
            Executor::Inline(_) => return Ok(()),
        };
        loop {
            match rx.try_recv() {
                Ok(r) => self.accept(r)?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(PolicyError::WorkerGone),
            }
        }
    }

    fn accept(&mut self, r: Response) -> Result<(), PolicyError> {
        if r.generation != self.generation {
            return Ok(()); // computed before a reset: dropped
        }
        match r.result {
            Ok(chunk) => {
                self.latency.record(r.latency);
                self.scheduler.deliver(r.tick, chunk);
                Ok(())
            }
            Err(e) => {
                self.scheduler.failed();
                Err(e)
            }
        }
    }

    /// Blocks until the in-flight chunk (if any) has arrived, up to `timeout`; returns whether
    /// nothing is in flight any more. For tests and orderly shutdown.
    pub fn wait_for_refill(&mut self, timeout: Duration) -> Result<bool, PolicyError> {
        let deadline = Instant::now() + timeout;
        while self.scheduler.in_flight() {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = match &self.executor {
                Executor::Worker { rx, .. } => rx.recv_timeout(left),
                Executor::Inline(_) => return Ok(true),
            };
            match received {
                Ok(r) => self.accept(r)?,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Ok(false),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(PolicyError::WorkerGone)
                }
            }
        }
        Ok(true)
    }

    /// The chunk switched in on the last tick, once (see [`Scheduler::take_switched_plan`]).
    pub fn take_switched_plan(&mut self) -> Option<SwitchedPlan> {
        self.scheduler.take_switched_plan()
    }

    /// Changes the rows executed per chunk and temporal ensembling while running: a fresh
    /// scheduler (the queued plan and an in-flight chunk are dropped, like a reset; latency
    /// statistics are kept), so the next tick starts a new chunk under the new settings.
    /// `n_action_steps` is clamped to `1..=chunk_size`. Returns the queued actions dropped.
    pub fn reconfigure(&mut self, n_action_steps: usize, ensemble: Option<f64>) -> usize {
        let dropped = self.scheduler.queue_len();
        let n = n_action_steps.clamp(1, self.config.chunk_size.max(1));
        self.config.n_action_steps = n;
        self.config.temporal_ensemble_coeff = ensemble.filter(|c| *c > 0.0);
        self.generation += 1;
        self.scheduler = Scheduler::new(
            n,
            self.scheduler.refill_ahead(),
            self.config.temporal_ensemble_coeff,
        );
        dropped
    }

    /// Clears queue, ensembling state, counters and latency statistics; a chunk still being
    /// computed is discarded when it arrives. Returns (queued actions dropped, whether a
    /// refill was in flight).
    pub fn reset(&mut self) -> (usize, bool) {
        let dropped = self.scheduler.queue_len();
        let in_flight = self.scheduler.in_flight();
        self.generation += 1;
        self.scheduler.reset();
        self.latency = LatencyStats::default();
        (dropped, in_flight)
    }
}

impl Drop for ControlPolicy {
    fn drop(&mut self) {
        if let Executor::Worker { tx, handle, .. } = &mut self.executor {
            tx.take();
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

fn spawn_worker(mut predictor: Predictor) -> Executor {
    let (req_tx, req_rx) = crossbeam_channel::unbounded::<Request>();
    let (resp_tx, resp_rx) = crossbeam_channel::unbounded::<Response>();
    let handle = std::thread::Builder::new()
        .name("policy-refill".into())
        .spawn(move || {
            while let Ok(mut req) = req_rx.recv() {
                // Only the newest request matters: skip any that queued up behind it.
                while let Ok(newer) = req_rx.try_recv() {
                    req = newer;
                }
                let start = Instant::now();
                let result = (req.observation)().and_then(|obs| predictor.predict_chunk(&obs));
                let resp = Response {
                    generation: req.generation,
                    tick: req.tick,
                    result,
                    latency: start.elapsed(),
                };
                if resp_tx.send(resp).is_err() {
                    break;
                }
            }
        });
    match handle {
        Ok(h) => Executor::Worker {
            tx: Some(req_tx),
            rx: resp_rx,
            handle: Some(h),
        },
        Err(e) => {
            // Every tick will answer WorkerGone: the node reports it and commands nothing.
            log::error!("cannot start the refill worker thread: {e}");
            Executor::Worker {
                tx: None,
                rx: resp_rx,
                handle: None,
            }
        }
    }
}
