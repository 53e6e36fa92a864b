//! The ROS 2 node (feature `ros`): r2r wiring around the ROS-free [`crate::control`] loop.
//!
//! | piece | here |
//! |---|---|
//! | parameters (`--ros-args -p`, `--params-file`) -> [`crate::control::NodeParams`] | [`params`] |
//! | messages <-> control-loop types, `/diagnostics` | [`convert`] (plain functions) |
//! | subscriptions, control timer, publishers, `~/reset`, `~/enable`, signals | [`node`] |
//! | `log` -> ROS logging, throttled warnings | [`logging`] |
//! | commands, achieved rate, tick latency for the exit summary | [`stats`] |
//!
//! Interface (the contract of `design.md`): node `policy_node`; subscribes `joint_state_topic`
//! (`sensor_msgs/JointState`) and each of `camera_topics` (`sensor_msgs/Image`, or
//! `sensor_msgs/CompressedImage` for a topic ending in `/compressed`) with sensor-data QoS;
//! publishes commands on `command_topic` as `command_type` at `control_rate_hz` (ROS time, so
//! `use_sim_time` follows `/clock`) and status on `/diagnostics` at 1 Hz; serves `~/reset`
//! (`std_srvs/srv/Trigger`) and `~/enable` (`std_srvs/srv/SetBool`).

pub mod convert;
pub mod logging;
pub mod node;
pub mod params;
pub mod stats;

pub use node::{run, NodeError, Summary, NODE_NAME};
pub use params::Cli;
