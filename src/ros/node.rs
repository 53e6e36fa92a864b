//! The r2r node: parameters -> [`ControlLoop`] -> subscriptions, timer, publishers,
//! services, `/diagnostics`; spin until SIGINT / SIGTERM; summary.
//!
//! Threads: rcl is spun on its own thread (`spin_once` wakes timers, subscriptions and
//! services into r2r's channels); everything else runs as tasks on one single-threaded tokio
//! runtime, sharing the control loop behind a mutex that is held only for a call.
//! Inference runs on the control loop's refill worker (asynchronous refill), so neither a
//! tick nor a subscription waits for a whole chunk.
//!
//! Where the process may (root, `CAP_SYS_NICE`, or an `rtprio` limit), the runtime thread
//! (ticks) and the spin thread (timer wake-ups) run at real-time priority
//! ([`REALTIME_PRIORITY`], `SCHED_FIFO`), so a tick is not preempted by other threads of this
//! or other processes (the refill worker, DDS, the robot's own nodes) on a busy CPU; the
//! refill worker and the runtimes' threads, started before, stay at normal priority.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use r2r::builtin_interfaces::msg::Time;
use r2r::diagnostic_msgs::msg::DiagnosticArray;
use r2r::sensor_msgs::msg::{CompressedImage, Image, JointState};
use r2r::std_msgs::msg::Float64MultiArray;
use r2r::std_srvs::srv::{SetBool, Trigger};
use r2r::trajectory_msgs::msg::JointTrajectory;
use r2r::{Publisher, QosProfile, ServiceRequest};

use super::convert::{self, DiagnosticExtras};
use super::logging::{self, held_back, Throttle};
use super::params::{self, Cli};
use super::stats::{ms, RunStats, TickKind};
use crate::control::{
    CommandType, ControlError, ControlLoop, ImageData, LoopOptions, NodeParams, ParamError,
    TickStatus,
};
use crate::observation::ObservationError;

/// The node's name (remappable with `-r __node:=NAME`).
pub const NODE_NAME: &str = "policy_node";

/// How long one `spin_once` may block: the longest a shutdown waits for the spin thread.
const SPIN_TIMEOUT: Duration = Duration::from_millis(10);
/// One warning per kind and topic per period.
const THROTTLE_PERIOD: Duration = Duration::from_secs(2);
/// `/diagnostics` period.
const DIAGNOSTICS_PERIOD: Duration = Duration::from_secs(1);
/// `SCHED_FIFO` priority of the runtime (tick) and spin threads: above every normal thread,
/// below ros2_control's controller manager (50 by default), which commands the hardware.
pub const REALTIME_PRIORITY: i32 = 40;

/// Why the node did not start or stopped with an error. Configuration errors name the
/// parameter (or file) and the rule; exit code 2. Others: exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Usage(String),
    #[error("parameters file `{}`: {detail}", path.display())]
    ParamsFile {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("cannot initialise ROS 2 (rcl_init): {0}")]
    Init(String),
    #[error("invalid parameters: {0}")]
    Param(#[from] ParamError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot {what}: {source}")]
    Ros {
        what: String,
        #[source]
        source: r2r::Error,
    },
    #[error("cannot start the tokio runtime or a thread: {0}")]
    Runtime(#[source] std::io::Error),
}

impl NodeError {
    /// 2 for configuration errors (nothing ran), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeError::Usage(_)
            | NodeError::ParamsFile { .. }
            | NodeError::Param(_)
            | NodeError::Control(_) => 2,
            NodeError::Init(_) | NodeError::Ros { .. } | NodeError::Runtime(_) => 1,
        }
    }
}

fn ros(what: impl Into<String>) -> impl FnOnce(r2r::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Ros { what, source }
}

/// How the node ended.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `SIGINT` or `SIGTERM`.
    pub signal: &'static str,
    /// The summary line that was logged.
    pub line: String,
}

/// State shared by the node's tasks.
struct Shared {
    control: Mutex<ControlLoop>,
    clock: Arc<Mutex<r2r::Clock>>,
    throttle: Mutex<Throttle>,
    stats: Mutex<RunStats>,
    params: NodeParams,
    /// The input named by the last stale tick, until a command is published again.
    stale_input: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// ROS time (sim time with `use_sim_time`), nanoseconds.
    fn now_ns(&self) -> i64 {
        lock(&self.clock)
            .get_now()
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// `Some(held back)` when a warning for `key` is due.
    fn due(&self, key: &str) -> Option<u64> {
        lock(&self.throttle).check(key, Instant::now())
    }

    /// Logs a rejected message (throttled per topic and kind of error).
    fn rejected(&self, topic: &str, error: &ObservationError) {
        let kind = format!("{error:?}");
        let kind = kind
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("");
        if let Some(n) = self.due(&format!("reject:{topic}:{kind}")) {
            log::warn!(
                "{topic}: message rejected, no observation taken from it: {error}{}",
                held_back(n)
            );
        }
    }
}

/// A camera subscription, by message type.
enum CameraSub {
    Raw(Pin<Box<dyn Stream<Item = Image>>>),
    Compressed(Pin<Box<dyn Stream<Item = CompressedImage>>>),
}

impl CameraSub {
    fn type_name(&self) -> &'static str {
        match self {
            CameraSub::Raw(_) => "sensor_msgs/Image",
            CameraSub::Compressed(_) => "sensor_msgs/CompressedImage",
        }
    }
}

/// The command publisher for `command_type`.
enum CommandPublisher {
    Array(Publisher<Float64MultiArray>),
    Trajectory {
        publisher: Publisher<JointTrajectory>,
        full_chunk: bool,
    },
    State(Publisher<JointState>),
}

impl CommandPublisher {
    fn create(node: &mut r2r::Node, params: &NodeParams) -> Result<Self, NodeError> {
        let topic = &params.command_topic;
        let what = || format!("publish on `{topic}` (parameter `command_topic`)");
        let qos = QosProfile::default();
        Ok(match params.command_type {
            CommandType::Float64MultiArray => {
                CommandPublisher::Array(node.create_publisher(topic, qos).map_err(ros(what()))?)
            }
            CommandType::JointTrajectory => CommandPublisher::Trajectory {
                publisher: node.create_publisher(topic, qos).map_err(ros(what()))?,
                full_chunk: params.trajectory_full_chunk,
            },
            CommandType::JointState => {
                CommandPublisher::State(node.create_publisher(topic, qos).map_err(ros(what()))?)
            }
        })
    }

    fn wants_plan(&self) -> bool {
        matches!(
            self,
            CommandPublisher::Trajectory {
                full_chunk: true,
                ..
            }
        )
    }

    fn publish(
        &self,
        params: &NodeParams,
        command: &[f64],
        plan: &[Vec<f64>],
        now_ns: i64,
    ) -> r2r::Result<()> {
        match self {
            CommandPublisher::Array(p) => p.publish(&convert::float64_multi_array(command)),
            CommandPublisher::Trajectory { publisher, .. } => publisher.publish(
                &convert::joint_trajectory(&params.joint_names, command, plan, params.period()),
            ),
            CommandPublisher::State(p) => p.publish(&convert::joint_state_command(
                &params.joint_names,
                command,
                now_ns,
            )),
        }
    }
}

/// Creates the rcl context; rcl rejects bad `--ros-args` by panicking inside r2r, which is
/// turned into an error here.
fn create_context() -> Result<r2r::Context, NodeError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(r2r::Context::create);
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(ctx)) => Ok(ctx),
        Ok(Err(e)) => Err(NodeError::Init(e.to_string())),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            Err(NodeError::Init(format!("{msg} (check the --ros-args)")))
        }
    }
}

/// Checks each `--params-file` before rcl reads it (rcl aborts on a missing or malformed file).
fn check_params_files(cli: &Cli) -> Result<(), NodeError> {
    for path in &cli.params_files {
        let text = std::fs::read_to_string(path).map_err(|e| NodeError::ParamsFile {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        serde_yaml::from_str::<serde_yaml::Value>(&text).map_err(|e| NodeError::ParamsFile {
            path: path.clone(),
            detail: format!("not valid YAML: {e}"),
        })?;
    }
    Ok(())
}

/// Runs the node until SIGINT or SIGTERM. The ROS arguments are read by rcl from the
/// process's command line; `cli` is what lies outside them.
pub fn run(cli: &Cli) -> Result<Summary, NodeError> {
    check_params_files(cli)?;
    let ctx = create_context()?;
    let mut node = r2r::Node::create(ctx, NODE_NAME, "").map_err(ros("create the node"))?;
    let node_name = node.name().unwrap_or_else(|_| NODE_NAME.to_string());
    logging::init(node.logger(), cli.log_level.as_deref());

    // Parameters: validated before anything else exists.
    let overrides = params::overrides(&lock(&node.params));
    let (params, unknown) = NodeParams::from_map(&overrides)?;
    for name in unknown {
        log::warn!("unknown parameter `{name}` is ignored (a typo? see `policy_node --help` for the parameters)");
    }
    params::declare_all(&mut lock(&node.params), &overrides);

    let control = ControlLoop::new(
        params.clone(),
        LoopOptions {
            force_sync: false,
            auto_refill_from_warmup: true,
        },
    )?;

    // Every ROS interface is created before the first tick: a bad topic name stops the node
    // here, naming its parameter. First the parameter services (and `use_sim_time`: r2r's
    // time source then follows /clock); run-time changes are refused, see `ReadOnlyParams`.
    let (param_handler, mut param_events) = node
        .make_derived_parameter_handler(Arc::new(Mutex::new(params::ReadOnlyParams)))
        .map_err(ros("create the parameter services"))?;
    let joint_sub = node
        .subscribe::<JointState>(&params.joint_state_topic, QosProfile::sensor_data())
        .map_err(ros(format!(
            "subscribe to `{}` (parameter `joint_state_topic`)",
            params.joint_state_topic
        )))?;
    let mut cameras = Vec::new();
    for (topic, input) in control.camera_inputs() {
        let what = format!("subscribe to `{topic}` (parameter `camera_topics`)");
        let sub = if NodeParams::is_compressed_topic(&topic) {
            let s = node
                .subscribe::<CompressedImage>(&topic, QosProfile::sensor_data())
                .map_err(ros(what))?;
            CameraSub::Compressed(Box::pin(s))
        } else {
            let s = node
                .subscribe::<Image>(&topic, QosProfile::sensor_data())
                .map_err(ros(what))?;
            CameraSub::Raw(Box::pin(s))
        };
        cameras.push((topic, input, sub));
    }
    let publisher = CommandPublisher::create(&mut node, &params)?;
    let diagnostics = node
        .create_publisher::<DiagnosticArray>("/diagnostics", QosProfile::default())
        .map_err(ros("publish on /diagnostics"))?;
    let reset_srv = node
        .create_service::<Trigger::Service>("~/reset", QosProfile::services_default())
        .map_err(ros("create the ~/reset service"))?;
    let enable_srv = node
        .create_service::<SetBool::Service>("~/enable", QosProfile::services_default())
        .map_err(ros("create the ~/enable service"))?;
    let timer = node
        .create_timer(params.period())
        .map_err(ros("create the control timer"))?;
    let use_sim_time = matches!(
        lock(&node.params).get("use_sim_time").map(|p| &p.value),
        Some(r2r::ParameterValue::Bool(true))
    );

    let status = control.status();
    let shared = Arc::new(Shared {
        control: Mutex::new(control),
        clock: node.get_ros_clock(),
        throttle: Mutex::new(Throttle::new(THROTTLE_PERIOD)),
        stats: Mutex::new(RunStats::with_period(params.period())),
        params: params.clone(),
        stale_input: Mutex::new(None),
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NodeError::Runtime)?;
    let node = Arc::new(Mutex::new(node));
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let node = node.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("ros-spin".into())
            .spawn(move || {
                // The timer wakes the tick from here. Same permission as the runtime thread,
                // whose result is the one logged.
                let _ = set_realtime_priority(REALTIME_PRIORITY);
                while !stop.load(Ordering::Relaxed) {
                    lock(&node).spin_once(SPIN_TIMEOUT);
                }
            })
            .map_err(NodeError::Runtime)?
    };

    // The runtime thread (this one) runs the ticks. Threads started before (refill worker,
    // runtime thread pools) keep their normal priority.
    match set_realtime_priority(REALTIME_PRIORITY) {
        Ok(()) => log::info!(
            "control and spin threads run at real-time priority (SCHED_FIFO {REALTIME_PRIORITY}); \
             inference stays at normal priority"
        ),
        Err(e) => log::info!(
            "control thread at normal priority: SCHED_FIFO {REALTIME_PRIORITY} not permitted ({e}); \
             ticks may wait for other threads on a busy CPU (grant CAP_SYS_NICE or an rtprio limit)"
        ),
    }

    let started = Instant::now();
    let local = tokio::task::LocalSet::new();
    let signal = local.block_on(&runtime, async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigint = signal(SignalKind::interrupt()).map_err(NodeError::Runtime)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(NodeError::Runtime)?;

        tokio::task::spawn_local(param_handler);
        // No change is ever accepted, so no event comes; drain the stream regardless.
        tokio::task::spawn_local(async move { while param_events.next().await.is_some() {} });
        tokio::task::spawn_local(joint_feed(shared.clone(), joint_sub));
        let mut inputs = Vec::new();
        for (index, (topic, input, sub)) in cameras.into_iter().enumerate() {
            inputs.push(format!("{topic} ({} -> {input})", sub.type_name()));
            match sub {
                CameraSub::Raw(s) => tokio::task::spawn_local(camera_feed(shared.clone(), index, topic, s, convert::raw_image)),
                CameraSub::Compressed(s) => {
                    tokio::task::spawn_local(camera_feed(shared.clone(), index, topic, s, convert::compressed_image))
                }
            };
        }
        tokio::task::spawn_local(tick_loop(shared.clone(), timer, publisher, use_sim_time));
        tokio::task::spawn_local(reset_service(shared.clone(), reset_srv));
        tokio::task::spawn_local(enable_service(shared.clone(), enable_srv));
        tokio::task::spawn_local(diagnostics_loop(shared.clone(), diagnostics, node_name.clone()));

        log::info!(
            "ready: {} on {}; inputs {} (sensor_msgs/JointState), {}; {} commands on {} at {} Hz ({}); refill {} \
             ({} step(s) ahead); output {}; services ~/reset, ~/enable; status on /diagnostics",
            status.backend,
            status.device,
            params.joint_state_topic,
            inputs.join(", "),
            params.command_type.as_str(),
            params.command_topic,
            params.control_rate_hz,
            if use_sim_time { "ROS time from /clock: use_sim_time" } else { "ROS time" },
            match status.mode {
                crate::policy::RefillMode::Asynchronous => "async",
                crate::policy::RefillMode::Synchronous => "sync",
            },
            status.refill_ahead,
            if status.enabled { "enabled" } else { "disabled (call ~/enable)" },
        );

        let signal = tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        };
        Ok::<_, NodeError>(signal)
    });
    // Stop the tasks (they hold the publishers and services), then the spin thread.
    drop(local);
    drop(runtime);
    stop.store(true, Ordering::Relaxed);
    let _ = spinner.join();
    let signal = signal?;

    let line = summary_line(&shared, signal, started.elapsed());
    log::info!("{line}");
    // Dropping the control loop joins the refill worker (an in-flight chunk finishes first).
    drop(shared);
    drop(node);
    Ok(Summary { signal, line })
}

/// Puts the calling thread under `SCHED_FIFO` at `priority`, reset on fork (threads it starts
/// later get normal priority). Fails without `CAP_SYS_NICE` or a high enough `rtprio` limit.
fn set_realtime_priority(priority: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
        let rc = unsafe {
            libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "real-time priority is only set on Linux",
        ))
    }
}

/// Camera `index`: each message converted and handed to the control loop.
async fn camera_feed<M, S>(
    shared: Arc<Shared>,
    index: usize,
    topic: String,
    mut stream: S,
    convert: fn(M) -> (Time, Result<ImageData, ObservationError>),
) where
    S: Stream<Item = M> + Unpin,
{
    while let Some(msg) = stream.next().await {
        let receive_ns = shared.now_ns();
        let (stamp, image) = convert(msg);
        let stamp = convert::stamp_ns(&stamp, receive_ns);
        let result = match image {
            Ok(image) => lock(&shared.control).on_image(index, stamp, image),
            Err(e) => {
                lock(&shared.control).count_rejected();
                Err(e)
            }
        };
        if let Err(e) = result {
            shared.rejected(&topic, &e);
        }
    }
}

/// Joint states: reordered by `joint_names` in the control loop.
async fn joint_feed<S>(shared: Arc<Shared>, mut stream: S)
where
    S: Stream<Item = JointState> + Unpin,
{
    let topic = shared.params.joint_state_topic.clone();
    while let Some(msg) = stream.next().await {
        let receive_ns = shared.now_ns();
        let stamp = convert::stamp_ns(&msg.header.stamp, receive_ns);
        let result = lock(&shared.control).on_joint_state(stamp, &msg.name, &msg.position);
        if let Err(e) = result {
            shared.rejected(&topic, &e);
        }
    }
}

/// The control timer: one [`ControlLoop::tick`] per period, the command published at once.
async fn tick_loop(
    shared: Arc<Shared>,
    mut timer: r2r::Timer,
    publisher: CommandPublisher,
    use_sim_time: bool,
) {
    let max_age = shared.params.max_observation_age_ms;
    let mut was_stale = false;
    while timer.tick().await.is_ok() {
        let woke = Instant::now();
        let now_ns = shared.now_ns();
        let (status, plan, kind) = {
            let mut control = lock(&shared.control);
            let status = control.tick(now_ns);
            let plan = if publisher.wants_plan() && matches!(status, TickStatus::Command(_)) {
                control.remaining_plan()
            } else {
                Vec::new()
            };
            let kind = if control.last_tick_requested_chunk() {
                TickKind::Refill
            } else {
                TickKind::Queue
            };
            (status, plan, kind)
        };
        // Lost ticks are counted on wall time only (sim time may pause or jump).
        lock(&shared.stats).tick(woke, !use_sim_time);
        match status {
            TickStatus::Command(command) => {
                match publisher.publish(&shared.params, &command, &plan, now_ns) {
                    Ok(()) => {
                        let done = Instant::now();
                        let late = lock(&shared.stats).command(done, done - woke, kind);
                        if late {
                            if let Some(n) = shared.due("late") {
                                log::warn!(
                                    "late tick: {:.3} ms from the timer to the command (period {:.3} ms) on a {} tick{}",
                                    (done - woke).as_secs_f64() * 1e3,
                                    shared.params.period().as_secs_f64() * 1e3,
                                    match kind {
                                        TickKind::Refill => "refill (chunk requested; computed on the tick when synchronous)",
                                        _ => "queue",
                                    },
                                    held_back(n)
                                );
                            }
                        }
                        if was_stale {
                            if lock(&shared.stats).commands == 1 {
                                log::info!("first command published: all inputs are fresh");
                            } else {
                                log::info!("inputs are fresh again: commands resumed");
                            }
                            was_stale = false;
                            lock(&shared.throttle).clear("stale");
                        }
                        *lock(&shared.stale_input) = None;
                    }
                    Err(e) => {
                        lock(&shared.stats).errors += 1;
                        if let Some(n) = shared.due("publish") {
                            log::error!(
                                "cannot publish the command on `{}`: {e}{}",
                                shared.params.command_topic,
                                held_back(n)
                            );
                        }
                    }
                }
            }
            TickStatus::Disabled => lock(&shared.stats).disabled += 1,
            TickStatus::Stale { what, age_ms } => {
                lock(&shared.stats).stale += 1;
                was_stale = true;
                if let Some(n) = shared.due("stale") {
                    match age_ms {
                        Some(age) => log::warn!(
                            "no command: `{what}` is stale: its newest message is {age:.0} ms old \
                             (max_observation_age_ms {max_age}){}",
                            held_back(n)
                        ),
                        None => {
                            let (topic, detail) =
                                what.split_once(" (").unwrap_or((what.as_str(), ")"));
                            log::warn!(
                                "no command: waiting for `{topic}` ({detail}{}",
                                held_back(n)
                            )
                        }
                    }
                }
                *lock(&shared.stale_input) = Some(what);
            }
            TickStatus::Overrun => {
                lock(&shared.stats).overrun(woke.elapsed());
                if let Some(n) = shared.due("overrun") {
                    log::warn!(
                        "overrun: no action ready on this tick (the queue ran out before the next chunk \
                         arrived){}",
                        held_back(n)
                    );
                }
            }
            TickStatus::Error(e) => {
                lock(&shared.stats).errors += 1;
                if let Some(n) = shared.due("error") {
                    log::error!("no command: {e}{}", held_back(n));
                }
            }
        }
    }
}

/// `~/reset` (`std_srvs/srv/Trigger`).
async fn reset_service<S>(shared: Arc<Shared>, mut requests: S)
where
    S: Stream<Item = ServiceRequest<Trigger::Service>> + Unpin,
{
    while let Some(req) = requests.next().await {
        let message = lock(&shared.control).reset();
        *lock(&shared.stale_input) = None;
        log::info!("~/reset called: {message}");
        if let Err(e) = req.respond(Trigger::Response {
            success: true,
            message,
        }) {
            log::warn!("~/reset: cannot send the response: {e}");
        }
    }
}

/// `~/enable` (`std_srvs/srv/SetBool`).
async fn enable_service<S>(shared: Arc<Shared>, mut requests: S)
where
    S: Stream<Item = ServiceRequest<SetBool::Service>> + Unpin,
{
    while let Some(req) = requests.next().await {
        let on = req.message.data;
        let message = {
            let mut control = lock(&shared.control);
            let was = control.enabled();
            control.set_enabled(on);
            match (was, on) {
                (false, true) => "command output enabled (starting from a fresh chunk)",
                (true, false) => "command output disabled",
                (true, true) => "command output was already enabled",
                (false, false) => "command output was already disabled",
            }
        };
        log::info!("~/enable: {message}");
        let response = SetBool::Response {
            success: true,
            message: message.to_string(),
        };
        if let Err(e) = req.respond(response) {
            log::warn!("~/enable: cannot send the response: {e}");
        }
    }
}

/// `/diagnostics` once per [`DIAGNOSTICS_PERIOD`] (wall time).
async fn diagnostics_loop(
    shared: Arc<Shared>,
    publisher: Publisher<DiagnosticArray>,
    node_name: String,
) {
    let mut interval = tokio::time::interval(DIAGNOSTICS_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = lock(&shared.control).status().counters;
    let mut previous_commands = 0u64;
    let mut previous_at = Instant::now();
    interval.tick().await;
    loop {
        interval.tick().await;
        let status = lock(&shared.control).status();
        let (commands_total, lost_ticks, late_ticks, queue_latency, window) = {
            let mut stats = lock(&shared.stats);
            let window = stats.roll_window(Instant::now());
            (
                stats.commands,
                stats.lost_ticks,
                stats.late_ticks,
                stats.latency_of(TickKind::Queue),
                window,
            )
        };
        let elapsed = previous_at.elapsed().as_secs_f64().max(1e-9);
        let c = status.counters;
        let extras = DiagnosticExtras {
            node_name: node_name.clone(),
            control_rate_hz: shared.params.control_rate_hz,
            achieved_rate_hz: commands_total.saturating_sub(previous_commands) as f64 / elapsed,
            commands_total,
            stale_grew: c.stale > previous.stale,
            overruns_grew: c.overruns > previous.overruns,
            errors_grew: c.errors > previous.errors,
            stale_input: lock(&shared.stale_input).clone(),
            lost_ticks,
            late_ticks,
            queue_latency,
            window,
        };
        previous = c;
        previous_commands = commands_total;
        previous_at = Instant::now();
        if let Err(e) = publisher.publish(&convert::diagnostics(&status, &extras, shared.now_ns()))
        {
            if let Some(n) = shared.due("diagnostics") {
                log::warn!("cannot publish /diagnostics: {e}{}", held_back(n));
            }
        }
    }
}

/// The exit summary: commands, achieved rate, tick counts, inference and tick latency.
fn summary_line(shared: &Shared, signal: &str, elapsed: Duration) -> String {
    let stats = lock(&shared.stats).clone();
    let status = lock(&shared.control).status();
    let tick = stats.latency();
    let queue = stats.latency_of(TickKind::Queue);
    let refill = stats.latency_of(TickKind::Refill);
    let overrun = stats.latency_of(TickKind::Overrun);
    let remote = status.remote.as_ref().map_or_else(String::new, |r| {
        format!(
            "; inference server {} model `{}` ({}): round trip p50/p99/mean/last {}/{}/{}/{} ms over \
             {} answered call(s) of {}, {} error(s) ({} timeout(s), {} unavailable, {} skipped in \
             backoff, {} bad answer(s), {} server error(s)), {} reconnect(s)",
            r.url,
            r.model,
            r.state,
            ms(r.rtt_p50),
            ms(r.rtt_p99),
            ms(r.rtt_mean),
            ms(r.rtt_last),
            r.ok,
            r.calls,
            r.errors(),
            r.timeouts,
            r.unavailable,
            r.skipped,
            r.bad_answers,
            r.server_errors,
            r.reconnects
        )
    });
    format!(
        "stopped on {signal} after {:.1} s: {} command(s) published on {} ({:.2} Hz achieved, control_rate_hz {}); \
         {} tick(s) ({:.2} Hz): {} stale, {} overrun(s), {} error(s), {} disabled; inference ({} chunk(s) since start or \
         the last reset) latency last/mean/max {}/{}/{} ms on {}/{}; tick latency (timer -> published) \
         p50/p90/p99/max {} ms; of which {} served from the queue {} ms, {} refill tick(s) (chunk requested, \
         computed on the tick when synchronous) {} ms; {} overrun tick(s) (timer -> handled) {} ms; \
         {} lost tick(s) (timer periods without a tick), {} late tick(s) (longer than the period); \
         refill {} step(s) ahead{}{}",
        elapsed.as_secs_f64(),
        stats.commands,
        shared.params.command_topic,
        stats.command_rate_hz(),
        shared.params.control_rate_hz,
        stats.ticks,
        stats.tick_rate_hz(),
        stats.stale,
        stats.overruns,
        stats.errors,
        stats.disabled,
        status.latency.count,
        ms(status.latency.last),
        ms(status.latency.mean()),
        ms(status.latency.max),
        status.backend,
        status.device,
        tick.ms(),
        queue.count,
        queue.ms(),
        refill.count,
        refill.ms(),
        overrun.count,
        overrun.ms(),
        stats.lost_ticks,
        stats.late_ticks,
        status.refill_ahead,
        if status.refill_ahead_auto {
            format!(
                " (automatic; recent inference p99 {} ms)",
                ms(status.latency_recent_p99)
            )
        } else {
            String::new()
        },
        remote,
    )
}
