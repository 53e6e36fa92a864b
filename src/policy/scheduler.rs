//! The action queue as a tick-driven state machine, shared by the synchronous
//! `InferenceModel::select_action`, the asynchronous control loop and offline replay.
//!
//! Each tick: results that arrived are [`deliver`](Scheduler::deliver)ed; if
//! [`needs_refill`](Scheduler::needs_refill), the caller starts an inference on the newest
//! observation and calls [`requested`](Scheduler::requested); then
//! [`next_action`](Scheduler::next_action) pops the action for this tick and advances.
//!
//! Refill ahead: with `refill_ahead = k`, the next chunk is requested when `k` queued actions
//! remain, from the observation of that tick `t0`. It is due at tick `t0 + k` and covers the
//! ticks `t0 + k .. t0 + k + n_action_steps` (clipped to its rows). It is switched to when the
//! queue runs out (tick `t0 + k` if it arrived in time), starting at its row for that tick —
//! the rows for ticks already past are skipped — and executed up to the end of what it
//! covers. The switch ticks therefore do not depend on how fast the inference was: a chunk
//! in time gives the same plan whenever it arrived, a late one (or the first, when nothing
//! was queued) ends where it would have ended, so a live node and an offline replay agree;
//! `k = 0` is getiaction's synchronous behaviour.
//!
//! The plan: at a switch (tick `s`) the new chunk's rows from `s` on are combined with what is
//! left of the previous plan by the [`ChunkBlend`] mode, once; the result is the plan the
//! robot is commanded from, its first `n_action_steps` rows (the window) executed one per
//! tick, the rest kept for the next switch to blend with. Each action served then passes the
//! [`LowPass`] filter. Composition order, per tick: queue (switch + blend) -> low-pass ->
//! (in `control::ControlLoop`) the command limits. A tick without an action (an overrun) or a
//! [`reset`](Scheduler::reset) (reset, stale gap, disable) ends the plan: the next chunk starts
//! fresh, never blended across the gap; the low-pass filter is cleared only by a reset.

use std::collections::VecDeque;

use ndarray::{s, Array1, Array2, ArrayView1};

use super::blend::{aggregate_merge, ensemble_rows, lerp_merge, ChunkBlend, LowPass};
use super::TemporalEnsembler;

/// Counters since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Chunks delivered.
    pub chunks: u64,
    /// Ticks that found no action (queue empty and no chunk ready) after an action had been
    /// served: the refill missed its deadline.
    pub overruns: u64,
    /// Ticks that found no action before the first chunk since the reset arrived: the first
    /// inference of a new plan (at start, after a reset, a stale gap or a disable), not a
    /// missed deadline.
    pub waits: u64,
    /// Actions served.
    pub served: u64,
    /// Chunks that arrived so late that every row to execute was in the past.
    pub late_chunks: u64,
    /// Chunks switched in (each starts a new plan).
    pub switches: u64,
}

/// The rows the robot is commanded from: row `i` is for tick `start + i`; rows `..window`
/// are executed, the rest are kept for blending with the next chunk.
#[derive(Debug, Clone)]
struct Plan {
    start: u64,
    rows: Array2<f32>,
    window: usize,
}

impl Plan {
    /// Rows for tick `tick` and later (empty when the plan ends before it).
    fn rows_from(&self, tick: u64) -> ndarray::ArrayView2<'_, f32> {
        let i = (tick.saturating_sub(self.start) as usize).min(self.rows.nrows());
        self.rows.slice(s![i.., ..])
    }
    /// Window rows left to execute from tick `tick` on.
    fn left(&self, tick: u64) -> usize {
        self.window
            .saturating_sub(tick.saturating_sub(self.start) as usize)
    }
}

/// The rows of a chunk switched in, as they will be executed from the switch tick on
/// (`rows[0]` is the action of tick `tick`), for publishing the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct SwitchedPlan {
    pub tick: u64,
    pub rows: Vec<Array1<f32>>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    n_action_steps: usize,
    refill_ahead: usize,
    ensembler: Option<TemporalEnsembler>,
    blend: ChunkBlend,
    low_pass: LowPass,
    plan: Option<Plan>,
    /// `ensemble`: the chunks switched in that still cover a tick to come, oldest first.
    history: VecDeque<(u64, Array2<f32>)>,
    /// (observation tick, refill-ahead at the request, chunk).
    pending: Option<(u64, usize, Array2<f32>)>,
    /// The refill-ahead when the chunk in flight was requested.
    lead: usize,
    in_flight: bool,
    tick: u64,
    last_switch: Option<u64>,
    stats: SchedulerStats,
    /// Real-time chunking: the execution horizon (see [`with_rtc`](Self::with_rtc)).
    rtc_horizon: Option<usize>,
    /// Requests since reset (RTC: the noise draw of each).
    requests: u64,
    switched: Option<SwitchedPlan>,
}

impl Scheduler {
    /// `n_action_steps`: rows executed per chunk (>= 1). `refill_ahead`: queued actions left
    /// when the next chunk is requested. `ensemble_coeff`: per-tick temporal ensembling (a
    /// chunk is requested whenever none is in flight; the queue is unused).
    pub fn new(n_action_steps: usize, refill_ahead: usize, ensemble_coeff: Option<f64>) -> Self {
        Self {
            n_action_steps: n_action_steps.max(1),
            refill_ahead,
            ensembler: ensemble_coeff.map(TemporalEnsembler::new),
            blend: ChunkBlend::None,
            low_pass: LowPass::new(1.0),
            plan: None,
            history: VecDeque::new(),
            pending: None,
            lead: 0,
            in_flight: false,
            tick: 0,
            last_switch: None,
            stats: SchedulerStats::default(),
            rtc_horizon: None,
            requests: 0,
            switched: None,
        }
    }

    /// Real-time chunking, as physicalai's RTC execution schedules it: with `refill_ahead`
    /// `d` (the expected delay in ticks) and execution horizon `h`, the next chunk is requested
    /// when fewer than `h + d` planned actions remain and switched in `d` ticks after the
    /// request (or when it arrives, if later), replacing the rest of the old plan: the graph
    /// was told the delay and continues the old plan over it. No blending (RTC is the
    /// hand-over); each chunk is executed until the next switch.
    pub fn with_rtc(mut self, horizon: usize) -> Self {
        self.rtc_horizon = Some(horizon.max(1));
        self.blend = ChunkBlend::None;
        self.ensembler = None;
        self
    }

    /// The RTC execution horizon, when real-time chunking is on.
    pub fn rtc_horizon(&self) -> Option<usize> {
        self.rtc_horizon
    }

    /// Requests since reset.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The planned rows not yet executed, from the current tick on (`None` without a plan):
    /// the `prev_chunk_left_over` of a real-time-chunking request.
    pub fn left_over(&self) -> Option<Array2<f32>> {
        let p = self.plan.as_ref()?;
        let left = p.left(self.tick);
        (left > 0).then(|| p.rows_from(self.tick).slice(s![..left, ..]).to_owned())
    }

    /// Sets the chunk hand-over mode and the low-pass `alpha` (1 = off). Per-tick ensembling
    /// (`ensemble_coeff` of [`new`](Self::new)) is turned off by any mode but `none`.
    pub fn with_blend(mut self, blend: ChunkBlend, low_pass_alpha: f64) -> Self {
        if blend != ChunkBlend::None {
            self.ensembler = None;
        }
        self.blend = blend;
        self.low_pass = LowPass::new(low_pass_alpha);
        self
    }

    /// The current tick (ticks served since reset).
    pub fn tick(&self) -> u64 {
        self.tick
    }

    pub fn n_action_steps(&self) -> usize {
        self.n_action_steps
    }

    pub fn refill_ahead(&self) -> usize {
        self.refill_ahead
    }

    /// Changes how many queued actions are left when the next chunk is requested (from the
    /// next request on).
    pub fn set_refill_ahead(&mut self, k: usize) {
        self.refill_ahead = k;
    }

    pub fn blend(&self) -> ChunkBlend {
        self.blend
    }

    pub fn low_pass(&self) -> &LowPass {
        &self.low_pass
    }

    pub fn is_ensembling(&self) -> bool {
        self.ensembler.is_some()
    }

    /// Queued actions (with per-tick ensembling: chunks contributing).
    pub fn queue_len(&self) -> usize {
        match &self.ensembler {
            Some(e) => e.len(),
            None => self.plan.as_ref().map_or(0, |p| p.left(self.tick)),
        }
    }

    /// The queued actions, next first, as planned (blended, before the low-pass filter;
    /// empty with per-tick ensembling).
    pub fn queued(&self) -> impl Iterator<Item = ArrayView1<'_, f32>> {
        let rows = match &self.plan {
            Some(p) if self.ensembler.is_none() => {
                let left = p.left(self.tick);
                p.rows_from(self.tick).slice_move(s![..left, ..])
            }
            _ => ndarray::ArrayView2::from_shape((0, 0), &[]).expect("empty view"),
        };
        rows.into_outer_iter()
    }

    /// The queued actions, next first, as they will be served: blended and low-pass filtered
    /// (if nothing interrupts them).
    pub fn planned(&self) -> Vec<Array1<f32>> {
        self.low_pass.preview(self.queued())
    }

    /// The tick of the last switch to a new chunk (`None` before the first since reset).
    pub fn last_switch(&self) -> Option<u64> {
        self.last_switch
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    pub fn stats(&self) -> SchedulerStats {
        self.stats
    }

    /// Whether a new chunk should be requested this tick.
    pub fn needs_refill(&self) -> bool {
        if self.in_flight {
            return false;
        }
        match &self.ensembler {
            Some(_) => true,
            None if self.pending.is_some() => false,
            None => match self.rtc_horizon {
                Some(h) => self.queue_len() < h + self.refill_ahead,
                None => self.queue_len() <= self.refill_ahead,
            },
        }
    }

    /// Records that an inference was started on this tick's observation.
    pub fn requested(&mut self) {
        self.in_flight = true;
        // The chunk is due when the plan runs out: `refill_ahead` ticks from now in steady
        // state, at once when the queue is (nearly) empty (the first chunk, after a reset
        // or an overrun), so that every chunk runs `n_action_steps` rows from the row due.
        self.lead = match self.rtc_horizon {
            Some(_) => self.refill_ahead,
            None => self.refill_ahead.min(self.queue_len()),
        };
        self.requests += 1;
    }

    /// Records that the in-flight inference failed (nothing will be delivered).
    pub fn failed(&mut self) {
        self.in_flight = false;
    }

    /// Delivers a chunk computed from the observation of tick `obs_tick`.
    pub fn deliver(&mut self, obs_tick: u64, chunk: Array2<f32>) {
        self.in_flight = false;
        self.stats.chunks += 1;
        match &mut self.ensembler {
            Some(e) => e.add(obs_tick, chunk),
            None => self.pending = Some((obs_tick, self.lead, chunk)),
        }
    }

    /// The action for the current tick (advancing to the next), or `None`: an overrun, or a
    /// wait for the first chunk since the reset (see [`waiting`](Self::waiting)).
    pub fn next_action(&mut self) -> Option<Array1<f32>> {
        let action = self.advance(true);
        match (&action, self.stats.served) {
            (Some(_), _) => self.stats.served += 1,
            (None, 0) => self.stats.waits += 1,
            (None, _) => self.stats.overruns += 1,
        }
        action
    }

    /// Whether no action has been served since the reset: a tick without an action is then
    /// waiting for the plan's first chunk, not an overrun.
    pub fn waiting(&self) -> bool {
        self.stats.served == 0
    }

    /// The chunk switched in by the last [`next_action`](Self::next_action) that switched
    /// one in, once (`None` after that, and with temporal ensembling, whose action for a tick
    /// depends on chunks that have not arrived yet).
    pub fn take_switched_plan(&mut self) -> Option<SwitchedPlan> {
        self.switched.take()
    }

    /// Advances one tick without serving it (the tick failed): its action, if any, is
    /// dropped, since its time slot has passed; the low-pass filter does not see it. Not
    /// counted as an overrun.
    pub fn skip(&mut self) {
        self.advance(false);
    }

    /// Switches the pending chunk in if it takes over on the current tick (the plan ran out;
    /// with RTC: it is due), as the tick's [`next_action`](Self::next_action) would. Called
    /// before the refill decision, so that the decision sees the plan this tick serves from
    /// whether the chunk arrived on an earlier tick (synchronous) or on this one
    /// (asynchronous): both then request the next chunk on the same tick.
    pub fn switch_due(&mut self) {
        if self.ensembler.is_some() {
            return;
        }
        let tick = self.tick;
        let due = |t0: u64, lead: usize| t0 + lead as u64 <= tick;
        let switch_now = self.plan.as_ref().is_none_or(|p| p.left(tick) == 0)
            || (self.rtc_horizon.is_some()
                && self
                    .pending
                    .as_ref()
                    .is_some_and(|(t0, lead, _)| due(*t0, *lead)));
        if switch_now {
            if let Some((t0, lead, chunk)) = self.pending.take() {
                self.switch(tick, t0, lead, chunk);
            }
        }
    }

    fn advance(&mut self, served: bool) -> Option<Array1<f32>> {
        self.switch_due();
        let tick = self.tick;
        self.tick += 1;
        let mut action = match &mut self.ensembler {
            Some(e) => e.action_at(tick),
            None => match &self.plan {
                Some(p) if p.left(tick) > 0 => {
                    Some(p.rows.row((tick - p.start) as usize).to_owned())
                }
                _ => None,
            },
        };
        match &mut action {
            Some(a) if served => self.low_pass.apply(a),
            Some(_) => {}
            // A tick without an action: no plan survives the gap.
            None => {
                self.plan = None;
                self.history.clear();
            }
        }
        action
    }

    /// Switches the chunk computed from the observation of tick `t0` (requested `lead` ticks
    /// before it was due) in at tick `s`: its rows for ticks already past are skipped, the
    /// rest blended with the plan left; it is executed up to `lead + n_action_steps`.
    fn switch(&mut self, s: u64, t0: u64, lead: usize, chunk: Array2<f32>) {
        let skip = s.saturating_sub(t0) as usize;
        let end = match self.rtc_horizon {
            // RTC: executed until the next switch (or its end).
            Some(_) => chunk.nrows(),
            None => (lead + self.n_action_steps).min(chunk.nrows()),
        };
        if skip >= end {
            self.stats.late_chunks += 1;
            return;
        }
        let incoming = chunk.slice(s![skip.., ..]);
        let remaining = match &self.plan {
            Some(p) => p.rows_from(s),
            None => ndarray::ArrayView2::from_shape((0, chunk.ncols()), &[]).expect("empty view"),
        };
        let rows = match self.blend {
            ChunkBlend::Ensemble { coeff } => {
                if self.plan.is_none() {
                    self.history.clear();
                }
                let to = t0 + chunk.nrows() as u64;
                self.history.push_back((t0, chunk));
                self.history
                    .retain(|(start, c)| start + c.nrows() as u64 > s);
                ensemble_rows(&self.history, s, to, coeff)
            }
            _ if remaining.nrows() == 0 => incoming.to_owned(),
            ChunkBlend::None | ChunkBlend::LatestOnly => incoming.to_owned(),
            ChunkBlend::Linear { steps } => lerp_merge(remaining, incoming, steps),
            ChunkBlend::WeightedAverage => aggregate_merge(remaining, incoming, 0.3),
            ChunkBlend::Average => aggregate_merge(remaining, incoming, 0.5),
        };
        let window = end - skip;
        // The plan switched in, as it will be executed: blended and low-pass filtered.
        self.switched = Some(SwitchedPlan {
            tick: s,
            rows: self
                .low_pass
                .preview(rows.slice(s![..window.min(rows.nrows()), ..]).outer_iter()),
        });
        self.plan = Some(Plan {
            start: s,
            rows,
            window,
        });
        self.last_switch = Some(s);
        self.stats.switches += 1;
    }

    /// Clears plan, pending chunk, ensembling state, low-pass state, in-flight flag, tick and
    /// counters.
    pub fn reset(&mut self) {
        self.plan = None;
        self.history.clear();
        self.pending = None;
        self.in_flight = false;
        if let Some(e) = &mut self.ensembler {
            e.clear();
        }
        self.low_pass.reset();
        self.tick = 0;
        self.last_switch = None;
        self.stats = SchedulerStats::default();
        self.requests = 0;
        self.switched = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk whose row i is [base + i].
    fn chunk(base: f32, len: usize) -> Array2<f32> {
        Array2::from_shape_fn((len, 1), |(i, _)| base + i as f32)
    }

    /// Runs a scheduler where inference is instant (inline), returning actions and the ticks
    /// at which inference ran.
    fn run_inline(s: &mut Scheduler, ticks: usize) -> (Vec<Option<f32>>, Vec<u64>) {
        let mut out = Vec::new();
        let mut infer_ticks = Vec::new();
        for _ in 0..ticks {
            if s.needs_refill() {
                s.requested();
                let t = s.tick();
                infer_ticks.push(t);
                s.deliver(t, chunk(100.0 * t as f32, 5));
            }
            out.push(s.next_action().map(|a| a[0]));
        }
        (out, infer_ticks)
    }

    #[test]
    fn sync_queue_infers_once_per_chunk() {
        let mut s = Scheduler::new(5, 0, None);
        let (a, infer) = run_inline(&mut s, 11);
        assert_eq!(infer, vec![0, 5, 10]);
        assert_eq!(a[0], Some(0.0));
        assert_eq!(a[4], Some(4.0));
        assert_eq!(a[5], Some(500.0));
        assert_eq!(s.queue_len(), 4);
        assert_eq!(s.stats().overruns, 0);
    }

    #[test]
    fn n_action_steps_limits_execution() {
        let mut s = Scheduler::new(2, 0, None);
        let (a, infer) = run_inline(&mut s, 5);
        assert_eq!(infer, vec![0, 2, 4]);
        assert_eq!(
            a,
            vec![Some(0.0), Some(1.0), Some(200.0), Some(201.0), Some(400.0)]
        );
    }

    #[test]
    fn refill_ahead_skips_past_rows_deterministically() {
        // chunk 5, k = 2: first chunk at t0 = 0 executes rows 0..5 (queue empty at start);
        // at tick 3 two actions remain -> request from obs of tick 3, switched in at tick 5
        // starting at row 2 (rows 0 and 1 were for ticks 3 and 4, already served).
        let mut s = Scheduler::new(5, 2, None);
        let (a, infer) = run_inline(&mut s, 9);
        assert_eq!(infer, vec![0, 3, 6]);
        let expect = [0.0, 1.0, 2.0, 3.0, 4.0, 302.0, 303.0, 304.0, 602.0];
        assert_eq!(a, expect.iter().map(|v| Some(*v)).collect::<Vec<_>>());
    }

    /// A tick without an action is a wait until the plan's first action is served, an
    /// overrun after that, and a wait again after a reset.
    #[test]
    fn waits_for_the_first_chunk_are_not_overruns() {
        let mut s = Scheduler::new(2, 0, None);
        assert!(s.waiting());
        s.requested();
        assert_eq!(s.next_action(), None);
        s.deliver(0, chunk(0.0, 4));
        assert_eq!(s.next_action().map(|a| a[0]), Some(1.0));
        assert!(!s.waiting());
        // the plan ran out and the next chunk (requested on the empty queue) is late
        assert!(s.needs_refill());
        s.requested();
        assert_eq!(s.next_action(), None);
        assert_eq!(s.next_action(), None);
        let st = s.stats();
        assert_eq!((st.waits, st.overruns, st.served), (1, 2, 1));
        s.reset();
        assert!(s.waiting());
        s.requested();
        assert_eq!(s.next_action(), None);
        let st = s.stats();
        assert_eq!((st.waits, st.overruns, st.served), (1, 0, 0));
    }

    #[test]
    fn late_chunk_is_skipped_and_counted() {
        let mut s = Scheduler::new(3, 0, None);
        assert!(s.needs_refill());
        s.requested();
        assert!(!s.needs_refill());
        // nothing arrives for 2 ticks: waits for the first chunk, not overruns
        assert_eq!(s.next_action(), None);
        assert_eq!(s.next_action(), None);
        s.deliver(0, chunk(0.0, 3));
        // tick 2: rows 2..3 remain
        assert_eq!(s.next_action().map(|a| a[0]), Some(2.0));
        assert_eq!((s.stats().waits, s.stats().overruns), (2, 0));
        // a chunk older than its executable rows is dropped
        s.requested();
        s.deliver(0, chunk(0.0, 3));
        assert_eq!(s.next_action(), None);
        assert_eq!(s.stats().late_chunks, 1);
    }

    /// RTC as physicalai schedules it (horizon 6, delay 2, chunk 16): requests at ticks 0, 9,
    /// 18, ... (fewer than 8 planned actions left), switches 2 ticks later, skipping the 2 rows
    /// served meanwhile; the left-over handed to a request is the plan from that tick on.
    #[test]
    fn rtc_requests_early_and_switches_after_the_delay() {
        let mut s = Scheduler::new(16, 2, None).with_rtc(6);
        let mut requests = Vec::new();
        let mut inflight: Option<(u64, u64)> = None; // (request tick, due)
        let mut out = Vec::new();
        for _ in 0..30 {
            let t = s.tick();
            if let Some((t0, due)) = inflight {
                if t == due {
                    s.deliver(t0, chunk(100.0 * t0 as f32, 16));
                    inflight = None;
                }
            }
            if s.needs_refill() {
                if t > 0 {
                    let left = s.left_over().unwrap();
                    assert_eq!(left.nrows(), 7, "left over at tick {t}");
                    assert_eq!(left[[0, 0]], out.last().map_or(0.0, |v: &f32| v + 1.0));
                }
                s.requested();
                requests.push(t);
                if t == 0 {
                    s.deliver(0, chunk(0.0, 16));
                } else {
                    inflight = Some((t, t + 2));
                }
            }
            out.push(s.next_action().unwrap()[0]);
        }
        assert_eq!(requests, vec![0, 9, 18, 27]);
        assert_eq!(out[10], 10.0, "old plan until the switch");
        assert_eq!(
            out[11], 902.0,
            "switched at 11, rows of ticks 9 and 10 skipped"
        );
        assert_eq!(out[20], 1802.0);
        assert_eq!(s.requests(), 4);
    }

    #[test]
    fn reset_clears_everything() {
        let mut s = Scheduler::new(5, 0, None);
        run_inline(&mut s, 2);
        s.requested();
        s.reset();
        assert_eq!(s.queue_len(), 0);
        assert_eq!(s.tick(), 0);
        assert!(s.needs_refill());
        assert_eq!(s.stats(), SchedulerStats::default());
    }

    /// Runs inline with chunk `k` = [base + i + 0.5 * j] for row i, joint j, base 100 * t0;
    /// returns the actions of joint 0.
    fn run_blend(s: &mut Scheduler, ticks: usize, len: usize) -> Vec<Option<f32>> {
        let mut out = Vec::new();
        for _ in 0..ticks {
            if s.needs_refill() {
                s.requested();
                let t = s.tick();
                s.deliver(t, chunk(100.0 * t as f32, len));
            }
            out.push(s.next_action().map(|a| a[0]));
        }
        out
    }

    #[test]
    fn linear_blends_the_rest_of_the_old_plan_at_the_switch() {
        // chunk 10, 4 rows executed per chunk, no refill ahead: the switch at tick 4 finds
        // rows 4..10 of chunk 0 (values 4..9) left; chunk 1 (t0 = 4) is 400 + i.
        let mut s = Scheduler::new(4, 0, None).with_blend(ChunkBlend::Linear { steps: 3 }, 1.0);
        let a = run_blend(&mut s, 9, 10);
        let (w1, w2) = (2.0f64 / 3.0, 1.0f64 / 3.0);
        let expect = [
            0.0,
            1.0,
            2.0,
            3.0,
            4.0, // w = 1: the old plan
            (w1 * 5.0 + (1.0 - w1) * 401.0) as f32,
            (w2 * 6.0 + (1.0 - w2) * 402.0) as f32,
            403.0, // w = 0: the new chunk
            // tick 8: the next switch blends with the plan's tail (plain rows of chunk 1 by
            // now) -> row 4 of chunk 1.
            404.0,
        ];
        for (t, (got, want)) in a.iter().zip(expect).enumerate() {
            assert!(
                (got.unwrap() - want).abs() < 1e-4,
                "tick {t}: {got:?} vs {want} ({a:?})"
            );
        }
        assert_eq!(s.stats().switches, 3);
        assert_eq!(s.last_switch(), Some(8));
    }

    #[test]
    fn aggregation_modes_and_latest_only() {
        let run = |blend| {
            let mut s = Scheduler::new(4, 0, None).with_blend(blend, 1.0);
            run_blend(&mut s, 6, 10)
        };
        let none = run(ChunkBlend::None);
        assert_eq!(none[4], Some(400.0));
        assert_eq!(run(ChunkBlend::LatestOnly), none);
        let w = run(ChunkBlend::WeightedAverage);
        assert!(
            (w[4].unwrap() - (0.3 * 4.0 + 0.7 * 400.0)).abs() < 1e-3,
            "{w:?}"
        );
        assert!(
            (w[5].unwrap() - (0.3 * 5.0 + 0.7 * 401.0)).abs() < 1e-3,
            "{w:?}"
        );
        let a = run(ChunkBlend::Average);
        assert!((a[4].unwrap() - 202.0).abs() < 1e-3, "{a:?}");
    }

    #[test]
    fn ensemble_weighs_every_chunk_covering_the_tick() {
        // chunk 10, 4 executed, refill 0: at tick 8 chunks 0 (rows 8, 9), 1 (rows 4..) and
        // 2 (rows 0..) cover ticks 8 and 9.
        let c = 0.5f64;
        let mut s = Scheduler::new(4, 0, None).with_blend(ChunkBlend::Ensemble { coeff: c }, 1.0);
        let a = run_blend(&mut s, 10, 10);
        let w = |i: i32| (-c * f64::from(i)).exp();
        let mean = |v: &[f64]| {
            let total: f64 = (0..v.len()).map(|i| w(i as i32)).sum();
            v.iter()
                .enumerate()
                .map(|(i, x)| w(i as i32) * x)
                .sum::<f64>()
                / total
        };
        assert_eq!(a[0], Some(0.0));
        assert!((f64::from(a[4].unwrap()) - mean(&[4.0, 400.0])).abs() < 1e-3);
        assert!((f64::from(a[8].unwrap()) - mean(&[8.0, 404.0, 800.0])).abs() < 1e-2);
        assert!((f64::from(a[9].unwrap()) - mean(&[9.0, 405.0, 801.0])).abs() < 1e-2);
        assert!(!s.is_ensembling(), "per-tick ensembling is off");
    }

    #[test]
    fn no_blend_across_a_gap_or_a_reset() {
        // An overrun (the chunk requested at tick 4 arrives at tick 6) ends the plan: the
        // late chunk is not blended with what was left of chunk 0.
        let mut s = Scheduler::new(4, 0, None).with_blend(ChunkBlend::Average, 1.0);
        for _ in 0..4 {
            if s.needs_refill() {
                s.requested();
                s.deliver(s.tick(), chunk(0.0, 10));
            }
            s.next_action().unwrap();
        }
        assert!(s.needs_refill());
        s.requested();
        assert_eq!(s.next_action(), None);
        assert_eq!(s.next_action(), None);
        s.deliver(4, chunk(400.0, 10));
        // Tick 6: row 2 of the new chunk, alone.
        assert_eq!(s.next_action().map(|a| a[0]), Some(402.0));
        // A reset likewise.
        let mut s = Scheduler::new(4, 0, None).with_blend(ChunkBlend::Average, 1.0);
        run_blend(&mut s, 3, 10);
        s.reset();
        let a = run_blend(&mut s, 1, 10);
        assert_eq!(a, vec![Some(0.0)]);
    }

    #[test]
    fn low_pass_filters_the_served_actions_and_the_plan() {
        let mut s = Scheduler::new(5, 0, None).with_blend(ChunkBlend::None, 0.5);
        let a = run_blend(&mut s, 3, 5);
        // 0, then 0.5 * 1 + 0.5 * 0, then 0.5 * 2 + 0.5 * 0.5
        assert_eq!(a, vec![Some(0.0), Some(0.5), Some(1.25)]);
        let planned: Vec<f32> = s.planned().iter().map(|r| r[0]).collect();
        assert_eq!(
            planned,
            vec![0.5 * 3.0 + 0.5 * 1.25, 0.5 * 4.0 + 0.5 * 2.125]
        );
        let queued: Vec<f32> = s.queued().map(|r| r[0]).collect();
        assert_eq!(queued, vec![3.0, 4.0]);
        // A skipped tick is not filtered into the state.
        s.skip();
        assert_eq!(s.next_action().map(|a| a[0]), Some(0.5 * 4.0 + 0.5 * 1.25));
        s.reset();
        let a = run_blend(&mut s, 1, 5);
        assert_eq!(a, vec![Some(0.0)], "the filter starts over after a reset");
    }

    /// A live node's first chunk arrives a tick late (nothing was queued); the replay's is
    /// inline. From then on, switch ticks and plans are the same: the window ends where the
    /// chunk was planned to end, not `n_action_steps` after a late switch.
    #[test]
    fn a_late_first_chunk_does_not_shift_later_switches() {
        for blend in [
            ChunkBlend::None,
            ChunkBlend::Linear { steps: 3 },
            ChunkBlend::Average,
        ] {
            let mut replay = Scheduler::new(4, 2, None).with_blend(blend, 1.0);
            let offline = run_blend(&mut replay, 30, 10);
            let mut live = Scheduler::new(4, 2, None).with_blend(blend, 1.0);
            let mut online = Vec::new();
            let mut in_flight: Option<u64> = None;
            for _ in 0..30 {
                // The first chunk is delivered on the tick after its request, later ones in
                // time (before the tick they are due).
                if let Some(t0) = in_flight.take() {
                    live.deliver(t0, chunk(100.0 * t0 as f32, 10));
                }
                if live.needs_refill() {
                    live.requested();
                    let t = live.tick();
                    if t == 0 {
                        in_flight = Some(t);
                    } else {
                        live.deliver(t, chunk(100.0 * t as f32, 10));
                    }
                }
                online.push(live.next_action().map(|a| a[0]));
            }
            assert_eq!(online[0], None, "{blend}: the first tick overruns");
            assert_eq!(online[1..], offline[1..], "{blend}");
        }
    }

    #[test]
    fn switched_plan_is_the_rows_executed_from_the_switch() {
        // Same schedule as refill_ahead_skips_past_rows_deterministically.
        let mut s = Scheduler::new(5, 2, None);
        let mut plans = Vec::new();
        let mut actions = Vec::new();
        for _ in 0..9 {
            if s.needs_refill() {
                s.requested();
                let t = s.tick();
                s.deliver(t, chunk(100.0 * t as f32, 5));
            }
            actions.push(s.next_action().unwrap()[0]);
            if let Some(p) = s.take_switched_plan() {
                plans.push((p.tick, p.rows.iter().map(|r| r[0]).collect::<Vec<_>>()));
            }
            assert_eq!(s.take_switched_plan(), None, "taken once");
        }
        assert_eq!(
            plans,
            [
                (0, vec![0.0, 1.0, 2.0, 3.0, 4.0]),
                (5, vec![302.0, 303.0, 304.0]),
                (8, vec![602.0, 603.0, 604.0])
            ]
        );
        for (tick, rows) in &plans {
            let t = *tick as usize;
            let executed = &actions[t..(t + rows.len()).min(actions.len())];
            assert_eq!(executed, &rows[..executed.len()]);
        }
        s.reset();
        assert_eq!(s.take_switched_plan(), None);
    }

    #[test]
    fn ensembling_requests_every_tick_inline() {
        let mut s = Scheduler::new(5, 0, Some(0.0));
        let (a, infer) = run_inline(&mut s, 3);
        assert_eq!(infer, vec![0, 1, 2]);
        // tick 1: mean of chunk0 row1 (1) and chunk1 row0 (100)
        assert_eq!(a[1], Some(50.5));
    }
}
