//! Live parameters: which changes a configured loop takes, and applying them from the
//! next tick.

use super::*;

impl ControlLoop {
    /// Checks new parameters against the loaded export before [`apply_live`](Self::apply_live):
    /// the parameters that shaped the loop are unchanged, and `n_action_steps` fits the chunk.
    pub fn check_live(&self, new: &NodeParams) -> Result<(), String> {
        let mut same = new.clone();
        let old = &self.params;
        same.max_observation_age_ms = old.max_observation_age_ms;
        same.n_action_steps = old.n_action_steps;
        same.temporal_ensemble_coeff = old.temporal_ensemble_coeff;
        same.enable_on_start = old.enable_on_start;
        same.joint_lower_limits.clone_from(&old.joint_lower_limits);
        same.joint_upper_limits.clone_from(&old.joint_upper_limits);
        same.max_joint_delta.clone_from(&old.max_joint_delta);
        same.trajectory_full_chunk = old.trajectory_full_chunk;
        same.publish_action_chunk = old.publish_action_chunk;
        same.autostart = old.autostart;
        same.task.clone_from(&old.task);
        same.heartbeat_timeout_ms = old.heartbeat_timeout_ms;
        same.chunk_check = old.chunk_check;
        same.episode_stale_timeout_s = old.episode_stale_timeout_s;
        same.home_position.clone_from(&old.home_position);
        same.record_dir.clone_from(&old.record_dir);
        same.home_duration_s = old.home_duration_s;
        same.home_before_episode = old.home_before_episode;
        same.home_after_episode = old.home_after_episode;
        if &same != old {
            return Err(
                "only max_observation_age_ms, heartbeat_timeout_ms, n_action_steps, \
                 temporal_ensemble_coeff, enable_on_start, joint_lower_limits, \
                 joint_upper_limits, max_joint_delta, trajectory_full_chunk, \
                 publish_action_chunk, chunk_check, task, episode_stale_timeout_s, record_dir \
                 and the home_* parameters change while configured"
                    .into(),
            );
        }
        let width = self.action_width;
        for (name, v) in [
            ("joint_lower_limits", &new.joint_lower_limits),
            ("joint_upper_limits", &new.joint_upper_limits),
            ("home_position", &new.home_position),
        ] {
            if !v.is_empty() && v.len() != width {
                return Err(format!(
                    "`{name}` must have one value per action index ({width}), got {}",
                    v.len()
                ));
            }
        }
        if !(new.max_joint_delta.len() <= 1 || new.max_joint_delta.len() == width) {
            return Err(format!(
                "`max_joint_delta` must have one value, or one per action index ({width}), got {}",
                new.max_joint_delta.len()
            ));
        }
        if new.task != old.task && (self.needs_task || !new.task.is_empty()) {
            crate::policy::processors::check_task(Some(&new.task))
                .map_err(|e| format!("`task`: {e}"))?;
        }
        self.export_queue.resolve(new).map(|_| ())
    }

    /// Applies new parameters (checked with [`check_live`](Self::check_live)) from the next
    /// tick on. A change of `n_action_steps` or `temporal_ensemble_coeff` drops the queued
    /// plan: the next tick starts a fresh chunk under the new settings. Returns what changed,
    /// in words.
    pub fn apply_live(&mut self, new: NodeParams) -> Result<Vec<String>, String> {
        self.check_live(&new)?;
        let mut changes = Vec::new();
        let (n, coeff) = self.export_queue.resolve(&new)?;
        let config = self.policy.config();
        if n != config.n_action_steps || coeff != config.temporal_ensemble_coeff {
            let dropped = self.policy.reconfigure(n, coeff);
            changes.push(format!(
                "{n} action(s) per chunk, temporal ensembling {}; {dropped} queued action(s) \
                 dropped, the next tick starts a fresh chunk",
                coeff.map_or("off".to_string(), |c| format!("coefficient {c}"))
            ));
            self.plan = None;
        }
        if new.max_observation_age_ms != self.params.max_observation_age_ms {
            self.freshness = Freshness::new(new.max_observation_age());
            changes.push(format!(
                "max_observation_age_ms {}",
                new.max_observation_age_ms
            ));
        }
        if new.max_joint_delta != self.params.max_joint_delta {
            self.max_delta = match new.max_joint_delta.as_slice() {
                [] => vec![],
                [one] => vec![*one; self.action_width],
                many => many.to_vec(),
            };
            changes.push(format!("max_joint_delta {:?}", new.max_joint_delta));
        }
        if new.task != self.params.task {
            self.set_task(&new.task)
                .map_err(|e| format!("`task`: {e}"))?;
            changes.push(format!("task {:?} (from the next chunk)", new.task));
        }
        if new.joint_lower_limits != self.params.joint_lower_limits
            || new.joint_upper_limits != self.params.joint_upper_limits
        {
            changes.push(format!(
                "position limits {:?} .. {:?}",
                new.joint_lower_limits, new.joint_upper_limits
            ));
        }
        self.params = new;
        Ok(changes)
    }
}
