//! Chunk hand-over: how a new chunk takes over from the plan it replaces, and the output
//! low-pass filter.
//!
//! When the [`Scheduler`](super::Scheduler) switches a new chunk in (tick `s`), the previous
//! plan may still hold rows for ticks `s, s + 1, ...`: it always does when
//! `n_action_steps` is smaller than what is left of the chunk after its refill-ahead skip.
//! Both plans then claim the same ticks, computed from observations some ticks apart; replacing
//! one by the other (`none`) is a jump in the command. The modes below combine them, once, at
//! the switch: the plan that results is what the robot will be commanded from tick `s` on
//! (before the low-pass filter and the command limits), so it can be published as such.
//!
//! | mode | rows for ticks both plans cover | reference |
//! |---|---|---|
//! | `none`, `latest_only` | the new chunk's | LeRobot `latest_only` |
//! | `linear` | `w_k old + (1 - w_k) new`, `w_k = max(1 - k / L, 0)`, `L = min(remaining, chunk_blend_steps)` | physicalai 0.3 `LerpSmoother(duration_frames)` |
//! | `weighted_average` | `0.3 old + 0.7 new` | LeRobot `weighted_average` |
//! | `average` | `0.5 old + 0.5 new` | LeRobot `average` |
//! | `ensemble` | `sum_i exp(-c i) a_i / sum_i exp(-c i)` over every chunk switched in that covers the tick, `i = 0` the oldest | ACT temporal ensembling |
//!
//! Ticks only the new chunk covers take its rows; rows of the old plan past the new chunk's
//! end are dropped. `k` counts ticks from the switch, so `linear` starts exactly on the old
//! plan (`w_0 = 1`) and reaches the new chunk after `L` ticks.
//!
//! [`LowPass`] is the exponential filter `y = a x + (1 - a) y_prev` applied to every action
//! served (physicalai's `LowPassFilterCallback`); its first output is its input.

use std::collections::VecDeque;

use ndarray::{s, Array1, Array2, ArrayView2, Zip};

/// ACT's temporal ensembling coefficient, used by `ensemble` when none is configured.
pub const ACT_ENSEMBLE_COEFF: f64 = 0.01;

/// How a new chunk is combined with the plan it replaces; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ChunkBlend {
    /// The new chunk replaces the old plan.
    #[default]
    None,
    /// Crossfade over `steps` ticks from the old plan to the new chunk.
    Linear { steps: usize },
    /// ACT's weights `exp(-coeff * i)` over every chunk covering the tick.
    Ensemble { coeff: f64 },
    /// `0.3 old + 0.7 new` (LeRobot).
    WeightedAverage,
    /// The new chunk (LeRobot's name for `none`).
    LatestOnly,
    /// `0.5 old + 0.5 new` (LeRobot).
    Average,
}

impl ChunkBlend {
    /// The accepted names of `chunk_blend`.
    pub const NAMES: &'static [&'static str] = &[
        "none",
        "linear",
        "ensemble",
        "weighted_average",
        "latest_only",
        "average",
    ];

    /// The mode named `name`; `steps` is `chunk_blend_steps` (`linear`), `coeff` the
    /// ensembling coefficient (`ensemble`). `Err` holds the rule broken.
    pub fn from_name(name: &str, steps: usize, coeff: f64) -> Result<Self, String> {
        Ok(match name {
            "none" => ChunkBlend::None,
            "linear" => {
                if steps == 0 {
                    return Err("`linear` needs chunk_blend_steps >= 1".into());
                }
                ChunkBlend::Linear { steps }
            }
            "ensemble" => {
                if !(coeff.is_finite() && coeff >= 0.0) {
                    return Err(format!(
                        "`ensemble` needs a finite coefficient >= 0, got {coeff}"
                    ));
                }
                ChunkBlend::Ensemble { coeff }
            }
            "weighted_average" => ChunkBlend::WeightedAverage,
            "latest_only" => ChunkBlend::LatestOnly,
            "average" => ChunkBlend::Average,
            other => {
                return Err(format!(
                    "must be one of {}, got `{other}`",
                    Self::NAMES.join(", ")
                ))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            ChunkBlend::None => "none",
            ChunkBlend::Linear { .. } => "linear",
            ChunkBlend::Ensemble { .. } => "ensemble",
            ChunkBlend::WeightedAverage => "weighted_average",
            ChunkBlend::LatestOnly => "latest_only",
            ChunkBlend::Average => "average",
        }
    }

    /// Whether the mode ever differs from `none`.
    pub fn blends(&self) -> bool {
        !matches!(self, ChunkBlend::None | ChunkBlend::LatestOnly)
    }
}

impl std::fmt::Display for ChunkBlend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkBlend::Linear { steps } => write!(f, "linear over {steps} tick(s)"),
            ChunkBlend::Ensemble { coeff } => write!(f, "ensemble, weights exp(-{coeff} i)"),
            other => f.write_str(other.name()),
        }
    }
}

/// `linear`: the rows of physicalai's `LerpSmoother(duration_frames = steps).merge(remaining,
/// incoming)`: the first `min(remaining, incoming)` rows crossfade, the rest are `incoming`'s.
/// Computed in f64, rounded to f32 (as the reference does).
pub fn lerp_merge(
    remaining: ArrayView2<f32>,
    incoming: ArrayView2<f32>,
    steps: usize,
) -> Array2<f32> {
    let mut out = incoming.to_owned();
    let n = remaining.nrows().min(incoming.nrows());
    let span = remaining.nrows().min(steps).max(1) as f64;
    for k in 0..n {
        let w = (1.0 - k as f64 / span).max(0.0);
        if w == 0.0 {
            break;
        }
        Zip::from(out.row_mut(k))
            .and(remaining.row(k))
            .for_each(|o, r| *o = (w * f64::from(*r) + (1.0 - w) * f64::from(*o)) as f32);
    }
    out
}

/// `weighted_average` / `average`: `old_weight * old + (1 - old_weight) * new` for the rows
/// both cover, `incoming`'s rows after that (LeRobot's queue aggregation).
pub fn aggregate_merge(
    remaining: ArrayView2<f32>,
    incoming: ArrayView2<f32>,
    old_weight: f32,
) -> Array2<f32> {
    let mut out = incoming.to_owned();
    let n = remaining.nrows().min(incoming.nrows());
    let new_weight = 1.0 - old_weight;
    Zip::from(out.slice_mut(s![..n, ..]))
        .and(remaining.slice(s![..n, ..]))
        .for_each(|o, r| *o = old_weight * *r + new_weight * *o);
    out
}

/// `ensemble`: rows for ticks `from..to` as ACT's weighted mean over the chunks of `chunks`
/// (each `(tick of its row 0, rows)`, oldest first) that cover each tick. A tick no chunk
/// covers gets zeros (callers ask only for ticks the newest chunk covers).
pub fn ensemble_rows(
    chunks: &VecDeque<(u64, Array2<f32>)>,
    from: u64,
    to: u64,
    coeff: f64,
) -> Array2<f32> {
    let dim = chunks.back().map_or(0, |(_, c)| c.ncols());
    let n = to.saturating_sub(from) as usize;
    // Weights by age rank: exp(-coeff * i) for the i-th oldest chunk covering a tick.
    let weights: Vec<f32> = (0..chunks.len())
        .map(|i| (-coeff * i as f64).exp() as f32)
        .collect();
    let mut acc = vec![0.0f32; n * dim];
    let mut total = vec![0.0f32; n];
    let mut count = vec![0usize; n];
    for (start, c) in chunks {
        let end = start + c.nrows() as u64;
        let (lo, hi) = (from.max(*start), to.min(end));
        if lo >= hi || c.ncols() != dim {
            continue;
        }
        let rows = c.as_standard_layout();
        let rows = rows.as_slice().expect("standard layout");
        for t in lo..hi {
            let k = (t - from) as usize;
            let w = weights[count[k]];
            count[k] += 1;
            total[k] += w;
            let src = &rows[(t - start) as usize * dim..][..dim];
            for (a, v) in acc[k * dim..][..dim].iter_mut().zip(src) {
                *a += w * v;
            }
        }
    }
    for (row, t) in acc.chunks_exact_mut(dim.max(1)).zip(&total) {
        if *t > 0.0 {
            let inv = 1.0 / t;
            row.iter_mut().for_each(|a| *a *= inv);
        }
    }
    Array2::from_shape_vec((n, dim), acc).expect("n x dim values")
}

/// The exponential output filter `y = alpha x + (1 - alpha) y_prev`; `alpha = 1` is off.
/// Its state is cleared with the plan (reset, stale gap, disable).
#[derive(Debug, Clone, PartialEq)]
pub struct LowPass {
    alpha: f32,
    prev: Option<Array1<f32>>,
}

impl LowPass {
    /// `alpha` in (0, 1] (checked by the parameters; clamped here).
    pub fn new(alpha: f64) -> Self {
        Self {
            alpha: (alpha as f32).clamp(f32::MIN_POSITIVE, 1.0),
            prev: None,
        }
    }

    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// Whether the filter changes anything (`alpha < 1`).
    pub fn is_on(&self) -> bool {
        self.alpha < 1.0
    }

    /// Filters `x` in place and remembers it.
    pub fn apply(&mut self, x: &mut Array1<f32>) {
        if !self.is_on() {
            return;
        }
        match &mut self.prev {
            Some(prev) if prev.len() == x.len() => {
                let a = self.alpha;
                Zip::from(&mut *x)
                    .and(&*prev)
                    .for_each(|x, p| *x = a * *x + (1.0 - a) * *p);
                prev.assign(x);
            }
            _ => self.prev = Some(x.clone()),
        }
    }

    /// What [`apply`](Self::apply) would return for `rows` in order, without changing the
    /// state.
    pub fn preview<'a>(
        &self,
        rows: impl IntoIterator<Item = ndarray::ArrayView1<'a, f32>>,
    ) -> Vec<Array1<f32>> {
        let mut f = self.clone();
        rows.into_iter()
            .map(|r| {
                let mut x = r.to_owned();
                f.apply(&mut x);
                x
            })
            .collect()
    }

    pub fn reset(&mut self) {
        self.prev = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn names_round_trip_and_bad_values_name_the_rule() {
        for name in ChunkBlend::NAMES {
            assert_eq!(ChunkBlend::from_name(name, 3, 0.01).unwrap().name(), *name);
        }
        assert!(ChunkBlend::from_name("smooth", 3, 0.0)
            .unwrap_err()
            .contains("weighted_average"));
        assert!(ChunkBlend::from_name("linear", 0, 0.0)
            .unwrap_err()
            .contains("chunk_blend_steps"));
        assert!(ChunkBlend::from_name("ensemble", 1, f64::NAN).is_err());
    }

    #[test]
    fn lerp_starts_on_the_old_plan_and_reaches_the_new_one() {
        let old = array![[0.0f32], [0.0], [0.0], [0.0], [0.0]];
        let new = array![[1.0f32], [1.0], [1.0], [1.0], [1.0], [1.0]];
        let m = lerp_merge(old.view(), new.view(), 4);
        let got: Vec<f32> = m.column(0).to_vec();
        assert_eq!(got, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
        // Fewer old rows than steps: the window shrinks to them.
        let m = lerp_merge(old.slice(s![..2, ..]), new.view(), 10);
        assert_eq!(m.column(0).to_vec(), vec![0.0, 0.5, 1.0, 1.0, 1.0, 1.0]);
        // Nothing left of the old plan: the new chunk as is.
        let m = lerp_merge(old.slice(s![..0, ..]), new.view(), 10);
        assert_eq!(m, new);
    }

    #[test]
    fn aggregation_weights() {
        let old = array![[10.0f32, 0.0], [10.0, 0.0]];
        let new = array![[0.0f32, 10.0], [0.0, 10.0], [5.0, 5.0]];
        let m = aggregate_merge(old.view(), new.view(), 0.3);
        assert_eq!(m.row(0).to_vec(), vec![3.0, 7.0]);
        assert_eq!(m.row(2).to_vec(), vec![5.0, 5.0]);
        let m = aggregate_merge(old.view(), new.view(), 0.5);
        assert_eq!(m.row(1).to_vec(), vec![5.0, 5.0]);
    }

    #[test]
    fn ensemble_weights_follow_act() {
        let mut chunks = VecDeque::new();
        chunks.push_back((0u64, array![[1.0f32], [2.0], [3.0]]));
        chunks.push_back((1u64, array![[10.0f32], [20.0], [30.0]]));
        let rows = ensemble_rows(&chunks, 1, 4, 0.5);
        let w1 = (-0.5f64).exp();
        let expect = (2.0 + w1 * 10.0) / (1.0 + w1);
        assert!((f64::from(rows[[0, 0]]) - expect).abs() < 1e-6);
        assert_eq!(rows[[2, 0]], 30.0, "tick 3: only the newer chunk");
    }

    #[test]
    fn low_pass_filters_and_previews() {
        let mut f = LowPass::new(0.5);
        let mut a = array![2.0f32];
        f.apply(&mut a);
        assert_eq!(a[0], 2.0, "first output is the input");
        let rows = array![[4.0f32], [4.0]];
        let preview = f.preview(rows.rows());
        let mut b = array![4.0f32];
        f.apply(&mut b);
        assert_eq!(b[0], 3.0);
        assert_eq!(preview[0][0], 3.0);
        assert_eq!(preview[1][0], 3.5);
        f.reset();
        let mut c = array![9.0f32];
        f.apply(&mut c);
        assert_eq!(c[0], 9.0);
        let mut off = LowPass::new(1.0);
        let mut d = array![1.0f32];
        off.apply(&mut d);
        assert!(!off.is_on() && d[0] == 1.0);
    }
}
