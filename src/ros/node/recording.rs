//! Episode recording (`record_dir`, a goal's `record`): a rosbag2 directory per episode
//! ([`BagWriter`], MCAP) holding, as received, every input topic of the map, every command
//! channel, `~/action_chunk`, `/diagnostics`, `~/intervention` and `~/end_episode` (raw
//! subscriptions: the CDR bytes as they came, images raw or compressed), plus
//! `~/episode_ticks`: one `std_msgs/String` per control tick, logged at the tick's time,
//! holding that tick's status and the header stamps of the input messages its observation
//! was made of (JSON: `{"t": ns, "status": "...", "sources": [..], "cameras": [..]}`).
//! With those, `policyctl replay` feeds the recording to the loop exactly as the node fed it
//! ([`crate::bag::replay`]). The node's parameters go beside it (`params.yaml`), and the
//! episode's task, policy, export, outcome and success into `metadata.yaml`'s custom data.
//!
//! The writer thread takes the messages through a bounded queue: a full queue drops (and
//! counts) a message; nothing here ever waits for the disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use r2r::QosProfile;
use tokio::task::JoinHandle;

use super::{lock, Shared, SharedNode};
use crate::bag::writer::{BagSummary, BagWriter};
use crate::control::params::PARAM_NAMES;
use crate::control::{ControlLoop, ParamValue};

/// Messages the writer queue holds before it drops (a few seconds of a 30 Hz 640x480
/// camera and a 200 Hz joint state).
pub(super) const QUEUE_CAPACITY: usize = 2048;

/// The parameters file written beside the bag.
pub(super) const PARAMS_FILE: &str = "params.yaml";

/// A recording in progress.
pub(super) struct Recording {
    pub writer: Arc<BagWriter>,
    tasks: Vec<JoinHandle<()>>,
    ticks_topic: Arc<str>,
    ticks_type: Arc<str>,
    /// Per input topic: the header stamp of the first message recorded (0 for a type
    /// without a header).
    first_stamps: Arc<Mutex<HashMap<String, i64>>>,
}

/// The header stamp (ns) at the start of a CDR message whose first field is a
/// `std_msgs/Header` (little endian); 0 for other types or a short message.
fn header_stamp(t: &str, cdr: &[u8]) -> i64 {
    let has_header = !matches!(
        t,
        "std_msgs/msg/Float64MultiArray"
            | "std_msgs/msg/Float32MultiArray"
            | "std_msgs/msg/Float64"
    );
    if !has_header || cdr.len() < 12 || cdr[1] != 1 {
        return 0;
    }
    let sec = i32::from_le_bytes([cdr[4], cdr[5], cdr[6], cdr[7]]);
    let nsec = u32::from_le_bytes([cdr[8], cdr[9], cdr[10], cdr[11]]);
    i64::from(sec) * 1_000_000_000 + i64::from(nsec)
}

/// A topic name as the node resolves it (`node_name` is fully qualified).
fn resolve(topic: &str, node_name: &str) -> String {
    if topic.starts_with('/') {
        topic.to_string()
    } else if let Some(rest) = topic.strip_prefix("~/") {
        format!("{}/{rest}", node_name.trim_end_matches('/'))
    } else {
        let ns = node_name.rsplit_once('/').map_or("", |(ns, _)| ns);
        format!("{ns}/{topic}")
    }
}

/// The topics an episode records: (resolved name, type, best effort).
fn topics(control: &ControlLoop, node_name: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for (topic, t, _) in control.input_topics() {
        out.push((resolve(&topic, node_name), t.type_name().to_string(), true));
    }
    for (topic, _) in control.camera_inputs() {
        let t = if crate::control::NodeParams::is_compressed_topic(&topic) {
            "sensor_msgs/msg/CompressedImage"
        } else {
            "sensor_msgs/msg/Image"
        };
        out.push((resolve(&topic, node_name), t.to_string(), true));
    }
    for c in control.outputs().channels() {
        out.push((
            resolve(&c.topic, node_name),
            c.msg_type.type_name().to_string(),
            false,
        ));
    }
    for (topic, t) in [
        ("~/action_chunk", "trajectory_msgs/msg/JointTrajectory"),
        ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray"),
        ("~/intervention", "std_msgs/msg/Bool"),
        ("~/end_episode", "std_msgs/msg/Bool"),
    ] {
        out.push((resolve(topic, node_name), t.to_string(), false));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|(t, _, _)| seen.insert(t.clone()));
    out
}

/// The node's parameters as a ROS 2 parameters file (what `policyctl replay --params`
/// reads).
pub(super) fn params_yaml(shared: &Shared) -> String {
    let store = lock(&shared.store);
    let mut map = serde_yaml::Mapping::new();
    for name in PARAM_NAMES {
        let Some(v) = store.get(name) else { continue };
        let y = match v {
            ParamValue::Bool(b) => serde_yaml::Value::Bool(*b),
            ParamValue::Int(i) => serde_yaml::Value::Number((*i).into()),
            ParamValue::Double(d) => serde_yaml::Value::Number((*d).into()),
            ParamValue::String(s) => serde_yaml::Value::String(s.clone()),
            ParamValue::BoolArray(a) => a.iter().map(|b| serde_yaml::Value::Bool(*b)).collect(),
            ParamValue::IntArray(a) => a
                .iter()
                .map(|i| serde_yaml::Value::Number((*i).into()))
                .collect(),
            ParamValue::DoubleArray(a) => a
                .iter()
                .map(|d| serde_yaml::Value::Number((*d).into()))
                .collect(),
            ParamValue::StringArray(a) => a
                .iter()
                .map(|s| serde_yaml::Value::String(s.clone()))
                .collect(),
        };
        map.insert(serde_yaml::Value::String((*name).to_string()), y);
    }
    let mut body = serde_yaml::Mapping::new();
    body.insert("ros__parameters".into(), serde_yaml::Value::Mapping(map));
    let mut root = serde_yaml::Mapping::new();
    root.insert("policy_node".into(), serde_yaml::Value::Mapping(body));
    format!(
        "# The parameters of {} when this episode started (written by policy_node).\n{}",
        shared.node_name,
        serde_yaml::to_string(&serde_yaml::Value::Mapping(root)).unwrap_or_default()
    )
}

/// Starts recording an episode into a new directory under `record_dir`: the bag, the raw
/// subscriptions, `params.yaml`. The error says why it cannot (the goal is then refused).
pub(super) fn start(
    shared: &Arc<Shared>,
    node: &SharedNode,
    record_dir: &str,
    n: u64,
) -> Result<Recording, String> {
    let stamp = shared.now_ns();
    let name = format!("episode_{}_{n:03}", stamp / 1_000_000_000);
    let dir = Path::new(record_dir).join(name);
    let writer = Arc::new(BagWriter::create(&dir, QUEUE_CAPACITY)?);
    std::fs::write(dir.join(PARAMS_FILE), params_yaml(shared))
        .map_err(|e| format!("cannot write {}: {e}", dir.join(PARAMS_FILE).display()))?;
    let list = {
        let control = lock(&shared.control);
        let control = control.as_ref().ok_or("no policy is loaded")?;
        topics(control, &shared.node_name)
    };
    let mut streams = Vec::new();
    node.with(|node| {
        for (topic, t, best_effort) in &list {
            let qos = if *best_effort {
                QosProfile::sensor_data().keep_last(100)
            } else {
                QosProfile::default().keep_last(100)
            };
            let s = node
                .subscribe_raw(topic, t, qos)
                .map_err(|e| format!("cannot subscribe to `{topic}` ({t}) to record it: {e}"))?;
            streams.push((
                Arc::<str>::from(topic.as_str()),
                Arc::<str>::from(t.as_str()),
                s,
            ));
        }
        Ok::<_, String>(())
    })?;
    let mut tasks = Vec::new();
    let first_stamps = Arc::new(Mutex::new(HashMap::new()));
    let inputs: Vec<String> = list
        .iter()
        .filter(|(_, _, input)| *input)
        .map(|(t, _, _)| t.clone())
        .collect();
    for (topic, t, mut stream) in streams {
        let (shared, writer) = (shared.clone(), writer.clone());
        let first = inputs
            .contains(&topic.to_string())
            .then(|| first_stamps.clone());
        tasks.push(tokio::task::spawn_local(async move {
            while let Some(bytes) = stream.next().await {
                if let Some(first) = &first {
                    lock(first)
                        .entry(topic.to_string())
                        .or_insert_with(|| header_stamp(&t, &bytes));
                }
                writer.record(&topic, &t, shared.now_ns(), bytes);
            }
        }));
    }
    log::info!(
        "~/run_policy: recording the episode into {} ({} topic(s))",
        dir.display(),
        list.len()
    );
    Ok(Recording {
        writer,
        tasks,
        ticks_topic: ticks_topic(&shared.node_name).into(),
        ticks_type: "std_msgs/msg/String".into(),
        first_stamps,
    })
}

/// `std_msgs/String` in CDR (little endian).
fn cdr_string(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 9);
    v.extend_from_slice(&[0, 1, 0, 0]);
    v.extend_from_slice(&((s.len() + 1) as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn stamps_json(v: &[Option<i64>]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| s.map_or("null".to_string(), |t| t.to_string()))
        .collect();
    format!("[{}]", items.join(","))
}

impl Recording {
    /// Whether the recording holds every input message the loop would use now: each input
    /// topic has been recorded, and the loop's newest message of it is no older than the
    /// first one recorded. The episode's first tick waits for this, so that a replay has
    /// every message its ticks used.
    pub fn ready(&self, control: &ControlLoop, node_name: &str) -> bool {
        let first = lock(&self.first_stamps);
        let (sources, cameras) = control.input_stamps();
        let fresh = |topic: &str, stamp: Option<i64>| match first.get(&resolve(topic, node_name)) {
            None => false,
            Some(0) => true,
            Some(f) => stamp.is_some_and(|s| s >= *f),
        };
        control.input_topics().iter().all(|(topic, _, idx)| {
            idx.iter()
                .all(|i| fresh(topic, sources.get(*i).copied().flatten()))
        }) && control
            .camera_inputs()
            .iter()
            .enumerate()
            .all(|(i, (topic, _))| fresh(topic, cameras.get(i).copied().flatten()))
    }

    /// One control tick of the episode at `now_ns`: its status and the inputs it used.
    pub fn tick(&self, now_ns: i64, status: &str, stamps: &(Vec<Option<i64>>, Vec<Option<i64>>)) {
        let json = format!(
            "{{\"t\":{now_ns},\"status\":\"{status}\",\"sources\":{},\"cameras\":{}}}",
            stamps_json(&stamps.0),
            stamps_json(&stamps.1)
        );
        self.writer.record(
            &self.ticks_topic,
            &self.ticks_type,
            now_ns,
            cdr_string(&json),
        );
    }

    /// Stops the subscriptions; the caller then finishes the bag ([`finish`]).
    pub fn stop(self) -> Arc<BagWriter> {
        for t in self.tasks {
            t.abort();
        }
        self.writer
    }
}

/// Writes the rest of the bag and its metadata with the episode's `custom` data (on a
/// blocking thread: the queue may hold seconds of camera frames).
pub(super) async fn finish(
    writer: Arc<BagWriter>,
    custom: BTreeMap<String, String>,
) -> Result<BagSummary, String> {
    tokio::task::spawn_blocking(move || writer.finish(custom))
        .await
        .map_err(|e| format!("the bag writer failed: {e}"))?
}

/// The name of the tick topic in the bag.
pub(super) fn ticks_topic(node_name: &str) -> String {
    resolve("~/episode_ticks", node_name)
}

/// The recording's directory.
pub(super) fn dir_of(writer: &BagWriter) -> PathBuf {
    writer.dir().to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_as_the_node_resolves_them() {
        assert_eq!(resolve("/a", "/policy_node"), "/a");
        assert_eq!(resolve("a", "/policy_node"), "/a");
        assert_eq!(resolve("a", "/ns/policy_node"), "/ns/a");
        assert_eq!(resolve("~/x", "/ns/policy_node"), "/ns/policy_node/x");
        assert_eq!(
            cdr_string("ab"),
            vec![0, 1, 0, 0, 3, 0, 0, 0, b'a', b'b', 0]
        );
    }
}
