//! The action queue as a tick-driven state machine, shared by the synchronous
//! `InferenceModel::select_action`, the asynchronous control loop and offline replay.
//!
//! Each tick: results that arrived are [`deliver`](Scheduler::deliver)ed; if
//! [`needs_refill`](Scheduler::needs_refill), the caller starts an inference on the newest
//! observation and calls [`requested`](Scheduler::requested); then
//! [`next_action`](Scheduler::next_action) pops the action for this tick and advances.
//!
//! Refill ahead: with `refill_ahead = k`, the next chunk is requested when `k` queued actions
//! remain, from the observation of that tick `t0`. It is switched to when the queue runs out
//! (tick `t0 + k` if it arrived in time), starting at its row `t0`-relative index — the rows
//! for ticks already past are skipped — and `n_action_steps` of it are executed. This makes
//! the result independent of how fast the inference was, as long as it arrived in time, so a
//! live node and an offline replay agree; `k = 0` is getiaction's synchronous behaviour.

use std::collections::VecDeque;

use ndarray::{Array1, Array2};

use super::TemporalEnsembler;

/// Counters since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Chunks delivered.
    pub chunks: u64,
    /// Ticks that found no action (queue empty and no chunk ready).
    pub overruns: u64,
    /// Chunks that arrived so late that every row to execute was in the past.
    pub late_chunks: u64,
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
    queue: VecDeque<Array1<f32>>,
    pending: Option<(u64, Array2<f32>)>,
    in_flight: bool,
    tick: u64,
    stats: SchedulerStats,
    switched: Option<SwitchedPlan>,
}

impl Scheduler {
    /// `n_action_steps`: rows executed per chunk (>= 1). `refill_ahead`: queued actions left
    /// when the next chunk is requested. `ensemble_coeff`: temporal ensembling (a chunk is
    /// requested whenever none is in flight; the queue is unused).
    pub fn new(n_action_steps: usize, refill_ahead: usize, ensemble_coeff: Option<f64>) -> Self {
        Self {
            n_action_steps: n_action_steps.max(1),
            refill_ahead,
            ensembler: ensemble_coeff.map(TemporalEnsembler::new),
            queue: VecDeque::new(),
            pending: None,
            in_flight: false,
            tick: 0,
            stats: SchedulerStats::default(),
            switched: None,
        }
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

    pub fn is_ensembling(&self) -> bool {
        self.ensembler.is_some()
    }

    /// Queued actions (with ensembling: chunks contributing).
    pub fn queue_len(&self) -> usize {
        match &self.ensembler {
            Some(e) => e.len(),
            None => self.queue.len(),
        }
    }

    /// The queued actions, next first (empty with ensembling).
    pub fn queued(&self) -> impl Iterator<Item = &Array1<f32>> {
        self.queue.iter()
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
            None => self.pending.is_none() && self.queue.len() <= self.refill_ahead,
        }
    }

    /// Records that an inference was started on this tick's observation.
    pub fn requested(&mut self) {
        self.in_flight = true;
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
            None => self.pending = Some((obs_tick, chunk)),
        }
    }

    /// The action for the current tick (advancing to the next), or `None`: an overrun.
    pub fn next_action(&mut self) -> Option<Array1<f32>> {
        let tick = self.tick;
        self.tick += 1;
        let action = match &mut self.ensembler {
            Some(e) => e.action_at(tick),
            None => {
                if self.queue.is_empty() {
                    if let Some((t0, chunk)) = self.pending.take() {
                        let skip = (tick - t0) as usize;
                        let end = (skip + self.n_action_steps).min(chunk.nrows());
                        if skip >= end {
                            self.stats.late_chunks += 1;
                        } else {
                            self.queue.extend(
                                chunk
                                    .rows()
                                    .into_iter()
                                    .skip(skip)
                                    .take(end - skip)
                                    .map(|r| r.to_owned()),
                            );
                            self.switched = Some(SwitchedPlan {
                                tick,
                                rows: self.queue.iter().cloned().collect(),
                            });
                        }
                    }
                }
                self.queue.pop_front()
            }
        };
        if action.is_none() {
            self.stats.overruns += 1;
        }
        action
    }

    /// The chunk switched in by the last [`next_action`](Self::next_action) that switched
    /// one in, once (`None` after that, and with temporal ensembling, whose action for a tick
    /// depends on chunks that have not arrived yet).
    pub fn take_switched_plan(&mut self) -> Option<SwitchedPlan> {
        self.switched.take()
    }

    /// Advances one tick without serving it (the tick failed): its action, if any, is
    /// dropped, since its time slot has passed. Not counted as an overrun.
    pub fn skip(&mut self) {
        let overruns = self.stats.overruns;
        self.next_action();
        self.stats.overruns = overruns;
    }

    /// Clears queue, pending chunk, ensembling state, in-flight flag, tick and counters.
    pub fn reset(&mut self) {
        self.queue.clear();
        self.pending = None;
        self.in_flight = false;
        if let Some(e) = &mut self.ensembler {
            e.clear();
        }
        self.tick = 0;
        self.stats = SchedulerStats::default();
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

    #[test]
    fn late_chunk_is_skipped_and_counted() {
        let mut s = Scheduler::new(3, 0, None);
        assert!(s.needs_refill());
        s.requested();
        assert!(!s.needs_refill());
        // nothing arrives for 2 ticks: overruns
        assert_eq!(s.next_action(), None);
        assert_eq!(s.next_action(), None);
        s.deliver(0, chunk(0.0, 3));
        // tick 2: rows 2..3 remain
        assert_eq!(s.next_action().map(|a| a[0]), Some(2.0));
        assert_eq!(s.stats().overruns, 2);
        // a chunk older than its executable rows is dropped
        s.requested();
        s.deliver(0, chunk(0.0, 3));
        assert_eq!(s.next_action(), None);
        assert_eq!(s.stats().late_chunks, 1);
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
