//! The managed-node (lifecycle) state machine of ROS 2, as a plain value: states, transitions,
//! their ids and labels as `lifecycle_msgs` defines them and `rcl_lifecycle`'s default state
//! machine connects them (the design "Managed nodes" of ROS 2). No r2r here: the node
//! ([`super::node`]) turns requests on `~/change_state` into [`Machine::begin`], runs the
//! transition's work, reports its [`Outcome`] with [`Machine::finish`], and publishes every
//! step on `~/transition_event`.
//!
//! ```text
//!              configure (1)                 activate (3)
//! unconfigured ──────────────► configuring ──► inactive ──────────► activating ──► active
//!      ▲   success (10) / failure (11)            │  ▲  success (30)            │
//!      │                                          │  │                          │ deactivate (4)
//!      └─────────── cleaningup ◄── cleanup (2) ───┘  └──── deactivating ◄────────┘
//! shutdown (5, 6, 7) from unconfigured, inactive, active -> shuttingdown -> finalized
//! an `error` outcome of any transition -> errorprocessing -> unconfigured (success) or finalized
//! ```

use std::fmt;

/// A state of the managed-node state machine (`lifecycle_msgs/msg/State` ids and labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Unknown,
    Unconfigured,
    Inactive,
    Active,
    Finalized,
    Configuring,
    CleaningUp,
    ShuttingDown,
    Activating,
    Deactivating,
    ErrorProcessing,
}

impl State {
    /// Every state, in the order `~/get_available_states` lists them (rcl's registration
    /// order: primary states, then transition states).
    pub const ALL: [State; 11] = [
        State::Unknown,
        State::Unconfigured,
        State::Inactive,
        State::Active,
        State::Finalized,
        State::Configuring,
        State::CleaningUp,
        State::ShuttingDown,
        State::Activating,
        State::Deactivating,
        State::ErrorProcessing,
    ];

    /// The `lifecycle_msgs/msg/State` id.
    pub fn id(self) -> u8 {
        match self {
            State::Unknown => 0,
            State::Unconfigured => 1,
            State::Inactive => 2,
            State::Active => 3,
            State::Finalized => 4,
            State::Configuring => 10,
            State::CleaningUp => 11,
            State::ShuttingDown => 12,
            State::Activating => 13,
            State::Deactivating => 14,
            State::ErrorProcessing => 15,
        }
    }

    /// The label `ros2 lifecycle get` prints.
    pub fn label(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Unconfigured => "unconfigured",
            State::Inactive => "inactive",
            State::Active => "active",
            State::Finalized => "finalized",
            State::Configuring => "configuring",
            State::CleaningUp => "cleaningup",
            State::ShuttingDown => "shuttingdown",
            State::Activating => "activating",
            State::Deactivating => "deactivating",
            State::ErrorProcessing => "errorprocessing",
        }
    }

    /// Primary states are where the node rests; the others exist while a transition runs.
    pub fn is_primary(self) -> bool {
        self.id() < 10
    }

    /// Whether the node holds a configured policy (inactive or active, or between them).
    pub fn is_configured(self) -> bool {
        matches!(
            self,
            State::Inactive | State::Active | State::Activating | State::Deactivating
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The result of a transition's work (rclcpp's `CallbackReturn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The work did not succeed; the node goes back to where it was (configure: to
    /// unconfigured).
    Failure,
    /// Something unexpected: the node goes through error processing.
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Success => TRANSITION_SUCCESS,
            Outcome::Failure => TRANSITION_FAILURE,
            Outcome::Error => TRANSITION_ERROR,
        }
    }
}

const TRANSITION_SUCCESS: &str = "transition_success";
const TRANSITION_FAILURE: &str = "transition_failure";
const TRANSITION_ERROR: &str = "transition_error";

/// A transition of the graph (`lifecycle_msgs/msg/TransitionDescription`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The `lifecycle_msgs/msg/Transition` id.
    pub id: u8,
    pub label: &'static str,
    pub start: State,
    pub goal: State,
}

impl Transition {
    /// Transitions a client may request (`configure`, `cleanup`, `activate`, `deactivate`,
    /// `shutdown`), as opposed to the ones that end a transition state.
    pub fn is_requestable(&self) -> bool {
        self.start.is_primary()
    }
}

const fn t(id: u8, label: &'static str, start: State, goal: State) -> Transition {
    Transition {
        id,
        label,
        start,
        goal,
    }
}

use State as S;

/// The transition graph, in the order `~/get_transition_graph` lists it (rcl's default state
/// machine).
pub const TRANSITIONS: [Transition; 25] = [
    t(1, "configure", S::Unconfigured, S::Configuring),
    t(10, TRANSITION_SUCCESS, S::Configuring, S::Inactive),
    t(11, TRANSITION_FAILURE, S::Configuring, S::Unconfigured),
    t(12, TRANSITION_ERROR, S::Configuring, S::ErrorProcessing),
    t(2, "cleanup", S::Inactive, S::CleaningUp),
    t(20, TRANSITION_SUCCESS, S::CleaningUp, S::Unconfigured),
    t(21, TRANSITION_FAILURE, S::CleaningUp, S::Inactive),
    t(22, TRANSITION_ERROR, S::CleaningUp, S::ErrorProcessing),
    t(3, "activate", S::Inactive, S::Activating),
    t(30, TRANSITION_SUCCESS, S::Activating, S::Active),
    t(31, TRANSITION_FAILURE, S::Activating, S::Inactive),
    t(32, TRANSITION_ERROR, S::Activating, S::ErrorProcessing),
    t(4, "deactivate", S::Active, S::Deactivating),
    t(40, TRANSITION_SUCCESS, S::Deactivating, S::Inactive),
    t(41, TRANSITION_FAILURE, S::Deactivating, S::Active),
    t(42, TRANSITION_ERROR, S::Deactivating, S::ErrorProcessing),
    t(5, "shutdown", S::Unconfigured, S::ShuttingDown),
    t(6, "shutdown", S::Inactive, S::ShuttingDown),
    t(7, "shutdown", S::Active, S::ShuttingDown),
    t(50, TRANSITION_SUCCESS, S::ShuttingDown, S::Finalized),
    t(51, TRANSITION_FAILURE, S::ShuttingDown, S::Finalized),
    t(52, TRANSITION_ERROR, S::ShuttingDown, S::ErrorProcessing),
    t(60, TRANSITION_SUCCESS, S::ErrorProcessing, S::Unconfigured),
    t(61, TRANSITION_FAILURE, S::ErrorProcessing, S::Finalized),
    t(62, TRANSITION_ERROR, S::ErrorProcessing, S::Finalized),
];

/// What the work of a transition state is (the node's callbacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Configure,
    Cleanup,
    Activate,
    Deactivate,
    Shutdown,
    /// Error processing: undo whatever is half done.
    Error,
}

/// Why a requested transition was not started. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a transition is in progress (state `{0}`); try again when it has finished")]
    Busy(State),
    #[error(
        "no transition {what} from state `{state}` (available: {available})",
        available = available_list(*state)
    )]
    Unavailable { what: String, state: State },
}

fn available_list(state: State) -> String {
    let list: Vec<String> = TRANSITIONS
        .iter()
        .filter(|t| t.start == state)
        .map(|t| format!("{} [{}]", t.label, t.id))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The state machine: the current state and the rules to move.
#[derive(Debug, Clone)]
pub struct Machine {
    current: State,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    /// A new node starts unconfigured.
    pub fn new() -> Self {
        Machine {
            current: State::Unconfigured,
        }
    }

    pub fn current(&self) -> State {
        self.current
    }

    /// The transitions valid from the current state (`~/get_available_transitions`): the
    /// requestable ones in a primary state, the ones that end it in a transition state.
    pub fn available(&self) -> impl Iterator<Item = &'static Transition> {
        let current = self.current;
        TRANSITIONS.iter().filter(move |t| t.start == current)
    }

    /// Resolves a `~/change_state` request as rclcpp does: a non-empty `label` names the
    /// transition among those valid from the current state (and takes precedence: a
    /// command-line call leaves the id at 0); else the `id` does. Only requestable
    /// transitions are accepted, and only from a primary state.
    pub fn resolve(&self, id: u8, label: &str) -> Result<&'static Transition, Refusal> {
        if !self.current.is_primary() {
            return Err(Refusal::Busy(self.current));
        }
        let found = if label.is_empty() {
            self.available().find(|t| t.id == id)
        } else {
            self.available().find(|t| t.label == label)
        };
        found
            .filter(|t| t.is_requestable())
            .ok_or_else(|| Refusal::Unavailable {
                what: if label.is_empty() {
                    format!("with id {id}")
                } else {
                    format!("`{label}`")
                },
                state: self.current,
            })
    }

    /// The requestable transition labelled `label` from the current state, if any (e.g.
    /// `shutdown` on SIGINT, `configure` for `autostart`).
    pub fn by_label(&self, label: &str) -> Option<&'static Transition> {
        self.resolve(0, label).ok()
    }

    /// Starts `transition` (which must start from the current state): the machine is now in
    /// the transition state, whose [`Work`] the caller runs. Returns the work.
    pub fn begin(&mut self, transition: &Transition) -> Result<Work, Refusal> {
        if transition.start != self.current || !transition.is_requestable() {
            return Err(Refusal::Unavailable {
                what: format!("`{}` [{}]", transition.label, transition.id),
                state: self.current,
            });
        }
        self.current = transition.goal;
        Ok(work_of(self.current))
    }

    /// Ends the running transition state with `outcome`: returns the transition taken, and
    /// the work of the next state when it is error processing (which the caller runs and
    /// reports with another `finish`). In a primary state: `None`, nothing changes.
    pub fn finish(&mut self, outcome: Outcome) -> Option<(&'static Transition, Option<Work>)> {
        let current = self.current;
        let transition = TRANSITIONS
            .iter()
            .find(|t| t.start == current && t.label == outcome.label())?;
        self.current = transition.goal;
        let next = (!self.current.is_primary()).then(|| work_of(self.current));
        Some((transition, next))
    }
}

fn work_of(state: State) -> Work {
    match state {
        State::Configuring => Work::Configure,
        State::CleaningUp => Work::Cleanup,
        State::Activating => Work::Activate,
        State::Deactivating => Work::Deactivate,
        State::ShuttingDown => Work::Shutdown,
        _ => Work::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(m: &mut Machine, label: &str, outcome: Outcome) -> Vec<(u8, State, State)> {
        let t = m.resolve(0, label).unwrap();
        let mut steps = vec![(t.id, t.start, t.goal)];
        let mut work = Some(m.begin(t).unwrap());
        let mut outcome = Some(outcome);
        while work.is_some() {
            let (t, next) = m
                .finish(outcome.take().unwrap_or(Outcome::Success))
                .unwrap();
            steps.push((t.id, t.start, t.goal));
            work = next;
        }
        steps
    }

    #[test]
    fn ids_and_labels_follow_lifecycle_msgs() {
        let ids: Vec<u8> = State::ALL.iter().map(|s| s.id()).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15]);
        assert_eq!(State::ErrorProcessing.label(), "errorprocessing");
        assert_eq!(State::CleaningUp.label(), "cleaningup");
        // Every transition id is unique and every state but `unknown` is reachable.
        for (i, a) in TRANSITIONS.iter().enumerate() {
            assert!(TRANSITIONS[i + 1..].iter().all(|b| b.id != a.id), "{a:?}");
        }
        for s in State::ALL.iter().skip(1) {
            assert!(TRANSITIONS.iter().any(|t| t.goal == *s), "{s}");
        }
        // The requestable ones are exactly 1..=7.
        let mut requestable: Vec<u8> = TRANSITIONS
            .iter()
            .filter(|t| t.is_requestable())
            .map(|t| t.id)
            .collect();
        requestable.sort();
        assert_eq!(requestable, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn the_usual_walk() {
        let mut m = Machine::new();
        assert_eq!(m.current(), State::Unconfigured);
        let labels: Vec<_> = m.available().map(|t| (t.label, t.id)).collect();
        assert_eq!(labels, [("configure", 1), ("shutdown", 5)]);
        assert_eq!(
            walk(&mut m, "configure", Outcome::Success),
            [
                (1, S::Unconfigured, S::Configuring),
                (10, S::Configuring, S::Inactive)
            ]
        );
        let labels: Vec<_> = m.available().map(|t| t.label).collect();
        assert_eq!(labels, ["cleanup", "activate", "shutdown"]);
        walk(&mut m, "activate", Outcome::Success);
        assert_eq!(m.current(), State::Active);
        walk(&mut m, "deactivate", Outcome::Success);
        assert_eq!(m.current(), State::Inactive);
        walk(&mut m, "cleanup", Outcome::Success);
        assert_eq!(m.current(), State::Unconfigured);
        assert_eq!(
            walk(&mut m, "shutdown", Outcome::Success),
            [
                (5, S::Unconfigured, S::ShuttingDown),
                (50, S::ShuttingDown, S::Finalized)
            ]
        );
        assert_eq!(m.available().count(), 0);
        assert!(m.resolve(0, "configure").is_err());
    }

    #[test]
    fn failures_go_back_and_errors_go_through_error_processing() {
        let mut m = Machine::new();
        // A failed configure returns to unconfigured.
        assert_eq!(
            walk(&mut m, "configure", Outcome::Failure),
            [
                (1, S::Unconfigured, S::Configuring),
                (11, S::Configuring, S::Unconfigured)
            ]
        );
        walk(&mut m, "configure", Outcome::Success);
        // A failed activate stays inactive.
        walk(&mut m, "activate", Outcome::Failure);
        assert_eq!(m.current(), State::Inactive);
        // An error: error processing, then (its success) unconfigured.
        assert_eq!(
            walk(&mut m, "activate", Outcome::Error),
            [
                (3, S::Inactive, S::Activating),
                (32, S::Activating, S::ErrorProcessing),
                (60, S::ErrorProcessing, S::Unconfigured)
            ]
        );
        // Error processing that fails finalizes.
        walk(&mut m, "configure", Outcome::Success);
        let t = m.resolve(2, "").unwrap();
        assert_eq!(m.begin(t), Ok(Work::Cleanup));
        let (t, next) = m.finish(Outcome::Error).unwrap();
        assert_eq!((t.id, next), (22, Some(Work::Error)));
        let (t, next) = m.finish(Outcome::Failure).unwrap();
        assert_eq!((t.id, next, m.current()), (61, None, State::Finalized));
    }

    #[test]
    fn requests_resolve_like_rclcpp() {
        let mut m = Machine::new();
        // By id (nav2's lifecycle manager), by label (`ros2 lifecycle set`: label wins).
        assert_eq!(m.resolve(1, "").unwrap().label, "configure");
        assert_eq!(m.resolve(0, "configure").unwrap().id, 1);
        assert_eq!(m.resolve(3, "configure").unwrap().id, 1);
        // Wrong state, unknown label, internal transitions: refused, naming what is available.
        let e = m.resolve(3, "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no transition with id 3 from state `unconfigured` (available: configure [1], shutdown [5])"
        );
        assert!(m.resolve(0, "activate").is_err());
        assert!(m.resolve(0, "launch").is_err());
        let t = m.resolve(1, "").unwrap();
        m.begin(t).unwrap();
        // Busy while configuring, including the internal transitions of that state.
        assert_eq!(m.resolve(10, ""), Err(Refusal::Busy(State::Configuring)));
        assert_eq!(
            m.resolve(0, "transition_success"),
            Err(Refusal::Busy(State::Configuring))
        );
        let internal: Vec<u8> = m.available().map(|t| t.id).collect();
        assert_eq!(internal, [10, 11, 12]);
        // begin() checks the start state too.
        let activate = TRANSITIONS.iter().find(|t| t.id == 3).unwrap();
        assert!(m.begin(activate).is_err());
        assert_eq!(m.current(), State::Configuring);
        assert!(m.finish(Outcome::Success).is_some());
        assert!(Machine::new().finish(Outcome::Success).is_none());
    }

    #[test]
    fn shutdown_from_every_primary_state() {
        for (setup, id) in [
            (&[][..], 5),
            (&["configure"][..], 6),
            (&["configure", "activate"][..], 7),
        ] {
            let mut m = Machine::new();
            for label in setup {
                walk(&mut m, label, Outcome::Success);
            }
            let t = m.by_label("shutdown").unwrap();
            assert_eq!(t.id, id);
            assert_eq!(m.begin(t), Ok(Work::Shutdown));
            m.finish(Outcome::Failure);
            assert_eq!(m.current(), State::Finalized);
        }
    }
}
