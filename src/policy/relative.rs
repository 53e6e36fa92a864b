//! Relative actions made absolute: a policy trained on actions relative to an input (the
//! joint positions) returns deltas; the robot needs positions. Each chunk is anchored to the
//! observation it was computed from, on the worker that computed it, before the action
//! queue, blending, ensembling or the command limits see it: rows executed later (after an
//! asynchronous refill, a blend with the next chunk) keep the anchor of their own chunk.

use ndarray::Array2;

use super::{Observation, PolicyError};

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
        let anchor = t.iter().nth(r.index).copied().ok_or_else(|| {
            PolicyError::Preprocess(format!(
                "relative actions: `{}` has {} value(s), index {} is beyond it",
                r.input,
                t.len(),
                r.index
            ))
        })?;
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
}
