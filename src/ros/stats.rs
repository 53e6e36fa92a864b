//! What the node measures about itself for the exit summary and `/diagnostics`: commands
//! published (never cleared by `~/reset`), the achieved command rate, and the tick latency
//! (timer wake-up -> command published).

use std::time::{Duration, Instant};

/// Tick latency samples kept for percentiles (beyond this, only count and max are kept:
/// ~10 h at 30 Hz, 4 MB).
const MAX_SAMPLES: usize = 1 << 20;

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
    /// Tick latency samples (ns) of ticks that published a command.
    latency_ns: Vec<u64>,
    latency_max_ns: u64,
}

/// Percentiles of the tick latency.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
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

    /// A command published at `at`, `latency` after the timer woke the tick.
    pub fn command(&mut self, at: Instant, latency: Duration) {
        self.commands += 1;
        self.first_command.get_or_insert(at);
        self.last_command = Some(at);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_max_ns = self.latency_max_ns.max(ns);
        if self.latency_ns.len() < MAX_SAMPLES {
            self.latency_ns.push(ns);
        }
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
        if self.latency_ns.is_empty() {
            return LatencySummary::default();
        }
        let mut v = self.latency_ns.clone();
        v.sort_unstable();
        let pct = |p: f64| Duration::from_nanos(v[(((v.len() - 1) as f64) * p).round() as usize]);
        LatencySummary {
            count: self.commands,
            p50: pct(0.50),
            p99: pct(0.99),
            max: Duration::from_nanos(self.latency_max_ns),
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
            s.command(at, Duration::from_micros(i + 1));
        }
        assert_eq!(s.commands, 101);
        assert!((s.command_rate_hz() - 50.0).abs() < 1e-9);
        assert!((s.tick_rate_hz() - 50.0).abs() < 1e-9);
        let l = s.latency();
        assert_eq!(l.count, 101);
        assert_eq!(l.p50, Duration::from_micros(51));
        assert_eq!(l.p99, Duration::from_micros(100));
        assert_eq!(l.max, Duration::from_micros(101));
        assert_eq!(ms(Duration::from_micros(1500)), "1.500");
    }
}
