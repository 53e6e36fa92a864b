//! The antialiased bilinear resize of PIL (`Image.resize(..., BILINEAR)`), which openpi's client
//! uses in `resize_with_pad`: a triangle filter widened by the scale when shrinking, so every
//! source pixel under an output pixel counts (two taps when enlarging, as plain bilinear).
//!
//! Per axis, output sample `d` is centred at `c = (d + 0.5) * in / out`; with
//! `s = max(in / out, 1)` it takes the source samples `j` in `[c - s, c + s)` with weights
//! `max(0, 1 - |(j + 0.5 - c) / s|)`, normalised to sum 1. The horizontal pass runs first and
//! is rounded to whole levels (PIL keeps an 8-bit intermediate image), then the vertical pass;
//! results are `level / 255`. PIL computes in 22-bit fixed point: results agree within one
//! level (a test checks against PIL through openpi_client).

use super::encoding::Layout;
use super::{ImageEncoding, RawImage};

/// One output sample: the first source index and the weights from there.
#[derive(Debug, Clone, Default, PartialEq)]
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

fn taps(in_len: usize, out_len: usize) -> Vec<Taps> {
    let scale = in_len as f64 / out_len as f64;
    let support = scale.max(1.0);
    (0..out_len)
        .map(|d| {
            let centre = (d as f64 + 0.5) * scale;
            let lo = ((centre - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((centre + support + 0.5).floor() as usize)
                .min(in_len)
                .max(lo + 1);
            let mut weights: Vec<f64> = (lo..hi)
                .map(|j| (1.0 - ((j as f64 + 0.5 - centre) / support).abs()).max(0.0))
                .collect();
            let sum: f64 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            } else {
                weights.iter_mut().for_each(|w| *w = 0.0);
                weights[0] = 1.0;
            }
            Taps {
                start: lo,
                weights: weights.into_iter().map(|w| w as f32).collect(),
            }
        })
        .collect()
}

/// The R, G, B byte offsets and bytes per pixel of an encoding.
fn offsets(e: ImageEncoding) -> ([usize; 3], usize) {
    match e {
        ImageEncoding::Rgb8 => ([0, 1, 2], 3),
        ImageEncoding::Bgr8 => ([2, 1, 0], 3),
        ImageEncoding::Rgba8 => ([0, 1, 2], 4),
        ImageEncoding::Bgra8 => ([2, 1, 0], 4),
        ImageEncoding::Mono8 => ([0, 0, 0], 1),
    }
}

/// Resize tables and the intermediate rows, kept between frames of one camera.
#[derive(Debug, Default)]
pub(crate) struct AntialiasPlan {
    key: (usize, usize, usize, usize),
    xs: Vec<Taps>,
    ys: Vec<Taps>,
    /// The horizontal pass: `in_h` rows x `out_w` x 3 levels (planar per row).
    rows: Vec<f32>,
}

impl AntialiasPlan {
    /// Resizes `img` (already validated: `layout`) to `out_w x out_h`, writing planar RGB
    /// (`3 * out_h * out_w`, values in `[0, 1]`) into `out`.
    pub(crate) fn resize_into(
        &mut self,
        img: &RawImage,
        layout: &Layout,
        out_w: usize,
        out_h: usize,
        out: &mut [f32],
    ) {
        let (in_w, in_h) = (layout.width, layout.height);
        let key = (in_w, in_h, out_w, out_h);
        if self.key != key || self.xs.len() != out_w {
            self.xs = taps(in_w, out_w);
            self.ys = taps(in_h, out_h);
            self.key = key;
        }
        let (off, ch) = offsets(img.encoding);
        self.rows.clear();
        self.rows.resize(in_h * 3 * out_w, 0.0);
        for y in 0..in_h {
            let src = &img.data[y * layout.step..][..in_w * ch];
            let dst = &mut self.rows[y * 3 * out_w..][..3 * out_w];
            for (x, t) in self.xs.iter().enumerate() {
                let mut acc = [0.0f32; 3];
                for (k, w) in t.weights.iter().enumerate() {
                    let p = &src[(t.start + k) * ch..][..ch];
                    for c in 0..3 {
                        acc[c] += p[off[c]] as f32 * w;
                    }
                }
                for c in 0..3 {
                    // PIL's 8-bit intermediate image.
                    dst[c * out_w + x] = acc[c].round().clamp(0.0, 255.0);
                }
            }
        }
        let plane = out_w * out_h;
        for (y, t) in self.ys.iter().enumerate() {
            for c in 0..3 {
                let o = &mut out[c * plane + y * out_w..][..out_w];
                o.fill(0.0);
                for (k, w) in t.weights.iter().enumerate() {
                    let row = &self.rows[(t.start + k) * 3 * out_w + c * out_w..][..out_w];
                    for (o, v) in o.iter_mut().zip(row) {
                        *o += v * w;
                    }
                }
                for v in o.iter_mut() {
                    *v = v.round().clamp(0.0, 255.0) / 255.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_stay_inside() {
        for (i, o) in [
            (640, 224),
            (224, 640),
            (100, 100),
            (7, 3),
            (3, 7),
            (1, 5),
            (5, 1),
        ] {
            for t in taps(i, o) {
                let s: f32 = t.weights.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}->{o}: {s}");
                assert!(t.start + t.weights.len() <= i, "{i}->{o}: {t:?}");
            }
        }
        // Same size: each output sample is its source sample.
        for (d, t) in taps(9, 9).iter().enumerate() {
            let at: Vec<(usize, f32)> = t
                .weights
                .iter()
                .enumerate()
                .filter(|(_, w)| **w > 0.0)
                .map(|(k, w)| (t.start + k, *w))
                .collect();
            assert_eq!(at, vec![(d, 1.0)]);
        }
    }
}
