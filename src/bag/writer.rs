//! Writes a rosbag2 bag directory (MCAP storage, `ros2` profile, CDR messages, and a
//! `metadata.yaml` that `ros2 bag info` and [`super::Bag`] read) from a writer thread fed
//! through a bounded queue: [`BagWriter::record`] never blocks; a full queue drops the
//! message and counts it. Used by the node to record episodes (`record_dir`).
//!
//! Each topic's schema is its `.msg` definition (with the definitions it depends on, as
//! rosbag2 writes them), looked up under `share/<package>/msg/` of the prefixes on
//! `AMENT_PREFIX_PATH`; a type not found there gets an empty schema (readers that know the
//! type, like this crate and `rosbags`, do not need it).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One message for the bag.
struct Item {
    topic: Arc<str>,
    msg_type: Arc<str>,
    log_time_ns: i64,
    data: Vec<u8>,
}

enum Command {
    Message(Item),
    Finish(BTreeMap<String, String>),
}

/// What a finished bag holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BagSummary {
    pub dir: PathBuf,
    /// (topic, type, messages), in the order the topics first appeared.
    pub topics: Vec<(String, String, u64)>,
    pub messages: u64,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    pub bytes: u64,
}

/// A bag being written (see the module docs).
pub struct BagWriter {
    dir: PathBuf,
    tx: SyncSender<Command>,
    dropped: Arc<AtomicU64>,
    /// The first write error, if any (the bag is then incomplete).
    error: Arc<Mutex<Option<String>>>,
    thread: Mutex<Option<JoinHandle<BagSummary>>>,
}

impl BagWriter {
    /// Creates the bag directory `dir` (which must not exist; its parent is created) and
    /// starts the writer thread with a queue of `capacity` messages.
    pub fn create(dir: &Path, capacity: usize) -> Result<Self, String> {
        if dir.exists() {
            return Err(format!("{} already exists", dir.display()));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let name = dir.file_name().map_or_else(
            || "episode".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let file_name = format!("{name}_0.mcap");
        let path = dir.join(&file_name);
        let file =
            File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let options = mcap::WriteOptions::new()
            .profile("ros2")
            .library("policy_node")
            .compression(None);
        let writer = options
            .create(BufWriter::with_capacity(1 << 20, file))
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let (tx, rx) = sync_channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let thread = {
            let (dir, dropped, error) = (dir.to_path_buf(), dropped.clone(), error.clone());
            std::thread::Builder::new()
                .name("bag-writer".into())
                .spawn(move || {
                    // Below everything else: the disk never competes with the control loop.
                    #[cfg(target_os = "linux")]
                    // SAFETY: setpriority on the calling thread (who = 0) only changes its nice value.
                    unsafe {
                        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
                    }
                    write_loop(writer, rx, dir, file_name, dropped, error)
                })
                .map_err(|e| format!("cannot start the writer thread: {e}"))?
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            tx,
            dropped,
            error,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues one CDR message of type `msg_type` (`pkg/msg/Type`) on `topic`, logged at
    /// `log_time_ns`. Never blocks: returns false (and counts it) when the queue is full.
    pub fn record(
        &self,
        topic: &Arc<str>,
        msg_type: &Arc<str>,
        log_time_ns: i64,
        data: Vec<u8>,
    ) -> bool {
        let item = Item {
            topic: topic.clone(),
            msg_type: msg_type.clone(),
            log_time_ns,
            data,
        };
        match self.tx.try_send(Command::Message(item)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The first write error so far.
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes what is queued, then the summary and `metadata.yaml` (with `custom_data`),
    /// and waits for the writer thread. Blocks while the queue drains.
    /// Later [`record`](Self::record)s are dropped (and counted).
    pub fn finish(&self, custom_data: BTreeMap<String, String>) -> Result<BagSummary, String> {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        let Some(thread) = thread else {
            return Err(format!("{}: already finished", self.dir.display()));
        };
        // A blocking send: the queue drains in order, the finish comes last.
        let _ = self.tx.send(Command::Finish(custom_data));
        let summary = Some(thread)
            .map(|t| {
                t.join()
                    .map_err(|_| "the bag writer thread panicked".to_string())
            })
            .transpose()?
            .unwrap_or_default();
        match self.error() {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}

impl Drop for BagWriter {
    fn drop(&mut self) {
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = self.tx.send(Command::Finish(BTreeMap::new()));
            let _ = t.join();
        }
    }
}

struct TopicState {
    channel: u16,
    msg_type: String,
    count: u64,
    sequence: u32,
}

fn write_loop(
    mut writer: mcap::Writer<BufWriter<File>>,
    rx: Receiver<Command>,
    dir: PathBuf,
    file_name: String,
    dropped: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
) -> BagSummary {
    let fail = |e: String| {
        if let Ok(mut slot) = error.lock() {
            slot.get_or_insert(e);
        }
    };
    let mut topics: HashMap<Arc<str>, TopicState> = HashMap::new();
    let mut order: Vec<Arc<str>> = Vec::new();
    let mut schemas: HashMap<String, u16> = HashMap::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let mut failed = false;
    let mut custom = BTreeMap::new();
    while let Ok(cmd) = rx.recv() {
        let item = match cmd {
            Command::Message(item) => item,
            Command::Finish(c) => {
                custom = c;
                break;
            }
        };
        if failed {
            continue;
        }
        if !topics.contains_key(&item.topic) {
            let schema = match schemas.get(item.msg_type.as_ref()) {
                Some(id) => Ok(*id),
                None => {
                    let text = message_definition(&item.msg_type);
                    writer
                        .add_schema(&item.msg_type, "ros2msg", text.as_bytes())
                        .inspect(|&id| {
                            schemas.insert(item.msg_type.to_string(), id);
                        })
                }
            };
            let mut meta = BTreeMap::new();
            meta.insert("offered_qos_profiles".to_string(), String::new());
            let channel = schema.and_then(|s| writer.add_channel(s, &item.topic, "cdr", &meta));
            match channel {
                Ok(channel) => {
                    topics.insert(
                        item.topic.clone(),
                        TopicState {
                            channel,
                            msg_type: item.msg_type.to_string(),
                            count: 0,
                            sequence: 0,
                        },
                    );
                    order.push(item.topic.clone());
                }
                Err(e) => {
                    fail(format!(
                        "{}: cannot add topic `{}`: {e}",
                        dir.display(),
                        item.topic
                    ));
                    failed = true;
                    continue;
                }
            }
        }
        let Some(t) = topics.get_mut(&item.topic) else {
            continue;
        };
        t.sequence = t.sequence.wrapping_add(1);
        let time = u64::try_from(item.log_time_ns).unwrap_or(0);
        let header = mcap::records::MessageHeader {
            channel_id: t.channel,
            sequence: t.sequence,
            log_time: time,
            publish_time: time,
        };
        if let Err(e) = writer.write_to_known_channel(&header, &item.data) {
            fail(format!("{}: cannot write: {e}", dir.display()));
            failed = true;
            continue;
        }
        t.count += 1;
        messages += 1;
        bytes += item.data.len() as u64;
        first = first.min(item.log_time_ns);
        last = last.max(item.log_time_ns);
    }
    if let Err(e) = writer.finish() {
        fail(format!(
            "{}: cannot finish the MCAP file: {e}",
            dir.display()
        ));
    }
    drop(writer);
    let topics: Vec<(String, String, u64)> = order
        .iter()
        .filter_map(|n| {
            topics
                .get(n)
                .map(|t| (n.to_string(), t.msg_type.clone(), t.count))
        })
        .collect();
    let (start, duration) = if messages == 0 {
        (0, 0)
    } else {
        (first, last - first)
    };
    let yaml = metadata_yaml(&file_name, &topics, messages, start, duration, &custom);
    if let Err(e) = std::fs::write(dir.join("metadata.yaml"), yaml) {
        fail(format!(
            "{}: cannot write metadata.yaml: {e}",
            dir.display()
        ));
    }
    BagSummary {
        dir,
        topics,
        messages,
        dropped: dropped.load(Ordering::Relaxed),
        bytes,
    }
}

fn yaml_str(s: &str) -> String {
    serde_yaml::to_string(s)
        .map(|y| y.trim_end().to_string())
        .unwrap_or_else(|_| "''".into())
}

/// rosbag2's `metadata.yaml` (version 9) for one MCAP file.
fn metadata_yaml(
    file: &str,
    topics: &[(String, String, u64)],
    messages: u64,
    start_ns: i64,
    duration_ns: i64,
    custom: &BTreeMap<String, String>,
) -> String {
    let mut y = String::from("rosbag2_bagfile_information:\n");
    y += "  version: 9\n  storage_identifier: mcap\n";
    y += &format!("  duration:\n    nanoseconds: {duration_ns}\n");
    y += &format!("  starting_time:\n    nanoseconds_since_epoch: {start_ns}\n");
    y += &format!("  message_count: {messages}\n");
    y += "  topics_with_message_count:\n";
    if topics.is_empty() {
        y.truncate(y.len() - 1);
        y += " []\n";
    }
    for (name, ty, n) in topics {
        y += &format!(
            "    - topic_metadata:\n        name: {}\n        type: {}\n        serialization_format: cdr\n        offered_qos_profiles: []\n        type_description_hash: ''\n      message_count: {n}\n",
            yaml_str(name),
            yaml_str(ty)
        );
    }
    y += "  compression_format: ''\n  compression_mode: ''\n";
    y += &format!("  relative_file_paths:\n    - {}\n", yaml_str(file));
    y += &format!(
        "  files:\n    - path: {}\n      starting_time:\n        nanoseconds_since_epoch: {start_ns}\n      duration:\n        nanoseconds: {duration_ns}\n      message_count: {messages}\n",
        yaml_str(file)
    );
    if custom.is_empty() {
        y += "  custom_data: ~\n";
    } else {
        y += "  custom_data:\n";
        for (k, v) in custom {
            y += &format!("    {}: {}\n", yaml_str(k), yaml_str(v));
        }
    }
    y += "  ros_distro: ''\n";
    y
}

/// The `.msg` definition of `msg_type` (`pkg/msg/Type`) with every definition it depends
/// on appended (rosbag2's `ros2msg` schema); empty when it is not installed.
pub fn message_definition(msg_type: &str) -> String {
    let Some(text) = find_msg(msg_type) else {
        return String::new();
    };
    let mut out = text.clone();
    let mut seen = vec![normalize(msg_type)];
    let mut queue = dependencies(&text, package_of(msg_type));
    while let Some(dep) = queue.pop() {
        if seen.contains(&dep) {
            continue;
        }
        seen.push(dep.clone());
        if let Some(t) = find_msg(&dep) {
            out += "\n================================================================================\n";
            out += &format!("MSG: {dep}\n{t}");
            queue.extend(dependencies(&t, package_of(&dep)));
        }
    }
    out
}

fn package_of(t: &str) -> &str {
    t.split('/').next().unwrap_or("")
}

/// `pkg/Type` or `pkg/msg/Type` as `pkg/msg/Type`.
fn normalize(t: &str) -> String {
    let parts: Vec<&str> = t.split('/').collect();
    match parts.as_slice() {
        [p, n] => format!("{p}/msg/{n}"),
        _ => t.to_string(),
    }
}

fn find_msg(msg_type: &str) -> Option<String> {
    let t = normalize(msg_type);
    let mut parts = t.split('/');
    let (pkg, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    let prefixes = std::env::var("AMENT_PREFIX_PATH").unwrap_or_default();
    prefixes
        .split(':')
        .filter(|p| !p.is_empty())
        .map(|p| {
            Path::new(p)
                .join("share")
                .join(pkg)
                .join(kind)
                .join(format!("{name}.msg"))
        })
        .find_map(|f| std::fs::read_to_string(f).ok())
}

const PRIMITIVES: &[&str] = &[
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
    "uint32", "int64", "uint64", "string", "wstring",
];

/// The non-primitive field types a definition uses, as `pkg/msg/Type`.
fn dependencies(text: &str, own_package: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(ty) = line.split_whitespace().next() else {
            continue;
        };
        if line.contains('=')
            && !line.contains("==")
            && line
                .split_whitespace()
                .nth(1)
                .is_some_and(|n| n.contains('='))
        {
            // A constant.
            continue;
        }
        let base = ty.split('[').next().unwrap_or(ty);
        let base = base.split("<=").next().unwrap_or(base);
        if PRIMITIVES.contains(&base) {
            continue;
        }
        let full = match base {
            "Header" => "std_msgs/msg/Header".to_string(),
            b if b.contains('/') => normalize(b),
            b => format!("{own_package}/msg/{b}"),
        };
        out.push(full);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_the_nested_types() {
        let text = "std_msgs/Header header\nuint32 height\nstring encoding\nuint8[] data\nint32 X=3\nPoint[<=3] p # c\n";
        assert_eq!(
            dependencies(text, "geometry_msgs"),
            vec!["std_msgs/msg/Header", "geometry_msgs/msg/Point"]
        );
    }

    #[test]
    fn a_bag_is_written_with_its_metadata_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ep");
        let w = BagWriter::create(&dir, 16).unwrap();
        let (topic, ty): (Arc<str>, Arc<str>) = ("/a".into(), "std_msgs/msg/Empty".into());
        for i in 0..3 {
            assert!(w.record(&topic, &ty, 10 + i, vec![0, 1, 0, 0, 0, 0, 0, 0]));
        }
        let mut custom = BTreeMap::new();
        custom.insert("policy_node.task".to_string(), "pick: \"it\"".to_string());
        let s = w.finish(custom).unwrap();
        assert_eq!(s.messages, 3);
        assert_eq!(
            s.topics,
            vec![("/a".into(), "std_msgs/msg/Empty".into(), 3)]
        );
        let meta = crate::bag::BagMetadata::read(&dir.join("metadata.yaml")).unwrap();
        assert_eq!(
            meta.topics,
            vec![("/a".into(), "std_msgs/msg/Empty".into(), 3)]
        );
        let bag = crate::bag::Bag::open(&dir).unwrap();
        let mut n = 0;
        for m in bag {
            let m = m.unwrap();
            assert_eq!(m.log_time_ns, 10 + n);
            n += 1;
        }
        assert_eq!(n, 3);
        let text = std::fs::read_to_string(dir.join("metadata.yaml")).unwrap();
        let y: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            y["rosbag2_bagfile_information"]["custom_data"]["policy_node.task"],
            serde_yaml::Value::String("pick: \"it\"".into())
        );
        let again = BagWriter::create(&dir, 1).err().unwrap();
        assert!(again.contains("already exists"), "{again}");
    }
}
