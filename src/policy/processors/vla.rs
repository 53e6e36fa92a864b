//! The image and prompt steps of vision-language-action packages (Pi0.5, SmolVLA), as
//! physicalai's `pi05`, `smolvla_resize` and `new_line` processors compute them:
//!
//! - `pi05`: every camera resized keeping its aspect, centred zero padding, then scaled to
//!   `[-1, 1]` (so padding is -1); `images` stacked `[n_cam (+ empty), 1, 3, H, W]` and
//!   `image_masks` `[n_cam (+ empty), 1]`; `empty_cameras` slots of -1 with mask 0; the
//!   prompt `Task: {task}, State: {bins};\nAction: ` with the (normalized) state digitised
//!   into 256 bins over [-1, 1] (not clamped: below -1 gives -1, 1 and above give 255), the
//!   task stripped and with `_` and newlines made spaces.
//! - `smolvla_resize`: the same scaling and masks, default 512 x 512, with the padding on the
//!   top and left; non-finite pixels are made finite and clipped to [0, 1] first;
//!   `num_cameras` slots and an optional `image_key_reorder_map`.
//! - `new_line`: the task ends with `\n`.
//!
//! Cameras are stacked in the package's order (its `input_features`, else
//! `hardware.cameras`), never in arrival order: physicalai stacks them in the order of the
//! observation dictionary, so feeding the wrist camera first changes its actions.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{ArrayD, Axis, IxDyn};
use serde_json::Value;

use super::resize::{Layout, Resize, ResizeMode};
use crate::export::manifest::Component;
use crate::policy::binding::canonical_name;
use crate::policy::{Observation, PolicyError};

/// The observation text holding the task.
pub const TASK: &str = "task";
const BINS: usize = 256;

/// `str.isspace()` of Python (which `str.strip()` uses): Unicode White_Space plus the
/// information separators U+001C..U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The task as physicalai's `pi05` puts it in the prompt.
pub fn clean_task(task: &str) -> String {
    task.trim_matches(py_space).replace(['_', '\n'], " ")
}

/// `np.digitize(x, linspace(-1, 1, 257)[:-1]) - 1`: the bin of a normalized value, -1 below
/// -1, 255 at and above the last edge. The edges `-1 + k / 128` are exact in `f64`.
pub fn digitize(x: f32) -> i32 {
    let x = f64::from(x);
    if x.is_nan() {
        // numpy counts NaN above every edge.
        return BINS as i32 - 1;
    }
    // Number of edges <= x (binary search over the exact edges).
    let (mut lo, mut hi) = (0usize, BINS);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if -1.0 + mid as f64 / 128.0 <= x {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo as i32 - 1
}

/// The Pi0.5 prompt for one task and state.
pub fn pi05_prompt(task: &str, state: &[f32]) -> String {
    let bins: Vec<String> = state.iter().map(|v| digitize(*v).to_string()).collect();
    format!(
        "Task: {}, State: {};\nAction: ",
        clean_task(task),
        bins.join(" ")
    )
}

fn err(manifest: &Path, key: String, problem: String) -> PolicyError {
    PolicyError::Package {
        file: manifest.to_path_buf(),
        key,
        problem,
    }
}

fn resolution(
    c: &Component,
    manifest: &Path,
    default: (usize, usize),
) -> Result<(usize, usize), PolicyError> {
    match c.param("image_resolution") {
        None => Ok(default),
        Some(Value::Array(hw)) if hw.len() == 2 => {
            let dim = |v: &Value| {
                v.as_u64()
                    .filter(|d| (1..=1 << 14).contains(d))
                    .map(|d| d as usize)
            };
            match (dim(&hw[0]), dim(&hw[1])) {
                (Some(h), Some(w)) => Ok((h, w)),
                _ => Err(err(
                    manifest,
                    c.param_path("image_resolution"),
                    format!(
                        "must be [H, W] with 1 <= H, W <= 16384, got {}",
                        Value::Array(hw.clone())
                    ),
                )),
            }
        }
        Some(other) => Err(err(
            manifest,
            c.param_path("image_resolution"),
            format!("must be [H, W], got {other}"),
        )),
    }
}

fn count(c: &Component, key: &str, manifest: &Path, max: u64) -> Result<usize, PolicyError> {
    match c.param(key) {
        None => Ok(0),
        Some(v) => match v.as_i64() {
            Some(n) if n <= 0 => Ok(0),
            Some(n) if n as u64 <= max => Ok(n as usize),
            _ => Err(err(
                manifest,
                c.param_path(key),
                format!("must be an integer from 0 to {max}, got {v}"),
            )),
        },
    }
}

/// One camera image as `[1, C, H, W]` float, whichever layout it came in.
fn batched_chw(
    key: &str,
    t: &ArrayD<f32>,
    channels_last: Option<bool>,
) -> Result<ArrayD<f32>, PolicyError> {
    let b = match t.ndim() {
        3 => t.view().insert_axis(Axis(0)),
        4 => t.view(),
        // [B, T, C, H, W]: the latest time step, as physicalai takes it.
        5 => t.index_axis(Axis(1), t.shape()[1] - 1),
        _ => {
            return Err(PolicyError::Preprocess(format!(
                "image `{key}` has shape {:?}; expected [C, H, W] or [B, C, H, W]",
                t.shape()
            )))
        }
    };
    if b.shape()[0] != 1 {
        return Err(PolicyError::Preprocess(format!(
            "image `{key}` has a batch of {}; one observation at a time",
            b.shape()[0]
        )));
    }
    let last = channels_last.unwrap_or(b.shape()[1] != 3);
    Ok(if last {
        b.permuted_axes(IxDyn(&[0, 3, 1, 2]))
            .as_standard_layout()
            .into_owned()
    } else {
        b.to_owned()
    })
}

/// Finds the observation tensor of a camera (exact key, else by alias).
fn camera_key(obs: &Observation, camera: &str) -> Option<String> {
    if obs.get(camera).is_some() {
        return Some(camera.to_string());
    }
    let c = canonical_name(camera);
    let hits: Vec<&str> = obs.names().filter(|k| canonical_name(k) == c).collect();
    match hits.as_slice() {
        [one] => Some(one.to_string()),
        _ => None,
    }
}

/// The cameras of an observation in the package's order; undeclared ones after, by name.
fn ordered_cameras(obs: &Observation, declared: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = declared.iter().filter_map(|c| camera_key(obs, c)).collect();
    let mut rest: Vec<String> = obs
        .names()
        .filter(|k| {
            let c = canonical_name(k);
            (c == "images" || c.starts_with("images."))
                && !k.contains("is_pad")
                && !keys.iter().any(|x| x == k)
        })
        .map(str::to_string)
        .collect();
    rest.sort();
    keys.extend(rest);
    keys
}

fn stack(
    images: Vec<ArrayD<f32>>,
    masks: Vec<f32>,
) -> Result<(ArrayD<f32>, ArrayD<f32>), PolicyError> {
    let views: Vec<_> = images.iter().map(|a| a.view()).collect();
    let stacked = ndarray::stack(Axis(0), &views).map_err(|e| {
        PolicyError::Preprocess(format!("cameras of different sizes after resizing: {e}"))
    })?;
    let n = masks.len();
    let masks = ArrayD::from_shape_vec(IxDyn(&[n, 1]), masks).expect("n x 1");
    Ok((stacked, masks))
}

/// Replaces the camera tensors by the stacked `images` and `image_masks`.
fn put_images(obs: &mut Observation, used: &[String], images: ArrayD<f32>, masks: ArrayD<f32>) {
    for k in used {
        obs.remove(k);
    }
    obs.insert("images", images);
    obs.insert("image_masks", masks);
}

/// `pi05`.
#[derive(Debug, Clone)]
pub struct Pi05 {
    pub height: usize,
    pub width: usize,
    pub empty_cameras: usize,
    cameras: Vec<String>,
}

impl Pi05 {
    pub fn from_component(
        c: &Component,
        manifest: &Path,
        cameras: Vec<String>,
    ) -> Result<Self, PolicyError> {
        let (height, width) = resolution(c, manifest, (224, 224))?;
        Ok(Self {
            height,
            width,
            empty_cameras: count(c, "empty_cameras", manifest, 16)?,
            cameras,
        })
    }

    pub fn new(height: usize, width: usize, empty_cameras: usize, cameras: Vec<String>) -> Self {
        Self {
            height,
            width,
            empty_cameras,
            cameras,
        }
    }

    pub fn apply(&self, obs: &mut Observation) -> Result<(), PolicyError> {
        let keys = ordered_cameras(obs, &self.cameras);
        let resize = Resize::new(
            self.height,
            self.width,
            ResizeMode::Letterbox,
            0.0,
            Layout::ChannelsFirst,
        );
        // Each camera at the target size, then scaled to [-1, 1] straight into the stacked
        // output (no intermediate copies: this runs on every refill).
        let mut sources: Vec<ArrayD<f32>> = Vec::new();
        let mut same_size: Vec<&str> = Vec::new();
        for k in &keys {
            let t = obs.get(k).expect("listed");
            let plain = t.ndim() == 3 && t.shape()[0] == 3 && t.is_standard_layout();
            let (h, w) = if plain {
                (t.shape()[1], t.shape()[2])
            } else {
                (0, 0)
            };
            if plain && (h, w) == (self.height, self.width) {
                same_size.push(k);
                continue;
            }
            let img = batched_chw(k, t, None)?;
            let (h, w) = (img.shape()[2], img.shape()[3]);
            sources.push(if (h, w) == (self.height, self.width) {
                img
            } else {
                let mut m = BTreeMap::new();
                m.insert("images".to_string(), img);
                resize.apply(&mut m)?;
                m.remove("images").expect("resized")
            });
        }
        if !keys.is_empty() {
            let plane = 3 * self.height * self.width;
            let n = keys.len() + self.empty_cameras;
            let mut out = vec![-1.0f32; n * plane];
            let mut masks = vec![0.0f32; n];
            let mut resized = sources.iter();
            for (i, k) in keys.iter().enumerate() {
                let src: &[f32] = if same_size.contains(&k.as_str()) {
                    obs.get(k)
                        .and_then(|t| t.as_slice())
                        .expect("standard layout")
                } else {
                    let r = resized.next().expect("one per resized camera");
                    if r.len() != plane {
                        return Err(PolicyError::Preprocess(format!(
                            "pi05: camera `{k}` has {} channels; expected 3",
                            r.shape()[1]
                        )));
                    }
                    r.as_slice().expect("owned, standard layout")
                };
                for (d, v) in out[i * plane..(i + 1) * plane].iter_mut().zip(src) {
                    *d = v * 2.0 - 1.0;
                }
                masks[i] = 1.0;
            }
            let images = ArrayD::from_shape_vec(IxDyn(&[n, 1, 3, self.height, self.width]), out)
                .expect("n planes");
            let masks = ArrayD::from_shape_vec(IxDyn(&[n, 1]), masks).expect("n x 1");
            put_images(obs, &keys, images, masks);
        }
        // The prompt from the (normalized) state.
        let state_key = obs
            .names()
            .find(|k| canonical_name(k) == "state")
            .map(str::to_string)
            .ok_or_else(|| {
                PolicyError::Preprocess("pi05: the observation has no `state`".into())
            })?;
        let s = obs.get(&state_key).expect("found");
        let row: Vec<f32> = match s.ndim() {
            1 => s.iter().copied().collect(),
            2 if s.shape()[0] == 1 => s.iter().copied().collect(),
            3 if s.shape()[0] == 1 => s
                .index_axis(Axis(1), s.shape()[1] - 1)
                .iter()
                .copied()
                .collect(),
            _ => {
                return Err(PolicyError::Preprocess(format!(
                    "pi05: state `{state_key}` has shape {:?}; expected [S] or [1, S]",
                    s.shape()
                )))
            }
        };
        let task = obs.text(TASK).unwrap_or_default().to_string();
        obs.set_text(TASK, pi05_prompt(&task, &row));
        Ok(())
    }
}

/// `smolvla_resize`.
#[derive(Debug, Clone)]
pub struct SmolvlaResize {
    pub height: usize,
    pub width: usize,
    pub num_cameras: usize,
    /// `images.<cam>` -> slot.
    pub reorder: Vec<(String, usize)>,
    layout: Option<bool>,
    cameras: Vec<String>,
}

impl SmolvlaResize {
    pub fn from_component(
        c: &Component,
        manifest: &Path,
        cameras: Vec<String>,
    ) -> Result<Self, PolicyError> {
        let (height, width) = resolution(c, manifest, (512, 512))?;
        let num_cameras = count(c, "num_cameras", manifest, 16)?;
        let mut reorder = Vec::new();
        match c.param("image_key_reorder_map") {
            None => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let slot = v.as_u64().filter(|s| *s < 16).ok_or_else(|| {
                        err(
                            manifest,
                            format!("{}.{k}", c.param_path("image_key_reorder_map")),
                            format!("must be a slot index from 0 to 15, got {v}"),
                        )
                    })? as usize;
                    if reorder.iter().any(|(_, s)| *s == slot) {
                        return Err(err(
                            manifest,
                            c.param_path("image_key_reorder_map"),
                            format!("gives slot {slot} twice"),
                        ));
                    }
                    let key = if k == "images" || k.starts_with("images.") {
                        k.clone()
                    } else {
                        format!("images.{k}")
                    };
                    reorder.push((key, slot));
                }
            }
            Some(other) => {
                return Err(err(
                    manifest,
                    c.param_path("image_key_reorder_map"),
                    format!("must map camera keys to slots, got {other}"),
                ))
            }
        }
        let layout = match c.param("image_layout").map(|v| v.as_str()) {
            None => None,
            Some(Some("BCHW")) => Some(false),
            Some(Some("BHWC")) => Some(true),
            Some(_) => {
                return Err(err(
                    manifest,
                    c.param_path("image_layout"),
                    "must be BCHW or BHWC".into(),
                ))
            }
        };
        Ok(Self {
            height,
            width,
            num_cameras,
            reorder,
            layout,
            cameras,
        })
    }

    pub fn new(height: usize, width: usize, num_cameras: usize, cameras: Vec<String>) -> Self {
        Self {
            height,
            width,
            num_cameras,
            reorder: Vec::new(),
            layout: None,
            cameras,
        }
    }

    /// Resize to fit with the padding on the top and left (pad 0 before scaling).
    fn resize(&self, img: &ArrayD<f32>) -> ArrayD<f32> {
        let (h, w) = (img.shape()[2], img.shape()[3]);
        let ratio = (w as f64 / self.width as f64).max(h as f64 / self.height as f64);
        let rh = ((h as f64 / ratio) as usize).clamp(1, self.height);
        let rw = ((w as f64 / ratio) as usize).clamp(1, self.width);
        let r = Resize::new(rh, rw, ResizeMode::Stretch, 0.0, Layout::ChannelsFirst);
        let mut m = BTreeMap::new();
        m.insert("images".to_string(), img.clone());
        // Shapes are checked above; a stretch to rh x rw cannot fail.
        let _ = r.apply(&mut m);
        let resized = m.remove("images").expect("resized");
        let (top, left) = (self.height - rh, self.width - rw);
        let mut out = ArrayD::zeros(IxDyn(&[1, img.shape()[1], self.height, self.width]));
        out.slice_mut(ndarray::s![.., .., top.., left..])
            .assign(&resized);
        out
    }

    pub fn apply(&self, obs: &mut Observation) -> Result<(), PolicyError> {
        let keys = ordered_cameras(obs, &self.cameras);
        // Slot of each camera: the reorder map (by alias), else its position.
        let mut slots: Vec<(String, usize)> = Vec::new();
        if self.reorder.is_empty() {
            slots.extend(keys.iter().cloned().enumerate().map(|(i, k)| (k, i)));
        } else {
            for k in &keys {
                let c = canonical_name(k);
                let slot = self
                    .reorder
                    .iter()
                    .find(|(r, _)| canonical_name(r) == c)
                    .or_else(|| {
                        (keys.len() == 1 && self.reorder.len() == 1).then(|| &self.reorder[0])
                    })
                    .map(|(_, s)| *s)
                    .ok_or_else(|| {
                        PolicyError::Preprocess(format!(
                            "smolvla_resize: camera `{k}` is not in image_key_reorder_map ({})",
                            self.reorder
                                .iter()
                                .map(|(r, _)| r.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                slots.push((k.clone(), slot));
            }
        }
        let n = if self.num_cameras > 0 {
            if let Some((k, s)) = slots.iter().find(|(_, s)| *s >= self.num_cameras) {
                return Err(PolicyError::Preprocess(format!(
                    "smolvla_resize: camera `{k}` goes to slot {s}, but num_cameras is {}",
                    self.num_cameras
                )));
            }
            self.num_cameras
        } else {
            slots.len()
        };
        let mut layout: Vec<Option<ArrayD<f32>>> = vec![None; n];
        for (k, slot) in &slots {
            let mut img = batched_chw(k, obs.get(k).expect("listed"), self.layout)?;
            if img.shape()[2] == 0 || img.shape()[3] == 0 {
                return Err(PolicyError::Preprocess(format!(
                    "image `{k}` has a zero-sized side"
                )));
            }
            img.mapv_inplace(|v| {
                let v = if v.is_nan() {
                    0.0
                } else if v == f32::INFINITY {
                    1.0
                } else if v == f32::NEG_INFINITY {
                    0.0
                } else {
                    v
                };
                v.clamp(0.0, 1.0)
            });
            let mut r = self.resize(&img);
            r.mapv_inplace(|v| v * 2.0 - 1.0);
            layout[*slot] = Some(r);
        }
        let reference = layout
            .iter()
            .flatten()
            .next()
            .map(|r| r.raw_dim())
            .unwrap_or_else(|| IxDyn(&[1, 3, self.height, self.width]));
        let masks: Vec<f32> = layout
            .iter()
            .map(|s| if s.is_some() { 1.0 } else { 0.0 })
            .collect();
        let images: Vec<ArrayD<f32>> = layout
            .into_iter()
            .map(|s| s.unwrap_or_else(|| ArrayD::from_elem(reference.clone(), -1.0)))
            .collect();
        if images.is_empty() {
            return Ok(());
        }
        let (i, m) = stack(images, masks)?;
        put_images(obs, &keys, i, m);
        Ok(())
    }
}

/// `new_line`.
pub fn new_line(obs: &mut Observation) {
    if let Some(t) = obs.text(TASK) {
        if !t.ends_with('\n') {
            let t = format!("{t}\n");
            obs.set_text(TASK, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digitize_matches_numpy() {
        // np.digitize(x, np.linspace(-1, 1, 257)[:-1]) - 1
        let cases = [
            (-1.5f32, -1),
            (-1.0, 0),
            (-0.9921875, 1),
            (-0.99, 1),
            (-1e-30, 127),
            (0.0, 128),
            (1e-30, 128),
            (0.5, 192),
            (0.9921875, 255),
            (0.999, 255),
            (1.0, 255),
            (3.0, 255),
        ];
        for (x, want) in cases {
            assert_eq!(digitize(x), want, "{x}");
        }
    }

    #[test]
    fn prompt_format() {
        assert_eq!(
            pi05_prompt("  pick_up the\ncube \u{1c}", &[0.0, -2.0, 1.0]),
            "Task: pick up the cube, State: 128 -1 255;\nAction: "
        );
    }

    #[test]
    fn pi05_stacks_in_package_order_with_empty_slots() {
        let mut obs = Observation::new();
        obs.insert("state", ArrayD::zeros(vec![2]));
        obs.insert("images.wrist", ArrayD::from_elem(vec![3, 4, 4], 1.0));
        obs.insert("images.top", ArrayD::from_elem(vec![3, 2, 4], 0.5));
        obs.set_text(TASK, "go");
        let p = Pi05::new(4, 4, 1, vec!["images.top".into(), "images.wrist".into()]);
        p.apply(&mut obs).unwrap();
        let i = obs.get("images").unwrap();
        assert_eq!(i.shape(), &[3, 1, 3, 4, 4]);
        assert_eq!(
            i[[0, 0, 0, 0, 0]],
            -1.0,
            "top camera padding (2 rows of 4 centred)"
        );
        assert_eq!(i[[0, 0, 0, 1, 0]], 0.0, "top camera pixel 0.5 -> 0");
        assert_eq!(i[[1, 0, 0, 0, 0]], 1.0, "wrist second");
        assert_eq!(i[[2, 0, 0, 0, 0]], -1.0, "empty slot");
        let m = obs.get("image_masks").unwrap();
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), vec![1.0, 1.0, 0.0]);
        assert_eq!(obs.text(TASK), Some("Task: go, State: 128 128;\nAction: "));
        assert!(obs.get("images.top").is_none());
    }

    #[test]
    fn smolvla_pads_top_left() {
        let mut obs = Observation::new();
        obs.insert("images.top", ArrayD::from_elem(vec![3, 2, 4], 0.5));
        let p = SmolvlaResize::new(4, 4, 2, vec![]);
        p.apply(&mut obs).unwrap();
        let i = obs.get("images").unwrap();
        assert_eq!(i.shape(), &[2, 1, 3, 4, 4]);
        assert_eq!(i[[0, 0, 0, 0, 0]], -1.0, "top padding");
        assert_eq!(i[[0, 0, 0, 2, 0]], 0.0, "image in the bottom rows");
        assert_eq!(i[[1, 0, 1, 3, 3]], -1.0, "empty slot");
        let m = obs.get("image_masks").unwrap();
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), vec![1.0, 0.0]);
    }
}
