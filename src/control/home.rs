//! Moves home (`home_position`): a straight line in command space from where the robot is
//! to the home position, one waypoint per tick, over `home_duration_s` — longer where
//! `max_joint_delta` allows less per tick, so that no step is ever faster than that limit.
//! Used before and after a `~/run_policy` episode (`home_before_episode`,
//! `home_after_episode`).

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
