//! `sensor_msgs/JointState` to the policy's state vector.

use std::collections::HashMap;

use super::ObservationError;

/// Reorders joint positions from a message's name order into a fixed, wanted order.
///
/// Built once from the node's `joint_names`. The index map for the last message name list
/// is cached, so when consecutive messages carry the same names (the normal case) the hot
/// path only compares names and copies values, without allocating. Joints in the message
/// that are not wanted are ignored. Each message must carry every wanted joint: a driver
/// that splits joints across messages on one topic is reported as missing joints.
#[derive(Debug, Clone)]
pub struct JointReorder {
    wanted: Vec<String>,
    /// The message names the cached `indices` were built for; `None` when not valid.
    cached_names: Option<Vec<String>>,
    /// For each wanted joint, its index in `cached_names`.
    indices: Vec<usize>,
}

impl JointReorder {
    /// A reorderer producing values in the order of `wanted`.
    pub fn new(wanted: Vec<String>) -> Self {
        JointReorder {
            indices: Vec::with_capacity(wanted.len()),
            wanted,
            cached_names: None,
        }
    }

    /// The wanted joint names, in output order.
    pub fn wanted(&self) -> &[String] {
        &self.wanted
    }

    /// Writes the positions of the wanted joints, in wanted order and as `f32`, into `out`
    /// (length `wanted().len()`).
    ///
    /// Errors: `names` and `positions` differ in length, a wanted joint is missing (all
    /// missing ones are named, with the message's names) or appears twice, a value is NaN,
    /// infinite or beyond `f32` range (the joint is named), `out` has the wrong length.
    /// On error `out` may be partly written.
    pub fn apply_into<N: AsRef<str>>(
        &mut self,
        names: &[N],
        positions: &[f64],
        out: &mut [f32],
    ) -> Result<(), ObservationError> {
        if names.len() != positions.len() {
            return Err(ObservationError::JointLengthMismatch {
                names: names.len(),
                positions: positions.len(),
            });
        }
        if out.len() != self.wanted.len() {
            return Err(ObservationError::OutputLength {
                what: "joint state",
                expected: self.wanted.len(),
                actual: out.len(),
            });
        }
        let cached = self.cached_names.as_deref().is_some_and(|c| {
            c.len() == names.len() && c.iter().zip(names).all(|(c, n)| c == n.as_ref())
        });
        if !cached {
            self.rebuild(names)?;
        }
        for ((o, &i), name) in out.iter_mut().zip(&self.indices).zip(&self.wanted) {
            // `i < names.len() == positions.len()` by construction of the cache.
            let value = positions[i];
            let v = value as f32;
            if !v.is_finite() {
                return Err(ObservationError::NonFiniteJoint {
                    name: name.clone(),
                    value,
                });
            }
            *o = v;
        }
        Ok(())
    }

    /// [`apply_into`](Self::apply_into) into a new vector.
    pub fn apply<N: AsRef<str>>(
        &mut self,
        names: &[N],
        positions: &[f64],
    ) -> Result<Vec<f32>, ObservationError> {
        let mut out = vec![0.0; self.wanted.len()];
        self.apply_into(names, positions, &mut out)?;
        Ok(out)
    }

    fn rebuild<N: AsRef<str>>(&mut self, names: &[N]) -> Result<(), ObservationError> {
        self.cached_names = None;
        self.indices.clear();
        // name -> (first index, seen more than once)
        let mut index: HashMap<&str, (usize, bool)> = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            index
                .entry(n.as_ref())
                .and_modify(|e| e.1 = true)
                .or_insert((i, false));
        }
        let mut missing = Vec::new();
        for w in &self.wanted {
            match index.get(w.as_str()) {
                Some(&(_, true)) => {
                    return Err(ObservationError::DuplicateJoint { name: w.clone() });
                }
                Some(&(i, false)) => self.indices.push(i),
                None => missing.push(w.clone()),
            }
        }
        if !missing.is_empty() {
            self.indices.clear();
            return Err(ObservationError::MissingJoints {
                missing,
                available: names.iter().map(|n| n.as_ref().to_string()).collect(),
            });
        }
        self.cached_names = Some(names.iter().map(|n| n.as_ref().to_string()).collect());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn reorders_shuffled_names_and_ignores_extras() {
        let mut r = JointReorder::new(s(&["shoulder", "elbow", "wrist"]));
        assert_eq!(r.wanted(), s(&["shoulder", "elbow", "wrist"]).as_slice());
        let names = s(&["wrist", "gripper", "shoulder", "elbow"]);
        let out = r.apply(&names, &[3.0, 9.0, 1.0, 2.0]).unwrap();
        assert_eq!(out, vec![1.0, 2.0, 3.0]);
        // Same names again: cached map, new values.
        let mut buf = [0.0f32; 3];
        r.apply_into(&names, &[30.0, 9.0, 10.0, 20.0], &mut buf)
            .unwrap();
        assert_eq!(buf, [10.0, 20.0, 30.0]);
        // Different order: the map is rebuilt.
        let names2 = s(&["elbow", "wrist", "shoulder"]);
        r.apply_into(&names2, &[-2.0, -3.0, -1.0], &mut buf)
            .unwrap();
        assert_eq!(buf, [-1.0, -2.0, -3.0]);
    }

    #[test]
    fn missing_joint_is_named_with_what_the_message_has() {
        let mut r = JointReorder::new(s(&["a", "b", "c"]));
        let e = r.apply(&s(&["c", "a"]), &[0.0, 0.0]).unwrap_err();
        match &e {
            ObservationError::MissingJoints { missing, available } => {
                assert_eq!(missing, &s(&["b"]));
                assert_eq!(available, &s(&["c", "a"]));
            }
            other => panic!("{other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("\"b\"") && msg.contains("\"c\", \"a\""),
            "{msg}"
        );
        // A failed rebuild is not cached: a good message afterwards works.
        assert_eq!(
            r.apply(&s(&["c", "b", "a"]), &[3.0, 2.0, 1.0]).unwrap(),
            vec![1.0, 2.0, 3.0]
        );
        // And a bad one after a good one fails again.
        assert!(r.apply(&s(&["c", "a"]), &[0.0, 0.0]).is_err());
    }

    #[test]
    fn non_finite_value_names_the_joint() {
        let mut r = JointReorder::new(s(&["a", "b"]));
        let names = s(&["a", "b"]);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            let e = r.apply(&names, &[0.0, bad]).unwrap_err();
            assert!(
                matches!(e, ObservationError::NonFiniteJoint { ref name, .. } if name == "b"),
                "{e:?}"
            );
            assert!(e.to_string().contains("`b`"), "{e}");
        }
        // A NaN in a joint that is not wanted is ignored.
        let mut r = JointReorder::new(s(&["a"]));
        assert_eq!(r.apply(&names, &[0.5, f64::NAN]).unwrap(), vec![0.5]);
    }

    #[test]
    fn length_mismatch_duplicate_and_output_length() {
        let mut r = JointReorder::new(s(&["a", "b"]));
        let e = r.apply(&s(&["a", "b"]), &[1.0]).unwrap_err();
        assert!(matches!(
            e,
            ObservationError::JointLengthMismatch {
                names: 2,
                positions: 1
            }
        ));
        assert!(e.to_string().contains("2 names but 1 positions"), "{e}");

        let e = r.apply(&s(&["a", "b", "a"]), &[1.0, 2.0, 3.0]).unwrap_err();
        assert!(matches!(e, ObservationError::DuplicateJoint { ref name } if name == "a"));
        // A duplicate of an unwanted joint is harmless.
        assert_eq!(
            r.apply(&s(&["x", "a", "b", "x"]), &[0.0, 1.0, 2.0, 0.0])
                .unwrap(),
            vec![1.0, 2.0]
        );

        let mut short = [0.0f32; 1];
        let e = r
            .apply_into(&s(&["a", "b"]), &[1.0, 2.0], &mut short)
            .unwrap_err();
        assert!(matches!(
            e,
            ObservationError::OutputLength {
                expected: 2,
                actual: 1,
                ..
            }
        ));
    }

    #[test]
    fn empty_wanted_gives_empty_state() {
        let mut r = JointReorder::new(Vec::new());
        assert_eq!(r.apply(&s(&["a"]), &[1.0]).unwrap(), Vec::<f32>::new());
    }

    /// Names may be `&str` or `String`; the cached order is compared by content, so a
    /// message with the same names in another order is reordered afresh.
    #[test]
    fn name_types_and_cache_invalidation() {
        let mut r = JointReorder::new(s(&["a", "b"]));
        assert_eq!(r.apply(&["b", "a"], &[2.0, 1.0]).unwrap(), vec![1.0, 2.0]);
        assert_eq!(
            r.apply(&s(&["b", "a"]), &[4.0, 3.0]).unwrap(),
            vec![3.0, 4.0]
        );
        assert_eq!(r.apply(&["a", "b"], &[5.0, 6.0]).unwrap(), vec![5.0, 6.0]);
        assert_eq!(
            r.apply(&["a", "b", "c"], &[7.0, 8.0, 9.0]).unwrap(),
            vec![7.0, 8.0]
        );
    }
}
