//! Where an action becomes what each channel publishes: the action vector split by the
//! channels' `action` indices, through each channel's `scale` / `offset`, and what each
//! channel publishes when commands stop (`on_stop`).

use super::spec::{Channel, IoMap};
use super::types::OnStop;

/// The output side of a map while the loop runs.
///
/// A command is carried as the *published values*: every channel's values, channel after
/// channel (`outputs[0]` first), each `scale * action[a] + offset` for `a` in its `action`
/// list. [`split`](Self::split) cuts them per channel for publishing; `policyctl replay`
/// writes them as the columns of its CSV ([`columns`](Self::columns)).
#[derive(Debug, Clone)]
pub struct Outputs {
    channels: Vec<Channel>,
    /// Where each channel's values start in the published values.
    starts: Vec<usize>,
    published: usize,
}

impl Outputs {
    pub fn new(map: &IoMap) -> Self {
        let mut starts = Vec::with_capacity(map.outputs.len());
        let mut n = 0;
        for c in &map.outputs {
            starts.push(n);
            n += c.action.len();
        }
        Outputs {
            channels: map.outputs.clone(),
            starts,
            published: n,
        }
    }

    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// Number of published values (all channels together).
    pub fn published_width(&self) -> usize {
        self.published
    }

    /// The published values of `action` (the action vector, by action index).
    pub fn encode(&self, action: &[f64]) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.published);
        for c in &self.channels {
            for (k, a) in c.action.iter().enumerate() {
                let v = action.get(*a).copied().unwrap_or(f64::NAN);
                out.push(c.scale[k] * v + c.offset[k]);
            }
        }
        out
    }

    /// The values of channel `i` within published values `flat`.
    pub fn channel_values<'a>(&self, i: usize, flat: &'a [f64]) -> &'a [f64] {
        let start = self.starts[i];
        let end = start + self.channels[i].action.len();
        flat.get(start..end).unwrap_or(&[])
    }

    /// Each channel with its values within `flat`.
    pub fn split<'a>(&'a self, flat: &'a [f64]) -> impl Iterator<Item = (&'a Channel, &'a [f64])> {
        self.channels
            .iter()
            .enumerate()
            .map(move |(i, c)| (c, self.channel_values(i, flat)))
    }

    /// A name per published value: the channel's joint `names`, else `topic/field` for
    /// the fixed-layout types, else `topic[k]`.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.published);
        for c in &self.channels {
            for k in 0..c.action.len() {
                out.push(if let Some(n) = c.names.get(k) {
                    n.clone()
                } else if let (Some(fields), Some(f)) = (c.msg_type.fields(), c.select.get(k)) {
                    format!("{}/{}", c.topic, fields[*f])
                } else {
                    format!("{}[{k}]", c.topic)
                });
            }
        }
        out
    }

    /// What each channel publishes when commands stop: `hold` the last published values
    /// (`last`; nothing when none was published), `zeros` the zero action through the
    /// channel's transform (`offset`), `none` nothing. Channel index and values.
    pub fn stop_values(&self, last: Option<&[f64]>) -> Vec<(usize, Vec<f64>)> {
        let mut out = Vec::new();
        for (i, c) in self.channels.iter().enumerate() {
            match c.on_stop {
                OnStop::None => {}
                OnStop::Zeros => out.push((i, c.offset.clone())),
                OnStop::Hold => {
                    if let Some(last) = last {
                        let v = self.channel_values(i, last);
                        if !v.is_empty() {
                            out.push((i, v.to_vec()));
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_action_across_channels_with_their_transforms() {
        let map = IoMap::parse(
            r"
inputs:
  state: {topic: /js, type: sensor_msgs/msg/JointState, select: [position.a]}
outputs:
  - topic: /arm
    type: std_msgs/msg/Float64MultiArray
    action: [2, 0]
  - topic: /gripper
    type: std_msgs/msg/Float64MultiArray
    action: [1]
    scale: 100.0
    offset: 1.0
  - topic: /cmd_vel
    type: geometry_msgs/msg/Twist
    action: [4, 3]
    select: [angular.z, linear.x]
ignore: [5]
",
        )
        .unwrap();
        let out = Outputs::new(&map);
        let action = [0.1, 0.2, 0.3, 0.4, 0.5, 9.0];
        let flat = out.encode(&action);
        assert_eq!(out.published_width(), 5);
        let want = [0.3, 0.1, 100.0 * 0.2 + 1.0, 0.5, 0.4];
        for (a, b) in flat.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{flat:?}");
        }
        let parts: Vec<(&str, Vec<f64>)> = out
            .split(&flat)
            .map(|(c, v)| (c.topic.as_str(), v.to_vec()))
            .collect();
        assert_eq!(parts[0], ("/arm", vec![0.3, 0.1]));
        assert_eq!(parts[2].1, vec![0.5, 0.4]);
        assert_eq!(
            out.columns(),
            vec![
                "/arm[0]",
                "/arm[1]",
                "/gripper[0]",
                "/cmd_vel/angular.z",
                "/cmd_vel/linear.x"
            ]
        );
        // Stop: the arm and the gripper hold, the base gets zeros.
        let stop = out.stop_values(Some(&flat));
        assert_eq!(stop.len(), 3);
        assert_eq!(stop[0], (0, vec![0.3, 0.1]));
        assert_eq!(stop[2], (2, vec![0.0, 0.0]));
        // Nothing published yet: only the zeros.
        assert_eq!(out.stop_values(None), vec![(2, vec![0.0, 0.0])]);
    }
}
