//! The command limits: position limits, the rate limit and its reference, the plan as
//! the limits will execute it, and `chunk_check: reject`.

use super::*;

impl ControlLoop {
    /// What the rate limit of this tick's command is relative to: the last command, else the
    /// measured joint positions.
    pub(super) fn rate_reference(&self) -> Option<Vec<f64>> {
        if self.max_delta.is_empty() {
            return None;
        }
        self.last_command.clone().or_else(|| {
            let state = self.inputs.feature_values(self.state_feature?)?;
            Some(
                self.state_ref
                    .iter()
                    .map(|r| {
                        r.and_then(|i| state.get(i))
                            .map_or(f64::NAN, |v| f64::from(*v))
                    })
                    .collect(),
            )
        })
    }

    /// With `chunk_check: reject`, why the chunk switched in on this tick (`plan`) is
    /// refused, if it is ([`chunk_check::first_violation`]).
    pub(super) fn rejects(&self, plan: Option<&crate::policy::SwitchedPlan>) -> Option<String> {
        if self.params.chunk_check != chunk_check::ChunkCheck::Reject {
            return None;
        }
        let rows: Vec<Vec<f64>> = plan?
            .rows
            .iter()
            .map(|r| self.joint_map.to_command(r))
            .collect();
        let limits = chunk_check::Limits {
            lower: &self.params.joint_lower_limits,
            upper: &self.params.joint_upper_limits,
            max_delta: &self.max_delta,
        };
        let reference = self.rate_reference();
        chunk_check::first_violation(&rows, reference.as_deref(), &limits, |i| {
            match self.params.joint_names.get(i) {
                Some(j) if self.params.io_map.is_empty() => format!("joint `{j}`"),
                _ => format!("action value {i}"),
            }
        })
    }

    /// The rows of a plan limited as consecutive ticks will limit them: row 0 relative to
    /// `reference` (this tick's), each next row relative to the row before. Stops at a row
    /// that cannot be commanded.
    pub(super) fn limit_plan(
        &self,
        rows: &[ndarray::Array1<f32>],
        reference: Option<Vec<f64>>,
    ) -> Vec<Vec<f64>> {
        let mut out: Vec<Vec<f64>> = Vec::with_capacity(rows.len());
        let mut reference = reference;
        for row in rows {
            match self.limit(self.joint_map.to_command(row), reference.as_deref()) {
                Ok(cmd) => {
                    out.push(self.outputs.encode(&cmd));
                    if !self.max_delta.is_empty() {
                        reference = Some(cmd);
                    }
                }
                Err(_) => break,
            }
        }
        out
    }

    /// Applies the per-tick rate limit (relative to `reference`, see
    /// [`rate_reference`](Self::rate_reference)), then the position limits.
    pub(super) fn limit(
        &self,
        mut cmd: Vec<f64>,
        reference: Option<&[f64]>,
    ) -> Result<Vec<f64>, String> {
        let n = self.action_width;
        if cmd.len() != n {
            return Err(if self.params.io_map.is_empty() {
                format!(
                    "the policy returned {} action values for {n} joint_names",
                    cmd.len()
                )
            } else {
                format!(
                    "the policy returned {} action values; the io_map publishes {n}",
                    cmd.len()
                )
            });
        }
        if let Some(i) = cmd.iter().position(|v| !v.is_finite()) {
            return Err(match self.params.joint_names.get(i) {
                Some(j) => format!("non-finite action for joint `{j}`"),
                None => format!("non-finite action at action index {i}"),
            });
        }
        if !self.max_delta.is_empty() {
            if let Some(r) = reference {
                for i in 0..n {
                    let d = self.max_delta[i];
                    // No reference for a value whose joint the state does not give.
                    if r[i].is_finite() {
                        cmd[i] = cmd[i].clamp(r[i] - d, r[i] + d);
                    }
                }
            }
        }
        if !self.params.joint_lower_limits.is_empty() {
            for (i, c) in cmd.iter_mut().enumerate() {
                *c = c.clamp(
                    self.params.joint_lower_limits[i],
                    self.params.joint_upper_limits[i],
                );
            }
        }
        Ok(cmd)
    }
}
