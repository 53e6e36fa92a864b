//! The r2r node: a managed (lifecycle) node around the ROS-free [`ControlLoop`].
//!
//! - At start: the parameters, the lifecycle services (`~/change_state`, `~/get_state`,
//!   `~/get_available_states`, `~/get_available_transitions`, `~/get_transition_graph`) and
//!   `~/transition_event`, the parameter services ([`super::param_services`]), `~/reset`,
//!   `~/enable`, `/diagnostics` and `~/action_chunk`. With `autostart` (the default) the node
//!   then configures and activates itself, as before it was a managed node.
//! - configure: the parameters are validated, the export loaded, checked against them and
//!   warmed up ([`ControlLoop::new`], on a blocking thread so the services keep answering),
//!   then the subscriptions and the command publisher are created. Any failure leaves the
//!   node unconfigured, with the error in the log.
//! - activate: the control timer starts, subscriptions feed the loop, commands flow, each
//!   chunk switched in goes out on `~/action_chunk`. deactivate: the timer stops, no command,
//!   the queued plan and the inputs received so far are dropped. cleanup: the subscriptions,
//!   the publisher and the control loop go (the model and its memory are released).
//!   shutdown (or SIGINT / SIGTERM): everything goes, the node exits with a summary.
//!
//! The state machine itself is [`super::lifecycle`]; here is only the wiring.
//!
//! Threads: rcl is spun on its own thread (`spin_once` wakes timers, subscriptions and
//! services into r2r's channels); everything else runs as tasks on one single-threaded tokio
//! runtime, sharing the control loop behind a mutex that is held only for a call.
//! Inference runs on the control loop's refill worker (asynchronous refill), so neither a
//! tick nor a subscription waits for a whole chunk.
//!
//! Where the process may (root, `CAP_SYS_NICE`, or an `rtprio` limit), the runtime thread
//! (ticks) and the spin thread (timer wake-ups) run at real-time priority
//! ([`REALTIME_PRIORITY`], `SCHED_FIFO`, reset on fork), so a tick is not preempted by other
//! threads of this or other processes (the refill worker, DDS, the robot's own nodes) on a
//! busy CPU; threads they start (the loading thread, the refill worker, the runtimes'
//! threads) run at normal priority.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use r2r::builtin_interfaces::msg::Time;
use r2r::diagnostic_msgs::msg::DiagnosticArray;
use r2r::lifecycle_msgs::msg::{
    State as StateMsg, Transition as TransitionMsg, TransitionDescription, TransitionEvent,
};
use r2r::lifecycle_msgs::srv::{
    ChangeState, GetAvailableStates, GetAvailableTransitions, GetState,
};
use r2r::sensor_msgs::msg::{CompressedImage, Image};
use r2r::std_msgs::msg::String as StringMsg;
use r2r::std_srvs::srv::{SetBool, Trigger};
use r2r::trajectory_msgs::msg::JointTrajectory;
use r2r::{Publisher, QosProfile, ServiceRequest};
use tokio::task::JoinHandle;

use super::convert::{self, DiagnosticExtras};
use super::lifecycle::{Machine, Outcome, Refusal, State, Transition, Work, TRANSITIONS};
use super::logging::{self, held_back, Throttle};
use super::param_services::{ParamHost, ParamServices, TopicSets};
use super::params::{self, Cli};
use super::process::{error_line, set_realtime_priority};
use super::stats::{ms, RunStats, TickKind};
use super::wiring::{self, Publishers};
use crate::control::episode::EndReason;
use crate::control::param_specs::{ParamStore, Phase};
use crate::control::policies::{load_all, LoadedPolicy};
use crate::control::safety::{Halt, Safety};
use crate::control::{
    ControlError, ControlLoop, ImageData, LoopOptions, NodeParams, ParamError, ParamValue, Status,
    TickStatus,
};
use crate::observation::ObservationError;

mod episode;
mod recording;

/// The node's name (remappable with `-r __node:=NAME`).
pub const NODE_NAME: &str = "policy_node";

/// How long one `spin_once` may block: the longest a shutdown waits for the spin thread.
const SPIN_TIMEOUT: Duration = Duration::from_millis(10);
/// One warning per kind and topic per period.
const THROTTLE_PERIOD: Duration = Duration::from_secs(2);
/// `/diagnostics` period.
const DIAGNOSTICS_PERIOD: Duration = Duration::from_secs(1);
/// On SIGINT / SIGTERM during a transition (e.g. loading a large model), how long the node
/// waits for it to end before shutting down.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After the shutdown transition, how long the node keeps its entities so that the
/// `~/change_state` response and the transition events reach their readers.
const FINAL_GRACE: Duration = Duration::from_millis(300);
/// At shutdown, how long the node keeps its publishers after the channels' `on_stop`
/// messages, so that they reach the controllers.
const STOP_GRACE: Duration = Duration::from_millis(200);
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
    #[error("lifecycle: {0}")]
    Lifecycle(#[from] Refusal),
    #[error("{0} panicked")]
    Panicked(String),
}

impl NodeError {
    /// 2 for configuration errors (nothing ran), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeError::Usage(_)
            | NodeError::ParamsFile { .. }
            | NodeError::Param(_)
            | NodeError::Control(_) => 2,
            NodeError::Init(_)
            | NodeError::Ros { .. }
            | NodeError::Runtime(_)
            | NodeError::Lifecycle(_)
            | NodeError::Panicked(_) => 1,
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
    /// `SIGINT`, `SIGTERM` or `the shutdown transition`.
    pub signal: &'static str,
    /// The summary line that was logged.
    pub line: String,
}

/// State shared by the node's tasks.
struct Shared {
    /// The control loop while configured.
    control: Mutex<Option<ControlLoop>>,
    machine: Mutex<Machine>,
    store: Mutex<ParamStore>,
    /// Subscriptions feed the loop only while active.
    active: AtomicBool,
    clock: Arc<Mutex<r2r::Clock>>,
    throttle: Mutex<Throttle>,
    stats: Mutex<RunStats>,
    /// The input named by the last stale tick, until a command is published again.
    stale_input: Mutex<Option<String>>,
    /// The input named by the last stale tick since the last `/diagnostics` message (which
    /// names it even when commands resumed in between).
    stale_since_diagnostics: Mutex<Option<String>>,
    /// The parameters of the current (else the last) configuration.
    configured_params: Mutex<Option<NodeParams>>,
    /// The command topics of the current (else the last) configuration, in words.
    command_topics: Mutex<String>,
    /// The status of the last configuration as it was when it last stopped commanding, kept
    /// after cleanup for the summary.
    last_status: Mutex<Option<Status>>,
    /// Why the last configure failed (cleared by one that succeeds), for `/diagnostics`.
    configure_error: Mutex<Option<String>>,
    /// Fully qualified node name.
    node_name: String,
    /// The node's name, for the `/diagnostics` status (`policy_node: policy`).
    short_name: String,
    /// The e-stop latch and the heartbeat watchdog (`~/estop`, `~/heartbeat`), from start.
    safety: Arc<Mutex<Safety>>,
    /// Why the last tick was held back by them, for `/diagnostics`.
    halt: Mutex<Option<String>>,
    /// `~/run_policy` episodes: the running one, and counts.
    episodes: Mutex<episode::Episodes>,
    /// The running episode's recording, if it is recorded.
    recording: Mutex<Option<recording::Recording>>,
    /// The recorder (its node, subscriptions and thread), from the first recorded goal until
    /// cleanup.
    recorder: Mutex<Option<recording::Recorder>>,
    /// The last recording's error, for `/diagnostics`.
    recording_error: Mutex<Option<String>>,
    /// The policies loaded besides the active one (`policies`), ready to switch in.
    parked: Mutex<Vec<LoadedPolicy>>,
    /// The active policy's name and the memory each loaded policy took (MB), in load order.
    policy_names: Mutex<(String, Vec<(String, f64)>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The r2r node, shared by the spin thread (which holds it while it waits in `spin_once`)
/// and the lifecycle transitions (which create and destroy subscriptions, publishers and
/// timers). The spin thread steps aside while another thread waits for the node: with a
/// plain mutex it would take the node back at once, starving the other thread for seconds.
struct SharedNode {
    node: Mutex<r2r::Node>,
    waiting: AtomicUsize,
}

impl SharedNode {
    /// Runs `f` on the node (waiting at most one `spin_once`).
    fn with<R>(&self, f: impl FnOnce(&mut r2r::Node) -> R) -> R {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let mut node = lock(&self.node);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        f(&mut node)
    }

    /// One `spin_once` of the spin thread, after any thread waiting for the node had it.
    fn spin_once(&self) {
        while self.waiting.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
        lock(&self.node).spin_once(SPIN_TIMEOUT);
    }
}

impl Shared {
    /// ROS time (sim time with `use_sim_time`), nanoseconds.
    fn now_ns(&self) -> i64 {
        lock(&self.clock)
            .get_now()
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn state(&self) -> State {
        lock(&self.machine).current()
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

impl ParamHost for Shared {
    fn value(&self, name: &str) -> Option<ParamValue> {
        lock(&self.store).get(name).cloned()
    }

    fn phase(&self) -> Phase {
        match self.state() {
            State::Unconfigured => Phase::Unconfigured,
            s @ (State::Inactive | State::Active) => Phase::Configured(s.label()),
            s => Phase::Transition(s.label()),
        }
    }

    /// Checks a change against the rules and the whole configuration; configured, also
    /// against the loaded export, then applies it to the control loop (from its next tick)
    /// before storing it. A refused change leaves everything as it was.
    fn set(&self, changes: &[(String, Option<ParamValue>)]) -> Result<(), String> {
        let phase = self.phase();
        let mut store = lock(&self.store);
        let checked = store.check(changes, phase)?;
        if let Phase::Configured(_) = phase {
            let mut control = lock(&self.control);
            if let (Some(control), Some(params)) = (control.as_mut(), checked.params.clone()) {
                // The loaded policies waiting for a goal take the change too (checked first,
                // so that a refusal leaves every one as it was).
                let mut parked = lock(&self.parked);
                for p in parked.iter() {
                    let mut theirs = params.clone();
                    theirs.export_dir = p.control.params().export_dir.clone();
                    p.control
                        .check_live(&theirs)
                        .map_err(|e| format!("policy `{}`: {e}", p.name))?;
                }
                for change in control.apply_live(params.clone())? {
                    log::info!("live parameters: {change}");
                }
                for p in parked.iter_mut() {
                    let mut theirs = params.clone();
                    theirs.export_dir = p.control.params().export_dir.clone();
                    p.control
                        .apply_live(theirs)
                        .map_err(|e| format!("policy `{}`: {e}", p.name))?;
                }
                *lock(&self.configured_params) = Some(params);
            }
        }
        if let Some(note) = &checked.note {
            log::warn!(
                "parameter accepted in the unconfigured state; configure will refuse: {note}"
            );
        }
        store.commit(&checked);
        Ok(())
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

/// What the tick loop needs that is fixed for a configuration.
struct TickContext {
    /// A name per published value (`joint_names` for the flat parameters' map).
    columns: Vec<String>,
    period: Duration,
    /// Lost ticks are counted on wall time only (sim time may pause or jump).
    use_sim_time: bool,
}

/// What exists while the node is configured (besides the control loop in [`Shared`]).
struct Configured {
    publishers: Publishers,
    feeds: Vec<JoinHandle<()>>,
    /// The tick loop, while active.
    tick: Option<JoinHandle<()>>,
    /// The inputs, in words, for the log.
    inputs: Vec<String>,
}

/// Runs lifecycle transitions: the work of each transition state, and `~/transition_event`.
struct Driver {
    shared: Arc<Shared>,
    node: Arc<SharedNode>,
    events: Publisher<TransitionEvent>,
    action_chunk: Publisher<JointTrajectory>,
    configured: RefCell<Option<Configured>>,
    /// The current state, for whoever waits for one (the main task waits for `finalized`).
    state: tokio::sync::watch::Sender<State>,
    use_sim_time: bool,
}

fn state_msg(s: State) -> StateMsg {
    StateMsg {
        id: s.id(),
        label: s.label().to_string(),
    }
}

fn description_msg(t: &Transition) -> TransitionDescription {
    TransitionDescription {
        transition: TransitionMsg {
            id: t.id,
            label: t.label.to_string(),
        },
        start_state: state_msg(t.start),
        goal_state: state_msg(t.goal),
    }
}

impl Driver {
    fn publish_event(&self, t: &Transition) {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let d = description_msg(t);
        let event = TransitionEvent {
            timestamp,
            transition: d.transition,
            start_state: d.start_state,
            goal_state: d.goal_state,
        };
        if let Err(e) = self.events.publish(&event) {
            log::warn!("cannot publish ~/transition_event: {e}");
        }
        self.state.send_replace(t.goal);
    }

    /// Starts `t` from the current state: the node is in its transition state when this
    /// returns; [`complete`](Self::complete) runs the work.
    fn begin(&self, t: &'static Transition) -> Result<Work, Refusal> {
        let work = lock(&self.shared.machine).begin(t)?;
        self.publish_event(t);
        Ok(work)
    }

    /// Runs the work of the transition state, then finishes it (through error processing
    /// when the work erred). `Err`: the transition did not succeed (the state is then where
    /// the state machine goes on failure), with the reason.
    async fn complete(&self, work: Work) -> Result<(), NodeError> {
        let (mut outcome, error) = self.work(work).await;
        loop {
            let finished = lock(&self.shared.machine).finish(outcome);
            let Some((t, next)) = finished else { break };
            self.publish_event(t);
            match next {
                Some(work) => {
                    log::warn!("error processing: releasing whatever the failed transition left");
                    outcome = self.work(work).await.0;
                }
                None => break,
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The requestable transition `label` from the current state, run to its end.
    async fn run(&self, label: &str) -> Result<(), NodeError> {
        let resolved = lock(&self.shared.machine).resolve(0, label);
        let work = self.begin(resolved?)?;
        self.complete(work).await
    }

    async fn work(&self, work: Work) -> (Outcome, Option<NodeError>) {
        let result = match work {
            Work::Configure => self.configure().await,
            Work::Activate => self.activate(),
            Work::Deactivate => {
                let _ = self.deactivate();
                Ok(())
            }
            Work::Cleanup => {
                self.cleanup().await;
                Ok(())
            }
            Work::Shutdown | Work::Error => {
                if self.deactivate() {
                    // The channels' on_stop messages go out before their publishers do.
                    tokio::time::sleep(STOP_GRACE).await;
                }
                self.cleanup().await;
                Ok(())
            }
        };
        match result {
            Ok(()) => (Outcome::Success, None),
            Err(e @ NodeError::Panicked(_)) => (Outcome::Error, Some(e)),
            Err(e) => (Outcome::Failure, Some(e)),
        }
    }

    /// Validates the parameters, loads and warms up the policy (off the runtime thread),
    /// creates the subscriptions and the command publisher.
    async fn configure(&self) -> Result<(), NodeError> {
        let params = lock(&self.shared.store).params()?;
        let started = Instant::now();
        let p = params.clone();
        let (first, others) = tokio::task::spawn_blocking(move || {
            load_all(
                &p,
                LoopOptions {
                    force_sync: false,
                    auto_refill_from_warmup: true,
                },
            )
        })
        .await
        .map_err(|e| NodeError::Panicked(format!("loading the policy ({e})")))??;
        let control = first.control;
        let configured = match self.create_interfaces(&control) {
            Ok(c) => c,
            Err(e) => {
                release(control).await;
                for o in others {
                    release(o.control).await;
                }
                return Err(e);
            }
        };
        if !others.is_empty() {
            log::info!(
                "policies loaded: {} (active, {:.1} MB), {}",
                first.name,
                first.memory_mb,
                others
                    .iter()
                    .map(|o| format!("{} ({:.1} MB)", o.name, o.memory_mb))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        *lock(&self.shared.policy_names) = (
            first.name.clone(),
            std::iter::once((first.name.clone(), first.memory_mb))
                .chain(others.iter().map(|o| (o.name.clone(), o.memory_mb)))
                .collect(),
        );
        *lock(&self.shared.parked) = others;
        let times = control.startup_times();
        let status = control.status();
        log::info!(
            "configured in {:.1} ms (load {:.1} ms, warm-up {:.1} ms): {} on {}; inputs {}",
            started.elapsed().as_secs_f64() * 1e3,
            times.load.as_secs_f64() * 1e3,
            times.warmup.as_secs_f64() * 1e3,
            status.backend,
            status.device,
            configured.inputs.join(", ")
        );
        *lock(&self.shared.command_topics) = control
            .outputs()
            .channels()
            .iter()
            .map(|c| c.topic.clone())
            .collect::<Vec<_>>()
            .join(", ");
        *lock(&self.shared.control) = Some(control);
        *lock(&self.shared.last_status) = None;
        *lock(&self.shared.configured_params) = Some(params);
        *lock(&self.shared.configure_error) = None;
        *self.configured.borrow_mut() = Some(configured);
        Ok(())
    }

    /// Subscriptions (fed to the loop while active) and the command publisher; a bad topic
    /// name is an error naming its parameter.
    fn create_interfaces(&self, control: &ControlLoop) -> Result<Configured, NodeError> {
        self.node
            .with(|node| self.create_interfaces_on(node, control))
    }

    fn create_interfaces_on(
        &self,
        node: &mut r2r::Node,
        control: &ControlLoop,
    ) -> Result<Configured, NodeError> {
        let flat = control.io_map().file.is_none();
        let mut sources = Vec::new();
        for (topic, t, indices) in control.input_topics() {
            let what = if flat {
                format!("subscribe to `{topic}` (parameter `joint_state_topic`)")
            } else {
                format!("subscribe to `{topic}` ({t}, io_map)")
            };
            if let Some(stream) = wiring::subscribe(node, &topic, t).map_err(ros(what))? {
                sources.push((topic, t, indices, stream));
            }
        }
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
        let publishers = Publishers::create(node, control)
            .map_err(|(what, source)| NodeError::Ros { what, source })?;

        let shared = &self.shared;
        let mut feeds = Vec::new();
        let mut inputs = Vec::new();
        for (topic, t, indices, stream) in sources {
            inputs.push(if flat {
                format!("{topic} (sensor_msgs/JointState)")
            } else {
                format!("{topic} ({t})")
            });
            feeds.push(tokio::task::spawn_local(input_feed(
                shared.clone(),
                topic,
                indices,
                stream,
            )));
        }
        for (index, (topic, input, sub)) in cameras.into_iter().enumerate() {
            inputs.push(format!("{topic} ({} -> {input})", sub.type_name()));
            feeds.push(match sub {
                CameraSub::Raw(s) => tokio::task::spawn_local(camera_feed(
                    shared.clone(),
                    index,
                    topic,
                    s,
                    convert::raw_image,
                )),
                CameraSub::Compressed(s) => tokio::task::spawn_local(camera_feed(
                    shared.clone(),
                    index,
                    topic,
                    s,
                    convert::compressed_image,
                )),
            });
        }
        Ok(Configured {
            publishers,
            feeds,
            tick: None,
            inputs,
        })
    }

    /// Starts the control timer and the tick loop; subscriptions feed the loop from now on.
    fn activate(&self) -> Result<(), NodeError> {
        let mut configured = self.configured.borrow_mut();
        let Some(configured) = configured.as_mut() else {
            return Err(NodeError::Usage("activate: nothing is configured".into()));
        };
        let (tick, status, params) = {
            let mut control = lock(&self.shared.control);
            let Some(control) = control.as_mut() else {
                return Err(NodeError::Usage("activate: no control loop".into()));
            };
            control.activate();
            let p = control.params();
            let tick = TickContext {
                columns: control.outputs().columns(),
                period: p.period(),
                use_sim_time: self.use_sim_time,
            };
            (tick, control.status(), p.clone())
        };
        let timer = self
            .node
            .with(|node| node.create_timer(tick.period))
            .map_err(ros("create the control timer"))?;
        *lock(&self.shared.stale_input) = None;
        lock(&self.shared.stats).start_run(tick.period);
        self.shared.active.store(true, Ordering::Release);
        configured.tick = Some(tokio::task::spawn_local(tick_loop(
            self.shared.clone(),
            timer,
            configured.publishers.clone(),
            self.action_chunk.clone(),
            tick,
        )));
        log::info!(
            "ready: {} on {}; inputs {}; {} at {} Hz ({}); refill {} ({} step(s) ahead); \
             output {}; services ~/reset, ~/enable; plan on ~/action_chunk{}; status on /diagnostics{}",
            status.backend,
            status.device,
            configured.inputs.join(", "),
            configured.publishers.describe(&params),
            params.control_rate_hz,
            if self.use_sim_time { "ROS time from /clock: use_sim_time" } else { "ROS time" },
            match (status.rtc, status.mode) {
                (true, _) => "rtc (real-time chunking)",
                (false, crate::policy::RefillMode::Asynchronous) => "async",
                (false, crate::policy::RefillMode::Synchronous) => "sync",
            },
            status.refill_ahead,
            if status.enabled { "enabled" } else { "disabled (call ~/enable)" },
            if params.publish_action_chunk { "" } else { " (off: publish_action_chunk false)" },
            match &status.task {
                Some(t) => format!("; task {t:?} (~/task changes it)"),
                None => String::new(),
            },
        );
        Ok(())
    }

    /// Stops the tick loop: no command from now on; the queued plan and the inputs are
    /// dropped; each channel gets its `on_stop` message. Returns whether any was published.
    fn deactivate(&self) -> bool {
        let was_active = self.shared.active.swap(false, Ordering::AcqRel);
        if let Some(c) = self.configured.borrow_mut().as_mut() {
            if let Some(tick) = c.tick.take() {
                tick.abort();
            }
        }
        if was_active {
            if episode::end(&self.shared, EndReason::Deactivated, None) {
                log::warn!("deactivate: the running episode is aborted");
            }
            let stop = lock(&self.shared.control).as_mut().map(|control| {
                // For the exit summary: the inference statistics go with the dropped plan.
                *lock(&self.shared.last_status) = Some(control.status());
                log::info!("deactivated: no commands; {}", control.deactivate());
                (control.take_stop(), control.params().period())
            });
            if let (Some((stops, period)), Some(c)) = (stop, self.configured.borrow().as_ref()) {
                c.publishers
                    .publish_stop(&stops, period, self.shared.now_ns(), None);
                return !stops.is_empty();
            }
        }
        false
    }

    /// Removes the subscriptions and the command publisher, and drops the control loop (off
    /// the runtime thread: an in-flight chunk finishes first), releasing the model.
    async fn cleanup(&self) {
        let configured = self.configured.borrow_mut().take();
        if let Some(c) = configured {
            for f in c.feeds {
                f.abort();
            }
            if let Some(t) = c.tick {
                t.abort();
            }
            self.node.with(|node| c.publishers.destroy(node));
        }
        let control = lock(&self.shared.control).take();
        if let Some(control) = control {
            lock(&self.shared.last_status).get_or_insert_with(|| control.status());
            release(control).await;
            if let Some(r) = lock(&self.shared.recorder).take() {
                r.shutdown();
            }
            let parked = std::mem::take(&mut *lock(&self.shared.parked));
            for p in parked {
                release(p.control).await;
            }
            log::info!("cleaned up: the policy and its memory are released");
        }
    }
}

/// Drops a control loop on a blocking thread (joining its refill worker), then hands the
/// freed heap back to the operating system: the allocator would otherwise keep the model's
/// pages (hundreds of MB for an ACT-size model) for the next allocation.
async fn release(control: ControlLoop) {
    let released = tokio::task::spawn_blocking(move || {
        drop(control);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: glibc's malloc_trim only returns free heap memory to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
    });
    if let Err(e) = released.await {
        log::error!("releasing the policy failed: {e}");
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

/// The lifecycle services, created at start.
struct LifecycleServices {
    change_state: Pin<Box<dyn Stream<Item = ServiceRequest<ChangeState::Service>>>>,
    get_state: Pin<Box<dyn Stream<Item = ServiceRequest<GetState::Service>>>>,
    get_available_states: Pin<Box<dyn Stream<Item = ServiceRequest<GetAvailableStates::Service>>>>,
    get_available_transitions:
        Pin<Box<dyn Stream<Item = ServiceRequest<GetAvailableTransitions::Service>>>>,
    get_transition_graph:
        Pin<Box<dyn Stream<Item = ServiceRequest<GetAvailableTransitions::Service>>>>,
}

impl LifecycleServices {
    fn create(node: &mut r2r::Node) -> Result<Self, NodeError> {
        let qos = QosProfile::services_default;
        let what = |name: &str| ros(format!("create the {name} service"));
        Ok(LifecycleServices {
            change_state: Box::pin(
                node.create_service::<ChangeState::Service>("~/change_state", qos())
                    .map_err(what("~/change_state"))?,
            ),
            get_state: Box::pin(
                node.create_service::<GetState::Service>("~/get_state", qos())
                    .map_err(what("~/get_state"))?,
            ),
            get_available_states: Box::pin(
                node.create_service::<GetAvailableStates::Service>("~/get_available_states", qos())
                    .map_err(what("~/get_available_states"))?,
            ),
            get_available_transitions: Box::pin(
                node.create_service::<GetAvailableTransitions::Service>(
                    "~/get_available_transitions",
                    qos(),
                )
                .map_err(what("~/get_available_transitions"))?,
            ),
            get_transition_graph: Box::pin(
                node.create_service::<GetAvailableTransitions::Service>(
                    "~/get_transition_graph",
                    qos(),
                )
                .map_err(what("~/get_transition_graph"))?,
            ),
        })
    }
}

/// Runs the node until SIGINT, SIGTERM or the shutdown transition. The ROS arguments are
/// read by rcl from the process's command line; `cli` is what lies outside them.
pub fn run(cli: &Cli) -> Result<Summary, NodeError> {
    check_params_files(cli)?;
    let ctx = create_context()?;
    // Episode recordings subscribe through a node of their own, in this context.
    let recorder_ctx = ctx.clone();
    let mut node = r2r::Node::create(ctx, NODE_NAME, "").map_err(ros("create the node"))?;
    let node_name = node
        .fully_qualified_name()
        .unwrap_or_else(|_| format!("/{NODE_NAME}"));
    logging::init(node.logger(), cli.log_level.as_deref());

    // Parameters: every one declared with its value (override, else default); validated
    // at configure.
    let overrides = params::overrides(&lock(&node.params));
    let (store, unknown) = ParamStore::new(&overrides);
    for name in unknown {
        log::warn!("unknown parameter `{name}` is ignored (a typo? see `policy_node --help` for the parameters)");
    }
    // A non-boolean `autostart` configures at start, so that the validation names it.
    let autostart = !matches!(store.get("autostart"), Some(ParamValue::Bool(false)));
    let use_sim_time = matches!(store.get("use_sim_time"), Some(ParamValue::Bool(true)));
    if use_sim_time {
        let time_source = node.get_time_source();
        time_source
            .enable_sim_time(&mut node)
            .map_err(ros("subscribe to /clock (use_sim_time)"))?;
    }

    // The interfaces that live as long as the node.
    let param_services = ParamServices::create(&mut node, &node_name)
        .map_err(ros("create the parameter services"))?;
    let lifecycle = LifecycleServices::create(&mut node)?;
    let transition_events = node
        .create_publisher::<TransitionEvent>("~/transition_event", QosProfile::default())
        .map_err(ros("publish on ~/transition_event"))?;
    let action_chunk = node
        .create_publisher::<JointTrajectory>("~/action_chunk", QosProfile::default())
        .map_err(ros("publish on ~/action_chunk"))?;
    let diagnostics = node
        .create_publisher::<DiagnosticArray>("/diagnostics", QosProfile::default())
        .map_err(ros("publish on /diagnostics"))?;
    let reset_srv = node
        .create_service::<Trigger::Service>("~/reset", QosProfile::services_default())
        .map_err(ros("create the ~/reset service"))?;
    let enable_srv = node
        .create_service::<SetBool::Service>("~/enable", QosProfile::services_default())
        .map_err(ros("create the ~/enable service"))?;
    // `~/task`: the `task` parameter set by a topic (a VLA policy's instruction), with the
    // parameter's rules, so that `ros2 param get` and `/parameter_events` follow it.
    let task_topic = format!("{}/task", node_name.trim_end_matches('/'));
    let task_sub = node
        .subscribe::<StringMsg>("~/task", QosProfile::default())
        .map_err(ros("subscribe to ~/task"))?;
    let safety_topics = super::safety::subscribe(&mut node)
        .map_err(|(what, source)| NodeError::Ros { what, source })?;
    let run_policy = node
        .create_action_server::<r2r::policy_node_interfaces::action::RunPolicy::Action>(
            "~/run_policy",
        )
        .map_err(ros("create the ~/run_policy action server"))?;
    let end_episode = node
        .subscribe::<r2r::std_msgs::msg::Bool>("~/end_episode", QosProfile::default())
        .map_err(ros("subscribe to ~/end_episode"))?;
    let topic_sets: TopicSets = Box::pin(task_sub.map(move |m: StringMsg| {
        (
            task_topic.clone(),
            vec![("task".to_string(), Some(ParamValue::String(m.data)))],
        )
    }));

    let shared = Arc::new(Shared {
        control: Mutex::new(None),
        machine: Mutex::new(Machine::new()),
        store: Mutex::new(store),
        active: AtomicBool::new(false),
        clock: node.get_ros_clock(),
        throttle: Mutex::new(Throttle::new(THROTTLE_PERIOD)),
        stats: Mutex::new(RunStats::new()),
        stale_input: Mutex::new(None),
        stale_since_diagnostics: Mutex::new(None),
        configured_params: Mutex::new(None),
        command_topics: Mutex::new(String::new()),
        last_status: Mutex::new(None),
        configure_error: Mutex::new(None),
        node_name: node_name.clone(),
        short_name: node.name().unwrap_or_else(|_| NODE_NAME.to_string()),
        safety: Arc::new(Mutex::new(Safety::default())),
        halt: Mutex::new(None),
        episodes: Mutex::new(episode::Episodes::default()),
        parked: Mutex::new(Vec::new()),
        recording: Mutex::new(None),
        recorder: Mutex::new(None),
        recording_error: Mutex::new(None),
        policy_names: Mutex::new((String::new(), Vec::new())),
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NodeError::Runtime)?;
    let node = Arc::new(SharedNode {
        node: Mutex::new(node),
        waiting: AtomicUsize::new(0),
    });
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
                    node.spin_once();
                }
            })
            .map_err(NodeError::Runtime)?
    };

    // The runtime thread (this one) runs the ticks. Threads it starts later (loading, the
    // refill worker, the runtimes' pools) get normal priority (reset on fork).
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

    let (state_tx, _) = tokio::sync::watch::channel(State::Unconfigured);
    let driver = Rc::new(Driver {
        shared: shared.clone(),
        node: node.clone(),
        events: transition_events,
        action_chunk,
        configured: RefCell::new(None),
        state: state_tx,
        use_sim_time,
    });

    let started = Instant::now();
    let local = tokio::task::LocalSet::new();
    let signal = local.block_on(&runtime, async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigint = signal(SignalKind::interrupt()).map_err(NodeError::Runtime)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(NodeError::Runtime)?;

        let clock_shared = shared.clone();
        tokio::task::spawn_local(param_services.serve(
            shared.clone(),
            move || clock_shared.now_ns(),
            topic_sets,
        ));
        let LifecycleServices {
            change_state,
            get_state,
            get_available_states,
            get_available_transitions,
            get_transition_graph,
        } = lifecycle;
        tokio::task::spawn_local(lifecycle_queries(
            shared.clone(),
            get_state,
            get_available_states,
            get_available_transitions,
            get_transition_graph,
        ));
        tokio::task::spawn_local(reset_service(shared.clone(), reset_srv));
        tokio::task::spawn_local(super::safety::estop_feed(
            shared.safety.clone(),
            safety_topics.estop,
        ));
        tokio::task::spawn_local(super::safety::intervention_feed(
            shared.safety.clone(),
            safety_topics.intervention,
        ));
        let clock = shared.clone();
        tokio::task::spawn_local(super::safety::heartbeat_feed(
            shared.safety.clone(),
            move || clock.now_ns(),
            safety_topics.heartbeat,
        ));
        tokio::task::spawn_local(enable_service(shared.clone(), enable_srv));
        tokio::task::spawn_local(episode::run_policy_server(
            shared.clone(),
            recorder_ctx.clone(),
            run_policy,
        ));
        tokio::task::spawn_local(episode::end_episode_feed(
            shared.clone(),
            Box::pin(end_episode),
        ));
        tokio::task::spawn_local(diagnostics_loop(shared.clone(), diagnostics));

        if autostart {
            driver.run("configure").await?;
            driver.run("activate").await?;
        } else {
            log::info!(
                "unconfigured (autostart false): waiting for a transition on ~/change_state \
                 (ros2 lifecycle set {node_name} configure)"
            );
            if let Err(e) = lock(&shared.store).params() {
                log::warn!("configure would fail with the parameters as they are: {e}");
            }
        }
        tokio::task::spawn_local(change_state_service(driver.clone(), change_state));

        let mut state = driver.state.subscribe();
        let reason = tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
            _ = state.wait_for(|s| *s == State::Finalized) => "the shutdown transition",
        };
        if reason == "the shutdown transition" {
            tokio::time::sleep(FINAL_GRACE).await;
        } else {
            // Let a running transition end (a configure may be loading a model), then shut
            // down through the lifecycle: deactivate, release the policy.
            // (The watch guard is dropped at once: the shutdown transition updates the state.)
            let settled = tokio::time::timeout(SETTLE_TIMEOUT, state.wait_for(|s| s.is_primary()))
                .await
                .map(|r| r.is_ok())
                .unwrap_or(false);
            if !settled {
                log::warn!(
                    "{reason}: a transition did not end within {SETTLE_TIMEOUT:?}; stopping anyway"
                );
            } else if shared.state() != State::Finalized {
                if let Err(e) = driver.run("shutdown").await {
                    log::warn!("{reason}: shutdown transition: {e}");
                }
            }
        }
        Ok::<_, NodeError>(reason)
    });
    if let Err(e) = &signal {
        // The start failed (a configuration error at autostart, a refused transition):
        // nothing was commanded and nothing needs an orderly end. Say why and exit at once,
        // without tearing down DDS and the runtimes' threads, so that no teardown of theirs
        // can turn the exit status into a crash.
        eprintln!("policy_node: {}", error_line(e));
        std::io::Write::flush(&mut std::io::stderr()).ok();
        // SAFETY: `_exit` ends the process; nothing runs after it.
        unsafe { libc::_exit(i32::from(e.exit_code())) }
    }
    // Stop the tasks (they hold the publishers and services), then the spin thread.
    drop(local);
    drop(runtime);
    stop.store(true, Ordering::Relaxed);
    let _ = spinner.join();
    let signal = signal?;

    let line = summary_line(&shared, signal, started.elapsed());
    log::info!("{line}");
    // Dropping the control loop joins the refill worker (an in-flight chunk finishes first).
    drop(driver);
    drop(shared);
    drop(node);
    Ok(Summary { signal, line })
}

/// `~/change_state`: each request resolved as rclcpp does and started at once (so a second
/// request during a long configure is refused as busy, not queued); the response is sent
/// when the transition has ended.
async fn change_state_service<S>(driver: Rc<Driver>, mut requests: S)
where
    S: Stream<Item = ServiceRequest<ChangeState::Service>> + Unpin,
{
    while let Some(req) = requests.next().await {
        let t = &req.message.transition;
        let resolved = lock(&driver.shared.machine).resolve(t.id, &t.label);
        let started = resolved.and_then(|t| driver.begin(t).map(|work| (t, work)));
        let (transition, work) = match started {
            Ok(x) => x,
            Err(refusal) => {
                log::warn!("~/change_state refused: {refusal}");
                if let Err(e) = req.respond(ChangeState::Response { success: false }) {
                    log::warn!("~/change_state: cannot send the response: {e}");
                }
                continue;
            }
        };
        log::info!(
            "transition `{}` requested: {} -> {}",
            transition.label,
            transition.start,
            transition.goal
        );
        let driver = driver.clone();
        tokio::task::spawn_local(async move {
            let result = driver.complete(work).await;
            let now = driver.shared.state();
            match &result {
                Ok(()) => log::info!("transition `{}` done: {now}", transition.label),
                Err(e) => {
                    log::error!(
                        "transition `{}` failed: {e}; the node is {now}",
                        transition.label
                    );
                    if transition.label == "configure" {
                        *lock(&driver.shared.configure_error) = Some(e.to_string());
                    }
                }
            }
            if let Err(e) = req.respond(ChangeState::Response {
                success: result.is_ok(),
            }) {
                log::warn!("~/change_state: cannot send the response: {e}");
            }
        });
    }
}

/// `~/get_state`, `~/get_available_states`, `~/get_available_transitions`,
/// `~/get_transition_graph`.
async fn lifecycle_queries<A, B, C, D>(
    shared: Arc<Shared>,
    mut get_state: A,
    mut states: B,
    mut transitions: C,
    mut graph: D,
) where
    A: Stream<Item = ServiceRequest<GetState::Service>> + Unpin,
    B: Stream<Item = ServiceRequest<GetAvailableStates::Service>> + Unpin,
    C: Stream<Item = ServiceRequest<GetAvailableTransitions::Service>> + Unpin,
    D: Stream<Item = ServiceRequest<GetAvailableTransitions::Service>> + Unpin,
{
    let warn = |what: &str, r: r2r::Result<()>| {
        if let Err(e) = r {
            log::warn!("~/{what}: cannot send the response: {e}");
        }
    };
    loop {
        tokio::select! {
            Some(req) = get_state.next() => {
                let current_state = state_msg(shared.state());
                warn("get_state", req.respond(GetState::Response { current_state }));
            }
            Some(req) = states.next() => {
                let available_states = State::ALL.iter().map(|s| state_msg(*s)).collect();
                warn("get_available_states", req.respond(GetAvailableStates::Response { available_states }));
            }
            Some(req) = transitions.next() => {
                let available_transitions = lock(&shared.machine).available().map(description_msg).collect();
                warn(
                    "get_available_transitions",
                    req.respond(GetAvailableTransitions::Response { available_transitions }),
                );
            }
            Some(req) = graph.next() => {
                let available_transitions = TRANSITIONS.iter().map(description_msg).collect();
                warn(
                    "get_transition_graph",
                    req.respond(GetAvailableTransitions::Response { available_transitions }),
                );
            }
            else => break,
        }
    }
}

/// Camera `index`: each message converted and handed to the control loop (while active).
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
        if !shared.active.load(Ordering::Acquire) {
            continue;
        }
        let receive_ns = shared.now_ns();
        let (stamp, image) = convert(msg);
        let stamp = convert::stamp_ns(&stamp, receive_ns);
        let result = {
            let mut control = lock(&shared.control);
            let Some(control) = control.as_mut() else {
                continue;
            };
            match image {
                Ok(image) => control.on_image(index, stamp, image),
                Err(e) => {
                    control.count_rejected();
                    Err(e)
                }
            }
        };
        if let Err(e) = result {
            shared.rejected(&topic, &e);
        }
    }
}

/// A map topic: each message's selected values handed to its sources in the control loop
/// (while active), stamped with its header (its receive time when it has none or a zero
/// stamp).
async fn input_feed(
    shared: Arc<Shared>,
    topic: String,
    sources: Vec<usize>,
    mut stream: wiring::InputStream,
) {
    while let Some((stamp, msg)) = stream.next().await {
        if !shared.active.load(Ordering::Acquire) {
            continue;
        }
        let receive_ns = shared.now_ns();
        let stamp = stamp.map_or(receive_ns, |t| convert::stamp_ns(&t, receive_ns));
        let result = match lock(&shared.control).as_mut() {
            Some(control) => control.on_input(&sources, stamp, &msg),
            None => Ok(()),
        };
        if let Err(e) = result {
            shared.rejected(&topic, &e);
        }
    }
}

/// The control timer: one [`ControlLoop::tick`] per period, the command published at once,
/// then the plan of a chunk switched in on this tick (after the command, so that it never
/// delays one).
async fn tick_loop(
    shared: Arc<Shared>,
    mut timer: r2r::Timer,
    publishers: Publishers,
    action_chunk: Publisher<JointTrajectory>,
    ctx: TickContext,
) {
    let mut was_stale = false;
    while timer.tick().await.is_ok() {
        let woke = Instant::now();
        let now_ns = shared.now_ns();
        let (status, plan, switched, kind, max_age, stops) = {
            let mut control = lock(&shared.control);
            let Some(control) = control.as_mut() else {
                continue;
            };
            let timeout_ms = control.params().heartbeat_timeout_ms;
            let halt = {
                let mut safety = lock(&shared.safety);
                match safety.check(now_ns, timeout_ms) {
                    Some(h) => Some(h),
                    None if safety.waiting_for_heartbeat(timeout_ms) => Some(Halt::NoHeartbeat),
                    None => None,
                }
            };
            // A recorded episode starts once its recording holds the inputs the loop has.
            if control.idle() {
                let mut episodes = lock(&shared.episodes);
                if let Some(e) = episodes
                    .current
                    .as_mut()
                    .filter(|e| e.end.is_none() && e.gated)
                {
                    let since = *e.gated_since_ns.get_or_insert(now_ns);
                    let ready = lock(&shared.recording)
                        .as_ref()
                        .is_some_and(|r| r.ready(control, &shared.node_name));
                    if ready {
                        e.gated = false;
                        if let Err(err) = episode::begin(control) {
                            e.error = Some(err);
                            e.finish(EndReason::Error);
                            episode::close(control, EndReason::Error);
                        }
                    } else if (now_ns - since) as f64 / 1e9
                        > control
                            .params()
                            .episode_stale_timeout_s
                            .max(episode::RECORDING_START_TIMEOUT_S)
                    {
                        e.error =
                            Some("the recording received no message on an input topic".to_string());
                        e.finish(EndReason::Stale);
                    }
                }
            }
            // An episode whose time is up ends before this tick computes anything.
            if !control.idle() {
                let mut episodes = lock(&shared.episodes);
                if let Some(e) = episodes.current.as_mut().filter(|e| e.time_up(now_ns)) {
                    e.last_tick_ns = Some(now_ns);
                    e.finish(EndReason::Duration);
                    log::info!("episode ends on this tick: duration");
                    episode::close(control, EndReason::Duration);
                }
            }
            let mut status = match &halt {
                Some(h) => control.halt(now_ns, h.describe(timeout_ms), h.publishes_on_stop()),
                None => control.tick(now_ns),
            };
            if !control.idle() {
                let mut episodes = lock(&shared.episodes);
                if let Some(e) = episodes.current.as_mut().filter(|e| e.end.is_none()) {
                    let home = control.last_tick_was_home();
                    let latency = control.inference_latency();
                    e.note_inference(latency.count, latency.last);
                    let ended = e.after_tick(
                        now_ns,
                        &status,
                        halt.as_ref(),
                        control.last_tick_switched(),
                        control.params().episode_stale_timeout_s,
                    );
                    if let Some(reason) = ended {
                        log::info!("episode ends on this tick: {reason}");
                        episode::close(control, reason);
                        // Nothing from this tick goes out; each channel's on_stop does (or
                        // the move home, from the next tick).
                        status = TickStatus::Idle;
                    } else {
                        if control.homing() {
                            e.status = crate::control::episode::EpisodeStatus::Homing;
                        }
                        if let Some(r) = lock(&shared.recording).as_ref() {
                            let label = if home { "home" } else { status.label() };
                            r.tick(
                                now_ns,
                                label,
                                control.refill_ahead(),
                                &control.input_stamps(),
                            );
                        }
                    }
                }
            }
            *lock(&shared.halt) = halt.map(|h| h.describe(timeout_ms));
            let stops = control.take_stop();
            let plan = if publishers.has_trajectory()
                && control.params().trajectory_full_chunk
                && matches!(status, TickStatus::Command(_))
            {
                control.remaining_plan()
            } else {
                Vec::new()
            };
            let switched = control.take_plan();
            let kind = if control.last_tick_requested_chunk() {
                TickKind::Refill
            } else {
                TickKind::Queue
            };
            (
                status,
                plan,
                switched,
                kind,
                control.params().max_observation_age_ms,
                stops,
            )
        };
        // While an episode is recorded, what goes out is kept for the recording.
        let recording = lock(&shared.recording).is_some();
        let mut kept = Vec::new();
        if !stops.is_empty() {
            publishers.publish_stop(&stops, ctx.period, now_ns, recording.then_some(&mut kept));
        }
        let (lost, previous) = {
            let mut stats = lock(&shared.stats);
            let previous = stats.last_tick();
            (stats.tick(woke, !ctx.use_sim_time), previous)
        };
        if lost > 0 {
            if let Some(n) = shared.due("lost") {
                log::warn!(
                    "lost {lost} tick(s): this tick woke {:.1} ms after the previous one (period \
                     {:.3} ms): the timer or the tick thread was held up{}",
                    previous.map_or(0.0, |p| (woke - p).as_secs_f64() * 1e3),
                    ctx.period.as_secs_f64() * 1e3,
                    held_back(n)
                );
            }
        }
        match status {
            TickStatus::Command(command) => {
                match publishers.publish(
                    &command,
                    &plan,
                    ctx.period,
                    now_ns,
                    recording.then_some(&mut kept),
                ) {
                    Ok(()) => {
                        let done = Instant::now();
                        let late = lock(&shared.stats).command(done, done - woke, kind);
                        if late {
                            if let Some(n) = shared.due("late") {
                                log::warn!(
                                    "late tick: {:.3} ms from the timer to the command (period {:.3} ms) on a {} tick{}",
                                    (done - woke).as_secs_f64() * 1e3,
                                    ctx.period.as_secs_f64() * 1e3,
                                    match kind {
                                        TickKind::Refill => "refill (chunk requested; computed on the tick when synchronous)",
                                        _ => "queue",
                                    },
                                    held_back(n)
                                );
                            }
                        }
                        if let Some(rows) = switched {
                            let msg =
                                convert::action_chunk(&ctx.columns, &rows, ctx.period, now_ns);
                            if recording {
                                if let Some(r) = lock(&shared.recording).as_ref() {
                                    r.action_chunk(now_ns, &msg);
                                }
                            }
                            if let Err(e) = action_chunk.publish(&msg) {
                                if let Some(n) = shared.due("action_chunk") {
                                    log::warn!(
                                        "cannot publish ~/action_chunk: {e}{}",
                                        held_back(n)
                                    );
                                }
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
                    Err((topic, e)) => {
                        lock(&shared.stats).errors += 1;
                        if let Some(n) = shared.due("publish") {
                            log::error!(
                                "cannot publish the command on `{topic}`: {e}{}",
                                held_back(n)
                            );
                        }
                    }
                }
            }
            TickStatus::Disabled => lock(&shared.stats).disabled += 1,
            TickStatus::Idle => lock(&shared.stats).idle += 1,
            TickStatus::Halted(reason) => {
                lock(&shared.stats).halted += 1;
                if let Some(n) = shared.due("halt") {
                    log::warn!("no command: {reason}{}", held_back(n));
                }
            }
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
                *lock(&shared.stale_since_diagnostics) = Some(what.clone());
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
            TickStatus::Waiting => {
                lock(&shared.stats).waiting += 1;
                if let Some(n) = shared.due("waiting") {
                    log::info!(
                        "no command yet: the first chunk since the start, a reset or a gap in the \
                         inputs is being computed{}",
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
        if !kept.is_empty() {
            // After the command went out: serializing it never delays it.
            if let Some(r) = lock(&shared.recording).as_ref() {
                r.commands(now_ns, kept);
            }
        }
    }
}

/// Why `~/reset` / `~/enable` refuse outside the active state.
fn not_active(shared: &Shared, service: &str) -> Option<String> {
    let state = shared.state();
    (state != State::Active).then(|| {
        format!(
            "{} is {state}: ~/{service} works in the active state (activate it: ros2 lifecycle set {} activate)",
            shared.node_name, shared.node_name
        )
    })
}

/// `~/reset` (`std_srvs/srv/Trigger`).
async fn reset_service<S>(shared: Arc<Shared>, mut requests: S)
where
    S: Stream<Item = ServiceRequest<Trigger::Service>> + Unpin,
{
    while let Some(req) = requests.next().await {
        let (success, message) = match not_active(&shared, "reset") {
            Some(reason) => (false, reason),
            None => match lock(&shared.control).as_mut() {
                Some(control) => {
                    let mut message = control.reset();
                    let now = shared.now_ns();
                    let timeout_ms = control.params().heartbeat_timeout_ms;
                    let cleared = lock(&shared.safety).reset(now, timeout_ms);
                    for c in &cleared {
                        log::warn!("~/reset: {c} (cleared by a ~/reset call)");
                    }
                    if !cleared.is_empty() {
                        message.push_str("; ");
                        message.push_str(&cleared.join("; "));
                    }
                    (true, message)
                }
                None => (false, "no policy is loaded".to_string()),
            },
        };
        if success {
            *lock(&shared.stale_input) = None;
            log::info!("~/reset called: {message}");
        } else {
            log::warn!("~/reset refused: {message}");
        }
        if let Err(e) = req.respond(Trigger::Response { success, message }) {
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
        let (success, message) = match not_active(&shared, "enable") {
            Some(reason) => (false, reason),
            None => match lock(&shared.control).as_mut() {
                Some(control) => {
                    let was = control.enabled();
                    control.set_enabled(on);
                    let m = match (was, on) {
                        (false, true) => "command output enabled (starting from a fresh chunk)",
                        (true, false) => "command output disabled",
                        (true, true) => "command output was already enabled",
                        (false, false) => "command output was already disabled",
                    };
                    (true, m.to_string())
                }
                None => (false, "no policy is loaded".to_string()),
            },
        };
        if success {
            log::info!("~/enable: {message}");
        } else {
            log::warn!("~/enable refused: {message}");
        }
        if let Err(e) = req.respond(SetBool::Response { success, message }) {
            log::warn!("~/enable: cannot send the response: {e}");
        }
    }
}

/// `/diagnostics` once per [`DIAGNOSTICS_PERIOD`] (wall time).
async fn diagnostics_loop(shared: Arc<Shared>, publisher: Publisher<DiagnosticArray>) {
    let mut interval = tokio::time::interval(DIAGNOSTICS_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = crate::control::Counters::default();
    let mut previous_commands = 0u64;
    let mut previous_at = Instant::now();
    interval.tick().await;
    loop {
        interval.tick().await;
        let state = shared.state();
        let status = lock(&shared.control).as_ref().map(|c| {
            (
                c.status(),
                c.params().control_rate_hz,
                c.params().heartbeat_timeout_ms,
                c.params().episode_mode,
            )
        });
        let now_ns = shared.now_ns();
        let msg = match status {
            None => {
                previous = crate::control::Counters::default();
                let error = lock(&shared.configure_error).clone();
                convert::diagnostics_unconfigured(
                    &shared.short_name,
                    state.label(),
                    error.as_deref(),
                    now_ns,
                )
            }
            Some((status, control_rate_hz, heartbeat_timeout_ms, episode_mode)) => {
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
                    node_name: shared.short_name.clone(),
                    control_rate_hz,
                    achieved_rate_hz: commands_total.saturating_sub(previous_commands) as f64
                        / elapsed,
                    commands_total,
                    stale_grew: c.stale > previous.stale,
                    overruns_grew: c.overruns > previous.overruns,
                    errors_grew: c.errors > previous.errors,
                    stale_input: lock(&shared.stale_input)
                        .clone()
                        .or(lock(&shared.stale_since_diagnostics).take()),
                    lifecycle_state: state.label(),
                    halt: lock(&shared.halt).clone(),
                    safety: {
                        let mut v = lock(&shared.safety).diagnostics(now_ns, heartbeat_timeout_ms);
                        v.extend(lock(&shared.episodes).diagnostics(Some(episode_mode)));
                        let recording = match lock(&shared.recording).as_ref() {
                            Some(r) => format!(
                                "{} ({} dropped){}",
                                r.writer.dir().display(),
                                r.writer.dropped(),
                                r.writer
                                    .error()
                                    .map_or(String::new(), |e| format!("; error: {e}"))
                            ),
                            None => lock(&shared.recording_error)
                                .as_ref()
                                .map_or_else(|| "off".to_string(), |e| format!("error: {e}")),
                        };
                        v.push(("recording".into(), recording));
                        let names = lock(&shared.policy_names);
                        v.push(("policy".into(), names.0.clone()));
                        v.push((
                            "policies".into(),
                            names
                                .1
                                .iter()
                                .map(|(n, mb)| format!("{n} ({mb:.1} MB)"))
                                .collect::<Vec<_>>()
                                .join(", "),
                        ));
                        v
                    },
                    lost_ticks,
                    late_ticks,
                    queue_latency,
                    window,
                };
                previous = c;
                previous_commands = commands_total;
                convert::diagnostics(&status, &extras, now_ns)
            }
        };
        previous_at = Instant::now();
        if let Some(r) = lock(&shared.recording).as_ref() {
            r.diagnostics(now_ns, &msg);
        }
        if let Err(e) = publisher.publish(&msg) {
            if let Some(n) = shared.due("diagnostics") {
                log::warn!("cannot publish /diagnostics: {e}{}", held_back(n));
            }
        }
    }
}

/// The exit summary: commands, achieved rate, tick counts, inference and tick latency.
fn summary_line(shared: &Shared, signal: &str, elapsed: Duration) -> String {
    let stats = lock(&shared.stats).clone();
    let status = lock(&shared.last_status)
        .clone()
        .or_else(|| lock(&shared.control).as_ref().map(|c| c.status()));
    let params = lock(&shared.configured_params).clone();
    let (Some(status), Some(params)) = (status, params) else {
        return format!(
            "stopped on {signal} after {:.1} s: never configured, 0 command(s) published",
            elapsed.as_secs_f64()
        );
    };
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
         {} tick(s) ({:.2} Hz): {} stale, {} overrun(s), {} error(s), {} disabled, {} waiting for a first chunk, {} idle (no episode), {} halted; inference ({} chunk(s) since start or \
         the last reset) latency last/mean/max {}/{}/{} ms on {}/{}; tick latency (timer -> published) \
         p50/p90/p99/max {} ms; of which {} served from the queue {} ms, {} refill tick(s) (chunk requested, \
         computed on the tick when synchronous) {} ms; {} overrun tick(s) (timer -> handled) {} ms; \
         {} lost tick(s) (timer periods without a tick), {} late tick(s) (longer than the period); \
         refill {} step(s) ahead{}{}{}",
        elapsed.as_secs_f64(),
        stats.commands,
        lock(&shared.command_topics),
        stats.command_rate_hz(),
        params.control_rate_hz,
        stats.ticks,
        stats.tick_rate_hz(),
        stats.stale,
        stats.overruns,
        stats.errors,
        stats.disabled,
        stats.waiting,
        stats.idle,
        stats.halted,
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
        episodes_summary(shared),
    )
}

/// The summary's episodes and policies: how many episodes ran and how the last ended; the
/// policies loaded (with the memory each took) and the one active last.
fn episodes_summary(shared: &Shared) -> String {
    let mut out = String::new();
    let e = lock(&shared.episodes);
    if e.started > 0 {
        out.push_str(&format!(
            "; {} episode(s), the last: {}",
            e.started,
            e.last.as_deref().unwrap_or("running")
        ));
    }
    let names = lock(&shared.policy_names);
    if names.1.len() > 1 {
        out.push_str(&format!(
            "; policies {}, active last: {}",
            names
                .1
                .iter()
                .map(|(n, mb)| format!("{n} ({mb:.1} MB)"))
                .collect::<Vec<_>>()
                .join(", "),
            names.0
        ));
    }
    out
}
