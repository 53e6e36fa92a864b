//! `resize`: every camera image to `image_resolution` (H, W), by `letterbox` (aspect kept,
//! centred padding with `pad_value`) or `stretch`, bilinear with half-pixel centres and no
//! antialiasing (OpenCV's `INTER_LINEAR` on float images, PyTorch's
//! `interpolate(align_corners=False)`), as physicalai's `ResizePreprocessor`.
//!
//! Images are float tensors `[C, H, W]` or `[B, C, H, W]` (or channels-last with
//! `image_layout: BHWC`); the output keeps the rank and is channels-first. Image tensors are
//! found by the alias rules (`images`, `images.<cam>`, `observation.images.<cam>`).

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis, IxDyn};
use serde_json::Value;

use crate::export::manifest::Component;
use crate::observation::resize::compute_taps;
use crate::policy::binding::canonical_name;
use crate::policy::PolicyError;

/// Resize strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    Letterbox,
    Stretch,
}

/// Channel axis of the images handed to the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    ChannelsFirst,
    ChannelsLast,
    /// physicalai's heuristic: channels-last when the last axis looks like a channel count
    /// (1..=4) and axis 1 does not; ambiguous shapes are an error.
    Infer,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Resize {
    pub height: usize,
    pub width: usize,
    pub mode: ResizeMode,
    pub pad_value: f32,
    pub layout: Layout,
    json_path: String,
}

impl Resize {
    /// A resize to `height x width` (for tools and tests; packages use
    /// [`from_component`](Self::from_component)).
    pub fn new(
        height: usize,
        width: usize,
        mode: ResizeMode,
        pad_value: f32,
        layout: Layout,
    ) -> Self {
        Self {
            height,
            width,
            mode,
            pad_value,
            layout,
            json_path: "resize".into(),
        }
    }

    pub fn from_component(c: &Component, manifest: &std::path::Path) -> Result<Self, PolicyError> {
        let err = |key: String, problem: String| PolicyError::Package {
            file: manifest.to_path_buf(),
            key,
            problem,
        };
        let (height, width) = match c.param("image_resolution") {
            Some(Value::Array(hw)) if hw.len() == 2 => {
                let dim = |v: &Value| {
                    v.as_u64()
                        .filter(|d| (1..=1 << 14).contains(d))
                        .map(|d| d as usize)
                };
                match (dim(&hw[0]), dim(&hw[1])) {
                    (Some(h), Some(w)) => (h, w),
                    _ => {
                        return Err(err(
                            c.param_path("image_resolution"),
                            format!(
                                "must be [H, W] with 1 <= H, W <= 16384, got {}",
                                Value::Array(hw.clone())
                            ),
                        ))
                    }
                }
            }
            Some(other) => {
                return Err(err(
                    c.param_path("image_resolution"),
                    format!("must be [H, W], got {other}"),
                ))
            }
            None => return Err(err(c.param_path("image_resolution"), "is missing".into())),
        };
        let mode = match c.param("mode").map(|v| v.as_str()) {
            None | Some(Some("letterbox")) => ResizeMode::Letterbox,
            Some(Some("stretch")) => ResizeMode::Stretch,
            Some(_) => {
                return Err(err(
                    c.param_path("mode"),
                    format!(
                        "is {}; expected letterbox or stretch",
                        c.param("mode").map_or_else(String::new, Value::to_string)
                    ),
                ))
            }
        };
        let pad_value = match c.param("pad_value") {
            None => 0.0,
            Some(v) => v.as_f64().filter(|p| p.is_finite()).ok_or_else(|| {
                err(
                    c.param_path("pad_value"),
                    format!("must be a finite number, got {v}"),
                )
            })? as f32,
        };
        let layout = match c.param("image_layout").map(|v| v.as_str()) {
            None => Layout::Infer,
            Some(Some("BCHW")) => Layout::ChannelsFirst,
            Some(Some("BHWC")) => Layout::ChannelsLast,
            Some(_) => {
                return Err(err(
                    c.param_path("image_layout"),
                    "must be BCHW or BHWC".into(),
                ))
            }
        };
        Ok(Self {
            height,
            width,
            mode,
            pad_value,
            layout,
            json_path: c.json_path.clone(),
        })
    }

    /// Resizes every image tensor of `tensors`.
    pub fn apply(&self, tensors: &mut BTreeMap<String, ArrayD<f32>>) -> Result<(), PolicyError> {
        for (key, t) in tensors.iter_mut() {
            let c = canonical_name(key);
            if !(c == "images" || c.starts_with("images.")) || key.contains("is_pad") {
                continue;
            }
            *t = self.resize(key, t)?;
        }
        Ok(())
    }

    /// The output size for an input of `h x w` (before padding).
    pub fn scaled_size(&self, h: usize, w: usize) -> (usize, usize) {
        match self.mode {
            ResizeMode::Stretch => (self.height, self.width),
            ResizeMode::Letterbox => {
                let ratio = (w as f64 / self.width as f64).max(h as f64 / self.height as f64);
                let rh = ((h as f64 / ratio) as usize).clamp(1, self.height);
                let rw = ((w as f64 / ratio) as usize).clamp(1, self.width);
                (rh, rw)
            }
        }
    }

    fn resize(&self, key: &str, t: &ArrayD<f32>) -> Result<ArrayD<f32>, PolicyError> {
        let shape = t.shape().to_vec();
        let bad = |why: &str| {
            PolicyError::Preprocess(format!(
                "{}: image `{key}` has shape {shape:?}: {why}",
                self.json_path
            ))
        };
        let batched = match shape.len() {
            3 => t.view().insert_axis(Axis(0)),
            4 => t.view(),
            _ => return Err(bad("expected [C, H, W] or [B, C, H, W]")),
        };
        let s = batched.shape();
        let last = match self.layout {
            Layout::ChannelsFirst => false,
            Layout::ChannelsLast => true,
            Layout::Infer => {
                let ch = |d: usize| (1..=4).contains(&d);
                if ch(s[1]) && ch(s[3]) {
                    return Err(bad("the layout is ambiguous (axes 1 and 3 both look like channels); set image_layout"));
                }
                ch(s[3]) && !ch(s[1])
            }
        };
        // To [B, C, H, W].
        let bchw = if last {
            batched.permuted_axes(IxDyn(&[0, 3, 1, 2]))
        } else {
            batched
        };
        let (b, c, h, w) = (
            bchw.shape()[0],
            bchw.shape()[1],
            bchw.shape()[2],
            bchw.shape()[3],
        );
        if h == 0 || w == 0 || c == 0 {
            return Err(bad("zero-sized image"));
        }
        let (rh, rw) = self.scaled_size(h, w);
        let (top, left) = ((self.height - rh) / 2, (self.width - rw) / 2);
        let mut out = ArrayD::from_elem(IxDyn(&[b, c, self.height, self.width]), self.pad_value);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        compute_taps(w, rw, &mut xs);
        compute_taps(h, rh, &mut ys);
        // Separable, on contiguous planes: each output row blends two horizontally
        // interpolated input rows (the same arithmetic, in the same order, as sampling the
        // four taps per pixel).
        let src_all = bchw.as_standard_layout();
        let src_all = src_all.as_slice().expect("standard layout");
        let out_all = out.as_slice_mut().expect("fresh array");
        let (oh, ow) = (self.height, self.width);
        let (mut row0, mut row1) = (vec![0.0f32; rw], vec![0.0f32; rw]);
        let hinterp = |src: &[f32], dst: &mut [f32]| {
            for (d, t) in dst.iter_mut().zip(&xs) {
                *d = t.w0 * src[t.i0] + t.w1 * src[t.i1];
            }
        };
        for plane in 0..b * c {
            let src = &src_all[plane * h * w..(plane + 1) * h * w];
            let dst = &mut out_all[plane * oh * ow..(plane + 1) * oh * ow];
            for (oy, ty) in ys.iter().enumerate() {
                hinterp(&src[ty.i0 * w..(ty.i0 + 1) * w], &mut row0);
                hinterp(&src[ty.i1 * w..(ty.i1 + 1) * w], &mut row1);
                let o = &mut dst[(top + oy) * ow + left..(top + oy) * ow + left + rw];
                for ((d, a), b) in o.iter_mut().zip(&row0).zip(&row1) {
                    *d = ty.w0 * a + ty.w1 * b;
                }
            }
        }
        if shape.len() == 3 {
            Ok(out.index_axis_move(Axis(0), 0))
        } else {
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(h: usize, w: usize, mode: ResizeMode) -> Resize {
        Resize {
            height: h,
            width: w,
            mode,
            pad_value: -1.0,
            layout: Layout::Infer,
            json_path: "model.preprocessors[0]".into(),
        }
    }

    #[test]
    fn letterbox_pads_centred_and_keeps_aspect() {
        let z = r(8, 8, ResizeMode::Letterbox);
        assert_eq!(z.scaled_size(4, 8), (4, 8));
        let img = ArrayD::from_elem(vec![3, 4, 8], 0.5f32);
        let out = z.resize("images", &img).unwrap();
        assert_eq!(out.shape(), &[3, 8, 8]);
        assert_eq!(out[[0, 0, 0]], -1.0, "top padding");
        assert_eq!(out[[0, 2, 3]], 0.5, "image rows 2..6");
        assert_eq!(out[[2, 7, 7]], -1.0, "bottom padding");
    }

    #[test]
    fn identity_size_is_a_copy_and_stretch_fills() {
        let img = ArrayD::from_shape_fn(vec![1, 3, 5, 7], |d| (d[1] * 35 + d[2] * 7 + d[3]) as f32);
        let out = r(5, 7, ResizeMode::Stretch).resize("images", &img).unwrap();
        assert_eq!(out, img);
        let out = r(10, 14, ResizeMode::Stretch)
            .resize("images", &img)
            .unwrap();
        assert!(out.iter().all(|v| *v >= 0.0), "no padding in stretch mode");
    }

    #[test]
    fn channels_last_is_converted_and_ambiguity_refused() {
        let img = ArrayD::from_elem(vec![1, 6, 8, 3], 0.25f32);
        let out = r(6, 8, ResizeMode::Stretch).resize("images", &img).unwrap();
        assert_eq!(out.shape(), &[1, 3, 6, 8]);
        let amb = ArrayD::from_elem(vec![1, 3, 8, 3], 0.25f32);
        assert!(r(6, 8, ResizeMode::Stretch).resize("images", &amb).is_err());
    }
}
