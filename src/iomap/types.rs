//! The message types an I/O map reads and writes, and the fields a `select` can name.

use std::fmt;

/// A message type a map input reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputType {
    JointState,
    Float64MultiArray,
    Float32MultiArray,
    Float64,
    PoseStamped,
    TwistStamped,
    Odometry,
    Imu,
    Image,
    CompressedImage,
}

/// A message type a map output channel publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputType {
    Float64MultiArray,
    Float64,
    JointTrajectory,
    JointState,
    Twist,
    TwistStamped,
    PoseStamped,
}

const POSE: &[&str] = &[
    "pose.position.x",
    "pose.position.y",
    "pose.position.z",
    "pose.orientation.x",
    "pose.orientation.y",
    "pose.orientation.z",
    "pose.orientation.w",
];
const TWIST_STAMPED: &[&str] = &[
    "twist.linear.x",
    "twist.linear.y",
    "twist.linear.z",
    "twist.angular.x",
    "twist.angular.y",
    "twist.angular.z",
];
const TWIST: &[&str] = &[
    "linear.x",
    "linear.y",
    "linear.z",
    "angular.x",
    "angular.y",
    "angular.z",
];
const ODOMETRY: &[&str] = &[
    "pose.pose.position.x",
    "pose.pose.position.y",
    "pose.pose.position.z",
    "pose.pose.orientation.x",
    "pose.pose.orientation.y",
    "pose.pose.orientation.z",
    "pose.pose.orientation.w",
    "twist.twist.linear.x",
    "twist.twist.linear.y",
    "twist.twist.linear.z",
    "twist.twist.angular.x",
    "twist.twist.angular.y",
    "twist.twist.angular.z",
];
const IMU: &[&str] = &[
    "orientation.x",
    "orientation.y",
    "orientation.z",
    "orientation.w",
    "angular_velocity.x",
    "angular_velocity.y",
    "angular_velocity.z",
    "linear_acceleration.x",
    "linear_acceleration.y",
    "linear_acceleration.z",
];

/// `pkg/msg/Name` or `pkg/Name` -> (`pkg`, `Name`).
fn split_type(name: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = name.trim().split('/').collect();
    match parts.as_slice() {
        [p, "msg", n] | [p, n] if !p.is_empty() && !n.is_empty() => Some((p, n)),
        _ => None,
    }
}

impl InputType {
    pub const ALL: &'static [InputType] = &[
        InputType::JointState,
        InputType::Float64MultiArray,
        InputType::Float32MultiArray,
        InputType::Float64,
        InputType::PoseStamped,
        InputType::TwistStamped,
        InputType::Odometry,
        InputType::Imu,
        InputType::Image,
        InputType::CompressedImage,
    ];

    /// From `sensor_msgs/msg/JointState` (also `sensor_msgs/JointState`).
    pub fn parse(name: &str) -> Option<Self> {
        let (p, n) = split_type(name)?;
        Self::ALL
            .iter()
            .copied()
            .find(|t| split_type(t.type_name()) == Some((p, n)))
    }

    pub fn type_name(self) -> &'static str {
        match self {
            InputType::JointState => "sensor_msgs/msg/JointState",
            InputType::Float64MultiArray => "std_msgs/msg/Float64MultiArray",
            InputType::Float32MultiArray => "std_msgs/msg/Float32MultiArray",
            InputType::Float64 => "std_msgs/msg/Float64",
            InputType::PoseStamped => "geometry_msgs/msg/PoseStamped",
            InputType::TwistStamped => "geometry_msgs/msg/TwistStamped",
            InputType::Odometry => "nav_msgs/msg/Odometry",
            InputType::Imu => "sensor_msgs/msg/Imu",
            InputType::Image => "sensor_msgs/msg/Image",
            InputType::CompressedImage => "sensor_msgs/msg/CompressedImage",
        }
    }

    pub fn is_image(self) -> bool {
        matches!(self, InputType::Image | InputType::CompressedImage)
    }

    /// Whether the message has a `header.stamp` (else its receive time is its stamp).
    pub fn has_header(self) -> bool {
        !matches!(
            self,
            InputType::Float64MultiArray | InputType::Float32MultiArray | InputType::Float64
        )
    }

    /// The fixed fields of a message with a fixed layout, in the order
    /// [`InputMessage::Fields`](super::InputMessage::Fields) carries them.
    pub fn fields(self) -> Option<&'static [&'static str]> {
        match self {
            InputType::PoseStamped => Some(POSE),
            InputType::TwistStamped => Some(TWIST_STAMPED),
            InputType::Odometry => Some(ODOMETRY),
            InputType::Imu => Some(IMU),
            _ => None,
        }
    }

    /// What `select` takes for this type, in words (for errors).
    pub fn select_rule(self) -> String {
        match self {
            InputType::JointState => {
                "`position.<joint>`, `velocity.<joint>` or `effort.<joint>`".into()
            }
            InputType::Float64MultiArray | InputType::Float32MultiArray => "`data.<index>`".into(),
            InputType::Float64 => "`data`".into(),
            InputType::Image | InputType::CompressedImage => {
                "nothing (an image has no select)".into()
            }
            t => t
                .fields()
                .unwrap_or(&[])
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl fmt::Display for InputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

impl OutputType {
    pub const ALL: &'static [OutputType] = &[
        OutputType::Float64MultiArray,
        OutputType::Float64,
        OutputType::JointTrajectory,
        OutputType::JointState,
        OutputType::Twist,
        OutputType::TwistStamped,
        OutputType::PoseStamped,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        let (p, n) = split_type(name)?;
        Self::ALL
            .iter()
            .copied()
            .find(|t| split_type(t.type_name()) == Some((p, n)))
    }

    pub fn type_name(self) -> &'static str {
        match self {
            OutputType::Float64MultiArray => "std_msgs/msg/Float64MultiArray",
            OutputType::Float64 => "std_msgs/msg/Float64",
            OutputType::JointTrajectory => "trajectory_msgs/msg/JointTrajectory",
            OutputType::JointState => "sensor_msgs/msg/JointState",
            OutputType::Twist => "geometry_msgs/msg/Twist",
            OutputType::TwistStamped => "geometry_msgs/msg/TwistStamped",
            OutputType::PoseStamped => "geometry_msgs/msg/PoseStamped",
        }
    }

    /// The fields `select` names for the types with a fixed layout (a channel's `select`
    /// holds indices into this list).
    pub fn fields(self) -> Option<&'static [&'static str]> {
        match self {
            OutputType::Twist => Some(TWIST),
            OutputType::TwistStamped => Some(TWIST_STAMPED),
            OutputType::PoseStamped => Some(POSE),
            _ => None,
        }
    }

    /// Whether the channel names its joints (`names` required).
    pub fn needs_names(self) -> bool {
        matches!(self, OutputType::JointTrajectory | OutputType::JointState)
    }

    /// The `on_stop` of a channel that gives none.
    pub fn default_on_stop(self) -> OnStop {
        match self {
            OutputType::Twist | OutputType::TwistStamped => OnStop::Zeros,
            _ => OnStop::Hold,
        }
    }
}

impl fmt::Display for OutputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

/// What a channel publishes, once, when commands stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// The last command again (nothing if none was sent).
    Hold,
    /// The zero action through the channel's transform.
    Zeros,
    /// Nothing.
    None,
}

impl OnStop {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hold" => Some(OnStop::Hold),
            "zeros" => Some(OnStop::Zeros),
            "none" => Some(OnStop::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OnStop::Hold => "hold",
            OnStop::Zeros => "zeros",
            OnStop::None => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_parse_both_spellings() {
        for t in InputType::ALL {
            assert_eq!(InputType::parse(t.type_name()), Some(*t));
            let short = t.type_name().replace("/msg/", "/");
            assert_eq!(InputType::parse(&short), Some(*t));
        }
        for t in OutputType::ALL {
            assert_eq!(OutputType::parse(t.type_name()), Some(*t));
        }
        assert_eq!(InputType::parse("std_msgs/msg/String"), None);
        assert_eq!(InputType::parse("JointState"), None);
        assert_eq!(OutputType::parse("nav_msgs/msg/Odometry"), None);
    }
}
