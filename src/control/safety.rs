//! The e-stop latch and the heartbeat watchdog, ROS-free (the node feeds them `~/estop`,
//! `~/heartbeat` and `~/reset`, and asks before every tick whether commands may go out).
//!
//! - **E-stop** (`~/estop`, `std_msgs/Bool`): `true` latches. While latched no command goes
//!   out (each channel's `on_stop` once, the plan dropped). `false` does not clear it: only
//!   `~/reset` does, and says so in the log.
//! - **Watchdog** (`heartbeat_timeout_ms` > 0, `~/heartbeat`, `std_msgs/Empty`): commands go
//!   out only while the newest heartbeat is younger than the timeout. Before the first
//!   heartbeat nothing is commanded (the watchdog waits, unlatched). Once armed, a missed
//!   deadline trips it like the e-stop; it stays tripped when heartbeats return, until
//!   `~/reset` (which clears it only while heartbeats are fresh).
//!
//! - **Takeover** (`~/intervention`, `std_msgs/Bool`): while `true` a human drives the robot:
//!   the policy commands nothing (no `on_stop` either: that would fight the operator) and the
//!   plan is dropped; on `false` it resumes from a fresh chunk. Not latched.
//!
//! Times are nanoseconds on the node's clock (ROS time, the ticks' clock).

/// Why commands are held back.
#[derive(Debug, Clone, PartialEq)]
pub enum Halt {
    /// The e-stop is latched.
    Estop,
    /// No heartbeat has arrived yet (the watchdog is on).
    NoHeartbeat,
    /// A human has taken over (`~/intervention` true).
    Intervention,
    /// The watchdog tripped: the heartbeat was `age_ms` old at a tick (latched).
    Watchdog { age_ms: f64 },
}

impl Halt {
    /// Whether the channels' `on_stop` goes out (not during a takeover: the operator drives).
    pub fn publishes_on_stop(&self) -> bool {
        !matches!(self, Halt::Intervention)
    }

    /// The reason as `/diagnostics` and the log give it.
    pub fn describe(&self, timeout_ms: f64) -> String {
        match self {
            Halt::Estop => "e-stop latched (~/estop); ~/reset clears it".into(),
            Halt::Intervention => {
                "human takeover (~/intervention true): the policy commands nothing".into()
            }
            Halt::NoHeartbeat => format!(
                "waiting for the first heartbeat on ~/heartbeat (heartbeat_timeout_ms {timeout_ms})"
            ),
            Halt::Watchdog { age_ms } => format!(
                "watchdog tripped: no heartbeat on ~/heartbeat for {age_ms:.0} ms (heartbeat_timeout_ms \
                 {timeout_ms}); ~/reset clears it once heartbeats are back"
            ),
        }
    }
}

/// The e-stop latch and the watchdog.
#[derive(Debug, Default, Clone)]
pub struct Safety {
    estop: bool,
    intervention: bool,
    last_heartbeat_ns: Option<i64>,
    /// The heartbeat's age when the watchdog tripped (latched).
    tripped: Option<f64>,
    /// E-stops latched and watchdog trips since start (for `/diagnostics`).
    estops: u64,
    trips: u64,
}

impl Safety {
    /// `~/estop`: `true` latches (returns whether this latched it); `false` changes nothing.
    pub fn estop(&mut self, on: bool) -> bool {
        if on && !self.estop {
            self.estop = true;
            self.estops += 1;
            return true;
        }
        false
    }

    /// `~/intervention`: returns whether it changed.
    pub fn intervention(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.intervention, on) != on
    }

    /// `~/heartbeat` received at `now_ns`.
    pub fn heartbeat(&mut self, now_ns: i64) {
        self.last_heartbeat_ns = Some(now_ns);
    }

    /// Whether commands must be held back at `now_ns`, with watchdog timeout `timeout_ms`
    /// (0 = off). A missed heartbeat deadline latches here.
    pub fn check(&mut self, now_ns: i64, timeout_ms: f64) -> Option<Halt> {
        if self.estop {
            return Some(Halt::Estop);
        }
        if self.intervention {
            return Some(Halt::Intervention);
        }
        if timeout_ms <= 0.0 {
            return None;
        }
        if let Some(age_ms) = self.tripped {
            return Some(Halt::Watchdog { age_ms });
        }
        let last = self.last_heartbeat_ns?;
        let age_ms = (now_ns - last) as f64 / 1e6;
        if age_ms > timeout_ms {
            self.tripped = Some(age_ms);
            self.trips += 1;
            return Some(Halt::Watchdog { age_ms });
        }
        None
    }

    /// Whether no heartbeat has arrived yet while the watchdog is on (commands wait, nothing
    /// is latched). Checked after [`check`](Self::check).
    pub fn waiting_for_heartbeat(&self, timeout_ms: f64) -> bool {
        timeout_ms > 0.0 && self.last_heartbeat_ns.is_none() && !self.estop
    }

    /// `~/reset`: clears the e-stop latch, and the watchdog's when the heartbeat is fresh at
    /// `now_ns`. Returns what it cleared and what it could not, for the log and the answer.
    pub fn reset(&mut self, now_ns: i64, timeout_ms: f64) -> Vec<String> {
        let mut said = Vec::new();
        if std::mem::take(&mut self.estop) {
            said.push("the e-stop latch cleared".to_string());
        }
        if self.tripped.is_some() {
            let fresh = timeout_ms <= 0.0
                || self
                    .last_heartbeat_ns
                    .is_some_and(|t| (now_ns - t) as f64 / 1e6 <= timeout_ms);
            if fresh {
                self.tripped = None;
                said.push("the watchdog cleared".to_string());
            } else {
                said.push(
                    "the watchdog stays tripped: no fresh heartbeat on ~/heartbeat".to_string(),
                );
            }
        }
        said
    }

    /// A new episode's goal: clears a tripped watchdog when the heartbeat is fresh at
    /// `now_ns` (`Ok(Some(what))`), refuses the goal when it is not (`Err(why)`).
    pub fn clear_watchdog(
        &mut self,
        now_ns: i64,
        timeout_ms: f64,
    ) -> Result<Option<String>, String> {
        if self.tripped.is_none() {
            return Ok(None);
        }
        let fresh = timeout_ms <= 0.0
            || self
                .last_heartbeat_ns
                .is_some_and(|t| (now_ns - t) as f64 / 1e6 <= timeout_ms);
        if !fresh {
            return Err(
                "the watchdog is tripped and no fresh heartbeat arrived on ~/heartbeat".to_string(),
            );
        }
        self.tripped = None;
        Ok(Some("the watchdog cleared".to_string()))
    }

    /// Whether the e-stop is latched.
    pub fn estop_latched(&self) -> bool {
        self.estop
    }

    /// `/diagnostics` values: `estop` (latched / clear, with the count), `watchdog`.
    pub fn diagnostics(&self, now_ns: i64, timeout_ms: f64) -> Vec<(String, String)> {
        let estop = if self.estop { "latched" } else { "clear" };
        let watchdog = if timeout_ms <= 0.0 {
            "off".to_string()
        } else if let Some(age) = self.tripped {
            format!("tripped ({age:.0} ms without a heartbeat)")
        } else {
            match self.last_heartbeat_ns {
                None => "waiting for the first heartbeat".to_string(),
                Some(t) => format!("ok (heartbeat {:.0} ms ago)", (now_ns - t) as f64 / 1e6),
            }
        };
        vec![
            ("intervention".into(), self.intervention.to_string()),
            ("estop".into(), estop.into()),
            ("estop_latches".into(), self.estops.to_string()),
            ("watchdog".into(), watchdog),
            ("watchdog_trips".into(), self.trips.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn the_estop_latches_until_reset() {
        let mut s = Safety::default();
        assert_eq!(s.check(0, 0.0), None);
        assert!(s.estop(true));
        assert!(!s.estop(true), "already latched");
        assert_eq!(s.check(MS, 0.0), Some(Halt::Estop));
        assert!(!s.estop(false));
        assert_eq!(
            s.check(2 * MS, 0.0),
            Some(Halt::Estop),
            "false does not clear it"
        );
        assert_eq!(s.reset(3 * MS, 0.0), vec!["the e-stop latch cleared"]);
        assert_eq!(s.check(4 * MS, 0.0), None);
        assert!(s.reset(5 * MS, 0.0).is_empty());
    }

    #[test]
    fn the_watchdog_waits_trips_latches_and_clears_only_with_fresh_heartbeats() {
        let mut s = Safety::default();
        let t = 100.0; // ms
                       // Before the first heartbeat: held back, not latched.
        assert_eq!(s.check(0, t), None);
        assert!(s.waiting_for_heartbeat(t));
        assert!(!s.waiting_for_heartbeat(0.0), "off");
        s.heartbeat(10 * MS);
        assert!(!s.waiting_for_heartbeat(t));
        assert_eq!(s.check(100 * MS, t), None, "90 ms old");
        assert_eq!(s.check(110 * MS, t), None, "100 ms old: at the limit");
        assert!(matches!(s.check(111 * MS, t), Some(Halt::Watchdog { .. })));
        // Heartbeats return: still tripped.
        s.heartbeat(120 * MS);
        assert!(matches!(s.check(121 * MS, t), Some(Halt::Watchdog { .. })));
        // A reset with a stale heartbeat leaves it tripped; with a fresh one clears it.
        assert_eq!(
            s.reset(400 * MS, t),
            vec!["the watchdog stays tripped: no fresh heartbeat on ~/heartbeat"]
        );
        s.heartbeat(450 * MS);
        assert_eq!(s.reset(460 * MS, t), vec!["the watchdog cleared"]);
        assert_eq!(s.check(470 * MS, t), None);
        let d = s.diagnostics(470 * MS, t);
        assert_eq!(d[3].1, "ok (heartbeat 20 ms ago)");
        assert_eq!(d[4].1, "1");
        // Turned off: nothing holds commands back.
        assert_eq!(s.check(10_000 * MS, 0.0), None);
    }

    #[test]
    fn the_estop_wins_over_the_watchdog() {
        let mut s = Safety::default();
        s.heartbeat(0);
        s.estop(true);
        assert_eq!(s.check(500 * MS, 100.0), Some(Halt::Estop));
        assert_eq!(s.diagnostics(0, 100.0)[1].1, "latched");
    }

    #[test]
    fn a_takeover_holds_commands_without_on_stop_and_is_not_latched() {
        let mut s = Safety::default();
        assert!(s.intervention(true));
        assert!(!s.intervention(true));
        let h = s.check(0, 0.0).unwrap();
        assert_eq!(h, Halt::Intervention);
        assert!(!h.publishes_on_stop());
        assert!(Halt::Estop.publishes_on_stop());
        assert!(s.intervention(false));
        assert_eq!(s.check(1, 0.0), None);
        s.estop(true);
        s.intervention(true);
        assert_eq!(s.check(2, 0.0), Some(Halt::Estop), "the e-stop wins");
    }
}
