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
//! The raw subscriptions live on a node of their own (`<node>_recorder`) spun by a thread of
//! its own at normal priority, so that copying camera frames never delays the control
//! thread or the node's spin thread (which wakes the control timer). The writer thread
//! (lower priority still) takes the messages through a bounded queue: a full queue drops
//! (and counts) a message; nothing here ever waits for the disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::task::LocalSpawnExt;
use futures::StreamExt;
use r2r::QosProfile;

use super::{lock, Shared};
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
    /// The recorder's route to this bag (emptied when the episode ends).
    slot: Arc<Mutex<Option<Arc<BagWriter>>>>,
    ticks_topic: Arc<str>,
    ticks_type: Arc<str>,
    /// The node's own topics: each output channel, `~/action_chunk`, `/diagnostics`.
    channels: Vec<(Arc<str>, Arc<str>)>,
    action_chunk: (Arc<str>, Arc<str>),
    diagnostics: (Arc<str>, Arc<str>),
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
    // The node's own outputs (commands, ~/action_chunk, /diagnostics) are written by the
    // node as it publishes them: a subscription in this process would make every publish
    // deliver to it first (Fast DDS delivers in-process samples on the publishing thread).
    for (topic, t) in [
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

/// The recorder: a node of its own (`<node>_recorder`) with a raw subscription to each
/// input topic, spun by a thread of its own. It lives from the first recorded goal until
/// cleanup, so that DDS matches its subscriptions once, not at every episode; messages go to
/// the episode's bag while one is recorded, and nowhere otherwise.
pub(super) struct Recorder {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// The bag of the episode being recorded.
    slot: Arc<Mutex<Option<Arc<BagWriter>>>>,
    /// Per input topic: the header stamp of the first message recorded in this episode (0
    /// for a type without a header).
    first_stamps: Arc<Mutex<HashMap<String, i64>>>,
    topics: usize,
}

impl Recorder {
    /// Creates the node, its subscriptions and its thread.
    fn create(shared: &Arc<Shared>, ctx: &r2r::Context) -> Result<Self, String> {
        let list = {
            let control = lock(&shared.control);
            let control = control.as_ref().ok_or("no policy is loaded")?;
            topics(control, &shared.node_name)
        };
        let first_stamps = Arc::new(Mutex::new(HashMap::new()));
        let slot: Arc<Mutex<Option<Arc<BagWriter>>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let name = format!("{}_recorder", shared.short_name);
        let ns = shared
            .node_name
            .rsplit_once('/')
            .map_or("", |(ns, _)| ns)
            .to_string();
        let thread = {
            let (ctx, slot, first_stamps, stop) = (
                ctx.clone(),
                slot.clone(),
                first_stamps.clone(),
                stop.clone(),
            );
            let clock = shared.clock.clone();
            let list = list.clone();
            std::thread::Builder::new()
                .name("recorder".into())
                .spawn(move || {
                    let mut node = match r2r::Node::create(ctx, &name, &ns) {
                        Ok(n) => n,
                        Err(e) => {
                            let _ =
                                ready_tx.send(Err(format!("cannot create the recorder node: {e}")));
                            return;
                        }
                    };
                    let mut pool = futures::executor::LocalPool::new();
                    let spawner = pool.spawner();
                    for (topic, t, input) in &list {
                        let qos = if *input {
                            QosProfile::sensor_data().keep_last(100)
                        } else {
                            QosProfile::default().keep_last(100)
                        };
                        let mut stream = match node.subscribe_raw(topic, t, qos) {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = ready_tx.send(Err(format!(
                                    "cannot subscribe to `{topic}` ({t}) to record it: {e}"
                                )));
                                return;
                            }
                        };
                        let (topic, t): (Arc<str>, Arc<str>) =
                            (topic.as_str().into(), t.as_str().into());
                        let (slot, clock) = (slot.clone(), clock.clone());
                        let first = input.then(|| first_stamps.clone());
                        let task = async move {
                            while let Some(bytes) = stream.next().await {
                                let Some(writer) = lock(&slot).clone() else {
                                    continue;
                                };
                                if let Some(first) = &first {
                                    lock(first)
                                        .entry(topic.to_string())
                                        .or_insert_with(|| header_stamp(&t, &bytes));
                                }
                                let now = lock(&clock)
                                    .get_now()
                                    .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                                    .unwrap_or(0);
                                writer.record(&topic, &t, now, bytes);
                            }
                        };
                        if spawner.spawn_local(task).is_err() {
                            let _ = ready_tx.send(Err("cannot start a recorder task".into()));
                            return;
                        }
                    }
                    let _ = ready_tx.send(Ok(()));
                    while !stop.load(Ordering::Relaxed) {
                        node.spin_once(Duration::from_millis(5));
                        pool.run_until_stalled();
                    }
                })
                .map_err(|e| format!("cannot start the recorder thread: {e}"))?
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                return Err("the recorder thread did not start within 10 s".into());
            }
        }
        log::info!(
            "recorder: subscribed to {} input topic(s) on its own node",
            list.len()
        );
        Ok(Self {
            thread: Some(thread),
            stop,
            slot,
            first_stamps,
            topics: list.len(),
        })
    }

    /// Stops its thread (one spin, 5 ms at most); its node and subscriptions go with it.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts recording an episode into a new directory under `record_dir`: the bag,
/// `params.yaml`, the recorder's messages routed to it (the recorder created at the first
/// recorded goal). The error says why it cannot (the goal is then refused).
pub(super) fn start(
    shared: &Arc<Shared>,
    ctx: &r2r::Context,
    record_dir: &str,
    n: u64,
) -> Result<Recording, String> {
    let stamp = shared.now_ns();
    let name = format!("episode_{}_{n:03}", stamp / 1_000_000_000);
    let dir = Path::new(record_dir).join(name);
    let writer = Arc::new(BagWriter::create(&dir, QUEUE_CAPACITY)?);
    std::fs::write(dir.join(PARAMS_FILE), params_yaml(shared))
        .map_err(|e| format!("cannot write {}: {e}", dir.join(PARAMS_FILE).display()))?;
    let channels = {
        let control = lock(&shared.control);
        let control = control.as_ref().ok_or("no policy is loaded")?;
        control
            .outputs()
            .channels()
            .iter()
            .map(|c| {
                (
                    resolve(&c.topic, &shared.node_name).into(),
                    c.msg_type.type_name().into(),
                )
            })
            .collect::<Vec<(Arc<str>, Arc<str>)>>()
    };
    let mut recorder = lock(&shared.recorder);
    if recorder.is_none() {
        *recorder = Some(Recorder::create(shared, ctx)?);
    }
    let Some(r) = recorder.as_ref() else {
        return Err("no recorder".into());
    };
    lock(&r.first_stamps).clear();
    *lock(&r.slot) = Some(writer.clone());
    log::info!(
        "~/run_policy: recording the episode into {} ({} input topic(s) and the node's outputs)",
        dir.display(),
        r.topics
    );
    Ok(Recording {
        writer,
        slot: r.slot.clone(),
        first_stamps: r.first_stamps.clone(),
        ticks_topic: ticks_topic(&shared.node_name).into(),
        ticks_type: "std_msgs/msg/String".into(),
        channels,
        action_chunk: (
            resolve("~/action_chunk", &shared.node_name).into(),
            "trajectory_msgs/msg/JointTrajectory".into(),
        ),
        diagnostics: (
            "/diagnostics".into(),
            "diagnostic_msgs/msg/DiagnosticArray".into(),
        ),
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
    pub fn tick(
        &self,
        now_ns: i64,
        status: &str,
        ahead: usize,
        stamps: &(Vec<Option<i64>>, Vec<Option<i64>>),
    ) {
        let json = format!(
            "{{\"t\":{now_ns},\"status\":\"{status}\",\"ahead\":{ahead},\"sources\":{},\"cameras\":{}}}",
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

    /// Commands (and `on_stop` messages) the node published at `now_ns`, by channel.
    pub fn commands(&self, now_ns: i64, kept: Vec<(usize, crate::ros::wiring::Kept)>) {
        for (i, k) in kept {
            let Some((topic, t)) = self.channels.get(i) else {
                continue;
            };
            match k() {
                Ok(bytes) => {
                    self.writer.record(topic, t, now_ns, bytes);
                }
                Err(e) => log::warn!("recording: cannot serialize the command on `{topic}`: {e}"),
            }
        }
    }

    /// A plan published on `~/action_chunk`.
    pub fn action_chunk(&self, now_ns: i64, msg: &r2r::trajectory_msgs::msg::JointTrajectory) {
        use r2r::WrappedTypesupport;
        if let Ok(bytes) = msg.to_serialized_bytes() {
            let (topic, t) = &self.action_chunk;
            self.writer.record(topic, t, now_ns, bytes);
        }
    }

    /// A `/diagnostics` message the node published.
    pub fn diagnostics(&self, now_ns: i64, msg: &r2r::diagnostic_msgs::msg::DiagnosticArray) {
        use r2r::WrappedTypesupport;
        if let Ok(bytes) = msg.to_serialized_bytes() {
            let (topic, t) = &self.diagnostics;
            self.writer.record(topic, t, now_ns, bytes);
        }
    }

    /// Routes the recorder's messages away from this bag; the caller then finishes it
    /// ([`finish`]).
    pub fn stop(self) -> Arc<BagWriter> {
        *lock(&self.slot) = None;
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
