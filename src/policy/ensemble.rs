//! ACT temporal ensembling: every chunk predicts the next `chunk` actions; the action for a
//! tick is the weighted mean of all predictions for it, weights `exp(-coeff * i)` with `i = 0`
//! for the oldest prediction (Zhao et al., "Learning Fine-Grained Bimanual Manipulation with
//! Low-Cost Hardware", 2023).

use std::collections::VecDeque;

use ndarray::{Array1, Array2};

/// Temporal ensembler over chunks that start at arbitrary ticks (so it also works when chunks
/// arrive asynchronously, not only one per tick).
#[derive(Debug, Clone)]
pub struct TemporalEnsembler {
    coeff: f64,
    /// (tick of the chunk's first action, chunk `[len, A]`), oldest first.
    chunks: VecDeque<(u64, Array2<f32>)>,
}

impl TemporalEnsembler {
    /// `coeff >= 0`; 0 weighs all predictions equally.
    pub fn new(coeff: f64) -> Self {
        Self {
            coeff,
            chunks: VecDeque::new(),
        }
    }

    pub fn coeff(&self) -> f64 {
        self.coeff
    }

    /// Adds a chunk whose row 0 is the action for tick `start`.
    pub fn add(&mut self, start: u64, chunk: Array2<f32>) {
        self.chunks.push_back((start, chunk));
    }

    /// The ensembled action for `tick`, dropping chunks that end before it. `None` when no
    /// chunk covers `tick`.
    pub fn action_at(&mut self, tick: u64) -> Option<Array1<f32>> {
        while let Some((start, c)) = self.chunks.front() {
            if start + c.nrows() as u64 <= tick {
                self.chunks.pop_front();
            } else {
                break;
            }
        }
        let mut acc: Option<Array1<f64>> = None;
        let mut total = 0.0f64;
        let mut i = 0i32;
        for (start, c) in &self.chunks {
            if *start > tick {
                continue;
            }
            let row = c.row((tick - start) as usize);
            let w = (-self.coeff * f64::from(i)).exp();
            i += 1;
            total += w;
            match &mut acc {
                Some(a) => a.zip_mut_with(&row, |a, r| *a += w * f64::from(*r)),
                None => acc = Some(row.mapv(|r| w * f64::from(r))),
            }
        }
        acc.map(|a| a.mapv(|v| (v / total) as f32))
    }

    /// Number of chunks currently contributing.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn weights_follow_act_formula() {
        let mut e = TemporalEnsembler::new(0.5);
        e.add(0, array![[1.0f32], [2.0], [3.0]]);
        e.add(1, array![[10.0f32], [20.0], [30.0]]);
        assert_eq!(e.action_at(0).unwrap()[0], 1.0);
        // tick 1: oldest prediction 2.0 (w=1), newer 10.0 (w=exp(-0.5))
        let w1 = (-0.5f64).exp();
        let expect = (2.0 + w1 * 10.0) / (1.0 + w1);
        assert!((f64::from(e.action_at(1).unwrap()[0]) - expect).abs() < 1e-6);
        // tick 3: first chunk ended
        assert_eq!(e.action_at(3).unwrap()[0], 30.0);
        assert_eq!(e.len(), 1);
        assert!(e.action_at(4).is_none());
        assert!(e.is_empty());
    }

    #[test]
    fn zero_coeff_is_plain_mean() {
        let mut e = TemporalEnsembler::new(0.0);
        e.add(0, array![[0.0f32, 4.0], [2.0, 4.0]]);
        e.add(1, array![[4.0f32, 0.0]]);
        assert_eq!(e.action_at(1).unwrap(), array![3.0f32, 2.0]);
    }
}
