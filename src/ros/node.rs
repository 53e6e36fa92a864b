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
mod services;
mod tick;

use services::{
    change_state_service, diagnostics_loop, enable_service, lifecycle_queries, reset_service,
    summary_line,
};
use tick::{camera_feed, input_feed, tick_loop};

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
    /// Woken by every input and image handed to the loop (`sim_input_wait_ms`).
    inputs_arrived: tokio::sync::Notify,
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
    /// `sim_input_wait_ms`: how long a tick first waits for inputs stamped at its time.
    input_wait: Option<Duration>,
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
        if params.sim_input_wait_ms > 0.0 && !self.use_sim_time {
            return Err(NodeError::Param(ParamError::Invalid {
                name: "sim_input_wait_ms".into(),
                rule: format!(
                    "{} ms needs use_sim_time: true (a tick waits for inputs stamped at its \
                     ROS time, which only a simulator's /clock makes possible)",
                    params.sim_input_wait_ms
                ),
            }));
        }
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
                input_wait: (self.use_sim_time && p.sim_input_wait_ms > 0.0)
                    .then(|| Duration::from_secs_f64(p.sim_input_wait_ms / 1e3)),
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
        inputs_arrived: tokio::sync::Notify::new(),
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
