//! LeRobot's relative actions in a package: `relative_actions_processor` (preprocessor) and
//! `absolute_actions_processor` (postprocessor), as LeRobot 0.6.1 runs them for pi0 / pi0.5
//! policies trained on actions relative to the joint state
//! (`lerobot/processor/relative_action_processor.py`; the reference cases in
//! `tests/cases/relative_actions.json` were computed by LeRobot itself).
//!
//! - The relative step (pre) only remembers the raw `observation.state` at inference (the
//!   observation has no action); its `exclude_joints` and `action_names` give the mask.
//! - The absolute step (post), when `enabled` (its own flag decides), adds that state to the
//!   chunk: `action[t, j] += state[j]` where the mask is true, in `f32` (the action's dtype);
//!   state values are taken by index (the first `D` of the state; one value is broadcast).
//! - The mask: all true when `exclude_joints` is empty or `action_names` is absent; else the
//!   value `j` is excluded when an exclude token (lower-cased, empty ones dropped) is a
//!   substring of `action_names[j]` lower-cased; values past the names are true.
//!
//! Here the absolute step becomes [`RelativeAction`]s that the predictor applies to every
//! chunk against the observation it was computed from (see [`crate::policy::relative`]).

use std::path::Path;

use crate::export::manifest::Component;
use crate::policy::relative::RelativeAction;
use crate::policy::PolicyError;

/// `relative_actions_processor`: the mask's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RelativeStep {
    pub enabled: bool,
    pub exclude_joints: Vec<String>,
    pub action_names: Option<Vec<String>>,
}

fn strings(c: &Component, file: &Path, key: &str) -> Result<Option<Vec<String>>, PolicyError> {
    let Some(v) = c.param(key) else {
        return Ok(None);
    };
    let bad = || PolicyError::Package {
        file: file.to_path_buf(),
        key: c.param_path(key),
        problem: "must be a list of strings".into(),
    };
    let items = v.as_array().ok_or_else(bad)?;
    items
        .iter()
        .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn enabled(c: &Component, file: &Path) -> Result<bool, PolicyError> {
    match c.param("enabled") {
        None => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| PolicyError::Package {
            file: file.to_path_buf(),
            key: c.param_path("enabled"),
            problem: "must be true or false".into(),
        }),
    }
}

impl RelativeStep {
    pub fn from_component(c: &Component, file: &Path) -> Result<Self, PolicyError> {
        Ok(RelativeStep {
            enabled: enabled(c, file)?,
            exclude_joints: strings(c, file, "exclude_joints")?.unwrap_or_default(),
            action_names: strings(c, file, "action_names")?,
        })
    }

    /// The mask over `d` action values (see the module docs).
    pub fn mask(&self, d: usize) -> Vec<bool> {
        mask(self.action_names.as_deref(), &self.exclude_joints, d)
    }
}

/// `absolute_actions_processor`'s `enabled`.
pub fn absolute_enabled(c: &Component, file: &Path) -> Result<bool, PolicyError> {
    enabled(c, file)
}

/// LeRobot's mask: which of `d` action values are relative.
pub fn mask(action_names: Option<&[String]>, exclude_joints: &[String], d: usize) -> Vec<bool> {
    let tokens: Vec<String> = exclude_joints
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| t.to_lowercase())
        .collect();
    let Some(names) = action_names.filter(|_| !tokens.is_empty()) else {
        return vec![true; d];
    };
    (0..d)
        .map(|j| match names.get(j) {
            Some(n) => {
                let n = n.to_lowercase();
                !tokens.iter().any(|t| n.contains(t.as_str()))
            }
            None => true,
        })
        .collect()
}

/// The anchors of `mask` against state input `state` of `state_width` values: value `j`
/// of the action gets `state[j]` (one state value: broadcast). Errors when the state is
/// shorter than the action and not a single value (LeRobot fails the same way).
pub fn anchors(
    mask: &[bool],
    state: &str,
    state_width: Option<usize>,
) -> Result<Vec<RelativeAction>, String> {
    let d = mask.len();
    if let Some(s) = state_width {
        if s < d && s != 1 {
            return Err(format!(
                "the state `{state}` has {s} value(s), fewer than the {d} action values it is added to"
            ));
        }
    }
    let broadcast = state_width == Some(1);
    Ok(mask
        .iter()
        .enumerate()
        .filter(|(_, m)| **m)
        .map(|(j, _)| RelativeAction {
            action: j,
            input: state.to_string(),
            index: if broadcast { 0 } else { j },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn mask_follows_lerobots_rules() {
        let names = s(&["left_waist", "Left_Gripper", "RIGHT_GRIPPER", "right_elbow"]);
        assert_eq!(
            mask(Some(&names), &s(&["gripper"]), 5),
            vec![true, false, false, true, true]
        );
        assert_eq!(mask(None, &s(&["gripper"]), 3), vec![true; 3]);
        assert_eq!(mask(Some(&names), &[], 2), vec![true; 2]);
        assert_eq!(mask(Some(&names), &s(&[""]), 2), vec![true; 2]);
        assert_eq!(
            mask(Some(&names), &s(&["ELBOW", "waist"]), 4),
            vec![false, true, true, false]
        );
        assert!(anchors(&[true, true, true], "state", Some(2)).is_err());
        let one = anchors(&[true, false, true], "state", Some(1)).unwrap();
        assert_eq!(
            one.iter().map(|a| (a.action, a.index)).collect::<Vec<_>>(),
            vec![(0, 0), (2, 0)]
        );
    }
}
