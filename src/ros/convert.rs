//! Message conversion as plain functions: r2r message types in, the ROS-free types of
//! [`crate::control`] / [`crate::observation`] out, and back for what the node publishes.
//! Nothing here touches a node, a clock or a publisher, so every rule is unit-tested.

use std::time::Duration;

use r2r::builtin_interfaces::msg::{Duration as DurationMsg, Time};
use r2r::diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue};
use r2r::geometry_msgs::msg::{Point, Pose, PoseStamped, Quaternion, Twist, TwistStamped, Vector3};
use r2r::nav_msgs::msg::Odometry;
use r2r::sensor_msgs::msg::{CompressedImage, Image, Imu, JointState};
use r2r::std_msgs::msg::{Float32MultiArray, Float64, Float64MultiArray, Header};
use r2r::trajectory_msgs::msg::{JointTrajectory, JointTrajectoryPoint};

use super::stats::{LatencySummary, WindowSummary};
use crate::control::{ImageData, Status};
use crate::iomap::InputMessage;
use crate::observation::{time_to_ns, ObservationError};
use crate::policy::RefillMode;

/// `diagnostic_msgs/DiagnosticStatus` levels (the generated constants have bindgen types).
pub mod level {
    pub const OK: u8 = 0;
    pub const WARN: u8 = 1;
    pub const ERROR: u8 = 2;
}

/// A header stamp as nanoseconds; a zero stamp (a driver that does not stamp) means "now":
/// the receive time.
pub fn stamp_ns(stamp: &Time, receive_ns: i64) -> i64 {
    if stamp.sec == 0 && stamp.nanosec == 0 {
        receive_ns
    } else {
        time_to_ns(stamp.sec, stamp.nanosec)
    }
}

/// Nanoseconds (ROS or sim time) as a `builtin_interfaces/Time`; negative values clamp to 0.
pub fn time_msg(ns: i64) -> Time {
    let ns = ns.max(0);
    Time {
        sec: i32::try_from(ns / 1_000_000_000).unwrap_or(i32::MAX),
        nanosec: (ns % 1_000_000_000) as u32,
    }
}

/// A duration as a `builtin_interfaces/Duration` (saturating at `i32::MAX` seconds).
pub fn duration_msg(d: Duration) -> DurationMsg {
    DurationMsg {
        sec: i32::try_from(d.as_secs()).unwrap_or(i32::MAX),
        nanosec: d.subsec_nanos(),
    }
}

/// `sensor_msgs/Image` -> a validated [`ImageData`] (encoding, `step`, data length), taking
/// the pixel buffer without copying. Returns the stamp alongside.
pub fn raw_image(msg: Image) -> (Time, Result<ImageData, ObservationError>) {
    let stamp = msg.header.stamp;
    let data = ImageData::raw(msg.width, msg.height, msg.step, &msg.encoding, msg.data);
    (stamp, data)
}

/// `sensor_msgs/CompressedImage` -> [`ImageData::Compressed`] (decoded when a chunk is
/// computed; the control loop decodes the first one at arrival to report a bad stream).
pub fn compressed_image(msg: CompressedImage) -> (Time, Result<ImageData, ObservationError>) {
    let stamp = msg.header.stamp;
    (
        stamp,
        Ok(ImageData::Compressed {
            format: msg.format,
            data: msg.data,
        }),
    )
}

/// `sensor_msgs/JointState` as a map input (names, positions, velocities, efforts moved,
/// not copied), with its stamp.
pub fn joint_state_input(msg: JointState) -> (Option<Time>, InputMessage) {
    (
        Some(msg.header.stamp),
        InputMessage::JointState {
            name: msg.name,
            position: msg.position,
            velocity: msg.velocity,
            effort: msg.effort,
        },
    )
}

/// `std_msgs/Float64MultiArray` as a map input (no header: stamped on receipt).
pub fn float64_array_input(msg: Float64MultiArray) -> (Option<Time>, InputMessage) {
    (None, InputMessage::Array(msg.data))
}

/// `std_msgs/Float32MultiArray` as a map input (no header: stamped on receipt).
pub fn float32_array_input(msg: Float32MultiArray) -> (Option<Time>, InputMessage) {
    (
        None,
        InputMessage::Array(msg.data.into_iter().map(f64::from).collect()),
    )
}

/// `std_msgs/Float64` as a map input (no header: stamped on receipt).
pub fn float64_input(msg: Float64) -> (Option<Time>, InputMessage) {
    (None, InputMessage::Scalar(msg.data))
}

fn pose_fields(p: &Pose, out: &mut Vec<f64>) {
    out.extend([
        p.position.x,
        p.position.y,
        p.position.z,
        p.orientation.x,
        p.orientation.y,
        p.orientation.z,
        p.orientation.w,
    ]);
}

fn twist_fields(t: &Twist, out: &mut Vec<f64>) {
    out.extend([
        t.linear.x,
        t.linear.y,
        t.linear.z,
        t.angular.x,
        t.angular.y,
        t.angular.z,
    ]);
}

/// `geometry_msgs/PoseStamped` as a map input: fields in `InputType::fields` order.
pub fn pose_stamped_input(msg: PoseStamped) -> (Option<Time>, InputMessage) {
    let mut f = Vec::with_capacity(7);
    pose_fields(&msg.pose, &mut f);
    (Some(msg.header.stamp), InputMessage::Fields(f))
}

/// `geometry_msgs/TwistStamped` as a map input.
pub fn twist_stamped_input(msg: TwistStamped) -> (Option<Time>, InputMessage) {
    let mut f = Vec::with_capacity(6);
    twist_fields(&msg.twist, &mut f);
    (Some(msg.header.stamp), InputMessage::Fields(f))
}

/// `nav_msgs/Odometry` as a map input (pose, then twist; no covariances).
pub fn odometry_input(msg: Odometry) -> (Option<Time>, InputMessage) {
    let mut f = Vec::with_capacity(13);
    pose_fields(&msg.pose.pose, &mut f);
    twist_fields(&msg.twist.twist, &mut f);
    (Some(msg.header.stamp), InputMessage::Fields(f))
}

/// `sensor_msgs/Imu` as a map input (orientation, angular velocity, linear acceleration).
pub fn imu_input(msg: Imu) -> (Option<Time>, InputMessage) {
    let o = &msg.orientation;
    let a = &msg.angular_velocity;
    let l = &msg.linear_acceleration;
    (
        Some(msg.header.stamp),
        InputMessage::Fields(vec![o.x, o.y, o.z, o.w, a.x, a.y, a.z, l.x, l.y, l.z]),
    )
}

/// A channel's values as `std_msgs/Float64`.
pub fn float64_command(values: &[f64]) -> Float64 {
    Float64 {
        data: values.first().copied().unwrap_or(0.0),
    }
}

/// The values of a fixed-layout channel by field (unselected fields 0; a pose's
/// `orientation.w` 1, the identity rotation, unless selected).
fn by_field(n: usize, select: &[usize], values: &[f64], unit_w: Option<usize>) -> Vec<f64> {
    let mut f = vec![0.0; n];
    if let Some(w) = unit_w {
        f[w] = 1.0;
    }
    for (k, v) in select.iter().zip(values) {
        if let Some(slot) = f.get_mut(*k) {
            *slot = *v;
        }
    }
    f
}

fn twist_of(f: &[f64]) -> Twist {
    Twist {
        linear: Vector3 {
            x: f[0],
            y: f[1],
            z: f[2],
        },
        angular: Vector3 {
            x: f[3],
            y: f[4],
            z: f[5],
        },
    }
}

/// A channel's values as `geometry_msgs/Twist` (`select`: index into the Twist fields).
pub fn twist_command(select: &[usize], values: &[f64]) -> Twist {
    twist_of(&by_field(6, select, values, None))
}

/// A channel's values as `geometry_msgs/TwistStamped`, stamped `now_ns`.
pub fn twist_stamped_command(select: &[usize], values: &[f64], now_ns: i64) -> TwistStamped {
    TwistStamped {
        header: Header {
            stamp: time_msg(now_ns),
            frame_id: String::new(),
        },
        twist: twist_of(&by_field(6, select, values, None)),
    }
}

/// A channel's values as `geometry_msgs/PoseStamped`, stamped `now_ns`.
pub fn pose_stamped_command(select: &[usize], values: &[f64], now_ns: i64) -> PoseStamped {
    let f = by_field(7, select, values, Some(6));
    PoseStamped {
        header: Header {
            stamp: time_msg(now_ns),
            frame_id: String::new(),
        },
        pose: Pose {
            position: Point {
                x: f[0],
                y: f[1],
                z: f[2],
            },
            orientation: Quaternion {
                x: f[3],
                y: f[4],
                z: f[5],
                w: f[6],
            },
        },
    }
}

/// The command as `std_msgs/Float64MultiArray` (data only, as ros2_control's forward
/// controllers expect).
pub fn float64_multi_array(command: &[f64]) -> Float64MultiArray {
    Float64MultiArray {
        data: command.to_vec(),
        ..Default::default()
    }
}

/// The command as `trajectory_msgs/JointTrajectory`: one point at one control period, then
/// the rest of the plan (`plan[k]` at `(k + 2)` periods) when given. The header stamp stays
/// zero: "start now" for joint_trajectory_controller, immune to clock offsets between hosts.
pub fn joint_trajectory(
    joint_names: &[String],
    command: &[f64],
    plan: &[Vec<f64>],
    period: Duration,
) -> JointTrajectory {
    let point = |positions: &[f64], k: u32| JointTrajectoryPoint {
        positions: positions.to_vec(),
        time_from_start: duration_msg(period * k),
        ..Default::default()
    };
    let mut points = Vec::with_capacity(1 + plan.len());
    points.push(point(command, 1));
    for (k, p) in plan.iter().enumerate() {
        points.push(point(p, u32::try_from(k + 2).unwrap_or(u32::MAX)));
    }
    JointTrajectory {
        header: Header::default(),
        joint_names: joint_names.to_vec(),
        points,
    }
}

/// The plan switched in on a tick, for `~/action_chunk`: `rows[k]` at `k` control periods
/// from the tick (row 0 is that tick's command), stamped with the tick's time `now_ns`.
pub fn action_chunk(
    joint_names: &[String],
    rows: &[Vec<f64>],
    period: Duration,
    now_ns: i64,
) -> JointTrajectory {
    JointTrajectory {
        header: Header {
            stamp: time_msg(now_ns),
            frame_id: String::new(),
        },
        joint_names: joint_names.to_vec(),
        points: rows
            .iter()
            .enumerate()
            .map(|(k, row)| JointTrajectoryPoint {
                positions: row.clone(),
                time_from_start: duration_msg(period * u32::try_from(k).unwrap_or(u32::MAX)),
                ..Default::default()
            })
            .collect(),
    }
}

/// The command as `sensor_msgs/JointState` (name + position, stamped `now_ns`).
pub fn joint_state_command(joint_names: &[String], command: &[f64], now_ns: i64) -> JointState {
    JointState {
        header: Header {
            stamp: time_msg(now_ns),
            frame_id: String::new(),
        },
        name: joint_names.to_vec(),
        position: command.to_vec(),
        ..Default::default()
    }
}

/// What `/diagnostics` reports besides the [`Status`] snapshot.
#[derive(Debug, Clone, Default)]
pub struct DiagnosticExtras {
    /// Node name for the status name (`policy_node: policy`).
    pub node_name: String,
    pub control_rate_hz: f64,
    /// Commands per second since the previous report.
    pub achieved_rate_hz: f64,
    /// Commands published since start (not cleared by `~/reset`).
    pub commands_total: u64,
    /// Whether stale ticks / overruns / errors grew since the previous report.
    pub stale_grew: bool,
    pub overruns_grew: bool,
    pub errors_grew: bool,
    /// The newest stale input, if the last tick was stale.
    pub stale_input: Option<String>,
    /// Tick timing since start: timer periods without a tick, command ticks longer than a
    /// period, and the latency of the ticks served from the queue.
    pub lost_ticks: u64,
    pub late_ticks: u64,
    pub queue_latency: LatencySummary,
    /// The last completed rolling window (`window_*` keys).
    pub window: Option<WindowSummary>,
    /// The lifecycle state (`active`, `inactive`, ...).
    pub lifecycle_state: &'static str,
    /// Why commands are held back (the e-stop or the watchdog), if they are.
    pub halt: Option<String>,
    /// The e-stop and watchdog values (`estop`, `watchdog`, ...).
    pub safety: Vec<(String, String)>,
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The status as a `diagnostic_msgs/DiagnosticArray`: level ERROR when errors grew since the
/// previous report, WARN when stale ticks or overruns grew, else OK.
pub fn diagnostics(status: &Status, extras: &DiagnosticExtras, now_ns: i64) -> DiagnosticArray {
    let c = &status.counters;
    let (level, message) = if let Some(halt) = &extras.halt {
        (level::ERROR, format!("no commands: {halt}"))
    } else if extras.errors_grew {
        (
            level::ERROR,
            format!(
                "policy error: {}",
                status.last_error.as_deref().unwrap_or("unknown")
            ),
        )
    } else if extras.stale_grew {
        let what = extras.stale_input.as_deref().unwrap_or("an input");
        (
            level::WARN,
            format!("stale observations ({what}): no commands"),
        )
    } else if extras.overruns_grew {
        (
            level::WARN,
            "overruns: chunks arrive later than the queue runs out".to_string(),
        )
    } else if !extras.lifecycle_state.is_empty() && extras.lifecycle_state != "active" {
        (
            level::OK,
            format!(
                "{}: no commands (activate to command)",
                extras.lifecycle_state
            ),
        )
    } else if !status.enabled {
        (level::OK, "disabled (~/enable false)".to_string())
    } else {
        (level::OK, "running".to_string())
    };
    let kv = |key: &str, value: String| KeyValue {
        key: key.to_string(),
        value,
    };
    let mut values = vec![
        kv("lifecycle_state", extras.lifecycle_state.to_string()),
        kv("backend", status.backend.clone()),
        kv("device", status.device.clone()),
        kv("enabled", status.enabled.to_string()),
        kv(
            "refill_mode",
            match status.mode {
                _ if status.rtc => "rtc",
                RefillMode::Asynchronous => "async",
                RefillMode::Synchronous => "sync",
            }
            .to_string(),
        ),
        kv("refill_ahead_steps", status.refill_ahead.to_string()),
        kv("refill_ahead_auto", status.refill_ahead_auto.to_string()),
        kv("latency_recent_p99_ms", ms(status.latency_recent_p99)),
        kv("chunk_blend", status.chunk_blend.name().to_string()),
        kv("low_pass_alpha", format!("{}", status.low_pass_alpha)),
        kv("chunk_switches", status.switches.to_string()),
        kv("late_chunks", status.late_chunks.to_string()),
        kv("queue_depth", status.queue_depth.to_string()),
        kv("latency_last_ms", ms(status.latency.last)),
        kv("latency_mean_ms", ms(status.latency.mean())),
        kv("latency_max_ms", ms(status.latency.max)),
        kv("inferences", status.latency.count.to_string()),
        kv("control_rate_hz", format!("{:.3}", extras.control_rate_hz)),
        kv(
            "achieved_rate_hz",
            format!("{:.3}", extras.achieved_rate_hz),
        ),
        kv("ticks", c.ticks.to_string()),
        kv("commands", c.commands.to_string()),
        kv("commands_total", extras.commands_total.to_string()),
        kv("stale_ticks", c.stale.to_string()),
        kv("overruns", c.overruns.to_string()),
        kv("waiting_ticks", c.waiting.to_string()),
        kv("errors", c.errors.to_string()),
        kv("rejected_messages", c.rejected_messages.to_string()),
        kv("clock_jumps", c.clock_jumps.to_string()),
        kv("last_error", status.last_error.clone().unwrap_or_default()),
        kv("task", status.task.clone().unwrap_or_default()),
        kv("lost_ticks", extras.lost_ticks.to_string()),
        kv("late_ticks", extras.late_ticks.to_string()),
        kv("queue_tick_p50_ms", ms(extras.queue_latency.p50)),
        kv("queue_tick_p99_ms", ms(extras.queue_latency.p99)),
        kv("queue_tick_max_ms", ms(extras.queue_latency.max)),
    ];
    if let Some(r) = &status.remote {
        // Backend `remote`: the inference server, its state, round trips and call errors.
        values.extend([
            kv("remote_url", r.url.clone()),
            kv("remote_model", r.model.clone()),
            kv("remote_server", r.server.clone()),
            kv("remote_state", r.state.to_string()),
            kv("remote_rtt_last_ms", ms(r.rtt_last)),
            kv("remote_rtt_mean_ms", ms(r.rtt_mean)),
            kv("remote_rtt_p50_ms", ms(r.rtt_p50)),
            kv("remote_rtt_p99_ms", ms(r.rtt_p99)),
            kv("remote_calls", r.calls.to_string()),
            kv("remote_ok", r.ok.to_string()),
            kv("remote_errors", r.errors().to_string()),
            kv("remote_timeouts", r.timeouts.to_string()),
            kv("remote_unavailable", r.unavailable.to_string()),
            kv("remote_skipped_in_backoff", r.skipped.to_string()),
            kv("remote_bad_answers", r.bad_answers.to_string()),
            kv("remote_server_errors", r.server_errors.to_string()),
            kv("remote_reconnects", r.reconnects.to_string()),
            kv(
                "remote_last_error",
                r.last_error.clone().unwrap_or_default(),
            ),
        ]);
        if let Some(infer) = r.server_infer_ms {
            values.push(kv("remote_server_infer_ms", format!("{infer:.3}")));
        }
    }
    if let Some(w) = &extras.window {
        values.extend([
            kv("window_index", w.index.to_string()),
            kv("window_s", format!("{:.3}", w.length.as_secs_f64())),
            kv("window_ticks", w.ticks.to_string()),
            kv("window_lost_ticks", w.lost_ticks.to_string()),
            kv("window_commands", w.commands.to_string()),
            kv("window_stale_ticks", w.stale.to_string()),
            kv("window_overruns", w.overruns.to_string()),
            kv("window_waiting_ticks", w.waiting.to_string()),
            kv("window_errors", w.errors.to_string()),
            kv("window_late_ticks", w.late_ticks.to_string()),
            kv("window_tick_p50_ms", ms(w.latency.p50)),
            kv("window_tick_p99_ms", ms(w.latency.p99)),
            kv("window_tick_max_ms", ms(w.latency.max)),
            kv("window_queue_tick_p50_ms", ms(w.queue.p50)),
            kv("window_queue_tick_p99_ms", ms(w.queue.p99)),
            kv("window_queue_tick_max_ms", ms(w.queue.max)),
        ]);
    }
    values.extend(extras.safety.iter().map(|(k, v)| kv(k, v.clone())));
    values.push(kv("halted_ticks", c.halted.to_string()));
    values.push(kv("idle_ticks", c.idle.to_string()));
    values.push(kv("rejected_chunks", c.rejected_chunks.to_string()));
    DiagnosticArray {
        header: Header {
            stamp: time_msg(now_ns),
            frame_id: String::new(),
        },
        status: vec![DiagnosticStatus {
            level,
            name: format!("{}: policy", extras.node_name),
            message,
            hardware_id: format!("{}/{}", status.backend, status.device),
            values,
        }],
    }
}

/// `/diagnostics` while no policy is loaded (unconfigured, or finalizing): level OK, or ERROR
/// with the reason when the last configure failed.
pub fn diagnostics_unconfigured(
    node_name: &str,
    lifecycle_state: &str,
    configure_error: Option<&str>,
    now_ns: i64,
) -> DiagnosticArray {
    let (level, message) = match configure_error {
        Some(e) => (level::ERROR, format!("configure failed: {e}")),
        None => (
            level::OK,
            format!("{lifecycle_state}: no policy loaded (configure to load one)"),
        ),
    };
    DiagnosticArray {
        header: Header {
            stamp: time_msg(now_ns),
            frame_id: String::new(),
        },
        status: vec![DiagnosticStatus {
            level,
            name: format!("{node_name}: policy"),
            message,
            hardware_id: String::new(),
            values: vec![
                KeyValue {
                    key: "lifecycle_state".into(),
                    value: lifecycle_state.to_string(),
                },
                KeyValue {
                    key: "last_error".into(),
                    value: configure_error.unwrap_or_default().to_string(),
                },
            ],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Counters;
    use crate::policy::LatencyStats;

    #[test]
    fn zero_stamp_means_receive_time() {
        assert_eq!(stamp_ns(&Time { sec: 0, nanosec: 0 }, 42), 42);
        assert_eq!(stamp_ns(&Time { sec: 2, nanosec: 5 }, 42), 2_000_000_005);
        assert_eq!(stamp_ns(&Time { sec: 0, nanosec: 1 }, 42), 1);
    }

    #[test]
    fn time_and_duration_round_trip() {
        let t = time_msg(3_500_000_001);
        assert_eq!((t.sec, t.nanosec), (3, 500_000_001));
        assert_eq!(time_to_ns(t.sec, t.nanosec), 3_500_000_001);
        let t = time_msg(-5);
        assert_eq!((t.sec, t.nanosec), (0, 0));
        let d = duration_msg(Duration::from_millis(1500));
        assert_eq!((d.sec, d.nanosec), (1, 500_000_000));
        let d = duration_msg(Duration::from_secs(u64::MAX));
        assert_eq!(d.sec, i32::MAX);
    }

    fn image(encoding: &str, w: u32, h: u32, step: u32, len: usize) -> Image {
        Image {
            width: w,
            height: h,
            step,
            encoding: encoding.into(),
            data: vec![7; len],
            header: Header {
                stamp: Time { sec: 1, nanosec: 2 },
                frame_id: "cam".into(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn raw_images_are_validated() {
        let (stamp, data) = raw_image(image("rgb8", 4, 2, 12, 24));
        assert_eq!((stamp.sec, stamp.nanosec), (1, 2));
        match data.unwrap() {
            ImageData::Raw {
                width,
                height,
                step,
                data,
                ..
            } => {
                assert_eq!((width, height, step, data.len()), (4, 2, 12, 24));
            }
            other => panic!("{other:?}"),
        }
        // Row padding is honoured.
        assert!(raw_image(image("mono8", 3, 2, 4, 8)).1.is_ok());
        let e = raw_image(image("yuv422", 4, 2, 8, 16)).1.unwrap_err();
        assert!(
            matches!(e, ObservationError::UnsupportedEncoding { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("yuv422"));
        let e = raw_image(image("rgb8", 4, 2, 12, 20)).1.unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::DataLength {
                    expected: 24,
                    actual: 20,
                    ..
                }
            ),
            "{e}"
        );
        let e = raw_image(image("bgr8", 4, 2, 6, 12)).1.unwrap_err();
        assert!(matches!(e, ObservationError::StepTooSmall { .. }), "{e}");
    }

    #[test]
    fn compressed_images_are_passed_on() {
        let msg = CompressedImage {
            format: "png".into(),
            data: vec![1, 2, 3],
            ..Default::default()
        };
        match compressed_image(msg).1.unwrap() {
            ImageData::Compressed { format, data } => {
                assert_eq!(format, "png");
                assert_eq!(data, vec![1, 2, 3]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn commands_in_each_message_type() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let cmd = [0.5, -1.0];
        let m = float64_multi_array(&cmd);
        assert_eq!(m.data, cmd.to_vec());
        assert!(m.layout.dim.is_empty());

        let period = Duration::from_millis(20);
        let t = joint_trajectory(&names, &cmd, &[], period);
        assert_eq!(t.joint_names, names);
        assert_eq!(t.points.len(), 1);
        assert_eq!(t.points[0].positions, cmd.to_vec());
        assert_eq!(
            (
                t.points[0].time_from_start.sec,
                t.points[0].time_from_start.nanosec
            ),
            (0, 20_000_000)
        );
        assert_eq!((t.header.stamp.sec, t.header.stamp.nanosec), (0, 0));

        let plan = vec![vec![0.6, -1.1], vec![0.7, -1.2]];
        let t = joint_trajectory(&names, &cmd, &plan, period);
        assert_eq!(t.points.len(), 3);
        assert_eq!(t.points[2].positions, plan[1]);
        assert_eq!(t.points[2].time_from_start.nanosec, 60_000_000);

        let s = joint_state_command(&names, &cmd, 1_000_000_007);
        assert_eq!(s.name, names);
        assert_eq!(s.position, cmd.to_vec());
        assert!(s.velocity.is_empty());
        assert_eq!((s.header.stamp.sec, s.header.stamp.nanosec), (1, 7));
    }

    fn status() -> Status {
        Status {
            backend: "onnx".into(),
            device: "cpu".into(),
            enabled: true,
            queue_depth: 7,
            latency: LatencyStats {
                count: 2,
                last: Duration::from_millis(3),
                max: Duration::from_millis(5),
                total: Duration::from_millis(8),
            },
            counters: Counters {
                ticks: 10,
                commands: 8,
                stale: 1,
                overruns: 1,
                waiting: 4,
                errors: 0,
                rejected_messages: 2,
                clock_jumps: 0,
                halted: 0,
                rejected_chunks: 0,
                idle: 0,
            },
            refill_ahead: 2,
            refill_ahead_auto: true,
            latency_recent_p99: Duration::from_millis(4),
            mode: RefillMode::Asynchronous,
            task: None,
            rtc: false,
            chunk_blend: crate::policy::ChunkBlend::Linear { steps: 3 },
            low_pass_alpha: 0.5,
            switches: 3,
            late_chunks: 0,
            last_error: None,
            remote: None,
        }
    }

    fn value<'a>(a: &'a DiagnosticArray, key: &str) -> &'a str {
        &a.status[0]
            .values
            .iter()
            .find(|kv| kv.key == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .value
    }

    #[test]
    fn diagnostics_report_status_and_level() {
        let extras = DiagnosticExtras {
            node_name: "policy_node".into(),
            control_rate_hz: 30.0,
            achieved_rate_hz: 29.5,
            commands_total: 80,
            ..Default::default()
        };
        let a = diagnostics(&status(), &extras, 5_000_000_000);
        assert_eq!(a.header.stamp.sec, 5);
        let s = &a.status[0];
        assert_eq!(s.level, level::OK);
        assert_eq!(s.name, "policy_node: policy");
        assert_eq!(value(&a, "backend"), "onnx");
        assert_eq!(value(&a, "device"), "cpu");
        assert_eq!(value(&a, "latency_last_ms"), "3.000");
        assert_eq!(value(&a, "latency_mean_ms"), "4.000");
        assert_eq!(value(&a, "latency_max_ms"), "5.000");
        assert_eq!(value(&a, "queue_depth"), "7");
        assert_eq!(value(&a, "stale_ticks"), "1");
        assert_eq!(value(&a, "overruns"), "1");
        assert_eq!(value(&a, "waiting_ticks"), "4");
        assert_eq!(value(&a, "refill_mode"), "async");
        assert_eq!(value(&a, "enabled"), "true");
        assert_eq!(value(&a, "refill_ahead_steps"), "2");
        assert_eq!(value(&a, "refill_ahead_auto"), "true");
        assert_eq!(value(&a, "latency_recent_p99_ms"), "4.000");
        assert_eq!(value(&a, "chunk_blend"), "linear");
        assert_eq!(value(&a, "low_pass_alpha"), "0.5");
        assert!(a.status[0]
            .values
            .iter()
            .all(|kv| !kv.key.starts_with("window_")));
        let windowed = DiagnosticExtras {
            window: Some(WindowSummary {
                index: 2,
                length: Duration::from_secs(60),
                ticks: 6000,
                late_ticks: 1,
                ..Default::default()
            }),
            ..extras.clone()
        };
        let a = diagnostics(&status(), &windowed, 0);
        assert_eq!(value(&a, "window_index"), "2");
        assert_eq!(value(&a, "window_ticks"), "6000");
        assert_eq!(value(&a, "window_late_ticks"), "1");

        let stale = DiagnosticExtras {
            stale_grew: true,
            stale_input: Some("image_raw".into()),
            ..extras.clone()
        };
        let a = diagnostics(&status(), &stale, 0);
        assert_eq!(a.status[0].level, level::WARN);
        assert!(
            a.status[0].message.contains("image_raw"),
            "{}",
            a.status[0].message
        );
        let overrun = DiagnosticExtras {
            overruns_grew: true,
            ..extras.clone()
        };
        assert_eq!(
            diagnostics(&status(), &overrun, 0).status[0].level,
            level::WARN
        );
        let err = DiagnosticExtras {
            errors_grew: true,
            ..extras
        };
        let mut st = status();
        st.last_error = Some("boom".into());
        let a = diagnostics(&st, &err, 0);
        assert_eq!(a.status[0].level, level::ERROR);
        assert!(a.status[0].message.contains("boom"));
        assert!(a.status[0]
            .values
            .iter()
            .all(|kv| !kv.key.starts_with("remote_")));
    }

    #[test]
    fn diagnostics_report_the_inference_server() {
        use crate::runtime::link::CallFault;
        use crate::runtime::{ServerLink, ServerState};
        let link = ServerLink::new("http://gpu:8001", "act");
        link.set_server("triton 2.62.0");
        for ms in [10u64, 20, 30] {
            link.record_ok(Duration::from_millis(ms));
        }
        link.record_fault(CallFault::Timeout, "deadline exceeded");
        link.record_fault(CallFault::Unavailable, "connection refused");
        link.set_state(ServerState::Unavailable);
        let mut st = status();
        st.remote = Some(link.snapshot());
        let a = diagnostics(&st, &DiagnosticExtras::default(), 0);
        assert_eq!(value(&a, "remote_url"), "http://gpu:8001");
        assert_eq!(value(&a, "remote_model"), "act");
        assert_eq!(value(&a, "remote_server"), "triton 2.62.0");
        assert_eq!(value(&a, "remote_state"), "unavailable");
        assert_eq!(value(&a, "remote_rtt_last_ms"), "30.000");
        assert_eq!(value(&a, "remote_rtt_mean_ms"), "20.000");
        assert_eq!(value(&a, "remote_rtt_p99_ms"), "30.000");
        assert_eq!(value(&a, "remote_calls"), "5");
        assert_eq!(value(&a, "remote_errors"), "2");
        assert_eq!(value(&a, "remote_timeouts"), "1");
        assert_eq!(value(&a, "remote_unavailable"), "1");
        assert_eq!(value(&a, "remote_last_error"), "connection refused");
    }

    #[test]
    fn a_halt_is_an_error_naming_the_reason_with_the_safety_values() {
        let extras = DiagnosticExtras {
            node_name: "policy_node".into(),
            halt: Some("e-stop latched (~/estop); ~/reset clears it".into()),
            safety: vec![("estop".into(), "latched".into())],
            ..Default::default()
        };
        let a = diagnostics(&status(), &extras, 0);
        assert_eq!(a.status[0].level, level::ERROR);
        assert_eq!(
            a.status[0].message,
            "no commands: e-stop latched (~/estop); ~/reset clears it"
        );
        assert_eq!(value(&a, "estop"), "latched");
        assert_eq!(value(&a, "halted_ticks"), "0");
    }

    #[test]
    fn lifecycle_state_in_diagnostics() {
        let extras = DiagnosticExtras {
            node_name: "policy_node".into(),
            lifecycle_state: "inactive",
            ..Default::default()
        };
        let a = diagnostics(&status(), &extras, 0);
        assert_eq!(a.status[0].level, level::OK);
        assert_eq!(
            a.status[0].message,
            "inactive: no commands (activate to command)"
        );
        assert_eq!(value(&a, "lifecycle_state"), "inactive");
        let a = diagnostics_unconfigured("policy_node", "unconfigured", None, 0);
        assert_eq!(a.status[0].level, level::OK);
        assert_eq!(value(&a, "lifecycle_state"), "unconfigured");
        let a = diagnostics_unconfigured("policy_node", "unconfigured", Some("no export"), 0);
        assert_eq!(a.status[0].level, level::ERROR);
        assert!(a.status[0].message.contains("no export"));
    }

    #[test]
    fn action_chunk_rows_one_period_apart_from_the_tick() {
        let names = vec!["a".to_string(), "b".to_string()];
        let rows = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]];
        let m = action_chunk(&names, &rows, Duration::from_millis(20), 7_000_000_123);
        assert_eq!((m.header.stamp.sec, m.header.stamp.nanosec), (7, 123));
        assert_eq!(m.joint_names, names);
        assert_eq!(m.points.len(), 3);
        for (k, p) in m.points.iter().enumerate() {
            assert_eq!(p.positions, rows[k]);
            assert_eq!(p.time_from_start.sec, 0);
            assert_eq!(p.time_from_start.nanosec, 20_000_000 * k as u32);
        }
    }
}
