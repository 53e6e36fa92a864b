//! Logging: the `log` records of the library (policy, runtime, control) go to ROS logging
//! (rcutils: console and `~/.ros/log`) under the node's logger name, and a per-key throttle
//! keeps per-message warnings (rejected messages, stale ticks) to one line per period.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// A `log::Log` that forwards to `r2r::log` (rcutils) under one logger name.
struct RosLogger {
    logger: String,
}

impl Log for RosLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string().replace('\0', "\\0");
        if record.target().starts_with("r2r") {
            // r2r logs through `log` from inside its logging lock: never route those back
            // into rcutils.
            eprintln!("[{}] [{}] [r2r]: {msg}", record.level(), self.logger);
            return;
        }
        let severity = match record.level() {
            Level::Error => r2r::LogSeverity::Error,
            Level::Warn => r2r::LogSeverity::Warn,
            Level::Info => r2r::LogSeverity::Info,
            Level::Debug | Level::Trace => r2r::LogSeverity::Debug,
        };
        r2r::log(
            &msg,
            &self.logger,
            record.file().unwrap_or(""),
            record.line().unwrap_or(0),
            severity,
        );
    }

    fn flush(&self) {}
}

/// Routes `log` records to ROS logging under `logger` (normally the node name). The level
/// comes from `RUST_LOG` (`error`, `warn`, `info`, `debug`, `trace`), else from the ROS
/// `--log-level` given as `ros_level` (`fatal` counts as `error`), else `info`; rcutils then
/// filters by its own level. A second call is a no-op.
pub fn init(logger: &str, ros_level: Option<&str>) {
    let parse = |v: &str| match v.trim() {
        "fatal" => Some(LevelFilter::Error),
        v => v.parse::<LevelFilter>().ok(),
    };
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| parse(&v))
        .or_else(|| ros_level.and_then(parse))
        .unwrap_or(LevelFilter::Info);
    if log::set_boxed_logger(Box::new(RosLogger {
        logger: logger.to_string(),
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
}

/// One report per key per period; counts what it held back.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    keys: HashMap<String, (Instant, u64)>,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            keys: HashMap::new(),
        }
    }

    /// `Some(suppressed)` when a report for `key` is due at `now` (the number of events held
    /// back since the previous report), `None` when it is held back.
    pub fn check(&mut self, key: &str, now: Instant) -> Option<u64> {
        match self.keys.get_mut(key) {
            Some((last, held)) if now.saturating_duration_since(*last) < self.period => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let n = *held;
                *last = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.keys.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }

    /// Forgets `key`, so its next event is reported at once (e.g. when a condition cleared).
    pub fn clear(&mut self, key: &str) {
        self.keys.remove(key);
    }
}

/// " (N more since the last report)" or "".
pub fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last report)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_reports_once_per_period_and_counts() {
        let mut t = Throttle::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert_eq!(t.check("a", t0), Some(0));
        assert_eq!(t.check("a", t0 + Duration::from_millis(500)), None);
        assert_eq!(t.check("a", t0 + Duration::from_millis(1500)), None);
        assert_eq!(t.check("b", t0 + Duration::from_millis(1500)), Some(0));
        assert_eq!(t.check("a", t0 + Duration::from_millis(2000)), Some(2));
        assert_eq!(t.check("a", t0 + Duration::from_millis(2100)), None);
        t.clear("a");
        assert_eq!(t.check("a", t0 + Duration::from_millis(2200)), Some(0));
        assert_eq!(held_back(0), "");
        assert_eq!(held_back(3), " (3 more since the last report)");
    }
}
