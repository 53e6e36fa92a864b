//! Raw image encodings and the borrowed `sensor_msgs/Image` view.

use std::fmt;
use std::str::FromStr;

use super::ObservationError;

/// Pixel encodings of `sensor_msgs/Image` that this layer converts to RGB.
///
/// The names are the ROS strings (`sensor_msgs/image_encodings.hpp`). Alpha is dropped
/// (not composited); `mono8` is replicated to three channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageEncoding {
    /// `rgb8`: 3 bytes per pixel, R G B.
    Rgb8,
    /// `bgr8`: 3 bytes per pixel, B G R (OpenCV's order; the usual camera driver output).
    Bgr8,
    /// `rgba8`: 4 bytes per pixel, R G B A.
    Rgba8,
    /// `bgra8`: 4 bytes per pixel, B G R A.
    Bgra8,
    /// `mono8`: 1 byte per pixel, grey.
    Mono8,
}

impl ImageEncoding {
    /// Every supported encoding, in the order listed in error messages.
    pub const ALL: [ImageEncoding; 5] = [
        ImageEncoding::Rgb8,
        ImageEncoding::Bgr8,
        ImageEncoding::Rgba8,
        ImageEncoding::Bgra8,
        ImageEncoding::Mono8,
    ];

    /// The supported ROS encoding strings, comma separated (for messages).
    pub const SUPPORTED: &'static str = "rgb8, bgr8, rgba8, bgra8, mono8";

    /// Bytes per pixel.
    pub const fn channels(self) -> usize {
        match self {
            ImageEncoding::Rgb8 | ImageEncoding::Bgr8 => 3,
            ImageEncoding::Rgba8 | ImageEncoding::Bgra8 => 4,
            ImageEncoding::Mono8 => 1,
        }
    }

    /// The ROS encoding string (`"rgb8"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ImageEncoding::Rgb8 => "rgb8",
            ImageEncoding::Bgr8 => "bgr8",
            ImageEncoding::Rgba8 => "rgba8",
            ImageEncoding::Bgra8 => "bgra8",
            ImageEncoding::Mono8 => "mono8",
        }
    }
}

impl fmt::Display for ImageEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageEncoding {
    type Err = ObservationError;

    /// Parses a ROS encoding string. Surrounding whitespace and ASCII case are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        ImageEncoding::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ObservationError::UnsupportedEncoding {
                encoding: s.to_owned(),
            })
    }
}

/// A borrowed `sensor_msgs/Image`: the fields the preprocessor needs, without ROS types.
///
/// `step` is the length of one row in bytes and may exceed `width * channels` (row padding,
/// which is skipped). `data` must be exactly `step * height` bytes, as `sensor_msgs/Image`
/// defines it. Only 8-bit encodings exist here, so `is_bigendian` does not matter.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawImage<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels (rows).
    pub height: u32,
    /// Bytes per row, padding included.
    pub step: u32,
    /// Pixel encoding.
    pub encoding: ImageEncoding,
    /// Pixel bytes, `step * height` of them.
    pub data: &'a [u8],
}

impl fmt::Debug for RawImage<'_> {
    // The pixel bytes would flood logs; show their length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("step", &self.step)
            .field("encoding", &self.encoding)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Dimensions of a validated [`RawImage`], in `usize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub width: usize,
    pub height: usize,
    pub step: usize,
}

impl RawImage<'_> {
    /// Checks the dimensions against the data: non-zero size, `step >= width * channels`,
    /// `data.len() == step * height`, and no arithmetic overflow.
    pub fn validate(&self) -> Result<(), ObservationError> {
        self.layout().map(|_| ())
    }

    pub(crate) fn layout(&self) -> Result<Layout, ObservationError> {
        let (width, height, step, encoding) = (self.width, self.height, self.step, self.encoding);
        if width == 0 || height == 0 {
            return Err(ObservationError::ZeroImageSize {
                what: "raw image",
                width,
                height,
            });
        }
        let channels = encoding.channels();
        // u32 * (<= 4) always fits in u64.
        let min_step = u64::from(width) * channels as u64;
        if u64::from(step) < min_step {
            return Err(ObservationError::StepTooSmall {
                step,
                width,
                encoding,
                channels,
                min_step,
            });
        }
        let overflow = ObservationError::SizeOverflow {
            width,
            height,
            step,
        };
        let (Ok(w), Ok(h), Ok(s)) = (
            usize::try_from(width),
            usize::try_from(height),
            usize::try_from(step),
        ) else {
            return Err(overflow);
        };
        let Some(expected) = s.checked_mul(h) else {
            return Err(overflow);
        };
        if self.data.len() != expected {
            return Err(ObservationError::DataLength {
                expected,
                actual: self.data.len(),
                width,
                height,
                step,
                encoding,
            });
        }
        Ok(Layout {
            width: w,
            height: h,
            step: s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ros_strings() {
        for e in ImageEncoding::ALL {
            assert_eq!(e.as_str().parse::<ImageEncoding>().unwrap(), e);
            assert_eq!(e.to_string(), e.as_str());
        }
        assert_eq!(
            " BGR8 ".parse::<ImageEncoding>().unwrap(),
            ImageEncoding::Bgr8
        );
        assert_eq!(ImageEncoding::Rgb8.channels(), 3);
        assert_eq!(ImageEncoding::Bgra8.channels(), 4);
        assert_eq!(ImageEncoding::Mono8.channels(), 1);
    }

    #[test]
    fn unsupported_encoding_names_it_and_lists_supported() {
        let err = "bayer_rggb8".parse::<ImageEncoding>().unwrap_err();
        assert!(
            matches!(err, ObservationError::UnsupportedEncoding { ref encoding } if encoding == "bayer_rggb8")
        );
        let msg = err.to_string();
        assert!(msg.contains("bayer_rggb8"), "{msg}");
        for e in ImageEncoding::ALL {
            assert!(msg.contains(e.as_str()), "{msg}");
        }
    }

    fn img(width: u32, height: u32, step: u32, data: &[u8]) -> RawImage<'_> {
        RawImage {
            width,
            height,
            step,
            encoding: ImageEncoding::Rgb8,
            data,
        }
    }

    #[test]
    fn validation_errors_name_the_problem() {
        let data = [0u8; 24];
        assert!(img(2, 2, 6, &data[..12]).validate().is_ok());
        assert!(img(2, 2, 8, &data[..16]).validate().is_ok());

        let e = img(0, 2, 6, &data).validate().unwrap_err();
        assert!(matches!(
            e,
            ObservationError::ZeroImageSize {
                width: 0,
                height: 2,
                ..
            }
        ));
        assert!(e.to_string().contains("width 0"), "{e}");
        let e = img(2, 0, 6, &data).validate().unwrap_err();
        assert!(matches!(
            e,
            ObservationError::ZeroImageSize { height: 0, .. }
        ));

        let e = img(2, 2, 5, &data[..10]).validate().unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::StepTooSmall {
                    step: 5,
                    width: 2,
                    min_step: 6,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("step 5") && msg.contains("rgb8") && msg.contains("6 bytes per row"),
            "{msg}"
        );

        let e = img(2, 2, 6, &data[..11]).validate().unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::DataLength {
                    expected: 12,
                    actual: 11,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("11 bytes") && msg.contains("12 bytes") && msg.contains("step 6"),
            "{msg}"
        );
        // Too long is as wrong as too short: the dimensions do not describe the buffer.
        let e = img(2, 2, 6, &data[..13]).validate().unwrap_err();
        assert!(matches!(
            e,
            ObservationError::DataLength {
                expected: 12,
                actual: 13,
                ..
            }
        ));
    }

    #[test]
    fn huge_dimensions_do_not_overflow_or_panic() {
        let data = [0u8; 16];
        let e = img(u32::MAX / 3, u32::MAX, u32::MAX, &data)
            .validate()
            .unwrap_err();
        // On 64-bit, step * height fits in usize, so this is a length error; elsewhere overflow.
        assert!(matches!(
            e,
            ObservationError::DataLength { .. } | ObservationError::SizeOverflow { .. }
        ));
        let e = img(u32::MAX, 1, 7, &data).validate().unwrap_err();
        assert!(matches!(e, ObservationError::StepTooSmall { .. }));
    }
}
