//! Relative actions made absolute: a policy trained on actions relative to an input (the
//! joint positions) returns deltas; the robot needs positions. Each chunk is anchored to the
//! observation it was computed from, on the worker that computed it, before the action
//! queue, blending, ensembling or the command limits see it: rows executed later (after an
//! asynchronous refill, a blend with the next chunk) keep the anchor of their own chunk.

use ndarray::Array2;

use super::{Observation, PolicyError};

/// The text key of an observation that says how many rows of `prev_chunk_left_over` hold the
/// plan (real-time chunking; the rest is padding).
pub const LEFT_OVER_ROWS: &str = "rtc.left_over_rows";

/// Real-time chunking with relative actions: the plan's unexecuted rows
/// (`prev_chunk_left_over`, absolute, as executed) are fed back to the model relative to the
/// state of the observation the new chunk is computed from (as LeRobot's
/// `reanchor_relative_rtc_prefix` does): `left_over[0, i, action] -= observation[input][index]`
/// for the first `rows` rows (the padding after them stays zero). A no-op without the port.
pub fn reanchor_left_over(
    obs: &mut Observation,
    relative: &[RelativeAction],
) -> Result<(), PolicyError> {
    let rows: usize = match obs.text(LEFT_OVER_ROWS) {
        Some(n) => n.parse().unwrap_or(0),
        None => return Ok(()),
    };
    let mut anchors = Vec::with_capacity(relative.len());
    for r in relative {
        anchors.push((r.action, anchor(obs, r)?));
    }
    let Some(prev) = obs.get_mut(super::rtc::PREV_CHUNK_LEFT_OVER) else {
        return Ok(());
    };
    if prev.ndim() != 3 {
        return Ok(());
    }
    let (n, width) = (prev.shape()[1].min(rows), prev.shape()[2]);
    for (action, a) in anchors {
        if action < width {
            for i in 0..n {
                prev[[0, i, action]] -= a;
            }
        }
    }
    Ok(())
}

/// The value of `obs` that relative action `r` is anchored to.
fn anchor(obs: &Observation, r: &RelativeAction) -> Result<f32, PolicyError> {
    let t = obs
        .get(&r.input)
        .or_else(|| {
            let c = super::canonical_name(&r.input);
            let key = obs.names().find(|k| super::canonical_name(k) == c)?;
            obs.get(key)
        })
        .ok_or_else(|| {
            PolicyError::Preprocess(format!(
                "relative actions: the observation has no `{}`",
                r.input
            ))
        })?;
    t.iter().nth(r.index).copied().ok_or_else(|| {
        PolicyError::Preprocess(format!(
            "relative actions: `{}` has {} value(s), index {} is beyond it",
            r.input,
            t.len(),
            r.index
        ))
    })
}

/// `action[:, action] += observation[input][index]` on every row of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelativeAction {
    /// Index in the action vector.
    pub action: usize,
    /// The observation tensor (a policy input) the action is relative to.
    pub input: String,
    /// Index in that input (its last dimension, first row).
    pub index: usize,
}

/// Adds each anchor of `relative` to its column of `chunk` (`[rows, A]`), from `obs`.
/// Errors name the input or index that is missing.
pub fn to_absolute(
    chunk: &mut Array2<f32>,
    obs: &Observation,
    relative: &[RelativeAction],
) -> Result<(), PolicyError> {
    for r in relative {
        let anchor = anchor(obs, r)?;
        if r.action >= chunk.ncols() {
            return Err(PolicyError::Preprocess(format!(
                "relative actions: action index {} is beyond the chunk's {} value(s)",
                r.action,
                chunk.ncols()
            )));
        }
        chunk.column_mut(r.action).mapv_inplace(|v| v + anchor);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, ArrayD};

    #[test]
    fn adds_the_anchor_to_every_row_of_its_column() {
        let mut chunk = array![[0.1f32, 1.0, 0.0], [0.2, 2.0, 0.5]];
        let mut obs = Observation::new();
        obs.insert(
            "state",
            ArrayD::from_shape_vec(vec![3], vec![10.0, 20.0, 30.0]).unwrap(),
        );
        let rel = [
            RelativeAction {
                action: 0,
                input: "state".into(),
                index: 2,
            },
            RelativeAction {
                action: 2,
                input: "state".into(),
                index: 0,
            },
        ];
        to_absolute(&mut chunk, &obs, &rel).unwrap();
        assert_eq!(chunk, array![[30.1f32, 1.0, 10.0], [30.2, 2.0, 10.5]]);
        let bad = [RelativeAction {
            action: 0,
            input: "state".into(),
            index: 3,
        }];
        let e = to_absolute(&mut chunk, &obs, &bad).unwrap_err();
        assert!(e.to_string().contains("index 3"), "{e}");
        let bad = [RelativeAction {
            action: 0,
            input: "env".into(),
            index: 0,
        }];
        assert!(to_absolute(&mut chunk, &obs, &bad).is_err());
    }

    #[test]
    fn rtc_left_over_rows_are_reanchored_to_the_new_state_and_padding_stays_zero() {
        use ndarray::IxDyn;
        let mut obs = Observation::new();
        obs.insert(
            "state",
            ArrayD::from_shape_vec(vec![2], vec![1.0, 10.0]).unwrap(),
        );
        let mut prev = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 2]));
        for i in 0..2 {
            prev[[0, i, 0]] = 1.5;
            prev[[0, i, 1]] = 12.0;
        }
        obs.insert(crate::policy::rtc::PREV_CHUNK_LEFT_OVER, prev);
        obs.set_text(LEFT_OVER_ROWS, "2");
        let rel = [RelativeAction {
            action: 1,
            input: "observation.state".into(),
            index: 1,
        }];
        reanchor_left_over(&mut obs, &rel).unwrap();
        let p = obs.get(crate::policy::rtc::PREV_CHUNK_LEFT_OVER).unwrap();
        // Action 1 relative to state[1] = 10 on the two plan rows; action 0 untouched;
        // the padding row stays zero.
        assert_eq!(p[[0, 0, 1]], 2.0);
        assert_eq!(p[[0, 1, 1]], 2.0);
        assert_eq!(p[[0, 0, 0]], 1.5);
        assert_eq!((p[[0, 2, 0]], p[[0, 2, 1]]), (0.0, 0.0));
        // Without the row count (no real-time chunking) nothing changes.
        let mut plain = Observation::new();
        plain.insert(
            "state",
            ArrayD::from_shape_vec(vec![2], vec![1.0, 10.0]).unwrap(),
        );
        reanchor_left_over(&mut plain, &rel).unwrap();
    }
}
