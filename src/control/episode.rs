//! Episodes (`~/run_policy`), ROS-free: when a goal may start, and when and why a running
//! episode ends, decided from what each control tick did. The node's action server and the
//! tests drive the same code.
//!
//! With `episode_mode: goal` the control loop is idle (commands nothing, see
//! [`ControlLoop::set_idle`](super::ControlLoop::set_idle)) until a goal starts an episode;
//! every end makes it idle again, which applies each output channel's `on_stop` once.

use std::fmt;

use super::safety::Halt;
use super::TickStatus;

/// Largest task of a goal, in bytes (the `task` parameter's limit).
pub const MAX_GOAL_TASK_BYTES: usize = crate::policy::processors::tokenizer::MAX_TASK_BYTES;

/// `episode_mode`: when the node commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EpisodeMode {
    /// Whenever active and enabled (no goal needed; goals are refused).
    #[default]
    Continuous,
    /// Only while a `~/run_policy` goal runs.
    Goal,
}

impl EpisodeMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "continuous" => Some(Self::Continuous),
            "goal" => Some(Self::Goal),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continuous => "continuous",
            Self::Goal => "goal",
        }
    }
}

/// Why an episode ended (the result's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `max_duration_s` elapsed.
    Duration,
    /// `~/end_episode` said so (its value is the result's `success`).
    Ended,
    /// The goal was cancelled.
    Cancelled,
    /// The e-stop latched.
    Estop,
    /// The heartbeat watchdog tripped.
    Watchdog,
    /// The inputs were stale longer than `episode_stale_timeout_s`.
    Stale,
    /// The policy failed (inference, a rejected chunk, a command that cannot go out).
    Error,
    /// The node left the active state (deactivate, cleanup, shutdown).
    Deactivated,
}

/// How the action ends for a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Canceled,
    Aborted,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duration => "duration",
            Self::Ended => "ended",
            Self::Cancelled => "cancelled",
            Self::Estop => "estop",
            Self::Watchdog => "watchdog",
            Self::Stale => "stale",
            Self::Error => "error",
            Self::Deactivated => "deactivated",
        }
    }

    /// Whether the robot may move home after an episode that ended so
    /// (`home_after_episode`): not after a fault or a stop.
    pub fn homes_after(self) -> bool {
        matches!(self, Self::Duration | Self::Ended | Self::Cancelled)
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Self::Duration | Self::Ended => Outcome::Succeeded,
            Self::Cancelled => Outcome::Canceled,
            _ => Outcome::Aborted,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A goal as received (the action's goal fields).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Goal {
    pub task: String,
    pub policy: String,
    pub max_duration_s: f64,
    pub record: bool,
}

/// Checks a goal's own fields; `policies` are the names a goal may pick (the active policy
/// answers to `""` and to its own name); `record_dir` is where a recording would go. The
/// error is the reason the goal is refused.
pub fn check_goal(goal: &Goal, policies: &[String], record_dir: &str) -> Result<(), String> {
    if goal.task.len() > MAX_GOAL_TASK_BYTES {
        return Err(format!(
            "task is {} bytes long, above the limit of {MAX_GOAL_TASK_BYTES} bytes",
            goal.task.len()
        ));
    }
    if !(goal.max_duration_s.is_finite() && goal.max_duration_s >= 0.0) {
        return Err(format!(
            "max_duration_s must be a finite number >= 0 (0 = until cancelled or ended), got {}",
            goal.max_duration_s
        ));
    }
    if goal.max_duration_s > 1e9 {
        return Err(format!(
            "max_duration_s {} is above 1e9 s; use 0 for an episode without a time limit",
            goal.max_duration_s
        ));
    }
    if !goal.policy.is_empty() && !policies.contains(&goal.policy) {
        return Err(format!(
            "no policy named `{}` is loaded (loaded: {})",
            goal.policy,
            if policies.is_empty() {
                "only the export_dir policy, selected by \"\"".to_string()
            } else {
                policies.join(", ")
            }
        ));
    }
    if goal.record && record_dir.is_empty() {
        return Err(
            "record: true needs the record_dir parameter (empty): set it, or send the goal \
             with record: false"
                .to_string(),
        );
    }
    Ok(())
}

/// What the episode is doing, for the feedback's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EpisodeStatus {
    /// Commands go out.
    Running,
    /// No command yet on this tick: the first chunk, a heartbeat, an overrun, `~/enable`.
    #[default]
    Waiting,
    /// An input is stale.
    Stale,
    /// A human has taken over (`~/intervention`).
    Intervention,
    /// The move home before the policy runs (`home_before_episode`).
    Homing,
}

impl EpisodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Stale => "stale",
            Self::Intervention => "intervention",
            Self::Homing => "homing",
        }
    }
}

/// One running episode: counts, and the end once decided.
#[derive(Debug, Clone)]
pub struct Episode {
    pub goal: Goal,
    /// The task chunks are computed with (the goal's, else the `task` parameter).
    pub task: String,
    /// The policy that runs it (a `policies` name, `default` for `export_dir`'s).
    pub policy: String,
    /// When the goal was accepted, and when the first command went out (ROS time, ns).
    pub accepted_ns: Option<i64>,
    pub first_command_ns: Option<i64>,
    /// Time of the first tick (ROS time, ns).
    pub started_ns: Option<i64>,
    pub last_tick_ns: Option<i64>,
    /// Commands published.
    pub steps: u64,
    /// Chunks switched in.
    pub chunks: u64,
    pub status: EpisodeStatus,
    /// Since when the inputs have been stale (ns), while they are.
    stale_since_ns: Option<i64>,
    /// `~/end_episode`'s verdict.
    pub success: Option<bool>,
    /// Why it ended, once it has.
    pub end: Option<EndReason>,
    /// The policy error that ended it, in words.
    pub error: Option<String>,
    /// Inference latency of each chunk computed during it (ms).
    pub inference_ms: Vec<f64>,
    /// The policy's inference count last seen ([`note_inference`](Self::note_inference)).
    pub inference_count: u64,
    /// A recorded episode waits for its recording to hold the inputs before its first tick
    /// (since this time, ns, once checked).
    pub gated: bool,
    pub gated_since_ns: Option<i64>,
}

impl Episode {
    pub fn new(goal: Goal, task: String) -> Self {
        Self {
            goal,
            task,
            policy: String::new(),
            accepted_ns: None,
            first_command_ns: None,
            started_ns: None,
            last_tick_ns: None,
            steps: 0,
            chunks: 0,
            status: EpisodeStatus::Waiting,
            stale_since_ns: None,
            success: None,
            end: None,
            error: None,
            inference_ms: Vec::new(),
            inference_count: 0,
            gated: false,
            gated_since_ns: None,
        }
    }

    /// The policy's inference statistics now: `count` inferences so far, the last one took
    /// `last`. Records `last` when inferences happened since the last call.
    pub fn note_inference(&mut self, count: u64, last: std::time::Duration) {
        if count > self.inference_count {
            self.inference_ms.push(last.as_secs_f64() * 1e3);
            self.inference_count = count;
        }
    }

    /// p99 of the inference latencies during the episode (ms; 0 before the first).
    pub fn inference_p99_ms(&self) -> f64 {
        if self.inference_ms.is_empty() {
            return 0.0;
        }
        let mut v = self.inference_ms.clone();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }

    /// From the goal's acceptance to the first command (ms), once both happened.
    pub fn first_command_ms(&self) -> Option<f64> {
        Some((self.first_command_ns? - self.accepted_ns?) as f64 / 1e6)
    }

    /// Seconds since the first tick.
    pub fn elapsed_s(&self) -> f64 {
        match (self.started_ns, self.last_tick_ns) {
            (Some(a), Some(b)) => (b - a).max(0) as f64 / 1e9,
            _ => 0.0,
        }
    }

    /// Whether `max_duration_s` is up at `now_ns`: checked before the tick, so that the
    /// episode ends without computing a command that would not go out.
    pub fn time_up(&self, now_ns: i64) -> bool {
        self.end.is_none()
            && self.goal.max_duration_s > 0.0
            && self
                .started_ns
                .is_some_and(|s| (now_ns - s) as f64 / 1e9 >= self.goal.max_duration_s)
    }

    /// Ends it (the first reason wins); returns whether this call ended it.
    pub fn finish(&mut self, reason: EndReason) -> bool {
        if self.end.is_some() {
            return false;
        }
        self.end = Some(reason);
        true
    }

    /// After a control tick at `now_ns` that returned `status` (held back by `halt`, and
    /// switching a chunk in when `switched`): counts it, and returns the reason when this
    /// tick ends the episode. `stale_timeout_s` is `episode_stale_timeout_s`. A tick that
    /// ends the episode must command nothing (its command is not counted as a step).
    pub fn after_tick(
        &mut self,
        now_ns: i64,
        status: &TickStatus,
        halt: Option<&Halt>,
        switched: bool,
        stale_timeout_s: f64,
    ) -> Option<EndReason> {
        if self.end.is_some() {
            return None;
        }
        let started = *self.started_ns.get_or_insert(now_ns);
        self.last_tick_ns = Some(now_ns);
        if self.goal.max_duration_s > 0.0
            && (now_ns - started) as f64 / 1e9 >= self.goal.max_duration_s
        {
            self.finish(EndReason::Duration);
            return Some(EndReason::Duration);
        }
        if switched {
            self.chunks += 1;
        }
        let mut end = None;
        match halt {
            Some(Halt::Estop) => end = Some(EndReason::Estop),
            Some(Halt::Watchdog { .. }) => end = Some(EndReason::Watchdog),
            Some(Halt::Intervention) => self.status = EpisodeStatus::Intervention,
            Some(Halt::NoHeartbeat) => self.status = EpisodeStatus::Waiting,
            None => {}
        }
        if halt.is_none() {
            match status {
                TickStatus::Command(_) => {
                    self.steps += 1;
                    self.first_command_ns.get_or_insert(now_ns);
                    self.status = EpisodeStatus::Running;
                }
                TickStatus::Stale { .. } => self.status = EpisodeStatus::Stale,
                TickStatus::Error(e) => {
                    self.error = Some(e.clone());
                    end = Some(EndReason::Error);
                }
                _ => self.status = EpisodeStatus::Waiting,
            }
        }
        if self.status == EpisodeStatus::Stale {
            let since = *self.stale_since_ns.get_or_insert(now_ns);
            if (now_ns - since) as f64 / 1e9 > stale_timeout_s {
                end = end.or(Some(EndReason::Stale));
            }
        } else {
            self.stale_since_ns = None;
        }
        if end.is_some() && halt.is_none() && matches!(status, TickStatus::Command(_)) {
            // This tick's command does not go out.
            self.steps -= 1;
        }
        if let Some(reason) = end {
            self.finish(reason);
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn goal(d: f64) -> Goal {
        Goal {
            max_duration_s: d,
            ..Goal::default()
        }
    }

    #[test]
    fn goals_with_bad_fields_are_refused_with_the_reason() {
        let ok = goal(1.0);
        assert_eq!(check_goal(&ok, &[], ""), Ok(()));
        let rec = Goal {
            record: true,
            ..ok.clone()
        };
        assert!(check_goal(&rec, &[], "")
            .unwrap_err()
            .contains("record_dir"));
        assert_eq!(check_goal(&rec, &[], "/tmp/episodes"), Ok(()));
        let long = Goal {
            task: "x".repeat(MAX_GOAL_TASK_BYTES + 1),
            ..ok.clone()
        };
        assert!(check_goal(&long, &[], "")
            .unwrap_err()
            .contains("bytes long"));
        for d in [-1.0, f64::NAN, f64::INFINITY] {
            let e = check_goal(&goal(d), &[], "").unwrap_err();
            assert!(e.contains("max_duration_s"), "{e}");
        }
        let unknown = Goal {
            policy: "pick".into(),
            ..ok.clone()
        };
        assert!(check_goal(&unknown, &[], "")
            .unwrap_err()
            .contains("no policy named `pick`"));
        assert_eq!(check_goal(&unknown, &["pick".to_string()], ""), Ok(()));
    }

    #[test]
    fn an_episode_ends_at_its_duration_and_counts_steps() {
        let mut e = Episode::new(goal(1.0), String::new());
        let cmd = TickStatus::Command(vec![0.0]);
        assert_eq!(
            e.after_tick(0, &TickStatus::Waiting, None, false, 2.0),
            None
        );
        assert_eq!(e.status, EpisodeStatus::Waiting);
        assert_eq!(e.after_tick(S / 2, &cmd, None, true, 2.0), None);
        assert_eq!(
            (e.steps, e.chunks, e.status),
            (1, 1, EpisodeStatus::Running)
        );
        assert_eq!(e.after_tick(S - 1, &cmd, None, false, 2.0), None);
        assert!(!e.time_up(S - 1) && e.time_up(S));
        assert_eq!(
            e.after_tick(S, &cmd, None, false, 2.0),
            Some(EndReason::Duration)
        );
        assert_eq!(e.steps, 2, "the ending tick commands nothing");
        assert_eq!(
            e.after_tick(2 * S, &cmd, None, false, 2.0),
            None,
            "ended once"
        );
        assert_eq!(e.steps, 2);
        assert!((e.elapsed_s() - 1.0).abs() < 1e-9);
        assert_eq!(EndReason::Duration.outcome(), Outcome::Succeeded);
    }

    #[test]
    fn the_inference_p99_covers_the_chunks_of_the_episode_only() {
        let mut e = Episode::new(goal(0.0), String::new());
        e.inference_count = 5; // before the episode
        assert_eq!(e.inference_p99_ms(), 0.0);
        e.note_inference(5, std::time::Duration::from_millis(50));
        assert!(e.inference_ms.is_empty());
        for (n, ms) in [(6, 10), (6, 10), (7, 30), (8, 20)] {
            e.note_inference(n, std::time::Duration::from_millis(ms));
        }
        assert_eq!(e.inference_ms, vec![10.0, 30.0, 20.0]);
        assert_eq!(e.inference_p99_ms(), 30.0);
    }

    #[test]
    fn stale_inputs_end_it_only_after_the_timeout() {
        let mut e = Episode::new(goal(0.0), String::new());
        let stale = TickStatus::Stale {
            what: "joint_states".into(),
            age_ms: None,
        };
        assert_eq!(e.after_tick(0, &stale, None, false, 2.0), None);
        assert_eq!(
            e.after_tick(2 * S, &stale, None, false, 2.0),
            None,
            "= timeout"
        );
        // Fresh again: the clock restarts.
        let cmd = TickStatus::Command(vec![0.0]);
        assert_eq!(e.after_tick(2 * S + 1, &cmd, None, false, 2.0), None);
        assert_eq!(e.after_tick(3 * S, &stale, None, false, 2.0), None);
        assert_eq!(e.after_tick(5 * S, &stale, None, false, 2.0), None);
        assert_eq!(
            e.after_tick(5 * S + 1, &stale, None, false, 2.0),
            Some(EndReason::Stale)
        );
        assert_eq!(EndReason::Stale.outcome(), Outcome::Aborted);
    }

    #[test]
    fn safety_halts_end_it_but_a_takeover_does_not() {
        let halted = TickStatus::Halted(String::new());
        let mut e = Episode::new(goal(0.0), String::new());
        assert_eq!(
            e.after_tick(0, &halted, Some(&Halt::Intervention), false, 2.0),
            None
        );
        assert_eq!(e.status, EpisodeStatus::Intervention);
        assert_eq!(
            e.after_tick(S, &halted, Some(&Halt::NoHeartbeat), false, 2.0),
            None
        );
        assert_eq!(
            e.after_tick(2 * S, &halted, Some(&Halt::Estop), false, 2.0),
            Some(EndReason::Estop)
        );
        let mut w = Episode::new(goal(0.0), String::new());
        assert_eq!(
            w.after_tick(
                0,
                &halted,
                Some(&Halt::Watchdog { age_ms: 9.0 }),
                false,
                2.0
            ),
            Some(EndReason::Watchdog)
        );
        let mut f = Episode::new(goal(0.0), String::new());
        assert_eq!(
            f.after_tick(0, &TickStatus::Error("boom".into()), None, false, 2.0),
            Some(EndReason::Error)
        );
        assert_eq!(f.error.as_deref(), Some("boom"));
        assert_eq!(f.steps, 0);
        assert!(!f.finish(EndReason::Cancelled), "the first reason wins");
        assert_eq!(f.end, Some(EndReason::Error));
    }
}
