//! `metadata.yaml` of a rosbag2 bag directory (versions 1 to 9, as written by rosbag2 and by
//! the `rosbags` library). Only what reading needs is extracted; unknown keys are ignored.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::BagError;

/// The storage plugin that wrote the bag's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Mcap,
    Sqlite3,
}

impl Storage {
    /// From a file name's extension (`.mcap`, `.db3`).
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "mcap" => Some(Storage::Mcap),
            "db3" => Some(Storage::Sqlite3),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Mcap => "mcap",
            Storage::Sqlite3 => "sqlite3",
        }
    }
}

/// What `metadata.yaml` says about the bag.
#[derive(Debug, Clone)]
pub struct BagMetadata {
    pub version: u64,
    pub storage: Storage,
    /// Storage files, relative to the bag directory, in recording order.
    pub files: Vec<PathBuf>,
    /// (topic, type, messages).
    pub topics: Vec<(String, String, u64)>,
    pub starting_time_ns: Option<i64>,
    pub duration_ns: Option<i64>,
    /// `custom_data` (string values; others as YAML text).
    pub custom_data: std::collections::BTreeMap<String, String>,
}

impl BagMetadata {
    /// Reads and checks `metadata.yaml`.
    pub fn read(path: &Path) -> Result<Self, BagError> {
        let text = std::fs::read_to_string(path).map_err(|e| BagError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `metadata.yaml` (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, BagError> {
        let bad = |detail: String| BagError::Metadata {
            path: path.to_path_buf(),
            detail,
        };
        let doc: Value =
            serde_yaml::from_str(text).map_err(|e| bad(format!("not valid YAML: {e}")))?;
        let info = doc
            .get("rosbag2_bagfile_information")
            .ok_or_else(|| bad("no `rosbag2_bagfile_information` mapping".into()))?;
        let version = info.get("version").and_then(Value::as_u64).unwrap_or(0);
        let storage_id = info
            .get("storage_identifier")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("`storage_identifier` is missing".into()))?;
        let storage = match storage_id {
            "mcap" => Storage::Mcap,
            "sqlite3" => Storage::Sqlite3,
            other => {
                return Err(BagError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("storage plugin `{other}`"),
                    hint: "supported: mcap, sqlite3".into(),
                })
            }
        };
        let mode = info
            .get("compression_mode")
            .and_then(Value::as_str)
            .unwrap_or("");
        let format = info
            .get("compression_format")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !mode.is_empty() && !mode.eq_ignore_ascii_case("none") {
            return Err(BagError::Unsupported {
                path: path.to_path_buf(),
                what: format!("rosbag2 compression (mode `{mode}`, format `{format}`)"),
                hint: "decompress it first, e.g. `ros2 bag convert`; MCAP chunk compression (zstd, lz4) is supported".into(),
            });
        }
        let files: Vec<PathBuf> = match info.get("relative_file_paths").and_then(Value::as_sequence)
        {
            Some(seq) => seq
                .iter()
                .map(|v| {
                    v.as_str().map(PathBuf::from).ok_or_else(|| {
                        bad("`relative_file_paths` must be a list of strings".into())
                    })
                })
                .collect::<Result<_, _>>()?,
            None => info
                .get("files")
                .and_then(Value::as_sequence)
                .map(|seq| {
                    seq.iter()
                        .filter_map(|f| f.get("path")?.as_str().map(PathBuf::from))
                        .collect()
                })
                .unwrap_or_default(),
        };
        if files.is_empty() {
            return Err(bad("lists no storage files (`relative_file_paths`)".into()));
        }
        for f in &files {
            if f.is_absolute()
                || f.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(bad(format!(
                    "file `{}` is outside the bag directory",
                    f.display()
                )));
            }
        }
        let mut topics = Vec::new();
        if let Some(seq) = info
            .get("topics_with_message_count")
            .and_then(Value::as_sequence)
        {
            for t in seq {
                let meta = t.get("topic_metadata");
                let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
                let ty = meta.and_then(|m| m.get("type")).and_then(Value::as_str);
                if let (Some(name), Some(ty)) = (name, ty) {
                    let count = t.get("message_count").and_then(Value::as_u64).unwrap_or(0);
                    topics.push((name.to_string(), ty.to_string(), count));
                }
            }
        }
        let starting_time_ns = info
            .get("starting_time")
            .and_then(|s| s.get("nanoseconds_since_epoch"))
            .and_then(Value::as_i64);
        let duration_ns = info
            .get("duration")
            .and_then(|s| s.get("nanoseconds"))
            .and_then(Value::as_i64);
        let custom_data = info
            .get("custom_data")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let k = k.as_str()?.to_string();
                        let v = match v {
                            Value::String(s) => s.clone(),
                            other => serde_yaml::to_string(other).ok()?.trim().to_string(),
                        };
                        Some((k, v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(BagMetadata {
            version,
            storage,
            files,
            topics,
            starting_time_ns,
            duration_ns,
            custom_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROSBAG2_V5: &str = "\
rosbag2_bagfile_information:
  version: 5
  storage_identifier: sqlite3
  duration:
    nanoseconds: 2000
  starting_time:
    nanoseconds_since_epoch: 1000
  message_count: 3
  topics_with_message_count:
    - topic_metadata:
        name: /joint_states
        type: sensor_msgs/msg/JointState
        serialization_format: cdr
        offered_qos_profiles: ''
      message_count: 3
  compression_format: ''
  compression_mode: ''
  relative_file_paths:
    - bag_0.db3
    - bag_1.db3
  files:
    - path: bag_0.db3
";

    #[test]
    fn parses_rosbag2_metadata() {
        let m = BagMetadata::parse(ROSBAG2_V5, Path::new("metadata.yaml")).unwrap();
        assert_eq!(m.storage, Storage::Sqlite3);
        assert_eq!(
            m.files,
            vec![PathBuf::from("bag_0.db3"), PathBuf::from("bag_1.db3")]
        );
        assert_eq!(
            m.topics,
            vec![(
                "/joint_states".into(),
                "sensor_msgs/msg/JointState".into(),
                3
            )]
        );
        assert_eq!(
            (m.starting_time_ns, m.duration_ns),
            (Some(1000), Some(2000))
        );
    }

    #[test]
    fn rejects_compressed_bags_and_unknown_storage() {
        let compressed = ROSBAG2_V5.replace("compression_mode: ''", "compression_mode: FILE");
        let e = BagMetadata::parse(&compressed, Path::new("m.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("compression (mode `FILE`"), "{e}");
        let other = ROSBAG2_V5.replace(
            "storage_identifier: sqlite3",
            "storage_identifier: rosbag_v1",
        );
        let e = BagMetadata::parse(&other, Path::new("m.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("storage plugin `rosbag_v1`"), "{e}");
    }

    #[test]
    fn rejects_files_outside_the_bag() {
        let escape = ROSBAG2_V5.replace("- bag_1.db3", "- ../elsewhere.db3");
        let e = BagMetadata::parse(&escape, Path::new("m.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the bag directory"), "{e}");
    }
}
