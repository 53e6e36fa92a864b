//! What the node measures about itself for the exit summary and `/diagnostics`: commands
//! published (never cleared by `~/reset`), the achieved command rate, and the tick latency
//! (timer wake-up -> command published), in total and split by what the tick did: served an
//! action from the queue, requested the next chunk (in synchronous mode: computed it), or
//! found no action ready (an overrun: timer wake-up -> tick handled, nothing published).
//! Latencies go into fixed-size histograms, so the memory used does not grow with the run;
//! a rolling [`WINDOW`] gives the same figures per minute.

use std::time::{Duration, Instant};

/// Length of the rolling window reported on `/diagnostics` (`window_*` keys).
pub const WINDOW: Duration = Duration::from_secs(60);

/// What a tick did, for the latency breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickKind {
    /// Published an action taken from the queue; no chunk was requested on this tick.
    Queue,
    /// Published an action and requested the next chunk on this tick (in synchronous mode
    /// the chunk was computed on the tick).
    Refill,
    /// No action was ready: nothing published.
    Overrun,
}

/// Exact below 128 ns, then 64 buckets per power of two.
const EXACT: u64 = 128;
const SUB: u64 = 64;
const BUCKETS: usize = (EXACT + (64 - 7) * SUB) as usize;

/// A latency histogram of fixed size (30 kB, whatever the run length): percentiles within
/// 1/64 (1.6 %) of the true value, count and max exact.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    min_ns: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }
}

impl Histogram {
    fn bucket(ns: u64) -> usize {
        if ns < EXACT {
            return ns as usize;
        }
        let e = 63 - u64::from(ns.leading_zeros()); // >= 7
        let sub = (ns >> (e - 6)) & (SUB - 1);
        (EXACT + (e - 7) * SUB + sub) as usize
    }

    /// The middle of bucket `b`.
    fn value(b: usize) -> u64 {
        let b = b as u64;
        if b < EXACT {
            return b;
        }
        let e = (b - EXACT) / SUB + 7;
        let sub = (b - EXACT) % SUB;
        let width = 1u64 << (e - 6);
        ((SUB + sub) << (e - 6)) + width / 2
    }

    fn push(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(ns)] += 1;
        self.count += 1;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// The `p` quantile: the sample of rank `round((n - 1) p)`, to the bucket's precision.
    fn quantile(&self, p: f64) -> Duration {
        let rank = (((self.count - 1) as f64) * p).round() as u64;
        let mut seen = 0u64;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Duration::from_nanos(Self::value(b).clamp(self.min_ns, self.max_ns));
            }
        }
        Duration::from_nanos(self.max_ns)
    }

    fn summary(&self) -> LatencySummary {
        if self.count == 0 {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.count,
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            max: Duration::from_nanos(self.max_ns),
        }
    }

    fn clear(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.min_ns = u64::MAX;
        self.max_ns = 0;
    }
}

/// The ticks of one [`WINDOW`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowSummary {
    /// Windows completed since start (this one included).
    pub index: u64,
    /// Its length (about [`WINDOW`]).
    pub length: Duration,
    /// Timer ticks handled, and ticks lost (timer periods with no tick).
    pub ticks: u64,
    pub lost_ticks: u64,
    pub commands: u64,
    pub stale: u64,
    pub overruns: u64,
    /// Ticks waiting for a plan's first chunk (not missed deadlines).
    pub waiting: u64,
    pub errors: u64,
    /// Command ticks that took longer than the control period (timer -> published).
    pub late_ticks: u64,
    /// Tick latency of the command ticks, and of those served from the queue.
    pub latency: LatencySummary,
    pub queue: LatencySummary,
}

/// Counters at the start of the current window.
#[derive(Debug, Clone, Default)]
struct Window {
    started: Option<Instant>,
    ticks: u64,
    lost_ticks: u64,
    commands: u64,
    stale: u64,
    overruns: u64,
    waiting: u64,
    errors: u64,
    late_ticks: u64,
    latency: Histogram,
    queue: Histogram,
}

/// Command and tick-latency statistics since start.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Commands published.
    pub commands: u64,
    /// Timer ticks handled.
    pub ticks: u64,
    /// Ticks without a command, by reason (never cleared by `~/reset`).
    pub stale: u64,
    pub overruns: u64,
    /// Ticks waiting for a plan's first chunk (at start, after a reset or a stale gap).
    pub waiting: u64,
    pub errors: u64,
    pub disabled: u64,
    /// Ticks without an episode (`episode_mode: goal`).
    pub idle: u64,
    /// Ticks held back by the e-stop or the watchdog.
    pub halted: u64,
    /// Timer periods that passed without a tick (the timer fired late, more than one period
    /// after the previous tick): the tick loop was held up.
    pub lost_ticks: u64,
    /// Command ticks whose latency (timer -> published) exceeded the control period.
    pub late_ticks: u64,
    /// The control period (zero: not known, no lost or late ticks counted).
    period: Duration,
    /// The current run of the timer (an activation): its first tick, its ticks, and the lost
    /// ticks of the runs before it.
    run_first: Option<Instant>,
    run_ticks: u64,
    lost_before: u64,
    first_tick: Option<Instant>,
    last_tick: Option<Instant>,
    first_command: Option<Instant>,
    last_command: Option<Instant>,
    /// Tick latency of ticks that published a command, all of them and by kind.
    latency: Histogram,
    queue: Histogram,
    refill: Histogram,
    /// Timer wake-up -> tick handled, of overrun ticks.
    overrun: Histogram,
    window: Window,
    windows: u64,
    last_window: Option<WindowSummary>,
}

/// Percentiles of the tick latency.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl LatencySummary {
    /// `p50/p90/p99/max` in milliseconds.
    pub fn ms(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

impl RunStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Statistics of a loop running every `period`: ticks later than a period (lost, late)
    /// are counted.
    pub fn with_period(period: Duration) -> Self {
        Self {
            period,
            ..Self::default()
        }
    }

    /// A new run of the timer (the node activated) at `period`: lost ticks are counted from
    /// its first tick, so the time spent inactive is not counted as lost.
    pub fn start_run(&mut self, period: Duration) {
        self.period = period;
        self.lost_before = self.lost_ticks;
        self.run_first = None;
        self.run_ticks = 0;
    }

    /// A timer tick at `at`. With `wall_clock` (the timer runs on wall time, not sim time),
    /// lost ticks are counted: the whole periods elapsed since the first tick (by this
    /// process's steady clock, rounded: a tick up to half a period late is late, not lost)
    /// less the ticks after it. A period with no tick is one the timer skipped (called more
    /// than a period late) or fired while the previous tick was still waiting to be handled.
    /// Returns the ticks newly lost before this one (0 almost always).
    pub fn tick(&mut self, at: Instant, wall_clock: bool) -> u64 {
        let lost_before_tick = self.lost_ticks;
        self.ticks += 1;
        self.run_ticks += 1;
        if let (true, false, Some(first)) = (wall_clock, self.period.is_zero(), self.run_first) {
            let period = self.period.as_nanos();
            let elapsed = at.saturating_duration_since(first).as_nanos();
            let periods = u64::try_from((elapsed + period / 2) / period).unwrap_or(u64::MAX);
            self.lost_ticks = self.lost_before + periods.saturating_sub(self.run_ticks - 1);
        }
        self.run_first.get_or_insert(at);
        self.first_tick.get_or_insert(at);
        self.last_tick = Some(at);
        self.window.started.get_or_insert(at);
        self.lost_ticks.saturating_sub(lost_before_tick)
    }

    /// When the previous tick woke (`None` before the first).
    pub fn last_tick(&self) -> Option<Instant> {
        self.last_tick
    }

    /// A command published at `at`, `latency` after the timer woke the tick; `kind` is
    /// [`TickKind::Queue`] or [`TickKind::Refill`]. Returns whether the tick was late (took
    /// longer than the period).
    pub fn command(&mut self, at: Instant, latency: Duration, kind: TickKind) -> bool {
        self.commands += 1;
        self.first_command.get_or_insert(at);
        self.last_command = Some(at);
        self.latency.push(latency);
        self.window.latency.push(latency);
        match kind {
            TickKind::Refill => self.refill.push(latency),
            TickKind::Queue | TickKind::Overrun => {
                self.queue.push(latency);
                self.window.queue.push(latency);
            }
        }
        let late = !self.period.is_zero() && latency > self.period;
        if late {
            self.late_ticks += 1;
        }
        late
    }

    /// An overrun tick, handled `latency` after the timer woke it.
    pub fn overrun(&mut self, latency: Duration) {
        self.overruns += 1;
        self.overrun.push(latency);
    }

    /// Closes the current window if it is at least [`WINDOW`] old at `now`; returns the
    /// newest completed window.
    pub fn roll_window(&mut self, now: Instant) -> Option<WindowSummary> {
        if let Some(started) = self.window.started {
            let length = now.saturating_duration_since(started);
            if length >= WINDOW {
                self.windows += 1;
                let w = &self.window;
                self.last_window = Some(WindowSummary {
                    index: self.windows,
                    length,
                    ticks: self.ticks - w.ticks,
                    lost_ticks: self.lost_ticks - w.lost_ticks,
                    commands: self.commands - w.commands,
                    stale: self.stale - w.stale,
                    overruns: self.overruns - w.overruns,
                    waiting: self.waiting - w.waiting,
                    errors: self.errors - w.errors,
                    late_ticks: self.late_ticks - w.late_ticks,
                    latency: w.latency.summary(),
                    queue: w.queue.summary(),
                });
                let (mut latency, mut queue) = (
                    std::mem::take(&mut self.window.latency),
                    std::mem::take(&mut self.window.queue),
                );
                latency.clear();
                queue.clear();
                self.window = Window {
                    started: Some(now),
                    ticks: self.ticks,
                    lost_ticks: self.lost_ticks,
                    commands: self.commands,
                    stale: self.stale,
                    overruns: self.overruns,
                    waiting: self.waiting,
                    errors: self.errors,
                    late_ticks: self.late_ticks,
                    latency,
                    queue,
                };
            }
        }
        self.last_window
    }

    /// Commands per second between the first and the last command (gaps included); 0 with
    /// fewer than two commands.
    pub fn command_rate_hz(&self) -> f64 {
        rate(self.commands, self.first_command, self.last_command)
    }

    /// Timer ticks per second between the first and the last tick.
    pub fn tick_rate_hz(&self) -> f64 {
        rate(self.ticks, self.first_tick, self.last_tick)
    }

    /// Tick latency percentiles over the ticks that published a command.
    pub fn latency(&self) -> LatencySummary {
        self.latency.summary()
    }

    /// Tick latency percentiles over the ticks of one kind (overruns: wake-up -> handled).
    pub fn latency_of(&self, kind: TickKind) -> LatencySummary {
        match kind {
            TickKind::Queue => self.queue.summary(),
            TickKind::Refill => self.refill.summary(),
            TickKind::Overrun => self.overrun.summary(),
        }
    }
}

fn rate(n: u64, first: Option<Instant>, last: Option<Instant>) -> f64 {
    match (first, last) {
        (Some(a), Some(b)) if n >= 2 && b > a => (n - 1) as f64 / (b - a).as_secs_f64(),
        _ => 0.0,
    }
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within the histogram's precision (1/64) of `expect`.
    fn near(d: Duration, expect: Duration) -> bool {
        let (a, b) = (d.as_nanos() as f64, expect.as_nanos() as f64);
        (a - b).abs() <= b / 64.0 + 1.0
    }

    #[test]
    fn rates_and_percentiles() {
        let mut s = RunStats::new();
        assert_eq!(s.command_rate_hz(), 0.0);
        assert_eq!(s.latency(), LatencySummary::default());
        let t0 = Instant::now();
        for i in 0..101u64 {
            let at = t0 + Duration::from_millis(20 * i);
            s.tick(at, false);
            let kind = if i % 10 == 0 {
                TickKind::Refill
            } else {
                TickKind::Queue
            };
            s.command(at, Duration::from_micros(i + 1), kind);
        }
        s.overrun(Duration::from_micros(7));
        assert_eq!(s.commands, 101);
        assert_eq!(s.overruns, 1);
        assert!((s.command_rate_hz() - 50.0).abs() < 1e-9);
        assert!((s.tick_rate_hz() - 50.0).abs() < 1e-9);
        let l = s.latency();
        assert_eq!(l.count, 101);
        let us = Duration::from_micros;
        assert!(near(l.p50, us(51)), "{l:?}");
        assert!(near(l.p90, us(91)), "{l:?}");
        assert!(near(l.p99, us(100)), "{l:?}");
        assert_eq!(l.max, us(101));
        // Refill ticks: i = 0, 10, .., 100 (latency i + 1); the queue ticks are the rest.
        let r = s.latency_of(TickKind::Refill);
        assert_eq!((r.count, r.max), (11, us(101)));
        assert!(near(r.p50, us(51)), "{r:?}");
        let q = s.latency_of(TickKind::Queue);
        assert_eq!((q.count, q.max), (90, us(100)));
        let o = s.latency_of(TickKind::Overrun);
        assert_eq!((o.count, o.p99), (1, us(7)));
        assert_eq!(ms(Duration::from_micros(1500)), "1.500");
        assert_eq!(o.ms(), "0.007/0.007/0.007/0.007");
    }

    #[test]
    fn histogram_buckets_are_ordered_and_tight() {
        let mut last = 0;
        for ns in (0..20_000u64)
            .chain((1..60).map(|e| 1u64 << e))
            .chain([u64::MAX])
        {
            let b = Histogram::bucket(ns);
            assert!(b < BUCKETS, "{ns}");
            assert!(b >= last || ns < 20_000, "{ns}");
            last = b;
            let v = Histogram::value(b);
            assert!(
                (v as f64 - ns as f64).abs() <= ns as f64 / 64.0 + 1.0,
                "{ns} -> bucket {b} -> {v}"
            );
        }
        // The memory does not grow with the samples.
        let mut h = Histogram::default();
        for i in 0..1_000_000u64 {
            h.push(Duration::from_nanos(i * 97));
        }
        assert_eq!(h.counts.len(), BUCKETS);
        assert_eq!(h.count, 1_000_000);
    }

    #[test]
    fn lost_and_late_ticks_and_windows() {
        let period = Duration::from_millis(10);
        let mut s = RunStats::with_period(period);
        let t0 = Instant::now();
        s.tick(t0, true);
        s.tick(t0 + period, true);
        // A tick 0.4 periods late is late, not lost.
        s.tick(t0 + period * 24 / 10, true);
        s.tick(t0 + 3 * period, true);
        assert_eq!(s.lost_ticks, 0);
        // Periods 4 and 5 passed without a tick.
        assert_eq!(s.tick(t0 + 6 * period, true), 2);
        assert_eq!(s.lost_ticks, 2);
        assert_eq!(s.tick(t0 + 7 * period, true), 0);
        assert_eq!(s.lost_ticks, 2);
        assert_eq!(s.last_tick(), Some(t0 + 7 * period));
        assert_eq!(s.tick(t0 + 9 * period, true), 1);
        assert_eq!(s.lost_ticks, 3);
        // On sim time nothing is counted.
        let mut sim = RunStats::with_period(period);
        sim.tick(t0, false);
        sim.tick(t0 + 5 * period, false);
        assert_eq!(sim.lost_ticks, 0);
        assert!(!s.command(t0, Duration::from_millis(2), TickKind::Queue));
        assert!(s.command(t0, Duration::from_millis(11), TickKind::Refill));
        assert_eq!(s.late_ticks, 1);
        assert!(s.roll_window(t0 + Duration::from_secs(1)).is_none());
        let w = s
            .roll_window(t0 + WINDOW + Duration::from_millis(5))
            .expect("a window");
        assert_eq!(
            (w.index, w.ticks, w.lost_ticks, w.commands, w.late_ticks),
            (1, 7, 3, 2, 1)
        );
        assert_eq!(w.queue.count, 1);
        assert!(near(w.latency.max, Duration::from_millis(11)));
        // The next window starts empty.
        s.tick(t0 + 10 * period, true);
        let w2 = s
            .roll_window(t0 + 2 * WINDOW + Duration::from_millis(10))
            .unwrap();
        assert_eq!(
            (w2.index, w2.ticks, w2.commands, w2.lost_ticks),
            (2, 1, 0, 0)
        );
        assert_eq!(w2.latency, LatencySummary::default());
    }
}
