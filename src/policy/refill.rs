//! The control-loop front of a policy: one call per control tick, with the next chunk
//! computed either inline (synchronous) or on a worker thread (asynchronous refill), so a
//! tick never waits for a whole inference while queued actions remain.

use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use ndarray::{Array1, Array2};

use super::rtc::RtcSettings;
use super::{
    ChunkBlend, InferenceModel, Observation, PolicyConfig, PolicyError, Predictor, Scheduler,
    SwitchedPlan,
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

/// How far back the automatic refill-ahead looks: the chunks delivered in the last minute
/// of ticks (at most [`AUTO_REFILL_MAX_SAMPLES`] of them).
pub const AUTO_REFILL_HORIZON: Duration = Duration::from_secs(60);
/// The most latencies the automatic refill-ahead keeps (a minute of one chunk per tick at
/// 166 Hz).
pub const AUTO_REFILL_MAX_SAMPLES: usize = 10_000;
/// How long dropping a [`ControlPolicy`] waits for an inference in progress before leaving
/// the worker thread to finish on its own (the process may be exiting).
pub const WORKER_JOIN_TIMEOUT: Duration = Duration::from_millis(200);

/// Automatic refill-ahead: enough queued actions to hide the inference latency, following
/// its observed distribution. After each chunk, the steps ahead are
/// `ceil(1.25 * p99 / period) + 1`, `p99` (nearest rank: the slowest of up to 100) over the
/// latencies, observation conversion included, of the chunks delivered in the last
/// [`AUTO_REFILL_HORIZON`] of ticks: raised at once when a slower inference is seen, lowered by
/// one step per chunk once the slow ones are a minute old. Seeded with the warm-up latency
/// (`ceil(1.5 * warm-up / period) + 1`). Time is counted in ticks, so the horizon does not
/// depend on how often chunks come.
#[derive(Debug, Clone)]
pub struct AutoRefill {
    period: Duration,
    horizon_ticks: u64,
    /// (tick delivered, latency), oldest first.
    window: VecDeque<(u64, Duration)>,
    /// Reused for the p99 (no allocation per chunk once grown).
    scratch: Vec<Duration>,
    max_steps: usize,
    steps: usize,
}

impl AutoRefill {
    /// `period`: the control period; `warmup`: the latency measured at start-up;
    /// `max_steps`: the largest value allowed (`chunk_size - 1`).
    pub fn new(period: Duration, warmup: Duration, max_steps: usize) -> Self {
        let period_s = period.as_secs_f64().max(1e-9);
        let seed = (1.5 * warmup.as_secs_f64() / period_s).ceil() as usize + 1;
        Self {
            period,
            horizon_ticks: (AUTO_REFILL_HORIZON.as_secs_f64() / period_s).ceil() as u64,
            window: VecDeque::new(),
            scratch: Vec::new(),
            max_steps,
            steps: seed.min(max_steps),
        }
    }

    /// The steps ahead for a p99 latency `p99`.
    pub fn steps_for(&self, p99: Duration) -> usize {
        let period_s = self.period.as_secs_f64().max(1e-9);
        ((1.25 * p99.as_secs_f64() / period_s).ceil() as usize + 1).min(self.max_steps)
    }

    /// The current choice.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Latencies in the window.
    pub fn samples(&self) -> usize {
        self.window.len()
    }

    /// The p99 latency of the window (nearest rank: the largest of up to 100 samples).
    pub fn p99(&self) -> Duration {
        let mut v: Vec<Duration> = self.window.iter().map(|(_, d)| *d).collect();
        Self::p99_of(&mut v)
    }

    fn p99_of(v: &mut [Duration]) -> Duration {
        if v.is_empty() {
            return Duration::ZERO;
        }
        let k = ((v.len() - 1) as f64 * 0.99).ceil() as usize;
        *v.select_nth_unstable(k).1
    }

    /// Records one chunk's latency, delivered on tick `tick` (a count that never goes back);
    /// returns the new steps when they changed.
    pub fn record(&mut self, tick: u64, latency: Duration) -> Option<usize> {
        while self
            .window
            .front()
            .is_some_and(|(t, _)| tick.saturating_sub(*t) > self.horizon_ticks)
            || self.window.len() >= AUTO_REFILL_MAX_SAMPLES
        {
            self.window.pop_front();
        }
        self.window.push_back((tick, latency));
        self.scratch.clear();
        self.scratch.extend(self.window.iter().map(|(_, d)| *d));
        let p99 = Self::p99_of(&mut self.scratch);
        let target = self.steps_for(p99);
        let next = if target > self.steps {
            target
        } else if target < self.steps {
            self.steps - 1
        } else {
            self.steps
        };
        (next != self.steps).then(|| {
            self.steps = next;
            next
        })
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
    auto_refill: Option<AutoRefill>,
    /// Ticks since start (never reset): the automatic refill-ahead's clock.
    ticks_total: u64,
    /// Real-time chunking: the inputs each request adds (see [`super::rtc`]).
    rtc: Option<RtcSettings>,
}

impl ControlPolicy {
    /// Wraps a loaded model. `refill_ahead`: queued actions left when the next chunk is
    /// requested (see [`Scheduler`]); clamped below `chunk_size`.
    pub fn new(model: InferenceModel, mode: RefillMode, refill_ahead: usize) -> Self {
        let (_, predictor, config) = model.into_parts();
        let refill_ahead = refill_ahead.min(config.chunk_size.saturating_sub(1));
        let ensemble = config.temporal_ensemble_coeff;
        let scheduler = Scheduler::new(config.n_action_steps, refill_ahead, ensemble)
            .with_blend(config.chunk_blend, config.low_pass_alpha);
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
            auto_refill: None,
            ticks_total: 0,
            rtc: None,
        }
    }

    /// Real-time chunking: each request feeds the graph the unexecuted rest of the plan and
    /// the expected delay (the refill-ahead, in ticks), and the scheduler switches the chunk
    /// in after that delay (see [`Scheduler::with_rtc`]).
    pub fn with_rtc(mut self, settings: RtcSettings) -> Self {
        self.scheduler = Scheduler::new(
            self.config.n_action_steps,
            self.scheduler.refill_ahead(),
            None,
        )
        .with_blend(ChunkBlend::None, self.config.low_pass_alpha)
        .with_rtc(settings.execution_horizon);
        self.rtc = Some(settings);
        self
    }

    /// The real-time-chunking settings, when on.
    pub fn rtc(&self) -> Option<&RtcSettings> {
        self.rtc.as_ref()
    }

    /// Makes the refill-ahead follow the observed inference latency (see [`AutoRefill`];
    /// asynchronous mode only: a synchronous refill computes the chunk on the tick).
    pub fn with_auto_refill(mut self, auto: AutoRefill) -> Self {
        if self.mode() == RefillMode::Asynchronous {
            self.scheduler.set_refill_ahead(auto.steps());
            self.auto_refill = Some(auto);
        }
        self
    }

    /// The automatic refill-ahead, when on.
    /// Sets how many queued actions are left when the next chunk is requested (at most the
    /// chunk size - 1), as a replay of a recorded episode follows the live node's.
    pub fn set_refill_ahead(&mut self, k: usize) {
        let k = k.min(self.config.chunk_size.saturating_sub(1));
        self.scheduler.set_refill_ahead(k);
    }

    pub fn auto_refill(&self) -> Option<&AutoRefill> {
        self.auto_refill.as_ref()
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
        self.ticks_total += 1;
        if let Err(e) = self.collect() {
            self.scheduler.skip();
            return Err(e);
        }
        self.scheduler.switch_due();
        if self.scheduler.needs_refill() {
            let tick = self.scheduler.tick();
            // RTC inputs describe the plan as it is now (before this tick's action).
            let left_over = self.scheduler.left_over();
            let rows = left_over.as_ref().map_or(0, |a| a.nrows());
            let rtc_inputs = self.rtc.as_ref().map(|r| {
                r.inputs(
                    left_over.as_ref().map(|a| a.view()),
                    self.scheduler.refill_ahead(),
                    self.scheduler.requests(),
                )
            });
            let observation: ObservationFn = match rtc_inputs {
                None => Box::new(observation),
                Some(extra) => Box::new(move || {
                    let mut obs = observation()?;
                    for (name, t) in extra {
                        obs.insert(name, t);
                    }
                    // How many rows of `prev_chunk_left_over` are the plan (the rest is
                    // padding): relative actions re-anchor those rows.
                    obs.set_text(super::relative::LEFT_OVER_ROWS, rows.to_string());
                    Ok(obs)
                }),
            };
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
                if let Some(auto) = &mut self.auto_refill {
                    let before = self.scheduler.refill_ahead();
                    if let Some(steps) = auto.record(self.ticks_total, r.latency) {
                        self.scheduler.set_refill_ahead(steps);
                        log::info!(
                            "refill ahead {before} -> {steps} step(s): inference p99 {:.1} ms over the last {} chunk(s) (last {} s)",
                            auto.p99().as_secs_f64() * 1e3,
                            auto.samples(),
                            AUTO_REFILL_HORIZON.as_secs()
                        );
                    }
                }
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
    /// Stops the worker: it ends after the inference it may be running. That inference is
    /// waited for up to [`WORKER_JOIN_TIMEOUT`]; a longer one is left to finish on its own
    /// (its result is discarded), so shutting down never waits for a slow inference.
    fn drop(&mut self) {
        if let Executor::Worker { tx, handle, .. } = &mut self.executor {
            tx.take();
            if let Some(h) = handle.take() {
                let deadline = Instant::now() + WORKER_JOIN_TIMEOUT;
                while !h.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if h.is_finished() {
                    let _ = h.join();
                } else {
                    log::info!(
                        "not waiting for the inference in progress (over {} ms): its result is discarded",
                        WORKER_JOIN_TIMEOUT.as_millis()
                    );
                }
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
                // A panic inside the observation conversion or a runtime is this chunk's
                // error, not the end of the worker.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (req.observation)().and_then(|obs| predictor.predict_chunk(&obs))
                }))
                .unwrap_or_else(|panic| Err(PolicyError::Panicked(panic_message(&panic))));
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

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_refill_follows_the_latency_distribution() {
        let ms = Duration::from_millis;
        // 100 Hz, warm-up 30 ms: ceil(1.5 * 3) + 1 = 6 steps.
        let mut a = AutoRefill::new(ms(10), ms(30), 99);
        assert_eq!(a.steps(), 6);
        // A slow inference raises it at once: ceil(1.25 * 8) + 1 = 11.
        assert_eq!(a.record(0, ms(80)), Some(11));
        // Chunks every 100 ticks: the slow one holds it for a minute (6000 ticks)...
        for k in 1..=60 {
            assert_eq!(a.record(100 * k, ms(20)), None, "tick {}", 100 * k);
        }
        assert_eq!(a.p99(), ms(80));
        // ... then it leaves the window: one step per chunk down to ceil(1.25 * 2) + 1 = 4.
        let seen: Vec<usize> = (61..=70)
            .filter_map(|k| a.record(100 * k, ms(20)))
            .collect();
        assert_eq!(seen, vec![10, 9, 8, 7, 6, 5, 4]);

        // A chunk every tick (the horizon is in ticks, not chunks): 4 % slow ones hold it up
        // while they are more than 1 % of the last minute's chunks; a lone slow one among
        // more than 100 is below the p99.
        // (10 Hz here: a minute is 600 ticks.)
        let mut b = AutoRefill::new(ms(100), ms(300), 99);
        assert_eq!(b.record(0, ms(800)), Some(11));
        for t in 1..=600 {
            let l = if t <= 300 && t % 25 == 0 {
                ms(800)
            } else {
                ms(200)
            };
            assert_eq!(b.record(t, l), None, "tick {t}");
        }
        let lowered = (601..=900).find(|t| b.record(*t, ms(200)).is_some());
        assert!(lowered.is_some_and(|t| t > 700), "{lowered:?}");
        assert_eq!(b.p99(), ms(200));
        let mut d = AutoRefill::new(ms(10), ms(10), 99);
        for t in 0..300 {
            d.record(t, if t == 5 { ms(500) } else { ms(10) });
        }
        assert_eq!(d.p99(), ms(10));

        // Clamped to chunk_size - 1.
        let mut c = AutoRefill::new(ms(10), ms(30), 7);
        assert_eq!(c.steps(), 6);
        assert_eq!(c.record(0, Duration::from_secs(1)), Some(7));
    }
}
