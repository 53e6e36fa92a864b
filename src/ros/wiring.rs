//! The node's side of the I/O map: one subscription per map topic, typed by the map, each
//! message converted ([`super::convert`]) into an [`InputMessage`]; one publisher per
//! output channel, each channel's values converted into its message type. Every rule (what
//! is selected, scaled, split) lives in [`crate::iomap`]; here only r2r.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use r2r::builtin_interfaces::msg::Time;
use r2r::geometry_msgs::msg::{PoseStamped, Twist, TwistStamped};
use r2r::nav_msgs::msg::Odometry;
use r2r::sensor_msgs::msg::{Imu, JointState};
use r2r::std_msgs::msg::{Float32MultiArray, Float64, Float64MultiArray};
use r2r::trajectory_msgs::msg::JointTrajectory;
use r2r::{Publisher, QosProfile};

use super::convert;
use crate::control::{ControlLoop, NodeParams};
use crate::iomap::{Channel, InputMessage, InputType, OutputType, Outputs};

/// A map topic's messages, converted: the header stamp (none for header-less types) and
/// the message.
pub type InputStream = Pin<Box<dyn Stream<Item = (Option<Time>, InputMessage)>>>;

/// Subscribes to a non-image map topic of type `t` (`None` for image types: those are
/// the cameras' subscriptions).
pub fn subscribe(
    node: &mut r2r::Node,
    topic: &str,
    t: InputType,
) -> r2r::Result<Option<InputStream>> {
    let qos = QosProfile::sensor_data;
    Ok(Some(match t {
        InputType::JointState => Box::pin(
            node.subscribe::<JointState>(topic, qos())?
                .map(convert::joint_state_input),
        ),
        InputType::Float64MultiArray => Box::pin(
            node.subscribe::<Float64MultiArray>(topic, qos())?
                .map(convert::float64_array_input),
        ),
        InputType::Float32MultiArray => Box::pin(
            node.subscribe::<Float32MultiArray>(topic, qos())?
                .map(convert::float32_array_input),
        ),
        InputType::Float64 => Box::pin(
            node.subscribe::<Float64>(topic, qos())?
                .map(convert::float64_input),
        ),
        InputType::PoseStamped => Box::pin(
            node.subscribe::<PoseStamped>(topic, qos())?
                .map(convert::pose_stamped_input),
        ),
        InputType::TwistStamped => Box::pin(
            node.subscribe::<TwistStamped>(topic, qos())?
                .map(convert::twist_stamped_input),
        ),
        InputType::Odometry => Box::pin(
            node.subscribe::<Odometry>(topic, qos())?
                .map(convert::odometry_input),
        ),
        InputType::Imu => Box::pin(node.subscribe::<Imu>(topic, qos())?.map(convert::imu_input)),
        InputType::Image | InputType::CompressedImage => return Ok(None),
    }))
}

/// The publisher of one output channel, by its type.
/// A published message kept for a recording: its CDR bytes, made when called.
pub type Kept = Box<dyn FnOnce() -> r2r::Result<Vec<u8>>>;

#[derive(Clone)]
pub enum ChannelPublisher {
    Array(Publisher<Float64MultiArray>),
    Scalar(Publisher<Float64>),
    Trajectory(Publisher<JointTrajectory>),
    State(Publisher<JointState>),
    Twist(Publisher<Twist>),
    TwistStamped(Publisher<TwistStamped>),
    Pose(Publisher<PoseStamped>),
}

impl ChannelPublisher {
    pub fn create(node: &mut r2r::Node, c: &Channel) -> r2r::Result<Self> {
        let qos = QosProfile::default;
        let t = c.topic.as_str();
        Ok(match c.msg_type {
            OutputType::Float64MultiArray => {
                ChannelPublisher::Array(node.create_publisher(t, qos())?)
            }
            OutputType::Float64 => ChannelPublisher::Scalar(node.create_publisher(t, qos())?),
            OutputType::JointTrajectory => {
                ChannelPublisher::Trajectory(node.create_publisher(t, qos())?)
            }
            OutputType::JointState => ChannelPublisher::State(node.create_publisher(t, qos())?),
            OutputType::Twist => ChannelPublisher::Twist(node.create_publisher(t, qos())?),
            OutputType::TwistStamped => {
                ChannelPublisher::TwistStamped(node.create_publisher(t, qos())?)
            }
            OutputType::PoseStamped => ChannelPublisher::Pose(node.create_publisher(t, qos())?),
        })
    }

    pub fn is_trajectory(&self) -> bool {
        matches!(self, ChannelPublisher::Trajectory(_))
    }

    /// Publishes `values` (the channel's part of a command); a trajectory also carries
    /// `plan` (the channel's part of the rest of the chunk), one `period` apart. With `keep`
    /// (an episode is recorded) the message is kept: serializing it (CDR) is left to the
    /// caller, after the tick.
    pub fn publish_kept(
        &self,
        c: &Channel,
        values: &[f64],
        plan: &[Vec<f64>],
        period: Duration,
        now_ns: i64,
        keep: bool,
    ) -> r2r::Result<Option<Kept>> {
        fn out<T: r2r::WrappedTypesupport + 'static>(
            p: &Publisher<T>,
            msg: T,
            keep: bool,
        ) -> r2r::Result<Option<Kept>> {
            p.publish(&msg)?;
            Ok(keep.then(|| Box::new(move || msg.to_serialized_bytes()) as Kept))
        }
        match self {
            ChannelPublisher::Array(p) => out(p, convert::float64_multi_array(values), keep),
            ChannelPublisher::Scalar(p) => out(p, convert::float64_command(values), keep),
            ChannelPublisher::Trajectory(p) => out(
                p,
                convert::joint_trajectory(&c.names, values, plan, period),
                keep,
            ),
            ChannelPublisher::State(p) => out(
                p,
                convert::joint_state_command(&c.names, values, now_ns),
                keep,
            ),
            ChannelPublisher::Twist(p) => out(p, convert::twist_command(&c.select, values), keep),
            ChannelPublisher::TwistStamped(p) => out(
                p,
                convert::twist_stamped_command(&c.select, values, now_ns),
                keep,
            ),
            ChannelPublisher::Pose(p) => out(
                p,
                convert::pose_stamped_command(&c.select, values, now_ns),
                keep,
            ),
        }
    }

    /// Removes the publisher from the node (cleanup).
    pub fn destroy(self, node: &mut r2r::Node) {
        match self {
            ChannelPublisher::Array(p) => node.destroy_publisher(p),
            ChannelPublisher::Scalar(p) => node.destroy_publisher(p),
            ChannelPublisher::Trajectory(p) => node.destroy_publisher(p),
            ChannelPublisher::State(p) => node.destroy_publisher(p),
            ChannelPublisher::Twist(p) => node.destroy_publisher(p),
            ChannelPublisher::TwistStamped(p) => node.destroy_publisher(p),
            ChannelPublisher::Pose(p) => node.destroy_publisher(p),
        }
    }
}

/// The output channels' publishers, with the map's split of a command.
#[derive(Clone)]
pub struct Publishers {
    outputs: Outputs,
    channels: Vec<ChannelPublisher>,
}

impl Publishers {
    /// One publisher per channel of the loop's map. A bad topic is an error with what it
    /// was for: `publish on `/x` (io_map: outputs[1])`, or the flat `command_topic`.
    pub fn create(
        node: &mut r2r::Node,
        control: &ControlLoop,
    ) -> Result<Self, (String, r2r::Error)> {
        let outputs = control.outputs().clone();
        let mut channels = Vec::new();
        let origin = if control.io_map().file.is_some() {
            "io_map"
        } else {
            "parameter"
        };
        for c in outputs.channels() {
            let p = ChannelPublisher::create(node, c).map_err(|e| {
                (
                    format!("publish on `{}` ({origin}: {})", c.topic, c.yaml_path),
                    e,
                )
            })?;
            channels.push(p);
        }
        Ok(Publishers { outputs, channels })
    }

    pub fn has_trajectory(&self) -> bool {
        self.channels.iter().any(ChannelPublisher::is_trajectory)
    }

    /// Publishes each channel's part of `command` (published values); `plan`: the rest of
    /// the chunk, for trajectory channels. The first failure names its topic.
    pub fn publish(
        &self,
        command: &[f64],
        plan: &[Vec<f64>],
        period: Duration,
        now_ns: i64,
        kept: Option<&mut Vec<(usize, Kept)>>,
    ) -> Result<(), (String, r2r::Error)> {
        let mut first = None;
        let keep = kept.is_some();
        let mut out = Vec::new();
        for (i, (c, values)) in self.outputs.split(command).enumerate() {
            let rows: Vec<Vec<f64>> = if self.channels[i].is_trajectory() {
                plan.iter()
                    .map(|r| self.outputs.channel_values(i, r).to_vec())
                    .collect()
            } else {
                Vec::new()
            };
            match self.channels[i].publish_kept(c, values, &rows, period, now_ns, keep) {
                Ok(Some(k)) => out.push((i, k)),
                Ok(None) => {}
                Err(e) => {
                    first.get_or_insert((c.topic.clone(), e));
                }
            }
        }
        if let Some(kept) = kept {
            kept.extend(out);
        }
        first.map_or(Ok(()), Err)
    }

    /// The topic and type of channel `i`.
    pub fn channel_topic(&self, i: usize) -> Option<(&str, &'static str)> {
        self.outputs
            .channels()
            .get(i)
            .map(|c| (c.topic.as_str(), c.msg_type.type_name()))
    }

    /// The channels' `on_stop` messages (from [`ControlLoop::take_stop`]).
    pub fn publish_stop(
        &self,
        stops: &[(usize, Vec<f64>)],
        period: Duration,
        now_ns: i64,
        mut kept: Option<&mut Vec<(usize, Kept)>>,
    ) {
        for (i, values) in stops {
            let (Some(c), Some(p)) = (self.outputs.channels().get(*i), self.channels.get(*i))
            else {
                continue;
            };
            match p.publish_kept(c, values, &[], period, now_ns, kept.is_some()) {
                Ok(k) => {
                    if let (Some(k), Some(kept)) = (k, kept.as_deref_mut()) {
                        kept.push((*i, k));
                    }
                    log::info!(
                        "commands stopped: `{}` got its on_stop ({}) command",
                        c.topic,
                        c.on_stop.as_str()
                    )
                }
                Err(e) => log::warn!("cannot publish the on_stop command on `{}`: {e}", c.topic),
            }
        }
    }

    /// Removes the publishers from the node (cleanup).
    pub fn destroy(self, node: &mut r2r::Node) {
        for p in self.channels {
            p.destroy(node);
        }
    }

    /// The channels in words (`float64_multi_array commands on joint_commands` for the
    /// flat parameters' map).
    pub fn describe(&self, params: &NodeParams) -> String {
        if params.io_map.is_empty() {
            return format!(
                "{} commands on {}",
                params.command_type.as_str(),
                params.command_topic
            );
        }
        format!(
            "commands on {}",
            self.outputs
                .channels()
                .iter()
                .map(|c| format!(
                    "{} ({}, action {:?}, on_stop {})",
                    c.topic,
                    c.msg_type,
                    c.action,
                    c.on_stop.as_str()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}
