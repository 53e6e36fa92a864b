//! Observation age checks on nanosecond timestamps.

use std::time::Duration;

/// How old a stamped observation is, relative to `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// `age_ns <= max_age`. `age_ns` is negative for a stamp slightly in the future
    /// (clock skew between machines), which still counts as fresh.
    Fresh {
        /// `now - stamp`, nanoseconds.
        age_ns: i64,
    },
    /// Older than the maximum age.
    Stale {
        /// `now - stamp`, nanoseconds (> max age).
        age_ns: i64,
    },
    /// At least the maximum age ahead of `now`: a wrong clock, not skew.
    FromFuture {
        /// `stamp - now`, nanoseconds (>= max age).
        ahead_ns: i64,
    },
}

impl Staleness {
    /// `true` for [`Staleness::Fresh`].
    pub fn is_fresh(self) -> bool {
        matches!(self, Staleness::Fresh { .. })
    }
}

/// The freshness rule of the control loop: data older than `max_age` must not drive the
/// robot. A pure function of the times given (no clock is read), so it works the same on
/// wall time, ROS time and bag time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    max_age_ns: i64,
}

impl Freshness {
    /// A rule with the given maximum age (saturated to `i64::MAX` ns, about 292 years).
    pub fn new(max_age: Duration) -> Self {
        Freshness {
            max_age_ns: i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// The maximum age, nanoseconds.
    pub fn max_age_ns(&self) -> i64 {
        self.max_age_ns
    }

    /// Classifies `stamp_ns` against `now_ns` (both nanoseconds on the same clock):
    /// fresh when `-max_age < now - stamp <= max_age`, stale when older, from the future
    /// when `max_age` or more ahead. Arithmetic saturates; nothing overflows.
    pub fn check(&self, now_ns: i64, stamp_ns: i64) -> Staleness {
        let age_ns = now_ns.saturating_sub(stamp_ns);
        if age_ns > self.max_age_ns {
            Staleness::Stale { age_ns }
        } else if age_ns >= 0 {
            Staleness::Fresh { age_ns }
        } else {
            let ahead_ns = stamp_ns.saturating_sub(now_ns);
            if ahead_ns < self.max_age_ns {
                Staleness::Fresh { age_ns }
            } else {
                Staleness::FromFuture { ahead_ns }
            }
        }
    }
}

/// A ROS `builtin_interfaces/Time` (`sec`, `nanosec`) as nanoseconds since its epoch.
pub fn time_to_ns(sec: i32, nanosec: u32) -> i64 {
    i64::from(sec) * 1_000_000_000 + i64::from(nanosec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn fresh_stale_and_future() {
        let f = Freshness::new(Duration::from_millis(500));
        assert_eq!(f.max_age_ns(), 500 * MS);
        let now = 10_000 * MS;
        assert_eq!(f.check(now, now), Staleness::Fresh { age_ns: 0 });
        assert_eq!(
            f.check(now, now - 100 * MS),
            Staleness::Fresh { age_ns: 100 * MS }
        );
        // Exactly max_age old is still fresh; one ns more is stale.
        assert_eq!(
            f.check(now, now - 500 * MS),
            Staleness::Fresh { age_ns: 500 * MS }
        );
        assert_eq!(
            f.check(now, now - 500 * MS - 1),
            Staleness::Stale {
                age_ns: 500 * MS + 1
            }
        );
        assert!(!f.check(now, 0).is_fresh());
        // Slightly in the future: skew, fresh with a negative age.
        assert_eq!(
            f.check(now, now + 20 * MS),
            Staleness::Fresh { age_ns: -20 * MS }
        );
        assert!(f.check(now, now + 500 * MS - 1).is_fresh());
        assert_eq!(
            f.check(now, now + 500 * MS),
            Staleness::FromFuture { ahead_ns: 500 * MS }
        );
        assert_eq!(
            f.check(now, now + 2_000 * MS),
            Staleness::FromFuture {
                ahead_ns: 2_000 * MS
            }
        );
    }

    #[test]
    fn extremes_saturate() {
        let f = Freshness::new(Duration::MAX);
        assert_eq!(f.max_age_ns(), i64::MAX);
        assert!(f.check(i64::MAX, i64::MIN).is_fresh());
        let f = Freshness::new(Duration::from_millis(1));
        assert!(matches!(
            f.check(i64::MAX, i64::MIN),
            Staleness::Stale { age_ns: i64::MAX }
        ));
        assert!(matches!(
            f.check(i64::MIN, i64::MAX),
            Staleness::FromFuture { ahead_ns: i64::MAX }
        ));
        let zero = Freshness::new(Duration::ZERO);
        assert!(zero.check(5, 5).is_fresh());
        assert!(!zero.check(5, 4).is_fresh());
        assert!(!zero.check(5, 6).is_fresh());
    }

    #[test]
    fn ros_time_to_ns() {
        assert_eq!(time_to_ns(0, 0), 0);
        assert_eq!(time_to_ns(2, 5), 2_000_000_005);
        assert_eq!(time_to_ns(-1, 999_999_999), -1);
        assert_eq!(
            time_to_ns(i32::MAX, u32::MAX),
            i64::from(i32::MAX) * 1_000_000_000 + i64::from(u32::MAX)
        );
    }
}
