//! Moves home (`home_position`): a straight line in command space from where the robot is
//! to the home position, one waypoint per tick, over `home_duration_s` — longer where
//! `max_joint_delta` allows less per tick, so that no step is ever faster than that limit.
//! Used before and after a `~/run_policy` episode (`home_before_episode`,
//! `home_after_episode`).

use super::TickStatus;

/// What follows the move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterHome {
    /// The policy runs (a move before an episode): from a fresh chunk.
    Policy,
    /// Nothing is commanded (a move after an episode): each channel's `on_stop` goes out.
    Idle,
}

/// One move home.
#[derive(Debug, Clone, PartialEq)]
pub struct HomeMove {
    from: Vec<f64>,
    to: Vec<f64>,
    /// Waypoints in all; the last one is `to`.
    ticks: u64,
    done: u64,
    pub then: AfterHome,
}

impl HomeMove {
    /// A move from `from` to `to` over `duration_s` at `period_s` per tick, at most
    /// `max_delta` per tick for each value (empty: no limit; one value: all).
    pub fn plan(
        from: &[f64],
        to: &[f64],
        duration_s: f64,
        period_s: f64,
        max_delta: &[f64],
        then: AfterHome,
    ) -> Self {
        let mut ticks = (duration_s / period_s).ceil().max(1.0);
        for (i, (a, b)) in from.iter().zip(to).enumerate() {
            let d = match max_delta {
                [] => continue,
                [one] => *one,
                many => many[i],
            };
            if d > 0.0 {
                ticks = ticks.max(((b - a).abs() / d).ceil());
            }
        }
        Self {
            from: from.to_vec(),
            to: to.to_vec(),
            ticks: ticks.min(1e9) as u64,
            done: 0,
            then,
        }
    }

    /// The next waypoint, `None` once the move is done.
    pub fn next_waypoint(&mut self) -> Option<Vec<f64>> {
        if self.done >= self.ticks {
            return None;
        }
        self.done += 1;
        if self.done == self.ticks {
            return Some(self.to.clone());
        }
        let f = self.done as f64 / self.ticks as f64;
        Some(
            self.from
                .iter()
                .zip(&self.to)
                .map(|(a, b)| a + (b - a) * f)
                .collect(),
        )
    }

    /// Waypoints in all.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }
}

/// The loop's side of a move home.
impl super::ControlLoop {
    /// A tick of the move home, if one is in progress: its waypoint, or (the move done) the
    /// idle tick after it; `None` lets the policy run.
    pub(super) fn home_tick(&mut self) -> Option<TickStatus> {
        let m = self.home.as_mut()?;
        match m.next_waypoint() {
            Some(p) => {
                let reference = self.last_command.clone();
                Some(match self.limit(p, reference.as_deref()) {
                    Ok(cmd) => {
                        self.counters.commands += 1;
                        let published = self.outputs.encode(&cmd);
                        self.last_command = Some(cmd);
                        self.last_published = Some(published.clone());
                        self.commanding = true;
                        self.last_tick_home = true;
                        TickStatus::Command(published)
                    }
                    Err(e) => {
                        self.home = None;
                        self.counters.errors += 1;
                        self.commands_stopped();
                        TickStatus::Error(format!("move home: {e}"))
                    }
                })
            }
            None => {
                let then = m.then;
                self.home = None;
                log::info!("move home done");
                match then {
                    AfterHome::Idle => {
                        self.set_idle(true);
                        self.counters.idle += 1;
                        Some(TickStatus::Idle)
                    }
                    AfterHome::Policy => {
                        // The policy starts from a fresh chunk, rate-limited from home.
                        self.policy.reset();
                        None
                    }
                }
            }
        }
    }

    /// Starts a move to `home_position` (see the module docs), then `then`. It starts from the last
    /// command, else from the joint positions in the state input (every action value must
    /// have one); the loop commands from the next tick (it leaves idle).
    pub fn start_home(&mut self, then: AfterHome) -> Result<u64, String> {
        let to = self.params.home_position.clone();
        if to.is_empty() {
            return Err("home_position is empty: there is no home to move to".into());
        }
        let from = match self.last_command.clone() {
            Some(c) => c,
            None => {
                let state = self
                    .state_feature
                    .and_then(|f| self.inputs.feature_values(f))
                    .ok_or("no joint state has arrived yet to start the move home from")?;
                let mut from = Vec::with_capacity(self.action_width);
                for (i, r) in self.state_ref.iter().enumerate() {
                    let v = r.and_then(|j| state.get(j)).ok_or_else(|| {
                        format!(
                            "action value {i} has no joint in the state input to start the move home from"
                        )
                    })?;
                    from.push(f64::from(*v));
                }
                from
            }
        };
        let m = HomeMove::plan(
            &from,
            &to,
            self.params.home_duration_s,
            self.params.period().as_secs_f64(),
            &self.params.max_joint_delta,
            then,
        );
        let ticks = m.ticks();
        self.policy.reset();
        self.plan = None;
        self.idle = false;
        self.last_command = Some(from);
        self.home = Some(m);
        Ok(ticks)
    }

    /// Whether the last tick's command was a waypoint of a move home.
    pub fn last_tick_was_home(&self) -> bool {
        self.last_tick_home
    }

    /// Whether a move home is in progress.
    pub fn homing(&self) -> bool {
        self.home.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_move_takes_the_duration_or_longer_under_max_joint_delta() {
        let mut m = HomeMove::plan(&[0.0, 1.0], &[1.0, 1.0], 0.1, 0.02, &[], AfterHome::Idle);
        assert_eq!(m.ticks(), 5);
        let pts: Vec<Vec<f64>> = std::iter::from_fn(|| m.next_waypoint()).collect();
        assert_eq!(pts.len(), 5);
        assert_eq!(pts[4], vec![1.0, 1.0]);
        assert!((pts[0][0] - 0.2).abs() < 1e-12);
        // 1.0 at 0.05 per tick: 20 ticks, longer than the 5 of the duration.
        let mut m = HomeMove::plan(
            &[0.0, 1.0],
            &[1.0, 1.0],
            0.1,
            0.02,
            &[0.05],
            AfterHome::Policy,
        );
        assert_eq!(m.ticks(), 20);
        let mut prev = vec![0.0, 1.0];
        while let Some(p) = m.next_waypoint() {
            for (a, b) in p.iter().zip(&prev) {
                assert!((a - b).abs() <= 0.05 + 1e-12);
            }
            prev = p;
        }
        assert_eq!(prev, vec![1.0, 1.0]);
        assert_eq!(m.next_waypoint(), None);
        // Per-value limits.
        let m = HomeMove::plan(
            &[0.0, 0.0],
            &[1.0, 1.0],
            0.0,
            0.02,
            &[1.0, 0.1],
            AfterHome::Idle,
        );
        assert_eq!(m.ticks(), 10);
    }
}
