//! The map against the policy, before any command: every policy input covered with the
//! right width, every action index published exactly once, the joints of a package's
//! robots where the map names joints.

use crate::policy::canonical_name;

use super::spec::{Channel, InputFeature, IoMap, Source};
use super::types::{InputType, OnStop, OutputType};
use super::IoMapError;

/// One input the policy takes.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInput {
    /// The model's (or the package feature's) name.
    pub name: String,
    /// Values it takes (its last dimension), where known; images: none.
    pub width: Option<usize>,
    pub image: bool,
    /// Whether the node must feed it (else the map may feed it, e.g. an optional feature).
    pub required: bool,
}

/// The joint orders of one robot of a package (`hardware.robots[index]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RobotOrder {
    pub index: usize,
    pub name: String,
    pub state: Vec<String>,
    pub action: Vec<String>,
}

/// What the map is checked against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyPorts {
    pub inputs: Vec<PolicyInput>,
    /// Values per action, where known.
    pub action_width: Option<usize>,
    /// The package's robots with joint orders (none for a metadata export).
    pub robots: Vec<RobotOrder>,
    /// The package file, for messages.
    pub package: String,
}

impl PolicyPorts {
    /// The policy input that the map key `name` feeds.
    pub fn input(&self, name: &str) -> Option<&PolicyInput> {
        self.inputs.iter().find(|p| p.name == name).or_else(|| {
            let c = canonical_name(name);
            self.inputs.iter().find(|p| canonical_name(&p.name) == c)
        })
    }
}

fn names(v: &[PolicyInput]) -> String {
    v.iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl IoMap {
    /// Checks the map against the policy (see the module docs). The action width is the
    /// policy's when known, else the extent of the map's indices.
    pub fn preflight(&self, ports: &PolicyPorts) -> Result<usize, IoMapError> {
        for f in &self.inputs {
            let path = format!("inputs.{}", f.name);
            let Some(p) = ports.input(&f.name) else {
                return Err(self.error(
                    path,
                    format!(
                        "is not an input of the policy (its inputs: {})",
                        names(&ports.inputs)
                    ),
                ));
            };
            match (f.is_image(), p.image) {
                (true, false) => {
                    return Err(self.error(
                        path,
                        format!("is fed by an image topic, but the policy's `{}` is not an image input", p.name),
                    ))
                }
                (false, true) => {
                    return Err(self.error(
                        path,
                        format!(
                            "the policy's `{}` is an image: give one sensor_msgs/msg/Image or CompressedImage topic",
                            p.name
                        ),
                    ))
                }
                _ => {}
            }
            if let (false, Some(w)) = (f.is_image(), p.width) {
                if f.width() != w {
                    return Err(self.error(
                        path,
                        format!(
                            "selects {} value(s) in all, but the policy's `{}` takes {w}",
                            f.width(),
                            p.name
                        ),
                    ));
                }
            }
        }
        for p in ports.inputs.iter().filter(|p| p.required) {
            let covered = self
                .inputs
                .iter()
                .any(|f| ports.input(&f.name).map(|q| q.name.as_str()) == Some(p.name.as_str()));
            if !covered {
                return Err(self.error(
                    "inputs",
                    format!(
                        "the policy input `{}` has no source (every policy input needs one{})",
                        p.name,
                        match p.width {
                            Some(w) if !p.image => format!("; it takes {w} value(s)"),
                            _ => String::new(),
                        }
                    ),
                ));
            }
        }
        let width = ports.action_width.unwrap_or_else(|| self.action_extent());
        for c in &self.outputs {
            for (j, a) in c.action.iter().enumerate() {
                if *a >= width {
                    return Err(self.error(
                        format!("{}.action[{j}]", c.yaml_path),
                        format!("action index {a} is beyond the policy's {width} action value(s)"),
                    ));
                }
            }
        }
        for (j, a) in self.ignore.iter().enumerate() {
            if *a >= width {
                return Err(self.error(
                    format!("ignore[{j}]"),
                    format!("action index {a} is beyond the policy's {width} action value(s)"),
                ));
            }
        }
        let mut covered = vec![false; width];
        for a in self
            .outputs
            .iter()
            .flat_map(|c| &c.action)
            .chain(&self.ignore)
        {
            covered[*a] = true;
        }
        if let Some(a) = covered.iter().position(|c| !c) {
            let missing: Vec<String> = (0..width)
                .filter(|i| !covered[*i])
                .map(|i| i.to_string())
                .collect();
            return Err(self.error(
                "outputs",
                format!(
                    "action index {a} is published by no channel and not listed under `ignore` \
                     (every action index is published exactly once; uncovered: {})",
                    missing.join(", ")
                ),
            ));
        }
        self.check_robots(ports)?;
        Ok(width)
    }

    /// The joints the map selects (`position.<joint>` of `JointState` sources) for the
    /// state input, and the channels' `names`, against the package's robots.
    fn check_robots(&self, ports: &PolicyPorts) -> Result<(), IoMapError> {
        let robots = &ports.robots;
        if robots.is_empty() {
            return Ok(());
        }
        let file = &ports.package;
        // State: the robots' orders concatenated, against the state input's selections.
        if robots.iter().all(|r| !r.state.is_empty()) {
            if let Some(f) = self
                .inputs
                .iter()
                .find(|f| canonical_name(&f.name) == "state" && !f.is_image())
            {
                let selected: Vec<(String, Option<&str>)> = value_paths(f);
                // A value that is no joint position (a gripper read from a Float64, say)
                // cannot be checked by name; every joint position is.
                let mut at = 0usize;
                for r in robots {
                    for (k, joint) in r.state.iter().enumerate() {
                        let Some((path, Some(sel))) = selected.get(at + k) else {
                            continue;
                        };
                        if sel == joint {
                            continue;
                        }
                        let missing: Vec<&str> = r
                            .state
                            .iter()
                            .filter(|j| !selected.iter().any(|(_, s)| *s == Some(j.as_str())))
                            .map(String::as_str)
                            .collect();
                        let extra: Vec<&str> = selected
                            .iter()
                            .filter_map(|(_, s)| *s)
                            .filter(|s| !robots.iter().any(|r| r.state.iter().any(|j| j == s)))
                            .collect();
                        return Err(self.error(
                            path.clone(),
                            format!(
                                "robot `{}` (hardware.robots[{}] in {file}) takes `{joint}` at state index {}, \
                                 the map selects `position.{sel}` there (its state order: [{}]){}{}",
                                r.name,
                                r.index,
                                at + k,
                                r.state.join(", "),
                                if missing.is_empty() {
                                    String::new()
                                } else {
                                    format!("; missing from the map: {}", missing.join(", "))
                                },
                                if extra.is_empty() {
                                    String::new()
                                } else {
                                    format!("; not joints of the package: {}", extra.join(", "))
                                }
                            ),
                        ));
                    }
                    at += r.state.len();
                }
            }
        }
        // Actions: the channels that name their joints, against the robots' action orders.
        if robots.iter().all(|r| !r.action.is_empty()) {
            let mut order: Vec<(&RobotOrder, &str)> = Vec::new();
            for r in robots {
                order.extend(r.action.iter().map(|j| (r, j.as_str())));
            }
            for c in self.outputs.iter().filter(|c| !c.names.is_empty()) {
                for (k, (a, name)) in c.action.iter().zip(&c.names).enumerate() {
                    let Some((r, want)) = order.get(*a) else {
                        continue;
                    };
                    if name != want {
                        return Err(self.error(
                            format!("{}.names[{k}]", c.yaml_path),
                            format!(
                                "action index {a} is `{want}` of robot `{}` (hardware.robots[{}].action.order in {file}), \
                                 the channel names it `{name}`",
                                r.name, r.index
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The map of the flat parameters (`joint_names`, `joint_state_topic`,
    /// `camera_topics` / `camera_inputs`, `command_topic`, `command_type`): the state input
    /// from one `JointState`, one input per camera, one channel with every action index in
    /// `joint_names` order. Its channel has `on_stop: none`: a configuration without a map
    /// behaves exactly as before maps existed.
    pub fn from_flat(
        state_input: &str,
        joint_names: &[String],
        joint_state_topic: &str,
        cameras: &[(String, String)],
        command_topic: &str,
        command_type: OutputType,
    ) -> Self {
        let mut inputs = vec![InputFeature {
            name: state_input.to_string(),
            sources: vec![Source {
                yaml_path: "joint_state_topic".into(),
                topic: joint_state_topic.to_string(),
                msg_type: InputType::JointState,
                select_text: joint_names
                    .iter()
                    .map(|j| format!("position.{j}"))
                    .collect(),
                select: joint_names
                    .iter()
                    .map(|j| super::Select::Joint {
                        field: super::JointField::Position,
                        name: j.clone(),
                    })
                    .collect(),
                scale: vec![1.0; joint_names.len()],
                offset: vec![0.0; joint_names.len()],
            }],
        }];
        for (topic, input) in cameras {
            inputs.push(InputFeature {
                name: input.clone(),
                sources: vec![Source {
                    yaml_path: "camera_topics".into(),
                    topic: topic.clone(),
                    msg_type: if topic.ends_with("/compressed") {
                        InputType::CompressedImage
                    } else {
                        InputType::Image
                    },
                    select_text: vec![],
                    select: vec![],
                    scale: vec![],
                    offset: vec![],
                }],
            });
        }
        let n = joint_names.len();
        IoMap {
            file: None,
            inputs,
            outputs: vec![Channel {
                yaml_path: "command_topic".into(),
                topic: command_topic.to_string(),
                msg_type: command_type,
                action: (0..n).collect(),
                select: vec![],
                names: joint_names.to_vec(),
                scale: vec![1.0; n],
                offset: vec![0.0; n],
                relative: None,
                on_stop: OnStop::None,
            }],
            ignore: vec![],
            openpi: None,
        }
    }

    /// For each value of the action vector, the joint a channel names for it (`names`).
    pub fn action_names(&self, width: usize) -> Vec<Option<String>> {
        let mut out = vec![None; width];
        for c in &self.outputs {
            for (a, n) in c.action.iter().zip(&c.names) {
                if let Some(slot) = out.get_mut(*a) {
                    *slot = Some(n.clone());
                }
            }
        }
        out
    }
}

/// Each value of an input: its YAML path and, for `position.<joint>`, the joint.
fn value_paths(f: &InputFeature) -> Vec<(String, Option<&str>)> {
    f.sources
        .iter()
        .flat_map(|s| {
            s.select
                .iter()
                .enumerate()
                .map(move |(k, sel)| (format!("{}.select[{k}]", s.yaml_path), sel.position_joint()))
        })
        .collect()
}

/// A channel of a map: the relative-action pairs (action index, input index).
pub fn relative_pairs(c: &Channel) -> Vec<(usize, usize)> {
    match &c.relative {
        Some(r) => c
            .action
            .iter()
            .copied()
            .zip(r.index.iter().copied())
            .collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(state: usize, action: usize) -> PolicyPorts {
        PolicyPorts {
            inputs: vec![
                PolicyInput {
                    name: "state".into(),
                    width: Some(state),
                    image: false,
                    required: true,
                },
                PolicyInput {
                    name: "images.top".into(),
                    width: None,
                    image: true,
                    required: true,
                },
            ],
            action_width: Some(action),
            robots: vec![],
            package: "manifest.json".into(),
        }
    }

    #[test]
    fn bimanual_orders_are_checked_robot_by_robot() {
        let map = IoMap::parse(
            r"
inputs:
  observation.state:
    - {topic: /left/js, type: sensor_msgs/msg/JointState, select: [position.l1, position.l2]}
    - {topic: /right/js, type: sensor_msgs/msg/JointState, select: [position.r2, position.r1]}
  observation.images.top: {topic: /top/image_raw}
outputs:
  - {topic: /left, type: trajectory_msgs/msg/JointTrajectory, action: [0, 1], names: [l1, l2]}
  - {topic: /right, type: trajectory_msgs/msg/JointTrajectory, action: [2, 3], names: [r1, r2]}
",
        )
        .unwrap();
        let mut p = ports(4, 4);
        assert_eq!(map.preflight(&p).unwrap(), 4);
        p.robots = vec![
            RobotOrder {
                index: 0,
                name: "left".into(),
                state: vec!["l1".into(), "l2".into()],
                action: vec!["l1".into(), "l2".into()],
            },
            RobotOrder {
                index: 1,
                name: "right".into(),
                state: vec!["r1".into(), "r2".into()],
                action: vec!["r1".into(), "r2".into()],
            },
        ];
        let e = map.preflight(&p).unwrap_err();
        assert_eq!(e.path, "inputs.observation.state[1].select[0]", "{e}");
        assert!(
            e.rule.contains("robot `right`") && e.rule.contains("`r1` at state index 2"),
            "{e}"
        );
    }
}
