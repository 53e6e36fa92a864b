//! The bag layer's error type.

use std::path::PathBuf;

use crate::control::{ControlError, ParamError};
use crate::export::ExportError;
use crate::observation::ObservationError;

/// Everything that can go wrong reading a bag or replaying it. Each variant names the file
/// (and the byte offset or record where known), the topic, or the parameter at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BagError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Neither a bag directory (`metadata.yaml` and/or storage files) nor a `.mcap`/`.db3` file.
    #[error("{}: not a rosbag2 bag: {reason}", path.display())]
    NotABag { path: PathBuf, reason: String },

    /// `metadata.yaml` is unreadable or inconsistent.
    #[error("{}: invalid rosbag2 metadata: {detail}", path.display())]
    Metadata { path: PathBuf, detail: String },

    /// A storage plugin or bag-level compression this reader does not handle.
    #[error("{}: {what} is not supported ({hint})", path.display())]
    Unsupported {
        path: PathBuf,
        what: String,
        hint: String,
    },

    /// A corrupt or truncated MCAP file.
    #[error("{}: corrupt or truncated MCAP file{}: {source}", path.display(), fmt_offset(*offset))]
    Mcap {
        path: PathBuf,
        /// Byte offset of the record (chunk) being read, where known.
        offset: Option<u64>,
        #[source]
        source: mcap::McapError,
    },

    /// A file that ends before a record it indexes (chunk, footer).
    #[error("{}: truncated: {detail}", path.display())]
    Truncated { path: PathBuf, detail: String },

    /// A corrupt sqlite3 file or one without the rosbag2 tables.
    #[error("{}: corrupt or not a rosbag2 sqlite3 file ({what}): {source}", path.display())]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// A topic the replay needs is not in the bag.
    #[error("topic `{topic}` (parameter `{param}`) is not in the bag; the bag has: {available}")]
    MissingTopic {
        topic: String,
        param: &'static str,
        /// The bag's topics with their types, comma separated.
        available: String,
    },

    /// A topic the replay needs is in the bag but has no messages.
    #[error("topic `{topic}` (parameter `{param}`) has no messages in the bag")]
    EmptyTopic { topic: String, param: &'static str },

    /// A needed topic recorded with a type replay cannot use for it.
    #[error("topic `{topic}` has message type `{msg_type}`, which replay cannot use for it (expected {expected})")]
    UnsupportedType {
        topic: String,
        msg_type: String,
        expected: String,
    },

    /// A needed topic not recorded as CDR.
    #[error("topic `{topic}` is serialized as `{format}`; only `cdr` is supported")]
    SerializationFormat { topic: String, format: String },

    /// A CDR payload that does not decode as its type.
    #[error("{}: message on `{topic}` at log time {log_time_ns} ns does not decode as {msg_type}: {source}", path.display())]
    Decode {
        path: PathBuf,
        topic: String,
        msg_type: String,
        log_time_ns: i64,
        #[source]
        source: Box<r2r::Error>,
    },

    /// A camera message the model cannot take (encoding, dimensions, data length).
    #[error("image on `{topic}` at log time {log_time_ns} ns does not fit the model: {source}")]
    Image {
        topic: String,
        log_time_ns: i64,
        #[source]
        source: ObservationError,
    },

    /// A joint state without the joints the policy needs.
    #[error("joint state on `{topic}` at log time {log_time_ns} ns does not fit `joint_names`: {source}")]
    JointState {
        topic: String,
        log_time_ns: i64,
        #[source]
        source: ObservationError,
    },

    // The causes below are large; boxed so that `Result<_, BagError>` stays small.
    #[error(transparent)]
    Params(Box<ParamError>),

    #[error(transparent)]
    Control(Box<ControlError>),

    #[error("cannot read the export metadata for the default `joint_names`: {0}")]
    Export(#[source] Box<ExportError>),

    /// The policy failed on a tick (replay stops: a regression run must not skip ticks).
    #[error("tick at bag time {stamp_ns} ns failed: {message}")]
    Tick { stamp_ns: i64, message: String },

    #[error("{}: output must end in .csv or .npz", path.display())]
    OutputFormat { path: PathBuf },

    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Plotting failed (plotters' errors are generic over the backend, so the cause is kept
    /// as its message).
    #[error("cannot draw the plot {}: {detail}", path.display())]
    Plot { path: PathBuf, detail: String },
}

impl From<ParamError> for BagError {
    fn from(e: ParamError) -> Self {
        BagError::Params(Box::new(e))
    }
}

impl From<ControlError> for BagError {
    fn from(e: ControlError) -> Self {
        BagError::Control(Box::new(e))
    }
}

impl From<ExportError> for BagError {
    fn from(e: ExportError) -> Self {
        BagError::Export(Box::new(e))
    }
}

fn fmt_offset(offset: Option<u64>) -> String {
    offset
        .map(|o| format!(" (record at byte {o})"))
        .unwrap_or_default()
}

impl BagError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BagError::Io {
            path: path.into(),
            source,
        }
    }
}
