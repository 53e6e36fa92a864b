//! What the node measures about itself for the exit summary and `/diagnostics`: commands
//! published (never cleared by `~/reset`), the achieved command rate, and the tick latency
//! (timer wake-up -> command published), in total and split by what the tick did: served an
//! action from the queue, requested the next chunk (in synchronous mode: computed it), or
//! found no action ready (an overrun: timer wake-up -> tick handled, nothing published).

use std::time::{Duration, Instant};

/// Tick latency samples kept for percentiles, per series (beyond this, only count and max
/// are kept: ~5.8 h at 50 Hz, 8 MB).
const MAX_SAMPLES: usize = 1 << 20;

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

/// One latency series: samples (ns) for percentiles, count and max.
#[derive(Debug, Clone, Default)]
struct Series {
    ns: Vec<u64>,
    count: u64,
    max_ns: u64,
}

impl Series {
    fn push(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
        if self.ns.len() < MAX_SAMPLES {
            self.ns.push(ns);
        }
    }

    fn summary(&self) -> LatencySummary {
        if self.ns.is_empty() {
            return LatencySummary::default();
        }
        let mut v = self.ns.clone();
        v.sort_unstable();
        let pct = |p: f64| Duration::from_nanos(v[(((v.len() - 1) as f64) * p).round() as usize]);
        LatencySummary {
            count: self.count,
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            max: Duration::from_nanos(self.max_ns),
        }
    }
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
    pub errors: u64,
    pub disabled: u64,
    first_tick: Option<Instant>,
    last_tick: Option<Instant>,
    first_command: Option<Instant>,
    last_command: Option<Instant>,
    /// Tick latency of ticks that published a command, all of them and by kind.
    latency: Series,
    queue: Series,
    refill: Series,
    /// Timer wake-up -> tick handled, of overrun ticks.
    overrun: Series,
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

    /// A timer tick at `at`.
    pub fn tick(&mut self, at: Instant) {
        self.ticks += 1;
        self.first_tick.get_or_insert(at);
        self.last_tick = Some(at);
    }

    /// A command published at `at`, `latency` after the timer woke the tick; `kind` is
    /// [`TickKind::Queue`] or [`TickKind::Refill`].
    pub fn command(&mut self, at: Instant, latency: Duration, kind: TickKind) {
        self.commands += 1;
        self.first_command.get_or_insert(at);
        self.last_command = Some(at);
        self.latency.push(latency);
        match kind {
            TickKind::Refill => self.refill.push(latency),
            TickKind::Queue | TickKind::Overrun => self.queue.push(latency),
        }
    }

    /// An overrun tick, handled `latency` after the timer woke it.
    pub fn overrun(&mut self, latency: Duration) {
        self.overruns += 1;
        self.overrun.push(latency);
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

    #[test]
    fn rates_and_percentiles() {
        let mut s = RunStats::new();
        assert_eq!(s.command_rate_hz(), 0.0);
        assert_eq!(s.latency(), LatencySummary::default());
        let t0 = Instant::now();
        for i in 0..101u64 {
            let at = t0 + Duration::from_millis(20 * i);
            s.tick(at);
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
        assert_eq!(l.p50, Duration::from_micros(51));
        assert_eq!(l.p90, Duration::from_micros(91));
        assert_eq!(l.p99, Duration::from_micros(100));
        assert_eq!(l.max, Duration::from_micros(101));
        // Refill ticks: i = 0, 10, .., 100 (latency i + 1); the queue ticks are the rest.
        let r = s.latency_of(TickKind::Refill);
        assert_eq!(
            (r.count, r.p50, r.max),
            (11, Duration::from_micros(51), Duration::from_micros(101))
        );
        let q = s.latency_of(TickKind::Queue);
        assert_eq!((q.count, q.max), (90, Duration::from_micros(100)));
        let o = s.latency_of(TickKind::Overrun);
        assert_eq!((o.count, o.p99), (1, Duration::from_micros(7)));
        assert_eq!(ms(Duration::from_micros(1500)), "1.500");
        assert_eq!(o.ms(), "0.007/0.007/0.007/0.007");
    }
}
