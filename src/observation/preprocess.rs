//! [`ImagePreprocessor`]: image bytes to a CHW `f32` tensor in `[0, 1]`.

use ndarray::Array3;

use super::antialias::AntialiasPlan;
use super::compressed::{decode_into, CompressedFormat};
use super::encoding::Layout;
use super::resize::{self, ResizePlan, RowCache};
use super::{ImageEncoding, ObservationError, RawImage};

/// Default largest width and height accepted from a compressed image's header.
pub const DEFAULT_MAX_DECODED_DIM: u32 = 8192;

/// Turns camera images into the policy's image input: RGB, resized to `out_h x out_w`,
/// scaled to `[0, 1]`, laid out CHW as `f32` (what getiaction's exported graphs take).
///
/// The resize is bilinear with half-pixel centres, matching PyTorch's
/// `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`; an image that
/// already has the output size is copied exactly (`v / 255`).
///
/// Keep one preprocessor per camera stream: it caches the resize tables for the last
/// input size and reuses its scratch and decode buffers, so the `*_into` methods do not
/// allocate once warmed up (JPEG decoding still copies the compressed bytes once, inside the
/// `image` crate).
#[derive(Debug)]
pub struct ImagePreprocessor {
    out_h: usize,
    out_w: usize,
    max_decoded_w: u32,
    max_decoded_h: u32,
    plan: ResizePlan,
    rows: RowCache,
    decoded: Vec<u8>,
    fit: ImageFit,
    /// The resized image before padding ([`ImageFit::Pad`]).
    letterbox: Vec<f32>,
    /// PIL's antialiased bilinear filter instead of PyTorch's two-tap one.
    antialias: Option<AntialiasPlan>,
}

/// How an image of another aspect ratio is brought to the output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFit {
    /// Scaled to fill the output exactly (the aspect ratio may change): what getiaction's
    /// and LeRobot's image steps do, and the default.
    #[default]
    Stretch,
    /// Scaled to fit inside, keeping the aspect ratio, centred on black: openpi's
    /// `resize_with_pad` geometry.
    Pad,
}

impl ImagePreprocessor {
    /// A preprocessor producing `3 x out_h x out_w` tensors.
    ///
    /// A zero or unaddressable size is reported by every conversion call
    /// ([`ObservationError::InvalidOutputSize`]), not here.
    pub fn new(out_h: usize, out_w: usize) -> Self {
        ImagePreprocessor {
            out_h,
            out_w,
            max_decoded_w: DEFAULT_MAX_DECODED_DIM,
            max_decoded_h: DEFAULT_MAX_DECODED_DIM,
            plan: ResizePlan::default(),
            rows: RowCache::default(),
            decoded: Vec::new(),
            fit: ImageFit::Stretch,
            letterbox: Vec::new(),
            antialias: None,
        }
    }

    /// Resizes with PIL's antialiased bilinear filter (what openpi's client does, and what
    /// pi0 / pi0.5 were trained on) instead of PyTorch's `F.interpolate(bilinear,
    /// antialias=False)` (getiaction's and LeRobot's). The two agree when enlarging; when
    /// shrinking, the antialiased filter averages every source pixel under an output pixel.
    #[must_use]
    pub fn with_antialias(mut self, on: bool) -> Self {
        self.antialias = on.then(AntialiasPlan::default);
        self
    }

    /// Sets how an image of another aspect ratio is fitted (default [`ImageFit::Stretch`]).
    #[must_use]
    pub fn with_fit(mut self, fit: ImageFit) -> Self {
        self.fit = fit;
        self
    }

    /// Sets the largest compressed-image dimensions accepted (checked from the header, before
    /// allocating). Default [`DEFAULT_MAX_DECODED_DIM`] each.
    #[must_use]
    pub fn with_max_decoded_size(mut self, max_width: u32, max_height: u32) -> Self {
        self.max_decoded_w = max_width;
        self.max_decoded_h = max_height;
        self
    }

    /// Output height.
    pub fn out_h(&self) -> usize {
        self.out_h
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        self.out_w
    }

    /// `3 * out_h * out_w`: the length `out` must have, or the size error.
    pub fn output_len(&self) -> Result<usize, ObservationError> {
        let invalid = ObservationError::InvalidOutputSize {
            out_h: self.out_h,
            out_w: self.out_w,
        };
        if self.out_h == 0 || self.out_w == 0 {
            return Err(invalid);
        }
        self.out_h
            .checked_mul(self.out_w)
            .and_then(|n| n.checked_mul(3))
            // Keep byte sizes addressable too.
            .filter(|n| {
                n.checked_mul(std::mem::size_of::<f32>())
                    .is_some_and(|b| b <= isize::MAX as usize)
            })
            .ok_or(invalid)
    }

    /// Converts a raw image to RGB, resizes it, scales to `[0, 1]` and writes CHW into `out`
    /// (length `3 * out_h * out_w`). `mono8` is replicated to three channels; alpha is dropped.
    ///
    /// Errors: bad dimensions, step or data length (see [`RawImage::validate`]), or `out` of
    /// the wrong length. `out` is left untouched on error.
    pub fn raw_into(&mut self, img: &RawImage, out: &mut [f32]) -> Result<(), ObservationError> {
        let expected = self.output_len()?;
        if out.len() != expected {
            return Err(ObservationError::OutputLength {
                what: "image (3 x H x W)",
                expected,
                actual: out.len(),
            });
        }
        let layout = img.layout()?;
        let (rw, rh, pad_w, pad_h) = self.fit_rect(layout.width, layout.height);
        if (rw, rh) == (self.out_w, self.out_h) {
            self.resize_to(img, &layout, rw, rh, out);
            return Ok(());
        }
        // Letterbox: resize into the scratch, then centre it on black.
        let mut scratch = std::mem::take(&mut self.letterbox);
        scratch.clear();
        scratch.resize(3 * rw * rh, 0.0);
        self.resize_to(img, &layout, rw, rh, &mut scratch);
        out.fill(0.0);
        let plane = self.out_w * self.out_h;
        for c in 0..3 {
            for y in 0..rh {
                let src = &scratch[c * rw * rh + y * rw..][..rw];
                out[c * plane + (y + pad_h) * self.out_w + pad_w..][..rw].copy_from_slice(src);
            }
        }
        self.letterbox = scratch;
        Ok(())
    }

    /// The rectangle the image is resized into: `(width, height, left, top)`. With
    /// [`ImageFit::Pad`] the geometry is openpi's `resize_with_pad`: `ratio = max(in_w / out_w,
    /// in_h / out_h)`, the resized size `int(in / ratio)` (at least 1), centred with
    /// `int((out - resized) / 2)` of padding before it.
    fn fit_rect(&self, in_w: usize, in_h: usize) -> (usize, usize, usize, usize) {
        if self.fit == ImageFit::Stretch || (in_w == self.out_w && in_h == self.out_h) {
            return (self.out_w, self.out_h, 0, 0);
        }
        let ratio = (in_w as f64 / self.out_w as f64).max(in_h as f64 / self.out_h as f64);
        let rw = ((in_w as f64 / ratio) as usize).clamp(1, self.out_w);
        let rh = ((in_h as f64 / ratio) as usize).clamp(1, self.out_h);
        (rw, rh, (self.out_w - rw) / 2, (self.out_h - rh) / 2)
    }

    /// Resizes into `out` (`3 x h x w`) with the chosen filter.
    fn resize_to(&mut self, img: &RawImage, layout: &Layout, w: usize, h: usize, out: &mut [f32]) {
        if let Some(aa) = self.antialias.as_mut() {
            aa.resize_into(img, layout, w, h, out);
        } else {
            self.plan.prepare(layout.width, layout.height, w, h);
            Self::resize(&self.plan, &mut self.rows, img, layout.step, out);
        }
    }

    fn resize(
        plan: &ResizePlan,
        rows: &mut RowCache,
        img: &RawImage,
        step: usize,
        out: &mut [f32],
    ) {
        let data = img.data;
        match img.encoding {
            ImageEncoding::Rgb8 => resize::resize_into::<resize::Rgb>(plan, rows, data, step, out),
            ImageEncoding::Bgr8 => resize::resize_into::<resize::Bgr>(plan, rows, data, step, out),
            ImageEncoding::Rgba8 => {
                resize::resize_into::<resize::Rgba>(plan, rows, data, step, out)
            }
            ImageEncoding::Bgra8 => {
                resize::resize_into::<resize::Bgra>(plan, rows, data, step, out)
            }
            ImageEncoding::Mono8 => {
                resize::resize_into::<resize::Mono>(plan, rows, data, step, out)
            }
        }
    }

    /// [`raw_into`](Self::raw_into) into a new `[3, out_h, out_w]` array.
    pub fn raw(&mut self, img: &RawImage) -> Result<Array3<f32>, ObservationError> {
        let mut out = self.zeroed_output()?;
        self.raw_into(img, out.as_slice_mut().unwrap_or_default())?;
        Ok(out)
    }

    /// Decodes a `sensor_msgs/CompressedImage` (JPEG or PNG; `format` as ROS writes it, see
    /// [`CompressedFormat::from_ros_format`]) and converts it like
    /// [`raw_into`](Self::raw_into).
    ///
    /// The codec's own colour handling applies: a standard JPEG/PNG decodes to true RGB
    /// whatever the `"...compressed bgr8"` suffix says (image_transport converts to BGR only
    /// because OpenCV's encoder expects it). EXIF orientation is ignored.
    pub fn compressed_into(
        &mut self,
        format: &str,
        data: &[u8],
        out: &mut [f32],
    ) -> Result<(), ObservationError> {
        let expected = self.output_len()?;
        if out.len() != expected {
            return Err(ObservationError::OutputLength {
                what: "image (3 x H x W)",
                expected,
                actual: out.len(),
            });
        }
        let fmt = CompressedFormat::from_ros_format(format, data)?;
        // Take the buffer out of `self` so `raw_into` can borrow `self` mutably.
        let mut decoded = std::mem::take(&mut self.decoded);
        let result = decode_into(
            fmt,
            data,
            self.max_decoded_w,
            self.max_decoded_h,
            &mut decoded,
        )
        .and_then(|(width, height, encoding)| {
            let step = width.checked_mul(encoding.channels() as u32).ok_or(
                ObservationError::SizeOverflow {
                    width,
                    height,
                    step: u32::MAX,
                },
            )?;
            let img = RawImage {
                width,
                height,
                step,
                encoding,
                data: &decoded,
            };
            self.raw_into(&img, out)
        });
        self.decoded = decoded;
        result
    }

    /// [`compressed_into`](Self::compressed_into) into a new `[3, out_h, out_w]` array.
    pub fn compressed(
        &mut self,
        format: &str,
        data: &[u8],
    ) -> Result<Array3<f32>, ObservationError> {
        let mut out = self.zeroed_output()?;
        self.compressed_into(format, data, out.as_slice_mut().unwrap_or_default())?;
        Ok(out)
    }

    /// A zeroed `[3, out_h, out_w]` array, from `vec![0.0; n]` (a zeroed allocation, where
    /// `Array3::zeros` fills element by element).
    fn zeroed_output(&self) -> Result<Array3<f32>, ObservationError> {
        let n = self.output_len()?;
        Array3::from_shape_vec((3, self.out_h, self.out_w), vec![0.0; n]).map_err(|_| {
            ObservationError::InvalidOutputSize {
                out_h: self.out_h,
                out_w: self.out_w,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::codecs::jpeg::JpegEncoder;
    use ::image::codecs::png::PngEncoder;
    use ::image::{ExtendedColorType, ImageEncoder};

    /// Deterministic pseudo-random bytes (xorshift), no extra dev-dependency.
    fn noise(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    fn raw(
        width: u32,
        height: u32,
        step: u32,
        encoding: ImageEncoding,
        data: &[u8],
    ) -> RawImage<'_> {
        RawImage {
            width,
            height,
            step,
            encoding,
            data,
        }
    }

    /// Output of a 2x1 image at identity size, as [[r0, r1], [g0, g1], [b0, b1]] * 255.
    fn identity_2x1(encoding: ImageEncoding, data: &[u8]) -> Vec<f32> {
        let step = 2 * encoding.channels() as u32;
        let out = ImagePreprocessor::new(1, 2)
            .raw(&raw(2, 1, step, encoding, data))
            .unwrap();
        out.iter().map(|v| v * 255.0).collect()
    }

    #[test]
    fn each_encoding_gives_rgb_order() {
        let want = vec![10.0, 40.0, 20.0, 50.0, 30.0, 60.0]; // R plane, G plane, B plane
        assert_eq!(
            identity_2x1(ImageEncoding::Rgb8, &[10, 20, 30, 40, 50, 60]),
            want
        );
        assert_eq!(
            identity_2x1(ImageEncoding::Bgr8, &[30, 20, 10, 60, 50, 40]),
            want
        );
        assert_eq!(
            identity_2x1(ImageEncoding::Rgba8, &[10, 20, 30, 99, 40, 50, 60, 7]),
            want
        );
        assert_eq!(
            identity_2x1(ImageEncoding::Bgra8, &[30, 20, 10, 99, 60, 50, 40, 7]),
            want
        );
        assert_eq!(
            identity_2x1(ImageEncoding::Mono8, &[10, 40]),
            vec![10.0, 40.0, 10.0, 40.0, 10.0, 40.0]
        );
    }

    #[test]
    fn identity_size_is_exact_copy() {
        let (w, h) = (5usize, 4usize);
        let data = noise(w * h * 3, 7);
        let out = ImagePreprocessor::new(h, w)
            .raw(&raw(
                w as u32,
                h as u32,
                3 * w as u32,
                ImageEncoding::Rgb8,
                &data,
            ))
            .unwrap();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    assert_eq!(out[[c, y, x]], data[(y * w + x) * 3 + c] as f32 / 255.0);
                }
            }
        }
    }

    /// `raw` (into a new array) and `raw_into` give identical bits at the output size.
    #[test]
    fn raw_and_raw_into_agree_at_the_output_size() {
        for enc in [
            ImageEncoding::Rgb8,
            ImageEncoding::Bgr8,
            ImageEncoding::Rgba8,
            ImageEncoding::Bgra8,
            ImageEncoding::Mono8,
        ] {
            let (w, h) = (6usize, 5usize);
            let step = w * enc.channels() + 2;
            let data = noise(step * h, 11);
            let img = raw(w as u32, h as u32, step as u32, enc, &data);
            let mut pre = ImagePreprocessor::new(h, w);
            let a = pre.raw(&img).unwrap();
            let mut b = vec![f32::NAN; 3 * w * h];
            pre.raw_into(&img, &mut b).unwrap();
            let bits =
                |v: &mut dyn Iterator<Item = &f32>| v.map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&mut a.iter()), bits(&mut b.iter()), "{enc:?}");
            assert_eq!(a.shape(), &[3, h, w]);
        }
    }

    #[test]
    fn step_padding_is_skipped() {
        // 2x2 rgb8, step 8: two padding bytes (255) after each 6-byte row.
        #[rustfmt::skip]
        let data = [
            1, 2, 3,  4, 5, 6,  255, 255,
            7, 8, 9, 10, 11, 12, 255, 255,
        ];
        let out = ImagePreprocessor::new(2, 2)
            .raw(&raw(2, 2, 8, ImageEncoding::Rgb8, &data))
            .unwrap();
        let got: Vec<f32> = out.iter().map(|v| v * 255.0).collect();
        assert_eq!(
            got,
            vec![1.0, 4.0, 7.0, 10.0, 2.0, 5.0, 8.0, 11.0, 3.0, 6.0, 9.0, 12.0]
        );
        // Padding also on the last row is required: data is step * height.
        let e = ImagePreprocessor::new(2, 2)
            .raw(&raw(2, 2, 8, ImageEncoding::Rgb8, &data[..14]))
            .unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::DataLength {
                    expected: 16,
                    actual: 14,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_problem() {
        let mut p = ImagePreprocessor::new(4, 4);
        let mut out = vec![0.0; 48];
        let data = [0u8; 64];

        let e = p
            .raw_into(&raw(4, 4, 12, ImageEncoding::Rgb8, &data[..47]), &mut out)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("47 bytes") && msg.contains("48 bytes") && msg.contains("4x4 rgb8"),
            "{msg}"
        );

        let e = p
            .raw_into(&raw(4, 4, 3, ImageEncoding::Bgra8, &data[..12]), &mut out)
            .unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::StepTooSmall {
                    step: 3,
                    min_step: 16,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("bgra8"), "{e}");

        let e = p
            .raw_into(&raw(0, 0, 0, ImageEncoding::Mono8, &[]), &mut out)
            .unwrap_err();
        assert!(matches!(e, ObservationError::ZeroImageSize { .. }), "{e:?}");
        assert!(e.to_string().contains("zero size"), "{e}");

        let mut short = vec![0.0; 47];
        let e = p
            .raw_into(&raw(4, 4, 4, ImageEncoding::Mono8, &data[..16]), &mut short)
            .unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::OutputLength {
                    expected: 48,
                    actual: 47,
                    ..
                }
            ),
            "{e:?}"
        );

        for (h, w) in [
            (0, 4),
            (4, 0),
            (usize::MAX, 2),
            (usize::MAX / 4, usize::MAX / 4),
        ] {
            let mut p = ImagePreprocessor::new(h, w);
            let e = p
                .raw(&raw(4, 4, 4, ImageEncoding::Mono8, &data[..16]))
                .unwrap_err();
            assert!(
                matches!(e, ObservationError::InvalidOutputSize { .. }),
                "{h}x{w}: {e:?}"
            );
            let e = p
                .raw_into(&raw(4, 4, 4, ImageEncoding::Mono8, &data[..16]), &mut out)
                .unwrap_err();
            assert!(
                matches!(e, ObservationError::InvalidOutputSize { .. }),
                "{h}x{w}: {e:?}"
            );
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let data = vec![77u8; 640 * 480 * 3];
        let mut p = ImagePreprocessor::new(224, 224);
        for enc in [ImageEncoding::Rgb8, ImageEncoding::Bgr8] {
            let out = p.raw(&raw(640, 480, 1920, enc, &data)).unwrap();
            for &v in out.iter() {
                assert!((v - 77.0 / 255.0).abs() < 1e-6, "{v}");
            }
        }
        // Upscale too.
        let out = ImagePreprocessor::new(50, 70)
            .raw(&raw(3, 2, 9, ImageEncoding::Rgb8, &data[..18]))
            .unwrap();
        assert!(out.iter().all(|&v| (v - 77.0 / 255.0).abs() < 1e-6));
    }

    #[test]
    fn bilinear_2x2_to_3x3_matches_torch_half_pixel() {
        // torch: src = max((d + 0.5) * 2/3 - 0.5, 0) = 0, 1/2, 7/6 for d = 0, 1, 2.
        // d = 0 -> pixel 0; d = 1 -> halfway; d = 2 -> i0 = 1 is the last index, so
        // i1 = i0 and the sample is pixel 1 whatever the weight. Hence:
        // [[a, (a+b)/2, b], [(a+c)/2, (a+b+c+d)/4, (b+d)/2], [c, (c+d)/2, d]].
        let (a, b, c, d) = (0.0, 60.0, 120.0, 240.0);
        #[rustfmt::skip]
        let want = [
            a,             (a + b) / 2.0,             b,
            (a + c) / 2.0, (a + b + c + d) / 4.0,     (b + d) / 2.0,
            c,             (c + d) / 2.0,             d,
        ];
        let out = ImagePreprocessor::new(3, 3)
            .raw(&raw(
                2,
                2,
                2,
                ImageEncoding::Mono8,
                &[a as u8, b as u8, c as u8, d as u8],
            ))
            .unwrap();
        for ch in 0..3 {
            for (i, w) in want.iter().enumerate() {
                let got = out[[ch, i / 3, i % 3]];
                assert!(
                    (got - *w as f32 / 255.0).abs() < 1e-6,
                    "[{ch},{i}] {got} vs {w}/255"
                );
            }
        }
    }

    #[test]
    fn bilinear_4_to_3_downscale_matches_torch() {
        // scale 4/3: src = 1/6, 3/2, 17/6 -> 5/6 p0 + 1/6 p1, (p1 + p2)/2, 1/6 p2 + 5/6 p3.
        let p = [0.0f32, 60.0, 120.0, 240.0];
        let want = [
            p[0] * 5.0 / 6.0 + p[1] / 6.0,
            (p[1] + p[2]) / 2.0,
            p[2] / 6.0 + p[3] * 5.0 / 6.0,
        ];
        let out = ImagePreprocessor::new(1, 3)
            .raw(&raw(4, 1, 4, ImageEncoding::Mono8, &[0, 60, 120, 240]))
            .unwrap();
        for (x, w) in want.iter().enumerate() {
            assert!(
                (out[[0, 0, x]] - w / 255.0).abs() < 1e-6,
                "{x}: {} vs {w}",
                out[[0, 0, x]] * 255.0
            );
        }
    }

    /// Direct 2D bilinear in f64 with PyTorch's formula, per output pixel.
    /// `order` gives the byte offset of R, G, B within a pixel.
    fn reference(img: &RawImage, order: [usize; 3], oh: usize, ow: usize) -> Vec<f64> {
        let (w, h, step) = (img.width as usize, img.height as usize, img.step as usize);
        let (data, ch) = (img.data, img.encoding.channels());
        let taps = |inn: usize, out: usize, d: usize| {
            let src = ((d as f64 + 0.5) * inn as f64 / out as f64 - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(inn - 1);
            let i1 = (i0 + 1).min(inn - 1);
            let l = (src - i0 as f64).clamp(0.0, 1.0);
            (i0, i1, 1.0 - l, l)
        };
        let px = |x: usize, y: usize, c: usize| data[y * step + x * ch + order[c]] as f64 / 255.0;
        let mut out = vec![0.0; 3 * oh * ow];
        for c in 0..3 {
            for oy in 0..oh {
                let (y0, y1, wy0, wy1) = taps(h, oh, oy);
                for ox in 0..ow {
                    let (x0, x1, wx0, wx1) = taps(w, ow, ox);
                    out[(c * oh + oy) * ow + ox] = wy0
                        * (wx0 * px(x0, y0, c) + wx1 * px(x1, y0, c))
                        + wy1 * (wx0 * px(x0, y1, c) + wx1 * px(x1, y1, c));
                }
            }
        }
        out
    }

    #[test]
    fn matches_reference_for_many_sizes_and_encodings() {
        let encs = [
            (ImageEncoding::Rgb8, [0, 1, 2]),
            (ImageEncoding::Bgr8, [2, 1, 0]),
            (ImageEncoding::Rgba8, [0, 1, 2]),
            (ImageEncoding::Bgra8, [2, 1, 0]),
            (ImageEncoding::Mono8, [0, 0, 0]),
        ];
        // One preprocessor per output size, reused across input sizes (cache invalidation).
        for (oh, ow) in [(7, 5), (1, 1), (16, 3)] {
            let mut p = ImagePreprocessor::new(oh, ow);
            for (w, h, pad) in [
                (1, 1, 0),
                (3, 2, 1),
                (7, 5, 0),
                (13, 29, 3),
                (2, 40, 2),
                (40, 2, 0),
            ] {
                for (k, (enc, order)) in encs.iter().enumerate() {
                    let ch = enc.channels();
                    let step = w * ch + pad;
                    let data = noise(step * h, (w * 31 + h * 7 + k) as u64 + 1);
                    let img = raw(w as u32, h as u32, step as u32, *enc, &data);
                    let got = p.raw(&img).unwrap();
                    let want = reference(&img, *order, oh, ow);
                    for (g, r) in got.iter().zip(&want) {
                        assert!(
                            (*g as f64 - r).abs() < 1e-5,
                            "{enc} {w}x{h}->{ow}x{oh}: {g} vs {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn mono8_is_replicated_after_resize() {
        let data = noise(9 * 6, 3);
        let out = ImagePreprocessor::new(4, 5)
            .raw(&raw(9, 6, 9, ImageEncoding::Mono8, &data))
            .unwrap();
        for y in 0..4 {
            for x in 0..5 {
                assert_eq!(out[[0, y, x]], out[[1, y, x]]);
                assert_eq!(out[[0, y, x]], out[[2, y, x]]);
            }
        }
    }

    /// A smooth colour test card, `w x h` rgb8.
    fn card(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                v.extend([(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 128]);
            }
        }
        v
    }

    fn jpeg(data: &[u8], w: u32, h: u32, color: ExtendedColorType) -> Vec<u8> {
        let mut buf = Vec::new();
        JpegEncoder::new_with_quality(&mut buf, 95)
            .write_image(data, w, h, color)
            .unwrap();
        buf
    }

    fn png(data: &[u8], w: u32, h: u32, color: ExtendedColorType) -> Vec<u8> {
        let mut buf = Vec::new();
        PngEncoder::new(&mut buf)
            .write_image(data, w, h, color)
            .unwrap();
        buf
    }

    #[test]
    fn jpeg_decodes_to_rgb_within_tolerance() {
        // Tolerance: JPEG at quality 95 with 4:2:0 chroma on a smooth card stays within
        // 8/255 per sample; the mean error is well under 2/255.
        let (w, h) = (64usize, 48usize);
        let src = card(w, h);
        let jpg = jpeg(&src, w as u32, h as u32, ExtendedColorType::Rgb8);
        let mut p = ImagePreprocessor::new(h, w);
        for format in ["jpeg", "rgb8; jpeg compressed bgr8", ""] {
            let out = p.compressed(format, &jpg).unwrap();
            let mut max = 0.0f32;
            let mut sum = 0.0f32;
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        let e = (out[[c, y, x]] - src[(y * w + x) * 3 + c] as f32 / 255.0).abs();
                        max = max.max(e);
                        sum += e;
                    }
                }
            }
            let mean = sum / (w * h * 3) as f32;
            assert!(
                max <= 8.0 / 255.0 && mean < 2.0 / 255.0,
                "{format}: max {max}, mean {mean}"
            );
        }
        // Colour order: a red image decodes red.
        let red: Vec<u8> = [255u8, 0, 0].repeat(16 * 16);
        let out = ImagePreprocessor::new(16, 16)
            .compressed("jpeg", &jpeg(&red, 16, 16, ExtendedColorType::Rgb8))
            .unwrap();
        assert!(out
            .index_axis(ndarray::Axis(0), 0)
            .iter()
            .all(|&v| v > 0.95));
        assert!(out
            .index_axis(ndarray::Axis(0), 2)
            .iter()
            .all(|&v| v < 0.05));
        // Grey JPEG.
        let grey = jpeg(&[100u8; 64], 8, 8, ExtendedColorType::L8);
        let out = ImagePreprocessor::new(4, 4)
            .compressed("mono8; jpeg compressed mono8", &grey)
            .unwrap();
        assert!(out.iter().all(|&v| (v - 100.0 / 255.0).abs() < 2.0 / 255.0));
    }

    #[test]
    fn png_decodes_exactly() {
        let (w, h) = (7usize, 5usize);
        let rgb = noise(w * h * 3, 11);
        let mut p = ImagePreprocessor::new(h, w);
        let want = p
            .raw(&raw(
                w as u32,
                h as u32,
                3 * w as u32,
                ImageEncoding::Rgb8,
                &rgb,
            ))
            .unwrap();
        let got = p
            .compressed(
                "bgr8; png compressed bgr8",
                &png(&rgb, w as u32, h as u32, ExtendedColorType::Rgb8),
            )
            .unwrap();
        assert_eq!(got, want);

        let rgba = noise(w * h * 4, 12);
        let want = p
            .raw(&raw(
                w as u32,
                h as u32,
                4 * w as u32,
                ImageEncoding::Rgba8,
                &rgba,
            ))
            .unwrap();
        let got = p
            .compressed(
                "png",
                &png(&rgba, w as u32, h as u32, ExtendedColorType::Rgba8),
            )
            .unwrap();
        assert_eq!(got, want);

        let grey = noise(w * h, 13);
        let want = p
            .raw(&raw(
                w as u32,
                h as u32,
                w as u32,
                ImageEncoding::Mono8,
                &grey,
            ))
            .unwrap();
        let got = p
            .compressed(
                "png",
                &png(&grey, w as u32, h as u32, ExtendedColorType::L8),
            )
            .unwrap();
        assert_eq!(got, want);

        // 16-bit PNG goes through the conversion path: v16 = v8 * 257 comes back as v8.
        let rgb16: Vec<u8> = rgb
            .iter()
            .flat_map(|&v| (v as u16 * 257).to_ne_bytes())
            .collect();
        let got = p
            .compressed(
                "png",
                &png(&rgb16, w as u32, h as u32, ExtendedColorType::Rgb16),
            )
            .unwrap();
        let want = p
            .raw(&raw(
                w as u32,
                h as u32,
                3 * w as u32,
                ImageEncoding::Rgb8,
                &rgb,
            ))
            .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn corrupted_compressed_data_is_an_error() {
        let (w, h) = (32u32, 24u32);
        let jpg = jpeg(&card(w as usize, h as usize), w, h, ExtendedColorType::Rgb8);
        let mut p = ImagePreprocessor::new(8, 8);
        let mut out = vec![0.0; 3 * 8 * 8];

        // Valid SOI, then garbage, then EOI.
        let mut garbage = vec![0xFF, 0xD8, 0xFF];
        garbage.extend(noise(500, 5));
        garbage.extend([0xFF, 0xD9]);
        let e = p.compressed_into("jpeg", &garbage, &mut out).unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::Decode {
                    format: CompressedFormat::Jpeg,
                    len: 505,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("jpeg"), "{e}");
        assert!(std::error::Error::source(&e).is_some());

        // Valid headers and EOI, scrambled header bytes in between.
        let mut bad = jpg.clone();
        bad[2..60].copy_from_slice(&noise(58, 6));
        let e = p.compressed_into("jpeg", &bad, &mut out).unwrap_err();
        assert!(matches!(e, ObservationError::Decode { .. }), "{e:?}");

        // Truncated frames (the decoder alone would grey-fill them): cut in the headers, in
        // the scan, just before the end marker.
        for n in [40, jpg.len() / 2, jpg.len() - 1] {
            let e = p.compressed_into("jpeg", &jpg[..n], &mut out).unwrap_err();
            assert!(
                matches!(e, ObservationError::TruncatedJpeg { len } if len == n),
                "{n}: {e:?}"
            );
            assert!(e.to_string().contains("FF D9"), "{e}");
        }
        // Zero padding after the end marker is fine.
        let mut padded = jpg.clone();
        padded.extend([0u8; 16]);
        p.compressed_into("jpeg", &padded, &mut out).unwrap();

        // Not a JPEG at all / empty.
        assert!(p.compressed_into("jpeg", b"hello", &mut out).is_err());
        assert!(p.compressed_into("jpeg", &[], &mut out).is_err());
        assert!(p.compressed_into("png", &jpg, &mut out).is_err());

        // Truncated PNG.
        let png_data = png(&card(32, 24), 32, 24, ExtendedColorType::Rgb8);
        let e = p
            .compressed_into("png", &png_data[..png_data.len() / 2], &mut out)
            .unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::Decode {
                    format: CompressedFormat::Png,
                    ..
                }
            ),
            "{e:?}"
        );

        // The preprocessor still works afterwards.
        p.compressed_into("jpeg", &jpg, &mut out).unwrap();
    }

    #[test]
    fn oversized_compressed_images_are_rejected_before_decoding() {
        let jpg = jpeg(&card(64, 48), 64, 48, ExtendedColorType::Rgb8);
        let mut p = ImagePreprocessor::new(8, 8).with_max_decoded_size(32, 32);
        let e = p.compressed("jpeg", &jpg).unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::DecodedTooLarge {
                    width: 64,
                    height: 48,
                    max_width: 32,
                    max_height: 32,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("64x48"), "{e}");

        // A PNG header that claims 100000 x 100000 pixels, and nothing else.
        let mut fake = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        fake.extend(100_000u32.to_be_bytes());
        fake.extend(100_000u32.to_be_bytes());
        fake.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
        let e = ImagePreprocessor::new(8, 8)
            .compressed("png", &fake)
            .unwrap_err();
        assert!(
            matches!(e, ObservationError::DecodedTooLarge { width: 100_000, .. }),
            "{e:?}"
        );
    }

    /// A header within the decode limit but claiming more pixels than its bytes can hold is
    /// refused before the pixel buffer is sized; real images at the edge still decode.
    #[test]
    fn implausible_compressed_sizes_are_rejected_before_allocating() {
        // A valid PNG header (8192 x 8192 RGB, inside the default limit) and an empty IDAT.
        let mut fake = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        fake.extend(8192u32.to_be_bytes());
        fake.extend(8192u32.to_be_bytes());
        fake.extend([8, 2, 0, 0, 0]);
        fake.extend(crc32(&fake[12..]).to_be_bytes());
        fake.extend(b"\x00\x00\x00\x00IDAT\x35\xaf\x06\x1e\x00\x00\x00\x00IEND\xae\x42\x60\x82");
        let e = ImagePreprocessor::new(8, 8)
            .compressed("png", &fake)
            .unwrap_err();
        assert!(
            matches!(
                e,
                ObservationError::ImplausibleSize {
                    format: CompressedFormat::Png,
                    width: 8192,
                    height: 8192,
                    decoded: 201_326_592,
                    ..
                }
            ),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains("8192x8192") && m.contains("33024:1"), "{m}");

        // A flat 1024 x 1024 PNG (over 100:1) still decodes.
        let flat = vec![7u8; 1024 * 1024 * 3];
        let data = png(&flat, 1024, 1024, ExtendedColorType::Rgb8);
        assert!(data.len() * 100 < flat.len(), "{} bytes", data.len());
        let out = ImagePreprocessor::new(4, 4)
            .compressed("png", &data)
            .unwrap();
        assert!(out.iter().all(|v| *v == 7.0 / 255.0));
        // So does a flat JPEG.
        let data = jpeg(&flat, 1024, 1024, ExtendedColorType::Rgb8);
        ImagePreprocessor::new(4, 4)
            .compressed("jpeg", &data)
            .unwrap();
    }

    /// A malformed JPEG on which the decoder panics (`zune-jpeg` 0.5.15, AVX2 IDCT; found by
    /// `tools/fuzz.sh`) is a decode error like any bad frame, and the preprocessor keeps
    /// working.
    #[test]
    fn a_panicking_jpeg_decoder_is_a_decode_error() {
        let data = include_bytes!("../../tests/fixtures/cases/fuzz/jpeg-decoder-panic.jpg");
        let mut p = ImagePreprocessor::new(12, 16);
        match p.compressed("jpeg", data) {
            Err(e @ ObservationError::Decode { .. }) => {
                let m = e.to_string();
                assert!(
                    m.contains("jpeg") && m.contains(&data.len().to_string()),
                    "{m}"
                );
            }
            Err(other) => panic!("{other:?}"),
            // Only the AVX2 path panics; elsewhere the frame may decode.
            Ok(_) => {
                #[cfg(target_arch = "x86_64")]
                assert!(!std::arch::is_x86_feature_detected!("avx2"))
            }
        }
        let good = jpeg(&card(16, 12), 16, 12, ExtendedColorType::Rgb8);
        p.compressed("jpeg", &good).unwrap();
    }

    /// CRC-32 (PNG chunk checksums).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for b in bytes {
            c ^= u32::from(*b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn unsupported_compressed_format_is_an_error() {
        let mut p = ImagePreprocessor::new(2, 2);
        let e = p
            .compressed("16UC1; compressedDepth png", &[0; 10])
            .unwrap_err();
        assert!(e.to_string().contains("compressedDepth"), "{e}");
        let e = p.compressed("", b"GIF89a....").unwrap_err();
        assert!(
            matches!(e, ObservationError::UnsupportedCompressedFormat { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn arbitrary_inputs_never_panic() {
        let mut p = ImagePreprocessor::new(5, 6);
        let mut out = vec![0.0; 90];
        let bytes = noise(4096, 99);
        let dims = [0u32, 1, 2, 3, 7, 64, 1000, u32::MAX / 3, u32::MAX];
        for (i, &w) in dims.iter().enumerate() {
            for &h in &dims {
                for &step in &dims {
                    for enc in ImageEncoding::ALL {
                        let len = (i * 977 + h as usize % 4096) % 4096;
                        let _ = p.raw_into(&raw(w, h, step, enc, &bytes[..len]), &mut out);
                    }
                }
            }
        }
        // Random bytes behind valid magic numbers.
        let mut jpg = vec![0xFF, 0xD8, 0xFF, 0xC0];
        let mut pngd = b"\x89PNG\r\n\x1a\n".to_vec();
        for n in [0, 1, 17, 300, 4000] {
            jpg.truncate(4);
            jpg.extend(&bytes[..n]);
            pngd.truncate(8);
            pngd.extend(&bytes[..n]);
            jpg.extend([0xFF, 0xD9]);
            let _ = p.compressed_into("jpeg", &jpg, &mut out);
            assert!(p.compressed_into("png", &pngd, &mut out).is_err());
        }
    }
}
