//! The health of an adapter's link to an inference server, shared between the adapter (which
//! lives on the refill worker thread) and whoever reports it (`/diagnostics`, summaries).
//!
//! Compiled with or without the `remote` feature, so the reporting side needs no `#[cfg]`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Round trips kept for the percentiles (the most recent ones).
const RTT_WINDOW: usize = 1024;

/// What the adapter knows about the server right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerState {
    /// Not contacted yet.
    #[default]
    Unknown,
    /// The last call was answered.
    Ready,
    /// The server cannot be reached (or is not ready); calls are retried with backoff.
    Unavailable,
    /// The server answered, but the last call failed (timeout, bad answer, server error).
    Degraded,
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerState::Unknown => "unknown",
            ServerState::Ready => "ready",
            ServerState::Unavailable => "unavailable",
            ServerState::Degraded => "degraded",
        })
    }
}

/// Why a call failed, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFault {
    /// The deadline (`remote_timeout_ms`) passed before the answer.
    Timeout,
    /// No connection (refused, reset, dropped), or the server or model is not ready.
    Unavailable,
    /// Not sent: the link is down and the next attempt is not due yet (backoff).
    Skipped,
    /// The answer was malformed: a missing output, a wrong size or type, a non-finite value.
    BadAnswer,
    /// The server refused or failed the request (a gRPC error status).
    Server,
}

/// A snapshot of the link: state, round-trip times and counts since the adapter was loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkStatus {
    pub url: String,
    pub model: String,
    /// Server name and version from `ServerMetadata` (empty when the server gave none).
    pub server: String,
    pub state: ServerState,
    /// Round trip of the last answered call.
    pub rtt_last: Duration,
    /// Mean and 99th percentile over the last answered calls (up to 1024).
    pub rtt_mean: Duration,
    pub rtt_p50: Duration,
    pub rtt_p99: Duration,
    /// Inference calls attempted (skipped ones included) and answered with a usable result.
    pub calls: u64,
    pub ok: u64,
    pub timeouts: u64,
    pub unavailable: u64,
    pub skipped: u64,
    pub bad_answers: u64,
    pub server_errors: u64,
    /// New connections made after the link was lost.
    pub reconnects: u64,
    /// The last failure, with the URL, model and tensor where they apply.
    pub last_error: Option<String>,
    /// The server's own inference time of the last answered call, where the protocol
    /// reports it (openpi's `server_timing.infer_ms`).
    pub server_infer_ms: Option<f64>,
}

impl LinkStatus {
    /// Failed calls of every kind.
    pub fn errors(&self) -> u64 {
        self.timeouts + self.unavailable + self.skipped + self.bad_answers + self.server_errors
    }
}

#[derive(Debug, Default)]
struct Inner {
    status: LinkStatus,
    rtt: VecDeque<Duration>,
    since_change: Option<Instant>,
}

/// A cloneable handle on a link's health: the adapter records, readers take [`snapshot`]s.
///
/// [`snapshot`]: ServerLink::snapshot
#[derive(Debug, Clone, Default)]
pub struct ServerLink(Arc<Mutex<Inner>>);

impl ServerLink {
    /// A link to `model` on the server at `url`.
    pub fn new(url: &str, model: &str) -> Self {
        let link = Self::default();
        {
            let mut g = link.lock();
            g.status.url = url.to_string();
            g.status.model = model.to_string();
        }
        link
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state and counters.
    pub fn snapshot(&self) -> LinkStatus {
        let g = self.lock();
        let mut s = g.status.clone();
        if !g.rtt.is_empty() {
            let mut v: Vec<Duration> = g.rtt.iter().copied().collect();
            let total: Duration = v.iter().sum();
            s.rtt_mean = total / v.len() as u32;
            v.sort_unstable();
            let pct = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
            s.rtt_p50 = pct(0.50);
            s.rtt_p99 = pct(0.99);
        }
        s
    }

    /// Sets the server's name and version.
    pub fn set_server(&self, server: &str) {
        self.lock().status.server = server.to_string();
    }

    /// Sets the state; returns the previous one.
    pub fn set_state(&self, state: ServerState) -> ServerState {
        let mut g = self.lock();
        if g.status.state != state {
            g.since_change = Some(Instant::now());
        }
        std::mem::replace(&mut g.status.state, state)
    }

    /// An inference call answered with a usable result after `rtt`.
    pub fn record_ok(&self, rtt: Duration) {
        let mut g = self.lock();
        g.status.calls += 1;
        g.status.ok += 1;
        g.status.rtt_last = rtt;
        if g.rtt.len() == RTT_WINDOW {
            g.rtt.pop_front();
        }
        g.rtt.push_back(rtt);
        if g.status.state != ServerState::Ready {
            g.status.state = ServerState::Ready;
            g.since_change = Some(Instant::now());
        }
    }

    /// A failed inference call.
    pub fn record_fault(&self, fault: CallFault, error: &str) {
        let mut g = self.lock();
        g.status.calls += 1;
        match fault {
            CallFault::Timeout => g.status.timeouts += 1,
            CallFault::Unavailable => g.status.unavailable += 1,
            CallFault::Skipped => g.status.skipped += 1,
            CallFault::BadAnswer => g.status.bad_answers += 1,
            CallFault::Server => g.status.server_errors += 1,
        }
        g.status.last_error = Some(error.to_string());
    }

    /// The server's own timing of the last answered call.
    pub fn set_server_infer_ms(&self, ms: Option<f64>) {
        self.lock().status.server_infer_ms = ms;
    }

    /// A new connection after the link was lost.
    pub fn record_reconnect(&self) {
        self.lock().status.reconnects += 1;
    }

    /// How long the link has been in its current state (`None` before the first change).
    pub fn in_state_for(&self) -> Option<Duration> {
        self.lock().since_change.map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_percentiles() {
        let link = ServerLink::new("http://gpu:8001", "act");
        assert_eq!(link.snapshot().state, ServerState::Unknown);
        for ms in 1..=100u64 {
            link.record_ok(Duration::from_millis(ms));
        }
        link.record_fault(CallFault::Timeout, "deadline");
        link.record_fault(CallFault::Unavailable, "refused");
        link.record_fault(CallFault::Skipped, "backoff");
        let s = link.snapshot();
        assert_eq!(
            (s.url.as_str(), s.model.as_str()),
            ("http://gpu:8001", "act")
        );
        assert_eq!(s.state, ServerState::Ready);
        assert_eq!((s.calls, s.ok, s.errors()), (103, 100, 3));
        assert_eq!(s.rtt_last, Duration::from_millis(100));
        assert_eq!(s.rtt_p50, Duration::from_millis(51));
        assert_eq!(s.rtt_p99, Duration::from_millis(99));
        assert_eq!(s.rtt_mean, Duration::from_micros(50_500));
        assert_eq!(s.last_error.as_deref(), Some("backoff"));
        assert_eq!(link.set_state(ServerState::Unavailable), ServerState::Ready);
        assert_eq!(link.snapshot().state.to_string(), "unavailable");
        // The window keeps the most recent round trips only.
        for _ in 0..RTT_WINDOW {
            link.record_ok(Duration::from_millis(7));
        }
        assert_eq!(link.snapshot().rtt_p99, Duration::from_millis(7));
    }
}
