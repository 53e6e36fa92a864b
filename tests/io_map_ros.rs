//! The I/O map in the node over DDS (`io_map_ros/node.rs`) and in replay, offline and live
//! (`io_map_ros/replay.rs`). One test binary for both.
#![cfg(all(feature = "ros", feature = "onnx"))]

mod common;

/// The live tests of this binary run one at a time: each one's node, peers and player share
/// two cores, and timing (a tick lost to a starved node) is not what they test.
static LIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn live() -> std::sync::MutexGuard<'static, ()> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

#[path = "io_map_ros/node.rs"]
mod node;
#[path = "io_map_ros/replay.rs"]
mod replay;
