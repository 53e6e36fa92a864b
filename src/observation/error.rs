//! The observation layer's error type.

use super::compressed::CompressedFormat;
use super::encoding::ImageEncoding;

/// Everything that can be wrong with an observation handed to this layer.
///
/// Every variant carries what is needed to find the culprit: the encoding, the dimensions,
/// the expected and actual sizes, the joint name. Nothing in this layer panics on bad input;
/// it returns one of these instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObservationError {
    /// `sensor_msgs/Image.encoding` is not one this layer converts.
    #[error(
        "unsupported image encoding `{encoding}` (supported: {})",
        ImageEncoding::SUPPORTED
    )]
    UnsupportedEncoding {
        /// The encoding string as received.
        encoding: String,
    },

    /// Width or height is zero.
    #[error("{what} has zero size: width {width}, height {height}")]
    ZeroImageSize {
        /// Which image: `raw image` or `decoded jpeg image` / `decoded png image`.
        what: &'static str,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },

    /// `step` (bytes per row) is smaller than `width * channels`.
    #[error(
        "image step {step} bytes is smaller than one row of {width} {encoding} pixels \
         ({channels} bytes each, {min_step} bytes per row)"
    )]
    StepTooSmall {
        /// `step` as received.
        step: u32,
        /// Width in pixels.
        width: u32,
        /// The image encoding.
        encoding: ImageEncoding,
        /// Bytes per pixel of `encoding`.
        channels: usize,
        /// The smallest valid step, `width * channels`.
        min_step: u64,
    },

    /// `data.len()` is not `step * height` (truncated, or dimensions that do not describe the
    /// buffer).
    #[error(
        "image data is {actual} bytes but a {width}x{height} {encoding} image with step {step} \
         needs step * height = {expected} bytes"
    )]
    DataLength {
        /// `step * height`.
        expected: usize,
        /// `data.len()`.
        actual: usize,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes per row.
        step: u32,
        /// The image encoding.
        encoding: ImageEncoding,
    },

    /// `step * height` (or `width * channels`) does not fit in `usize`.
    #[error("image dimensions {width}x{height} with step {step} overflow the address space")]
    SizeOverflow {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes per row.
        step: u32,
    },

    /// The preprocessor was built with an output size of zero, or one whose tensor
    /// (`3 * out_h * out_w` floats) cannot be addressed.
    #[error(
        "invalid output size {out_h}x{out_w} (height x width): both must be at least 1 \
         and 3 * height * width must fit in memory"
    )]
    InvalidOutputSize {
        /// Requested output height.
        out_h: usize,
        /// Requested output width.
        out_w: usize,
    },

    /// A caller-provided output buffer has the wrong length.
    #[error("{what} output buffer has length {actual}, expected {expected}")]
    OutputLength {
        /// Which buffer: `image (3 x H x W)` or `joint state`.
        what: &'static str,
        /// The length needed.
        expected: usize,
        /// The length given.
        actual: usize,
    },

    /// `sensor_msgs/CompressedImage.format` names no format this layer decodes.
    #[error(
        "unsupported compressed image format `{format}` (supported: jpeg and png, as ROS writes \
         them, e.g. `jpeg`, `png`, `rgb8; jpeg compressed bgr8`, `bgr8; png compressed bgr8`)"
    )]
    UnsupportedCompressedFormat {
        /// The format string as received.
        format: String,
    },

    /// The JPEG/PNG decoder rejected the data.
    #[error("cannot decode {format} image ({len} bytes)")]
    Decode {
        /// The format the data was decoded as.
        format: CompressedFormat,
        /// Length of the compressed data.
        len: usize,
        /// The decoder's error.
        #[source]
        source: ::image::ImageError,
    },

    /// JPEG data that does not end with the end-of-image marker: a truncated frame. (The
    /// decoder would accept it and fill the missing part with grey.)
    #[error(
        "jpeg data ({len} bytes) does not end with the end-of-image marker FF D9: truncated frame"
    )]
    TruncatedJpeg {
        /// Length of the compressed data.
        len: usize,
    },

    /// The compressed image's header announces dimensions above the preprocessor's decode
    /// limit; nothing was allocated for it.
    #[error(
        "{format} image is {width}x{height}, above the decode limit of {max_width}x{max_height}"
    )]
    DecodedTooLarge {
        /// The compressed format.
        format: CompressedFormat,
        /// Width announced by the header.
        width: u32,
        /// Height announced by the header.
        height: u32,
        /// Largest accepted width.
        max_width: u32,
        /// Largest accepted height.
        max_height: u32,
    },

    /// The compressed image's header announces more pixels than its bytes could encode
    /// (see [`CompressedFormat::max_expansion`]); nothing was allocated for it.
    #[error(
        "{format} header announces {width}x{height} ({decoded} bytes decoded) but the data is          only {len} bytes; a valid {format} expands at most {max_ratio}:1"
    )]
    ImplausibleSize {
        /// The compressed format.
        format: CompressedFormat,
        /// Width announced by the header.
        width: u32,
        /// Height announced by the header.
        height: u32,
        /// Bytes the decoded image would take.
        decoded: u64,
        /// Length of the compressed data.
        len: usize,
        /// [`CompressedFormat::max_expansion`].
        max_ratio: u64,
    },

    /// `sensor_msgs/JointState.name` and `.position` differ in length.
    #[error("joint state has {names} names but {positions} positions")]
    JointLengthMismatch {
        /// `name.len()`.
        names: usize,
        /// `position.len()`.
        positions: usize,
    },

    /// Joints the policy needs are not in the message.
    #[error("joint state lacks joint(s) {missing:?}; the message has {available:?}")]
    MissingJoints {
        /// Wanted joints that the message does not name.
        missing: Vec<String>,
        /// The names the message has, in its order.
        available: Vec<String>,
    },

    /// A wanted joint appears more than once in the message, so its value is ambiguous.
    #[error("joint state names joint `{name}` more than once")]
    DuplicateJoint {
        /// The repeated joint name.
        name: String,
    },

    /// A wanted joint's position is NaN or infinite (or too large for `f32`).
    #[error("joint `{name}` has position {value}, which is not a finite f32")]
    NonFiniteJoint {
        /// The joint's name.
        name: String,
        /// The position as received.
        value: f64,
    },

    /// A field an I/O map selects is not in the message (an index beyond an array, a
    /// velocity list shorter than the names).
    #[error("`{path}` is not in the message: {detail}")]
    MissingField {
        /// The selected field (`data.3`, `velocity.elbow`).
        path: String,
        /// What the message has instead.
        detail: String,
    },

    /// A selected value is not finite after the map's `scale` / `offset` (or too large
    /// for `f32`).
    #[error("`{path}` is {value} after scale and offset, a non-finite f32")]
    NonFiniteField {
        /// The selected field.
        path: String,
        /// The value after scale and offset.
        value: f64,
    },
}
