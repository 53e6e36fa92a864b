//! The I/O map, ROS-free: which topics feed which policy input, and which channels the
//! action goes out on (see `io-map.md` in the design documents and the README's "Wiring a
//! robot" section). The node, `policyctl replay` and the recorder all read the robot
//! through it, so what the policy sees live and in replay cannot drift apart.
//!
//! | step | here |
//! |---|---|
//! | the YAML file to a checked map (every rule that needs no policy) | [`IoMap::load`] |
//! | the map against the policy (inputs, widths, action indices, package robots) | [`IoMap::preflight`] |
//! | the map of the flat parameters (`joint_names`, `joint_state_topic`, ...) | [`IoMap::from_flat`] |
//! | a message to the selected values (`select`, `scale`, `offset`) | [`SourceReader`], [`InputMessage`] |
//! | sources to policy inputs, freshness per source | [`Inputs`] |
//! | the action to each channel's values, `on_stop` | [`Outputs`] |
//!
//! The node only converts r2r messages into [`InputMessage`]s and channel values into r2r
//! messages (`ros::convert`); every rule lives here, tested without ROS.
//!
//! ```
//! use policy_node::iomap::{InputMessage, Inputs, IoMap, Outputs};
//!
//! let map = IoMap::parse(r"
//! inputs:
//!   observation.state:
//!     - {topic: /arm/joint_states, type: sensor_msgs/msg/JointState, select: [position.j1]}
//!     - {topic: /gripper/state, type: std_msgs/msg/Float64MultiArray, select: [data.0], scale: 0.01}
//! outputs:
//!   - {topic: /arm/commands, type: std_msgs/msg/Float64MultiArray, action: [0]}
//!   - {topic: /gripper/commands, type: std_msgs/msg/Float64MultiArray, action: [1], scale: 100.0}
//! ").unwrap();
//! let mut inputs = Inputs::new(&map.inputs);
//! inputs.on_message(1, 0, &InputMessage::Array(vec![50.0])).unwrap();
//! let msg = InputMessage::JointState {
//!     name: vec!["j1".into()], position: vec![0.3], velocity: vec![], effort: vec![],
//! };
//! inputs.on_message(0, 0, &msg).unwrap();
//! assert_eq!(inputs.feature_values(0).unwrap(), vec![0.3, 0.5]);
//! let published = Outputs::new(&map).encode(&[0.25, 0.4]);
//! assert_eq!(published, vec![0.25, 40.0]);
//! ```

mod inputs;
pub mod openpi;
mod outputs;
mod preflight;
mod spec;
mod types;

use std::path::PathBuf;

pub use inputs::{InputMessage, Inputs, SourceReader};
pub use openpi::{ImageFit, OpenpiSection};
pub use outputs::Outputs;
pub use preflight::{relative_pairs, PolicyInput, PolicyPorts, RobotOrder};
pub use spec::{Channel, InputFeature, IoMap, JointField, Relative, Select, Source, MAX_INDEX};
pub use types::{InputType, OnStop, OutputType};

/// A map that cannot be used: the file, the YAML path of the offending entry and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{rule}", file.as_ref().map(|f| format!("io_map `{}`: ", f.display())).unwrap_or_else(|| "io_map: ".into()), if path.is_empty() { String::new() } else { format!("`{path}`: ") })]
pub struct IoMapError {
    pub file: Option<PathBuf>,
    /// `outputs[1].action[0]`, `inputs.observation.state[0].select[2]`; empty for the
    /// whole file.
    pub path: String,
    pub rule: String,
}
