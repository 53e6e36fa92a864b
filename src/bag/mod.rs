//! rosbag2 reading and offline replay (`policyctl replay`).
//!
//! - [`Bag`] opens a recording in either storage format rosbag2 writes — MCAP (the `mcap`
//!   crate) and sqlite3 `.db3` (`rusqlite`) — as a bag directory with `metadata.yaml`
//!   (possibly several files) or a single `.mcap`/`.db3` file, and yields its messages in
//!   log-time order as (topic, log time, CDR bytes). Bags written by rosbag2 and by the
//!   `rosbags` Python library both work. MCAP chunk compression (zstd, lz4) is supported;
//!   rosbag2's bag-level compression (`compression_mode: FILE/MESSAGE`) is reported as
//!   unsupported.
//! - [`decode`] turns `sensor_msgs/JointState`, `Image` and `CompressedImage` payloads into
//!   the control loop's inputs as r2r's generated types (camera messages lazily: only the
//!   header on arrival, the pixels when an observation uses them). Well-formed CDR is read
//!   in place by [`cdr`]; anything else goes through r2r's (rmw) deserialization, which
//!   decides.
//! - [`replay::run`] drives the node's own [`ControlLoop`](crate::control::ControlLoop) on
//!   bag time and writes the commanded actions (CSV / `.npz`) and a plot.
//!
//! Every failure is a [`BagError`] naming the file (and byte offset where known), the topic,
//! or the parameter; outputs are written to a temporary file and renamed only on success.
//!
//! ```no_run
//! use policy_node::bag::{replay, ReplayOptions};
//! let summary = replay::run(&ReplayOptions {
//!     bag: "tests/fixtures/demo_bag/mcap".into(),
//!     export_dir: "tests/fixtures/act_tiny/onnx".into(),
//!     params: Some("tests/fixtures/demo_bag/params.yaml".into()),
//!     output: Some("actions.csv".into()),
//!     ..Default::default()
//! })?;
//! println!("{summary}");
//! # Ok::<(), policy_node::bag::BagError>(())
//! ```

pub mod cdr;
pub mod decode;
mod error;
mod mcap_file;
pub mod metadata;
pub mod output;
pub mod plot;
mod reader;
pub mod replay;
mod sqlite_file;
pub mod writer;

pub use error::BagError;
pub use mcap_file::McapFile;
pub use metadata::{BagMetadata, Storage};
pub use output::{Actions, OutputFormat};
pub use reader::{Bag, BagMessage, FileMessage, FileReader, FileTopic, TopicInfo};
pub use replay::{run, PerInference, ReplayOptions, ReplaySummary};
pub use sqlite_file::SqliteFile;
