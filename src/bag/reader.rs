//! [`Bag`]: a rosbag2 recording (bag directory or single storage file), its topics, and its
//! messages in log-time order across all of its files.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::mcap_file::McapFile;
use super::metadata::{BagMetadata, Storage};
use super::sqlite_file::SqliteFile;
use super::BagError;

/// A topic as one storage file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTopic {
    pub name: String,
    pub msg_type: String,
    pub serialization_format: String,
    pub message_count: Option<u64>,
}

/// A message as one storage file yields it: `topic` indexes that file's topics.
#[derive(Debug, Clone)]
pub struct FileMessage {
    pub topic: usize,
    pub log_time_ns: i64,
    pub data: Vec<u8>,
}

/// One storage file. Implementations yield messages in `(log time, file order)` order.
pub trait FileReader {
    fn path(&self) -> &Path;
    fn topics(&self) -> &[FileTopic];
    /// Restricts the messages yielded to these topics (indexes in [`topics`](Self::topics));
    /// call before the first message.
    fn select(&mut self, topics: &[usize]);
    /// First and last log time, when the file knows them cheaply.
    fn time_range(&mut self) -> Result<Option<(i64, i64)>, BagError>;
    fn next_message(&mut self) -> Option<Result<FileMessage, BagError>>;
}

/// A topic of the bag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name, e.g. `/joint_states`.
    pub name: String,
    /// Message type, e.g. `sensor_msgs/msg/JointState`.
    pub msg_type: String,
    /// `cdr` for every ROS 2 bag.
    pub serialization_format: String,
    /// Messages, where the storage or `metadata.yaml` says.
    pub message_count: Option<u64>,
}

/// A message of the bag: `topic` indexes [`Bag::topics`]; `data` is the serialized (CDR)
/// message.
#[derive(Debug, Clone)]
pub struct BagMessage {
    pub topic: usize,
    pub log_time_ns: i64,
    pub data: Vec<u8>,
    /// Index of the storage file in [`Bag::files`].
    pub file: usize,
}

/// A rosbag2 recording opened for reading.
///
/// ```no_run
/// use policy_node::bag::Bag;
/// let mut bag = Bag::open("tests/fixtures/demo_bag/mcap")?;
/// for t in bag.topics() {
///     println!("{} {} {:?}", t.name, t.msg_type, t.message_count);
/// }
/// let joints = bag.topic_index("/joint_states").unwrap();
/// bag.select(&[joints]);
/// for msg in &mut bag {
///     let msg = msg?;
///     println!("{} {} bytes", msg.log_time_ns, msg.data.len());
/// }
/// # Ok::<(), policy_node::bag::BagError>(())
/// ```
pub struct Bag {
    path: PathBuf,
    storage: Storage,
    files: Vec<Box<dyn FileReader>>,
    topics: Vec<TopicInfo>,
    /// Per file: its topic index -> bag topic index.
    maps: Vec<Vec<usize>>,
    metadata: Option<BagMetadata>,
    /// Next message of each file, ordered by (log time, file, sequence).
    heads: BinaryHeap<Reverse<(i64, usize, u64)>>,
    pending: Vec<Option<FileMessage>>,
    started: bool,
    seq: u64,
    failed: bool,
}

impl Bag {
    /// Opens a bag directory (with `metadata.yaml`; without one, every `.mcap`/`.db3` file in
    /// it, by name), a single `.mcap` or `.db3` file, or a bag's `metadata.yaml`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BagError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| BagError::io(path, e))?;
        if meta.is_dir() {
            let meta_file = path.join("metadata.yaml");
            if meta_file.is_file() {
                let metadata = BagMetadata::read(&meta_file)?;
                let files = metadata
                    .files
                    .iter()
                    .map(|rel| {
                        let direct = path.join(rel);
                        // Early rosbag2 releases wrote paths with the bag directory in front.
                        match rel.file_name() {
                            Some(name) if !direct.exists() && path.join(name).exists() => {
                                path.join(name)
                            }
                            _ => direct,
                        }
                    })
                    .collect::<Vec<_>>();
                let storage = metadata.storage;
                return Self::from_files(path, storage, &files, Some(metadata));
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| BagError::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && Storage::from_path(p).is_some())
                .collect();
            files.sort();
            let Some(first) = files.first() else {
                return Err(BagError::NotABag {
                    path: path.to_path_buf(),
                    reason: "directory has no metadata.yaml and no .mcap or .db3 file".into(),
                });
            };
            let storage = Storage::from_path(first).expect("filtered above");
            if files.iter().any(|f| Storage::from_path(f) != Some(storage)) {
                return Err(BagError::NotABag {
                    path: path.to_path_buf(),
                    reason: "directory without metadata.yaml mixes .mcap and .db3 files".into(),
                });
            }
            log::warn!(
                "{}: no metadata.yaml; reading {} {} file(s) by name",
                path.display(),
                files.len(),
                storage.as_str()
            );
            return Self::from_files(path, storage, &files, None);
        }
        if path.file_name().is_some_and(|n| n == "metadata.yaml") {
            return Self::open(path.parent().unwrap_or(Path::new(".")));
        }
        match Storage::from_path(path) {
            Some(storage) => Self::from_files(path, storage, &[path.to_path_buf()], None),
            None => Err(BagError::NotABag {
                path: path.to_path_buf(),
                reason: "expected a bag directory, a .mcap file or a .db3 file".into(),
            }),
        }
    }

    fn from_files(
        path: &Path,
        storage: Storage,
        files: &[PathBuf],
        metadata: Option<BagMetadata>,
    ) -> Result<Self, BagError> {
        let mut readers: Vec<Box<dyn FileReader>> = Vec::new();
        for f in files {
            readers.push(match storage {
                Storage::Mcap => {
                    let file = File::open(f).map_err(|e| BagError::io(f, e))?;
                    Box::new(McapFile::open(BufReader::with_capacity(1 << 16, file), f)?)
                }
                Storage::Sqlite3 => Box::new(SqliteFile::open(f)?),
            });
        }
        Self::from_readers(path, storage, readers, metadata)
    }

    /// A bag over already opened storage files (e.g. in-memory ones in tests).
    pub fn from_readers(
        path: &Path,
        storage: Storage,
        files: Vec<Box<dyn FileReader>>,
        metadata: Option<BagMetadata>,
    ) -> Result<Self, BagError> {
        let mut topics: Vec<TopicInfo> = Vec::new();
        let mut maps = Vec::new();
        for f in &files {
            let mut map = Vec::new();
            for t in f.topics() {
                let idx = match topics.iter().position(|b| b.name == t.name) {
                    Some(i) => {
                        let b = &mut topics[i];
                        if b.msg_type != t.msg_type {
                            return Err(BagError::Metadata {
                                path: f.path().to_path_buf(),
                                detail: format!(
                                    "topic `{}` has type `{}` here and `{}` in another file",
                                    t.name, t.msg_type, b.msg_type
                                ),
                            });
                        }
                        b.message_count = b.message_count.zip(t.message_count).map(|(a, c)| a + c);
                        i
                    }
                    None => {
                        topics.push(TopicInfo {
                            name: t.name.clone(),
                            msg_type: t.msg_type.clone(),
                            serialization_format: t.serialization_format.clone(),
                            message_count: t.message_count,
                        });
                        topics.len() - 1
                    }
                };
                map.push(idx);
            }
            maps.push(map);
        }
        // metadata.yaml counts where the storage does not know them (sqlite3).
        if let Some(m) = &metadata {
            for t in topics.iter_mut().filter(|t| t.message_count.is_none()) {
                t.message_count = m
                    .topics
                    .iter()
                    .find(|(n, _, _)| *n == t.name)
                    .map(|(_, _, c)| *c);
            }
        }
        let n = files.len();
        Ok(Bag {
            path: path.to_path_buf(),
            storage,
            files,
            topics,
            maps,
            metadata,
            heads: BinaryHeap::new(),
            pending: (0..n).map(|_| None).collect(),
            started: false,
            seq: 0,
            failed: false,
        })
    }

    /// The path the bag was opened from.
    /// What `metadata.yaml` says, when the bag has one.
    pub fn metadata(&self) -> Option<&BagMetadata> {
        self.metadata.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// The storage files, in recording order.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path()).collect()
    }

    pub fn topics(&self) -> &[TopicInfo] {
        &self.topics
    }

    pub fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t.name == name)
    }

    /// `name (type)` for every topic: for error messages.
    pub fn topic_list(&self) -> String {
        if self.topics.is_empty() {
            return "no topics".into();
        }
        self.topics
            .iter()
            .map(|t| format!("{} ({})", t.name, t.msg_type))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// First and last log time of the bag (from `metadata.yaml` or the storage files).
    pub fn time_range(&mut self) -> Result<Option<(i64, i64)>, BagError> {
        if let Some(m) = &self.metadata {
            if let (Some(s), Some(d)) = (m.starting_time_ns, m.duration_ns) {
                return Ok(Some((s, s + d)));
            }
        }
        let mut range: Option<(i64, i64)> = None;
        for f in &mut self.files {
            if let Some((a, b)) = f.time_range()? {
                range = Some(range.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
            }
        }
        Ok(range)
    }

    /// Restricts iteration to these topics (indexes in [`topics`](Self::topics)); call before
    /// the first message. Unselected topics are not read at all where the storage allows it.
    pub fn select(&mut self, topics: &[usize]) {
        for (f, map) in self.files.iter_mut().zip(&self.maps) {
            let local: Vec<usize> = map
                .iter()
                .enumerate()
                .filter(|(_, g)| topics.contains(g))
                .map(|(l, _)| l)
                .collect();
            f.select(&local);
        }
    }

    fn pull(&mut self, file: usize) -> Result<(), BagError> {
        if let Some(m) = self.files[file].next_message() {
            let m = m?;
            self.seq += 1;
            self.heads.push(Reverse((m.log_time_ns, file, self.seq)));
            self.pending[file] = Some(m);
        }
        Ok(())
    }
}

impl Iterator for Bag {
    type Item = Result<BagMessage, BagError>;

    /// The next message in log-time order across all files (ties: earlier file first, then
    /// file order). Stops after the first error.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !self.started {
            self.started = true;
            for f in 0..self.files.len() {
                if let Err(e) = self.pull(f) {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let Reverse((_, file, _)) = self.heads.pop()?;
        let m = self.pending[file].take().expect("a head has its message");
        if let Err(e) = self.pull(file) {
            self.failed = true;
            return Some(Err(e));
        }
        Some(Ok(BagMessage {
            topic: self.maps[file][m.topic],
            log_time_ns: m.log_time_ns,
            data: m.data,
            file,
        }))
    }
}
