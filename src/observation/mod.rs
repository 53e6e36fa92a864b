//! The ROS-free observation layer: camera images to CHW `f32` tensors, joint states to the
//! state vector, and the freshness rule of the control loop.
//!
//! The ROS node only copies message fields into these types and calls them, so everything
//! here is tested without ROS.
//!
//! | message | here |
//! |---|---|
//! | `sensor_msgs/Image` | [`RawImage`] + [`ImagePreprocessor::raw_into`] |
//! | `sensor_msgs/CompressedImage` | [`ImagePreprocessor::compressed_into`] |
//! | `sensor_msgs/JointState` | [`JointReorder::apply_into`] |
//! | `header.stamp` | [`time_to_ns`], [`Freshness::check`] |
//! | latest message per topic | [`LatestSlot`] |
//!
//! ```
//! use policy_node::observation::{ImageEncoding, ImagePreprocessor, JointReorder, RawImage};
//!
//! let pixels = vec![128u8; 4 * 2 * 3]; // a 4x2 grey rgb8 image, no row padding
//! let img = RawImage { width: 4, height: 2, step: 12, encoding: ImageEncoding::Rgb8, data: &pixels };
//! let mut pre = ImagePreprocessor::new(3, 3);
//! let chw = pre.raw(&img)?;
//! assert_eq!(chw.shape(), &[3, 3, 3]);
//! assert!(chw.iter().all(|&v| v == 128.0 / 255.0));
//!
//! let mut joints = JointReorder::new(vec!["elbow".into(), "shoulder".into()]);
//! let state = joints.apply(&["shoulder", "elbow"], &[0.1, 0.2])?;
//! assert_eq!(state, vec![0.2f32, 0.1]);
//! # Ok::<(), policy_node::observation::ObservationError>(())
//! ```

mod antialias;
mod compressed;
mod encoding;
mod error;
mod freshness;
mod joints;
mod preprocess;
pub(crate) mod resize;
mod slot;

pub use compressed::CompressedFormat;
pub use encoding::{ImageEncoding, RawImage};
pub use error::ObservationError;
pub use freshness::{time_to_ns, Freshness, Staleness};
pub use joints::JointReorder;
pub use preprocess::{ImageFit, ImagePreprocessor, DEFAULT_MAX_DECODED_DIM};
pub use slot::{LatestSlot, Stamped};
