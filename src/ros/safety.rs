//! `~/estop` (`std_msgs/Bool`), `~/intervention` (`std_msgs/Bool`) and `~/heartbeat`
//! (`std_msgs/Empty`): the node's feeds of the e-stop latch, the takeover and the watchdog
//! ([`crate::control::safety`]). Both topics exist from start,
//! whatever the lifecycle state: an e-stop sent while the node is inactive is latched too.

use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, StreamExt};
use r2r::std_msgs::msg::{Bool, Empty};
use r2r::QosProfile;

use crate::control::safety::Safety;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The two subscriptions.
pub(super) struct SafetyTopics {
    pub estop: std::pin::Pin<Box<dyn Stream<Item = Bool>>>,
    pub intervention: std::pin::Pin<Box<dyn Stream<Item = Bool>>>,
    pub heartbeat: std::pin::Pin<Box<dyn Stream<Item = Empty>>>,
}

/// Subscribes to `~/estop` (reliable, depth 10: an e-stop must not be dropped) and
/// `~/heartbeat`.
pub(super) fn subscribe(node: &mut r2r::Node) -> Result<SafetyTopics, (String, r2r::Error)> {
    let estop = node
        .subscribe::<Bool>("~/estop", QosProfile::default())
        .map_err(|e| ("subscribe to ~/estop".to_string(), e))?;
    let intervention = node
        .subscribe::<Bool>("~/intervention", QosProfile::default())
        .map_err(|e| ("subscribe to ~/intervention".to_string(), e))?;
    let heartbeat = node
        .subscribe::<Empty>("~/heartbeat", QosProfile::default())
        .map_err(|e| ("subscribe to ~/heartbeat".to_string(), e))?;
    Ok(SafetyTopics {
        estop: Box::pin(estop),
        intervention: Box::pin(intervention),
        heartbeat: Box::pin(heartbeat),
    })
}

/// `~/estop`: `true` latches (logged once per latch); `false` is only logged.
pub(super) async fn estop_feed(
    safety: Arc<Mutex<Safety>>,
    mut stream: std::pin::Pin<Box<dyn Stream<Item = Bool>>>,
) {
    while let Some(msg) = stream.next().await {
        let (latched, was) = {
            let mut s = lock(&safety);
            let was = s.estop_latched();
            (s.estop(msg.data), was)
        };
        if latched {
            log::error!("E-STOP on ~/estop: no commands (each channel's on_stop once); only ~/reset clears the latch");
        } else if !msg.data && was {
            log::warn!("~/estop false: the latch stays until ~/reset");
        }
    }
}

/// `~/intervention`: a human takes over (`true`) or hands back (`false`); logged on change.
pub(super) async fn intervention_feed(
    safety: Arc<Mutex<Safety>>,
    mut stream: std::pin::Pin<Box<dyn Stream<Item = Bool>>>,
) {
    while let Some(msg) = stream.next().await {
        if lock(&safety).intervention(msg.data) {
            if msg.data {
                log::warn!("~/intervention true: a human drives; the policy commands nothing");
            } else {
                log::info!("~/intervention false: the policy resumes from a fresh chunk");
            }
        }
    }
}

/// `~/heartbeat`: each message stamped with the node's clock.
pub(super) async fn heartbeat_feed(
    safety: Arc<Mutex<Safety>>,
    now_ns: impl Fn() -> i64,
    mut stream: std::pin::Pin<Box<dyn Stream<Item = Empty>>>,
) {
    while stream.next().await.is_some() {
        let now = now_ns();
        lock(&safety).heartbeat(now);
    }
}
