//! `sensor_msgs/CompressedImage`: format strings and JPEG/PNG decoding.

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;

use ::image::codecs::jpeg::JpegDecoder;
use ::image::codecs::png::PngDecoder;
use ::image::{ColorType, DynamicImage, ImageDecoder, Limits};

use super::{ImageEncoding, ObservationError};

/// A compressed image format this layer decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompressedFormat {
    /// JPEG (baseline or progressive), decoded to RGB or grey.
    Jpeg,
    /// PNG, 8-bit grey / RGB / RGBA decoded directly; other bit depths converted to RGB8.
    Png,
}

impl CompressedFormat {
    /// Reads the `format` field of `sensor_msgs/CompressedImage` as ROS publishers write it:
    /// `"jpeg"`, `"jpg"`, `"png"`, or image_transport's `"<enc>; jpeg compressed <enc>"` /
    /// `"<enc>; png compressed <enc>"`. Case is ignored. An empty string is resolved from the
    /// data's magic bytes by [`CompressedFormat::detect`]. `compressedDepth` is rejected.
    pub fn from_ros_format(format: &str, data: &[u8]) -> Result<Self, ObservationError> {
        if format.trim().is_empty() {
            return Self::detect(data).ok_or_else(|| {
                ObservationError::UnsupportedCompressedFormat {
                    format: format.to_owned(),
                }
            });
        }
        format.parse()
    }

    /// Recognises JPEG (`FF D8 FF`) and PNG (`89 50 4E 47 0D 0A 1A 0A`) signatures.
    pub fn detect(data: &[u8]) -> Option<Self> {
        if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(CompressedFormat::Jpeg)
        } else if data.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(CompressedFormat::Png)
        } else {
            None
        }
    }

    /// The most decoded bytes a valid image of this format yields per byte of data: a
    /// header announcing more than `max_expansion() * data.len()` bytes is refused before
    /// anything is sized by it.
    ///
    /// - PNG: deflate expands at most 1032:1, and a 1-bit palette image with transparency
    ///   decodes to 4 bytes per pixel (32 per stored byte): 33,024.
    /// - JPEG: every 8x8 block of every component costs at least one bit (its DC code); with
    ///   4x4 luma sampling an MCU of 32x32 pixels (3,072 RGB bytes) holds 18 blocks: under
    ///   1,366:1, rounded up to 2,048.
    pub const fn max_expansion(self) -> u64 {
        match self {
            CompressedFormat::Jpeg => 2048,
            CompressedFormat::Png => 1032 * 32,
        }
    }

    /// `"jpeg"` or `"png"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CompressedFormat::Jpeg => "jpeg",
            CompressedFormat::Png => "png",
        }
    }
}

impl fmt::Display for CompressedFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompressedFormat {
    type Err = ObservationError;

    /// Parses a non-empty ROS format string (see [`CompressedFormat::from_ros_format`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unsupported = || ObservationError::UnsupportedCompressedFormat {
            format: s.to_owned(),
        };
        let lower = s.to_ascii_lowercase();
        if lower.contains("compresseddepth") {
            return Err(unsupported());
        }
        // "rgb8; jpeg compressed bgr8": the codec is the first word after the ';' (or the
        // whole string for the old bare "jpeg" / "png").
        let codec_part = lower
            .split_once(';')
            .map_or(lower.as_str(), |(_, rest)| rest);
        match codec_part.split_whitespace().next() {
            Some("jpeg" | "jpg") => Ok(CompressedFormat::Jpeg),
            Some("png") => Ok(CompressedFormat::Png),
            _ => Err(unsupported()),
        }
    }
}

/// Decodes `data` into `buf` (reused between calls) and returns the pixel layout.
///
/// Dimensions are read from the header and checked against `max_w x max_h` before any
/// pixel memory is allocated.
///
/// A panic inside the codec is a [`ObservationError::Decode`] error like any other bad
/// frame: the JPEG decoder (`zune-jpeg` 0.5.15, the latest release) panics on some malformed
/// frames (found by `tools/fuzz.sh`), and a camera must not be able to stop the node.
pub(crate) fn decode_into(
    format: CompressedFormat,
    data: &[u8],
    max_w: u32,
    max_h: u32,
    buf: &mut Vec<u8>,
) -> Result<(u32, u32, ImageEncoding), ObservationError> {
    let decode = std::panic::AssertUnwindSafe(|| decode_unguarded(format, data, max_w, max_h, buf));
    std::panic::catch_unwind(decode).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let hint = match format {
            CompressedFormat::Jpeg => ::image::ImageFormat::Jpeg,
            CompressedFormat::Png => ::image::ImageFormat::Png,
        };
        Err(ObservationError::Decode {
            format,
            len: data.len(),
            source: ::image::ImageError::Decoding(::image::error::DecodingError::new(
                hint.into(),
                format!("the decoder panicked: {what}"),
            )),
        })
    })
}

fn decode_unguarded(
    format: CompressedFormat,
    data: &[u8],
    max_w: u32,
    max_h: u32,
    buf: &mut Vec<u8>,
) -> Result<(u32, u32, ImageEncoding), ObservationError> {
    let err = |source| ObservationError::Decode {
        format,
        len: data.len(),
        source,
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(max_w);
    limits.max_image_height = Some(max_h);
    match format {
        CompressedFormat::Jpeg => {
            if !ends_with_eoi(data) {
                return Err(ObservationError::TruncatedJpeg { len: data.len() });
            }
            let dec = JpegDecoder::new(Cursor::new(data)).map_err(err)?;
            finish(format, dec, max_w, max_h, buf, data.len())
        }
        CompressedFormat::Png => {
            let (w, h) = png_header_dims(data).unwrap_or((0, 0));
            check_dims(format, w, h, max_w, max_h)?;
            let dec = PngDecoder::with_limits(Cursor::new(data), limits).map_err(err)?;
            finish(format, dec, max_w, max_h, buf, data.len())
        }
    }
}

/// Whether JPEG data ends with the EOI marker `FF D9`, ignoring trailing zero padding
/// (some MJPEG cameras pad frames). The `image` crate decodes JPEG leniently and would turn
/// a truncated frame into a partly grey image without an error.
fn ends_with_eoi(data: &[u8]) -> bool {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    data[..end].ends_with(&[0xFF, 0xD9])
}

/// Width and height from a PNG's IHDR chunk, if the data starts with one.
fn png_header_dims(data: &[u8]) -> Option<(u32, u32)> {
    // signature (8) + length (4) + "IHDR" (4) + width (4) + height (4)
    let ihdr = data.get(8..24)?;
    if &ihdr[4..8] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(ihdr[8..12].try_into().ok()?);
    let h = u32::from_be_bytes(ihdr[12..16].try_into().ok()?);
    Some((w, h))
}

fn check_dims(
    format: CompressedFormat,
    width: u32,
    height: u32,
    max_width: u32,
    max_height: u32,
) -> Result<(), ObservationError> {
    if width > max_width || height > max_height {
        return Err(ObservationError::DecodedTooLarge {
            format,
            width,
            height,
            max_width,
            max_height,
        });
    }
    Ok(())
}

fn finish(
    format: CompressedFormat,
    dec: impl ImageDecoder,
    max_w: u32,
    max_h: u32,
    buf: &mut Vec<u8>,
    len: usize,
) -> Result<(u32, u32, ImageEncoding), ObservationError> {
    let err = |source| ObservationError::Decode {
        format,
        len,
        source,
    };
    let (width, height) = dec.dimensions();
    check_dims(format, width, height, max_w, max_h)?;
    if width == 0 || height == 0 {
        return Err(ObservationError::ZeroImageSize {
            what: match format {
                CompressedFormat::Jpeg => "decoded jpeg image",
                CompressedFormat::Png => "decoded png image",
            },
            width,
            height,
        });
    }
    // The header's size must be one the bytes present could encode before it sizes a buffer.
    let decoded = dec.total_bytes();
    let max_ratio = format.max_expansion();
    if decoded > max_ratio.saturating_mul(len as u64) {
        return Err(ObservationError::ImplausibleSize {
            format,
            width,
            height,
            decoded,
            len,
            max_ratio,
        });
    }
    let encoding = match dec.color_type() {
        ColorType::L8 => Some(ImageEncoding::Mono8),
        ColorType::Rgb8 => Some(ImageEncoding::Rgb8),
        ColorType::Rgba8 => Some(ImageEncoding::Rgba8),
        _ => None,
    };
    match encoding {
        Some(encoding) => {
            // Bounded by the dimension check above (<= max_w * max_h * 4 bytes).
            let n =
                usize::try_from(dec.total_bytes()).map_err(|_| ObservationError::SizeOverflow {
                    width,
                    height,
                    step: width.saturating_mul(encoding.channels() as u32),
                })?;
            // Grow without clearing: only new bytes are zeroed, the decoder overwrites all.
            buf.resize(n, 0);
            dec.read_image(buf).map_err(err)?;
            Ok((width, height, encoding))
        }
        None => {
            // Rare (16-bit PNG, grey+alpha): convert through `image`, allocating.
            let rgb = DynamicImage::from_decoder(dec).map_err(err)?.to_rgb8();
            *buf = rgb.into_raw();
            Ok((width, height, ImageEncoding::Rgb8))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ros_format_strings() {
        for (s, f) in [
            ("jpeg", CompressedFormat::Jpeg),
            ("JPEG", CompressedFormat::Jpeg),
            ("jpg", CompressedFormat::Jpeg),
            ("png", CompressedFormat::Png),
            ("rgb8; jpeg compressed bgr8", CompressedFormat::Jpeg),
            ("bgr8; jpeg compressed bgr8", CompressedFormat::Jpeg),
            ("mono8; jpeg compressed mono8", CompressedFormat::Jpeg),
            ("bgr8; png compressed bgr8", CompressedFormat::Png),
            ("rgba8; png compressed rgba8", CompressedFormat::Png),
        ] {
            assert_eq!(s.parse::<CompressedFormat>().unwrap(), f, "{s}");
            assert_eq!(CompressedFormat::from_ros_format(s, &[]).unwrap(), f, "{s}");
        }
    }

    #[test]
    fn rejects_unknown_and_depth_formats() {
        for s in [
            "16UC1; compressedDepth png",
            "32FC1; compressedDepth",
            "webp",
            "tiff; x",
        ] {
            let e = s.parse::<CompressedFormat>().unwrap_err();
            assert!(
                matches!(e, ObservationError::UnsupportedCompressedFormat { ref format } if format == s),
                "{s}: {e:?}"
            );
            assert!(
                e.to_string().contains(s) && e.to_string().contains("jpeg"),
                "{e}"
            );
        }
    }

    #[test]
    fn eoi_check_allows_zero_padding_only() {
        assert!(ends_with_eoi(&[0xFF, 0xD8, 0xFF, 0xD9]));
        assert!(ends_with_eoi(&[0xFF, 0xD8, 0xFF, 0xD9, 0, 0, 0]));
        assert!(!ends_with_eoi(&[0xFF, 0xD8, 0xFF, 0xD9, 1]));
        assert!(!ends_with_eoi(&[0xFF, 0xD8, 0x12, 0x34]));
        assert!(!ends_with_eoi(&[]));
        assert!(!ends_with_eoi(&[0, 0]));
    }

    #[test]
    fn empty_format_is_detected_from_magic() {
        assert_eq!(
            CompressedFormat::from_ros_format("", &[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(),
            CompressedFormat::Jpeg
        );
        assert_eq!(
            CompressedFormat::from_ros_format(" ", b"\x89PNG\r\n\x1a\n....").unwrap(),
            CompressedFormat::Png
        );
        assert!(CompressedFormat::from_ros_format("", b"GIF89a").is_err());
    }
}
