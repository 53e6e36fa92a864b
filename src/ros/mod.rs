//! The ROS 2 node (feature `ros`): r2r wiring around the ROS-free [`crate::control`] loop.
//!
//! | piece | here |
//! |---|---|
//! | parameters (`--ros-args -p`, `--params-file`) -> [`crate::control::NodeParams`] | [`params`] |
//! | parameter services (`ros2 param list/get/describe/set`), descriptors, `/parameter_events` | [`param_services`] |
//! | the managed-node state machine (states, transitions, ids, labels), ROS-free | [`lifecycle`] |
//! | messages <-> control-loop types, `/diagnostics` | [`convert`] (plain functions) |
//! | lifecycle services, subscriptions, control timer, publishers, `~/reset`, `~/enable`, signals | [`node`] |
//! | `log` -> ROS logging, throttled warnings | [`logging`] |
//! | commands, achieved rate, tick latency for the exit summary | [`stats`] |
//!
//! Interface (the contract of `design.md`): node `policy_node`; subscribes `joint_state_topic`
//! (`sensor_msgs/JointState`) and each of `camera_topics` (`sensor_msgs/Image`, or
//! `sensor_msgs/CompressedImage` for a topic ending in `/compressed`) with sensor-data QoS;
//! publishes commands on `command_topic` as `command_type` at `control_rate_hz` (ROS time, so
//! `use_sim_time` follows `/clock`), each chunk switched in on `~/action_chunk`
//! (`trajectory_msgs/JointTrajectory`) and status on `/diagnostics` at 1 Hz; serves `~/reset`
//! (`std_srvs/srv/Trigger`) and `~/enable` (`std_srvs/srv/SetBool`). A managed node: the
//! `lifecycle_msgs` services `~/change_state`, `~/get_state`, `~/get_available_states`,
//! `~/get_available_transitions`, `~/get_transition_graph` and the topic
//! `~/transition_event`; `autostart` (default true) configures and activates it at start.

pub mod convert;
pub mod lifecycle;
pub mod logging;
pub mod node;
pub mod param_services;
pub mod params;
pub mod process;
mod safety;
pub mod stats;
pub mod wiring;

pub use node::{run, NodeError, Summary, NODE_NAME};
pub use params::Cli;
pub use process::error_line;
