//! `~/run_policy` (`policy_node_interfaces/action/RunPolicy`) and `~/end_episode`
//! (`std_msgs/Bool`): episodes as a ROS 2 action, around the ROS-free
//! [`crate::control::episode`].
//!
//! - A goal is checked, then accepted or refused (the reason is logged: the action protocol
//!   carries none). Accepted, its episode starts on the next tick from a fresh chunk with its
//!   task (else the `task` parameter).
//! - The control timer decides each tick whether the episode goes on
//!   ([`Episode::after_tick`]): duration, e-stop, watchdog, stale inputs, a policy error.
//!   `~/end_episode` and a cancel request end it from outside the tick. Every end makes the
//!   loop idle, so each output channel's `on_stop` goes out once, and restores the `task`
//!   parameter's task.
//! - One task per goal publishes feedback every [`FEEDBACK_PERIOD`] and sends the result
//!   once the episode has ended: SUCCEEDED (duration, ended), CANCELED, or ABORTED.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use r2r::policy_node_interfaces::action::RunPolicy;
use r2r::std_msgs::msg::Bool;
use r2r::{ActionServerCancelRequest, ActionServerGoal, ActionServerGoalRequest};

use super::{lock, recording, Shared, State};
use crate::control::episode::{check_goal, EndReason, Episode, EpisodeMode, Goal, Outcome};
use crate::control::home::AfterHome;
use crate::control::ControlLoop;

/// How long a recorded episode's first tick may wait for the recording to hold the inputs
/// (at least; `episode_stale_timeout_s` when longer): the recorder's subscriptions are
/// matched by DDS at the first recorded goal.
pub(super) const RECORDING_START_TIMEOUT_S: f64 = 10.0;

/// Feedback rate of a running goal (the issue asks for at least 5 Hz).
pub(super) const FEEDBACK_PERIOD: Duration = Duration::from_millis(100);

/// The episodes of the node: the running one, and what the last ones did (`/diagnostics`).
#[derive(Debug, Default)]
pub(super) struct Episodes {
    /// The running episode (until its goal task has sent the result).
    pub current: Option<Episode>,
    /// Episodes started since the node started.
    pub started: u64,
    /// How the last one ended, in words.
    pub last: Option<String>,
}

impl Episodes {
    /// `/diagnostics` values.
    pub fn diagnostics(&self, mode: Option<EpisodeMode>) -> Vec<(String, String)> {
        let mut v = vec![(
            "episode_mode".to_string(),
            mode.map_or("-", EpisodeMode::as_str).to_string(),
        )];
        let episode = match &self.current {
            Some(e) if e.end.is_none() => format!(
                "running: policy `{}`, {:.1} s, {} step(s), {}; task {:?}",
                e.policy,
                e.elapsed_s(),
                e.steps,
                e.status.as_str(),
                e.task
            ),
            Some(e) => format!("ending ({})", e.end.map_or("-", |r| r.as_str())),
            None => "none".to_string(),
        };
        v.push(("episode".into(), episode));
        v.push(("episodes".into(), self.started.to_string()));
        v.push((
            "last_episode".into(),
            self.last.clone().unwrap_or_else(|| "-".into()),
        ));
        v
    }
}

/// Ends the episode on the control loop for `reason`: a move home first where
/// `home_after_episode` asks for one and the reason allows it, else idle at once (the
/// channels' `on_stop` goes out on the next tick); the `task` parameter's task back.
pub(super) fn close(control: &mut ControlLoop, reason: EndReason) {
    let home = control.params().home_after_episode && reason.homes_after();
    let moving = home
        && match control.start_home(AfterHome::Idle) {
            Ok(ticks) => {
                log::info!("episode end: moving home over {ticks} tick(s) (home_after_episode)");
                true
            }
            Err(e) => {
                log::warn!("episode end: no move home (home_after_episode): {e}");
                false
            }
        };
    if !moving {
        control.set_idle(true);
    }
    let task = control.params().task.clone();
    if let Err(e) = control.set_task(&task) {
        log::warn!("episode end: the task parameter's task could not be restored: {e}");
    }
}

/// Ends the running episode for `reason` (from outside the tick: a cancel, `~/end_episode`,
/// a deactivation), with the verdict `success` when one was given. Returns whether an
/// episode was running.
pub(super) fn end(shared: &Shared, reason: EndReason, success: Option<bool>) -> bool {
    let mut control = lock(&shared.control);
    let mut episodes = lock(&shared.episodes);
    let Some(episode) = episodes.current.as_mut().filter(|e| e.end.is_none()) else {
        return false;
    };
    episode.finish(reason);
    if success.is_some() {
        episode.success = success;
    }
    if let Some(control) = control.as_mut() {
        close(control, reason);
    }
    true
}

/// Checks a goal against the node's state and starts its episode. The error is the reason
/// the goal is refused.
fn start(shared: &Shared, goal: Goal) -> Result<String, String> {
    let state = shared.state();
    if state != State::Active {
        return Err(format!(
            "{} is {state}: goals run in the active state",
            shared.node_name
        ));
    }
    let mut control = lock(&shared.control);
    let Some(control) = control.as_mut() else {
        return Err("no policy is loaded".to_string());
    };
    if control.params().episode_mode != EpisodeMode::Goal {
        return Err(
            "episode_mode is continuous (the node commands without a goal): configure it with \
             episode_mode goal to run episodes"
                .to_string(),
        );
    }
    if control.homing() {
        return Err("the robot is moving home after the last episode: wait for it".to_string());
    }
    let mut episodes = lock(&shared.episodes);
    if let Some(e) = &episodes.current {
        return Err(format!(
            "an episode is running ({:.1} s, task {:?}): cancel it or end it (~/end_episode) first",
            e.elapsed_s(),
            e.task
        ));
    }
    let names: Vec<String> = lock(&shared.policy_names)
        .1
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    check_goal(&goal, &names, &control.params().record_dir)?;
    {
        let now = shared.now_ns();
        let timeout_ms = control.params().heartbeat_timeout_ms;
        let mut safety = lock(&shared.safety);
        if safety.estop_latched() {
            return Err("the e-stop is latched: ~/reset clears it".to_string());
        }
        if let Some(note) = safety.clear_watchdog(now, timeout_ms)? {
            log::warn!("~/run_policy: {note} (cleared by a new goal)");
        }
    }
    let active = lock(&shared.policy_names).0.clone();
    let policy = if goal.policy.is_empty() || goal.policy == active {
        active
    } else {
        switch(shared, control, &active, &goal.policy)?;
        goal.policy.clone()
    };
    let task = if goal.task.is_empty() {
        control.params().task.clone()
    } else {
        goal.task.clone()
    };
    control
        .set_task(&task)
        .map_err(|e| format!("the task is refused: {e}"))?;
    let gated = goal.record;
    if !gated {
        if let Err(e) = begin(control) {
            let task = control.params().task.clone();
            let _ = control.set_task(&task);
            return Err(e);
        }
    }
    let mut episode = Episode::new(goal, task.clone());
    episode.accepted_ns = Some(shared.now_ns());
    episode.gated = gated;
    episode.policy = policy;
    episode.inference_count = control.inference_latency().count;
    episodes.current = Some(episode);
    episodes.started += 1;
    Ok(task)
}

/// The episode's first tick: the loop commands (after a move home with
/// `home_before_episode`).
pub(super) fn begin(control: &mut ControlLoop) -> Result<(), String> {
    control.set_idle(false);
    if control.params().home_before_episode {
        match control.start_home(AfterHome::Policy) {
            Ok(ticks) => log::info!(
                "~/run_policy: moving home over {ticks} tick(s) before the policy runs (home_before_episode)"
            ),
            Err(e) => {
                control.set_idle(true);
                return Err(format!("home_before_episode: {e}"));
            }
        }
    }
    Ok(())
}

/// Switches the loaded policy `name` in for the active one (`active`, parked in its place):
/// no reload, the newest inputs carried over.
fn switch(
    shared: &Shared,
    control: &mut ControlLoop,
    active: &str,
    name: &str,
) -> Result<(), String> {
    let mut parked = lock(&shared.parked);
    let i = parked
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| format!("no policy named `{name}` is loaded"))?;
    let mut next = parked.swap_remove(i);
    next.control.take_over_from(control);
    std::mem::swap(control, &mut next.control);
    next.name = active.to_string();
    parked.push(next);
    lock(&shared.policy_names).0 = name.to_string();
    log::info!(
        "~/run_policy: policy `{name}` switched in for `{active}` (loaded at configure: no reload)"
    );
    Ok(())
}

/// `~/run_policy`: goal requests, one episode at a time.
pub(super) async fn run_policy_server<S>(shared: Arc<Shared>, ctx: r2r::Context, mut requests: S)
where
    S: Stream<Item = ActionServerGoalRequest<RunPolicy::Action>> + Unpin,
{
    while let Some(req) = requests.next().await {
        let goal = Goal {
            task: req.goal.task.clone(),
            policy: req.goal.policy.clone(),
            max_duration_s: req.goal.max_duration_s,
            record: req.goal.record,
        };
        let duration = goal.max_duration_s;
        let record = goal.record;
        let started = start(&shared, goal).and_then(|task| {
            if !record {
                return Ok(task);
            }
            let (dir, n) = {
                let c = lock(&shared.control);
                let dir = c.as_ref().map(|c| c.params().record_dir.clone());
                (dir.unwrap_or_default(), lock(&shared.episodes).started)
            };
            match recording::start(&shared, &ctx, &dir, n) {
                Ok(r) => {
                    *lock(&shared.recording) = Some(r);
                    Ok(task)
                }
                Err(e) => {
                    end(&shared, EndReason::Error, None);
                    lock(&shared.episodes).current = None;
                    *lock(&shared.recording_error) = Some(e.clone());
                    Err(format!("record_dir: {e}"))
                }
            }
        });
        match started {
            Err(reason) => {
                log::warn!("~/run_policy: goal {} refused: {reason}", req.uuid);
                if let Err(e) = req.reject() {
                    log::warn!("~/run_policy: cannot send the refusal: {e}");
                }
            }
            Ok(task) => {
                let uuid = req.uuid;
                match req.accept() {
                    Ok((goal, cancels)) => {
                        let (n, policy) = {
                            let e = lock(&shared.episodes);
                            (e.started, e.current.as_ref().map(|e| e.policy.clone()))
                        };
                        log::info!(
                            "~/run_policy: episode {n} started: policy `{}`, task {task:?}, {}",
                            policy.unwrap_or_default(),
                            if duration > 0.0 {
                                format!("at most {duration} s")
                            } else {
                                "until cancelled or ended".to_string()
                            }
                        );
                        tokio::task::spawn_local(run_goal(shared.clone(), goal, Box::pin(cancels)));
                    }
                    Err(e) => {
                        log::error!("~/run_policy: cannot accept goal {uuid}: {e}");
                        end(&shared, EndReason::Error, None);
                        lock(&shared.episodes).current = None;
                    }
                }
            }
        }
    }
}

/// One accepted goal: feedback until its episode ends, then the result.
async fn run_goal(
    shared: Arc<Shared>,
    mut goal: ActionServerGoal<RunPolicy::Action>,
    mut cancels: Pin<Box<dyn Stream<Item = ActionServerCancelRequest>>>,
) {
    let mut interval = tokio::time::interval(FEEDBACK_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cancels_open = true;
    let episode = loop {
        tokio::select! {
            request = cancels.next(), if cancels_open => match request {
                Some(request) => {
                    request.accept();
                    if end(&shared, EndReason::Cancelled, None) {
                        log::info!("~/run_policy: goal {} cancelled", goal.uuid);
                    }
                }
                None => cancels_open = false,
            },
            _ = interval.tick() => {}
        }
        let feedback = {
            let mut episodes = lock(&shared.episodes);
            match &episodes.current {
                Some(e) if e.end.is_some() => break episodes.current.take(),
                Some(e) => RunPolicy::Feedback {
                    elapsed_s: e.elapsed_s(),
                    steps: e.steps,
                    chunks: e.chunks,
                    inference_p99_ms: e.inference_p99_ms(),
                    status: e.status.as_str().to_string(),
                },
                None => break None,
            }
        };
        if let Err(e) = goal.publish_feedback(feedback) {
            log::debug!("~/run_policy: feedback: {e}");
        }
    };
    let Some(episode) = episode else {
        return;
    };
    let reason = episode.end.unwrap_or(EndReason::Error);
    let recording = lock(&shared.recording).take();
    let recorded = match recording {
        None => String::new(),
        Some(r) => {
            let writer = r.stop();
            let dir = recording::dir_of(&writer);
            let export = lock(&shared.control)
                .as_ref()
                .map(|c| c.params().export_dir.display().to_string())
                .unwrap_or_default();
            let mut custom = BTreeMap::new();
            for (k, v) in [
                ("task", episode.task.clone()),
                ("policy", episode.policy.clone()),
                ("export_dir", export),
                ("reason", reason.as_str().to_string()),
                ("outcome", format!("{:?}", reason.outcome()).to_uppercase()),
                (
                    "success",
                    episode
                        .success
                        .map_or("unknown".to_string(), |s| s.to_string()),
                ),
                ("steps", episode.steps.to_string()),
                ("params_file", recording::PARAMS_FILE.to_string()),
                ("ticks_topic", recording::ticks_topic(&shared.node_name)),
                ("dropped", writer.dropped().to_string()),
            ] {
                custom.insert(format!("policy_node.{k}"), v);
            }
            match recording::finish(writer, custom).await {
                Ok(s) => {
                    log::info!(
                        "~/run_policy: recorded {} message(s) on {} topic(s) into {} ({:.1} MB, {} dropped)",
                        s.messages,
                        s.topics.len(),
                        dir.display(),
                        s.bytes as f64 / 1e6,
                        s.dropped
                    );
                    *lock(&shared.recording_error) = None;
                }
                Err(e) => {
                    log::error!(
                        "~/run_policy: the recording {} is incomplete: {e}",
                        dir.display()
                    );
                    *lock(&shared.recording_error) = Some(e);
                }
            }
            dir.display().to_string()
        }
    };
    let result = RunPolicy::Result {
        success: episode.success.unwrap_or(false),
        reason: reason.as_str().to_string(),
        steps: episode.steps,
        recording: recorded,
    };
    let line = format!(
        "{reason}{}, policy `{}`, {} step(s), {} chunk(s) in {:.1} s{}{}",
        episode
            .success
            .map_or(String::new(), |s| format!(" (success {s})")),
        episode.policy,
        episode.steps,
        episode.chunks,
        episode.elapsed_s(),
        episode
            .first_command_ms()
            .map_or(String::new(), |ms| format!(
                ", first command {ms:.1} ms after the goal was accepted"
            )),
        episode
            .error
            .as_deref()
            .map_or(String::new(), |e| format!(": {e}"))
    );
    lock(&shared.episodes).last = Some(line.clone());
    let sent = match reason.outcome() {
        Outcome::Succeeded => {
            log::info!("~/run_policy: episode succeeded: {line}");
            goal.succeed(result)
        }
        Outcome::Canceled => {
            log::info!("~/run_policy: episode cancelled: {line}");
            goal.cancel(result)
        }
        Outcome::Aborted => {
            log::warn!("~/run_policy: episode aborted: {line}");
            goal.abort(result)
        }
    };
    if let Err(e) = sent {
        log::warn!("~/run_policy: cannot send the result: {e}");
    }
}

/// `~/end_episode`: the operator's or an evaluator's verdict ends the running episode.
pub(super) async fn end_episode_feed(
    shared: Arc<Shared>,
    mut stream: Pin<Box<dyn Stream<Item = Bool>>>,
) {
    while let Some(msg) = stream.next().await {
        if end(&shared, EndReason::Ended, Some(msg.data)) {
            log::info!("~/end_episode {}: the episode ends", msg.data);
        } else {
            log::warn!("~/end_episode {}: no episode is running", msg.data);
        }
    }
}
