//! Where a message becomes an input: the selected values of each source, kept as the
//! newest per source, assembled per policy input.

use crate::observation::{Freshness, JointReorder, ObservationError, Staleness};

use super::spec::{InputFeature, JointField, Select, Source};
use super::types::InputType;

/// A received message, ROS-free: the fields a map can select.
#[derive(Debug, Clone, PartialEq)]
pub enum InputMessage {
    /// `sensor_msgs/JointState`.
    JointState {
        name: Vec<String>,
        position: Vec<f64>,
        velocity: Vec<f64>,
        effort: Vec<f64>,
    },
    /// `std_msgs/Float64MultiArray` / `Float32MultiArray`: `data`.
    Array(Vec<f64>),
    /// `std_msgs/Float64`.
    Scalar(f64),
    /// A fixed-layout message (`PoseStamped`, `TwistStamped`, `Odometry`, `Imu`): its
    /// fields in [`InputType::fields`] order.
    Fields(Vec<f64>),
}

/// The joints of one `JointState` field, and where each value goes in the source's output.
#[derive(Debug, Clone)]
struct JointPart {
    field: JointField,
    reorder: JointReorder,
    /// Output position of each wanted joint.
    slots: Vec<usize>,
    buf: Vec<f32>,
}

/// Reads the selected values of one source from its messages: `scale * value + offset`,
/// as `f32`, refused when not finite.
#[derive(Debug, Clone)]
pub struct SourceReader {
    topic: String,
    msg_type: InputType,
    select: Vec<Select>,
    select_text: Vec<String>,
    scale: Vec<f64>,
    offset: Vec<f64>,
    joints: Vec<JointPart>,
}

impl SourceReader {
    pub fn new(source: &Source) -> Self {
        let mut joints: Vec<JointPart> = Vec::new();
        for (slot, s) in source.select.iter().enumerate() {
            if let Select::Joint { field, .. } = s {
                match joints.iter_mut().find(|p| p.field == *field) {
                    Some(p) => p.slots.push(slot),
                    None => joints.push(JointPart {
                        field: *field,
                        reorder: JointReorder::new(Vec::new()),
                        slots: vec![slot],
                        buf: Vec::new(),
                    }),
                }
            }
        }
        for p in &mut joints {
            let wanted: Vec<String> = p
                .slots
                .iter()
                .map(|&i| match &source.select[i] {
                    Select::Joint { name, .. } => name.clone(),
                    _ => String::new(),
                })
                .collect();
            p.buf = vec![0.0; wanted.len()];
            p.reorder = JointReorder::new(wanted);
        }
        SourceReader {
            topic: source.topic.clone(),
            msg_type: source.msg_type,
            select: source.select.clone(),
            select_text: source.select_text.clone(),
            scale: source.scale.clone(),
            offset: source.offset.clone(),
            joints,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn msg_type(&self) -> InputType {
        self.msg_type
    }

    /// Number of values read.
    pub fn width(&self) -> usize {
        self.select.len()
    }

    /// The selected values of `msg`, into `out` (length [`width`](Self::width)).
    /// Errors name the missing joint, the index beyond the array, the non-finite value.
    pub fn read(&mut self, msg: &InputMessage, out: &mut [f32]) -> Result<(), ObservationError> {
        if out.len() != self.select.len() {
            return Err(ObservationError::OutputLength {
                what: "source values",
                expected: self.select.len(),
                actual: out.len(),
            });
        }
        let mut raw: Vec<f64> = Vec::with_capacity(self.select.len());
        match (msg, self.msg_type) {
            (
                InputMessage::JointState {
                    name,
                    position,
                    velocity,
                    effort,
                },
                InputType::JointState,
            ) => {
                for p in &mut self.joints {
                    let values = match p.field {
                        JointField::Position => position,
                        JointField::Velocity => velocity,
                        JointField::Effort => effort,
                    };
                    if p.field != JointField::Position && values.len() != name.len() {
                        return Err(ObservationError::MissingField {
                            path: format!("{}.{}", p.field.as_str(), p.reorder.wanted()[0]),
                            detail: format!(
                                "the message has {} {} value(s) for {} name(s)",
                                values.len(),
                                p.field.as_str(),
                                name.len()
                            ),
                        });
                    }
                    let mut buf = std::mem::take(&mut p.buf);
                    let r = p.reorder.apply_into(name, values, &mut buf);
                    if let Err(e) = r {
                        p.buf = buf;
                        return Err(e);
                    }
                    for (&slot, v) in p.slots.iter().zip(&buf) {
                        out[slot] = *v;
                    }
                    p.buf = buf;
                }
                // Joint values are checked finite by the reorderer; scale/offset below.
                for (i, o) in out.iter_mut().enumerate() {
                    let v = self.scale[i] * f64::from(*o) + self.offset[i];
                    *o = finite(&self.select_text[i], v)?;
                }
                return Ok(());
            }
            (
                InputMessage::Array(data),
                InputType::Float64MultiArray | InputType::Float32MultiArray,
            ) => {
                for (i, s) in self.select.iter().enumerate() {
                    let Select::Index(k) = s else { continue };
                    let v =
                        data.get(*k)
                            .copied()
                            .ok_or_else(|| ObservationError::MissingField {
                                path: self.select_text[i].clone(),
                                detail: format!("the array has {} value(s)", data.len()),
                            })?;
                    raw.push(v);
                }
            }
            (InputMessage::Scalar(v), InputType::Float64) => raw.push(*v),
            (InputMessage::Fields(fields), t) if t.fields().is_some() => {
                for (i, s) in self.select.iter().enumerate() {
                    let Select::Field(k) = s else { continue };
                    let v =
                        fields
                            .get(*k)
                            .copied()
                            .ok_or_else(|| ObservationError::MissingField {
                                path: self.select_text[i].clone(),
                                detail: "the message lacks the field".into(),
                            })?;
                    raw.push(v);
                }
            }
            _ => {
                return Err(ObservationError::MissingField {
                    path: self.topic.clone(),
                    detail: format!("the message is not a {}", self.msg_type),
                })
            }
        }
        for (i, (o, v)) in out.iter_mut().zip(raw).enumerate() {
            *o = finite(&self.select_text[i], self.scale[i] * v + self.offset[i])?;
        }
        Ok(())
    }
}

fn finite(path: &str, v: f64) -> Result<f32, ObservationError> {
    let f = v as f32;
    if f.is_finite() {
        Ok(f)
    } else {
        Err(ObservationError::NonFiniteField {
            path: path.to_string(),
            value: v,
        })
    }
}

/// The newest values of one source.
#[derive(Debug, Clone)]
struct SourceSlot {
    reader: SourceReader,
    /// The newest good values and their stamp.
    latest: Option<(Vec<f32>, i64)>,
    /// Why the newest message could not be used (the source is stale until a good one).
    bad: Option<String>,
    /// The buffer the next message is read into.
    spare: Vec<f32>,
}

/// One non-image policy input: the observation key and its sources.
#[derive(Debug, Clone)]
struct FeatureSlot {
    name: String,
    sources: Vec<usize>,
    width: usize,
}

/// The non-image inputs of a map while the loop runs: the newest values per source,
/// their freshness, and each policy input assembled from its sources.
#[derive(Debug, Clone)]
pub struct Inputs {
    features: Vec<FeatureSlot>,
    sources: Vec<SourceSlot>,
    /// A refused message leaves the source's last good values in place (they age out
    /// under the freshness rule) instead of making it stale at once.
    keep_last_good: bool,
}

impl Inputs {
    /// From the map's non-image inputs (image inputs are the control loop's cameras).
    pub fn new(features: &[InputFeature]) -> Self {
        let mut sources = Vec::new();
        let mut slots = Vec::new();
        for f in features.iter().filter(|f| !f.is_image()) {
            let mut idx = Vec::new();
            for s in &f.sources {
                idx.push(sources.len());
                sources.push(SourceSlot {
                    reader: SourceReader::new(s),
                    latest: None,
                    bad: None,
                    spare: Vec::new(),
                });
            }
            slots.push(FeatureSlot {
                name: f.name.clone(),
                sources: idx,
                width: f.width(),
            });
        }
        Inputs {
            features: slots,
            sources,
            keep_last_good: false,
        }
    }

    /// A refused message keeps the source's last good values (which age out as usual)
    /// instead of making it stale at once: the flat parameters' wiring, which has always
    /// worked that way (a driver that sends some messages without every joint keeps
    /// working there). A map file follows the map's rule: stale at once.
    pub fn keep_last_good_on_refusal(mut self, keep: bool) -> Self {
        self.keep_last_good = keep;
        self
    }

    /// Number of sources (the index space of [`on_message`](Self::on_message)).
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// The topic and type of source `i`.
    pub fn source(&self, i: usize) -> Option<(&str, InputType)> {
        self.sources
            .get(i)
            .map(|s| (s.reader.topic(), s.reader.msg_type()))
    }

    /// Each distinct topic, its type and the sources it feeds (a topic may feed several
    /// sources, e.g. one `JointState` read by two inputs).
    pub fn topics(&self) -> Vec<(String, InputType, Vec<usize>)> {
        let mut out: Vec<(String, InputType, Vec<usize>)> = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            match out.iter_mut().find(|(t, _, _)| t == s.reader.topic()) {
                Some(e) => e.2.push(i),
                None => out.push((s.reader.topic().to_string(), s.reader.msg_type(), vec![i])),
            }
        }
        out
    }

    /// The policy inputs, with their widths.
    pub fn features(&self) -> impl Iterator<Item = (&str, usize)> {
        self.features.iter().map(|f| (f.name.as_str(), f.width))
    }

    /// A message for source `i`: its selected values become the source's newest. A message
    /// that does not fit (a joint or an index missing, a non-finite value) leaves the
    /// source stale until a good one arrives: no command is ever made from partial data.
    pub fn on_message(
        &mut self,
        i: usize,
        stamp_ns: i64,
        msg: &InputMessage,
    ) -> Result<(), ObservationError> {
        let Some(slot) = self.sources.get_mut(i) else {
            return Ok(());
        };
        // Read into the spare buffer: a message refused half-way never touches the last
        // good values.
        let mut values = std::mem::take(&mut slot.spare);
        values.resize(slot.reader.width(), 0.0);
        match slot.reader.read(msg, &mut values) {
            Ok(()) => {
                if let Some((old, _)) = slot.latest.replace((values, stamp_ns)) {
                    slot.spare = old;
                }
                slot.bad = None;
                Ok(())
            }
            Err(e) => {
                slot.spare = values;
                if !self.keep_last_good {
                    slot.latest = None;
                    slot.bad = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// The first stale source at `now_ns`: its topic (with the reason where no age
    /// applies) and its age in ms.
    pub fn stale(&self, now_ns: i64, freshness: &Freshness) -> Option<(String, Option<f64>)> {
        for s in &self.sources {
            let topic = s.reader.topic();
            match (&s.latest, &s.bad) {
                (_, Some(why)) => {
                    return Some((
                        format!("{topic} (its newest message was refused: {why})"),
                        None,
                    ))
                }
                (None, None) => return Some((format!("{topic} (nothing received yet)"), None)),
                (Some((_, stamp)), None) => match freshness.check(now_ns, *stamp) {
                    Staleness::Fresh { .. } => {}
                    Staleness::Stale { age_ns } => {
                        return Some((topic.to_string(), Some(age_ns as f64 / 1e6)))
                    }
                    Staleness::FromFuture { ahead_ns } => {
                        return Some((
                            format!(
                                "{topic} (stamped {:.1} ms in the future)",
                                ahead_ns as f64 / 1e6
                            ),
                            None,
                        ))
                    }
                },
            }
        }
        None
    }

    /// Policy input `f` assembled from the newest values of its sources (`None` while a
    /// source has none).
    pub fn feature_values(&self, f: usize) -> Option<Vec<f32>> {
        let slot = self.features.get(f)?;
        let mut out = Vec::with_capacity(slot.width);
        for &s in &slot.sources {
            out.extend_from_slice(&self.sources[s].latest.as_ref()?.0);
        }
        Some(out)
    }

    /// Index of the policy input `name`.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }

    /// Forgets every value received (deactivate, a clock jump).
    /// Swaps the newest values of each source with `other`'s (the same sources in the same
    /// order: another policy read through the same map). Returns false, changing nothing,
    /// when the sources differ.
    pub fn swap_latest(&mut self, other: &mut Inputs) -> bool {
        let same =
            self.sources.len() == other.sources.len()
                && self.sources.iter().zip(&other.sources).all(|(a, b)| {
                    a.reader.topic == b.reader.topic && a.spare.len() == b.spare.len()
                });
        if !same {
            return false;
        }
        for (a, b) in self.sources.iter_mut().zip(&mut other.sources) {
            std::mem::swap(&mut a.latest, &mut b.latest);
            std::mem::swap(&mut a.bad, &mut b.bad);
        }
        true
    }

    /// The header stamp (ns) of each source's newest good message, by source index.
    pub fn source_stamps(&self) -> Vec<Option<i64>> {
        self.sources
            .iter()
            .map(|s| s.latest.as_ref().map(|(_, t)| *t))
            .collect()
    }

    pub fn clear(&mut self) {
        for s in &mut self.sources {
            s.latest = None;
            s.bad = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iomap::IoMap;
    use std::time::Duration;

    fn js(names: &[&str], pos: &[f64]) -> InputMessage {
        InputMessage::JointState {
            name: names.iter().map(|s| s.to_string()).collect(),
            position: pos.to_vec(),
            velocity: vec![],
            effort: vec![],
        }
    }

    const MAP: &str = r"
inputs:
  observation.state:
    - topic: /arm/joint_states
      type: sensor_msgs/msg/JointState
      select: [position.b, position.a]
    - topic: /gripper
      type: std_msgs/msg/Float64MultiArray
      select: [data.1]
      scale: 0.01
      offset: 0.5
  observation.environment_state:
    topic: /cube
    type: geometry_msgs/msg/PoseStamped
    select: [pose.position.z, pose.orientation.w]
outputs:
  - topic: /cmd
    type: std_msgs/msg/Float64MultiArray
    action: [0, 1, 2]
";

    #[test]
    fn assembles_each_input_from_its_sources_with_scale_and_offset() {
        let map = IoMap::parse(MAP).unwrap();
        let mut inputs = Inputs::new(&map.inputs);
        assert_eq!(inputs.source_count(), 3);
        let fresh = Freshness::new(Duration::from_millis(100));
        assert!(inputs
            .stale(0, &fresh)
            .unwrap()
            .0
            .contains("/arm/joint_states"));
        inputs
            .on_message(0, 10, &js(&["a", "b", "c"], &[1.0, 2.0, 3.0]))
            .unwrap();
        inputs
            .on_message(1, 10, &InputMessage::Array(vec![7.0, 50.0]))
            .unwrap();
        assert!(inputs.stale(10, &fresh).unwrap().0.starts_with("/cube"));
        let mut pose = vec![0.0; 7];
        pose[2] = 0.25;
        pose[6] = 1.0;
        inputs
            .on_message(2, 10, &InputMessage::Fields(pose))
            .unwrap();
        assert_eq!(inputs.stale(10, &fresh), None);
        let s = inputs.feature_index("observation.state").unwrap();
        assert_eq!(inputs.feature_values(s).unwrap(), vec![2.0, 1.0, 1.0]);
        let e = inputs
            .feature_index("observation.environment_state")
            .unwrap();
        assert_eq!(inputs.feature_values(e).unwrap(), vec![0.25, 1.0]);
        // The gripper stays at its stamp: past max age it alone is named.
        inputs
            .on_message(0, 200_000_000, &js(&["a", "b"], &[1.0, 2.0]))
            .unwrap();
        inputs
            .on_message(2, 200_000_000, &InputMessage::Fields(vec![0.0; 7]))
            .unwrap();
        let (what, age) = inputs.stale(200_000_000, &fresh).unwrap();
        assert_eq!(what, "/gripper");
        assert!((age.unwrap() - 199.99999).abs() < 1e-3, "{age:?}");
    }

    /// One good message on each source of `MAP` at time 1.
    fn feed_all(inputs: &mut Inputs) {
        inputs
            .on_message(0, 1, &js(&["a", "b"], &[1.0, 2.0]))
            .unwrap();
        inputs
            .on_message(1, 1, &InputMessage::Array(vec![0.0, 1.0]))
            .unwrap();
        inputs
            .on_message(2, 1, &InputMessage::Fields(vec![0.0; 7]))
            .unwrap();
    }

    #[test]
    fn a_message_missing_a_selected_field_makes_its_source_stale() {
        let map = IoMap::parse(MAP).unwrap();
        let mut inputs = Inputs::new(&map.inputs);
        let fresh = Freshness::new(Duration::from_secs(1));
        feed_all(&mut inputs);
        assert_eq!(inputs.stale(1, &fresh), None);
        let e = inputs
            .on_message(1, 2, &InputMessage::Array(vec![0.0]))
            .unwrap_err();
        assert!(e.to_string().contains("data.1"), "{e}");
        let (what, _) = inputs.stale(2, &fresh).unwrap();
        assert!(
            what.starts_with("/gripper (its newest message was refused"),
            "{what}"
        );
        assert_eq!(inputs.feature_values(0), None);
        let e = inputs.on_message(0, 2, &js(&["a"], &[1.0])).unwrap_err();
        assert!(e.to_string().contains("\"b\""), "{e}");
        // Non-finite after scale / offset.
        let e = inputs
            .on_message(1, 3, &InputMessage::Array(vec![0.0, f64::INFINITY]))
            .unwrap_err();
        assert!(e.to_string().contains("data.1"), "{e}");
        let e = inputs
            .on_message(1, 3, &InputMessage::Array(vec![0.0, 1e300]))
            .unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
        // Good data again: fresh.
        inputs
            .on_message(0, 3, &js(&["b", "a"], &[2.0, 1.0]))
            .unwrap();
        inputs
            .on_message(1, 3, &InputMessage::Array(vec![0.0, 1.0]))
            .unwrap();
        assert_eq!(inputs.stale(3, &fresh), None);
    }

    #[test]
    fn the_flat_wiring_keeps_the_last_good_values_of_a_refused_message() {
        let map = IoMap::parse(MAP).unwrap();
        let mut inputs = Inputs::new(&map.inputs).keep_last_good_on_refusal(true);
        let fresh = Freshness::new(Duration::from_secs(1));
        feed_all(&mut inputs);
        // A message without `a`: refused, nothing of it kept.
        assert!(inputs.on_message(0, 2, &js(&["b"], &[5.0])).is_err());
        assert_eq!(inputs.stale(2, &fresh), None);
        assert_eq!(inputs.feature_values(0).unwrap(), vec![2.0, 1.0, 0.51]);
        // A non-finite gripper after scale: refused, the last good value kept.
        assert!(inputs
            .on_message(1, 3, &InputMessage::Array(vec![0.0, f64::NAN]))
            .is_err());
        assert_eq!(inputs.feature_values(0).unwrap(), vec![2.0, 1.0, 0.51]);
    }

    #[test]
    fn joint_state_velocity_and_effort_are_selected_by_name() {
        let map = IoMap::parse(
            r"
inputs:
  state:
    topic: /js
    type: sensor_msgs/msg/JointState
    select: [effort.a, position.a, velocity.b]
outputs:
  - {topic: /c, type: std_msgs/msg/Float64, action: [0]}
",
        )
        .unwrap();
        let mut inputs = Inputs::new(&map.inputs);
        let msg = InputMessage::JointState {
            name: vec!["b".into(), "a".into()],
            position: vec![1.0, 2.0],
            velocity: vec![3.0, 4.0],
            effort: vec![5.0, 6.0],
        };
        inputs.on_message(0, 1, &msg).unwrap();
        assert_eq!(inputs.feature_values(0).unwrap(), vec![6.0, 2.0, 3.0]);
        let msg = InputMessage::JointState {
            name: vec!["b".into(), "a".into()],
            position: vec![1.0, 2.0],
            velocity: vec![],
            effort: vec![5.0, 6.0],
        };
        let e = inputs.on_message(0, 2, &msg).unwrap_err();
        assert!(e.to_string().contains("velocity"), "{e}");
    }
}
