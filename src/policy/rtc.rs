//! Real-time chunking (RTC) inputs: what a graph exported with RTC inputs receives on each
//! refill, as physicalai's `RTCExecution` builds them.
//!
//! - `prev_chunk_left_over` `[1, chunk, D]`: the rows of the current plan not yet executed
//!   when the refill is requested (action units; the package's `normalize` step normalises
//!   it when its statistics name it), zero-padded at the end to the chunk size;
//! - `inference_delay` (int64 scalar): the ticks until the new chunk is switched in, at most
//!   `execution_horizon`;
//! - `max_guidance_weight` (f32 scalar) and `execution_horizon` (int64 scalar);
//! - on the first chunk (nothing to continue): zeros, weight 1e-8, horizon 1, delay 0;
//! - `noise` `[1, chunk, D]` when the graph takes it: standard normal from a seeded
//!   generator, one draw per request in request order, so a replay equals the live run.

use ndarray::{ArrayD, ArrayView2, IxDyn};

use crate::runtime::TensorSpec;

pub const PREV_CHUNK_LEFT_OVER: &str = "prev_chunk_left_over";
pub const INFERENCE_DELAY: &str = "inference_delay";
pub const MAX_GUIDANCE_WEIGHT: &str = "max_guidance_weight";
pub const EXECUTION_HORIZON: &str = "execution_horizon";
pub const NOISE: &str = "noise";

/// physicalai's defaults.
pub const DEFAULT_EXECUTION_HORIZON: usize = 15;
pub const DEFAULT_MAX_GUIDANCE_WEIGHT: f64 = 5.0;
/// Weight of the first chunk's guidance (none to speak of: nothing to continue).
const FIRST_WEIGHT: f32 = 1e-8;

/// RTC settings, validated against the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct RtcSettings {
    pub execution_horizon: usize,
    pub max_guidance_weight: f32,
    /// Rows of the `prev_chunk_left_over` port.
    pub chunk_size: usize,
    /// Width of the `prev_chunk_left_over` port.
    pub width: usize,
    /// `[1, chunk, D]` when the graph takes `noise`.
    pub noise_shape: Option<Vec<usize>>,
    pub seed: u64,
    /// Noise to feed instead of the generator's, request by request (to replay a recorded
    /// run, e.g. physicalai's); later requests draw from the generator.
    pub recorded_noise: Vec<ArrayD<f32>>,
}

/// Whether a graph was exported with RTC inputs.
pub fn is_rtc_graph(inputs: &[TensorSpec]) -> bool {
    inputs.iter().any(|s| s.name == PREV_CHUNK_LEFT_OVER)
}

impl RtcSettings {
    /// From the graph's ports and the node's parameters: the horizon must be at least 1 and
    /// at most half the chunk (as physicalai requires), the weight finite and >= 0.
    pub fn from_ports(
        inputs: &[TensorSpec],
        execution_horizon: usize,
        max_guidance_weight: f64,
        seed: u64,
    ) -> Result<Self, String> {
        let port = inputs
            .iter()
            .find(|s| s.name == PREV_CHUNK_LEFT_OVER)
            .ok_or("the model has no `prev_chunk_left_over` input: it was not exported for real-time chunking")?;
        let (chunk_size, width) = match port.shape.as_slice() {
            [_, Some(c), Some(d)] | [Some(c), Some(d)] => (*c, *d),
            other => {
                return Err(format!(
                    "`prev_chunk_left_over` has shape {}, not [1, chunk, D] with fixed sizes",
                    crate::runtime::fmt_shape(other)
                ))
            }
        };
        for name in [INFERENCE_DELAY, MAX_GUIDANCE_WEIGHT, EXECUTION_HORIZON] {
            if !inputs.iter().any(|s| s.name == name) {
                return Err(format!("the RTC model has no `{name}` input"));
            }
        }
        if execution_horizon == 0 || execution_horizon > chunk_size / 2 {
            return Err(format!(
                "rtc_execution_horizon must be from 1 to half the chunk ({}), got {execution_horizon}",
                chunk_size / 2
            ));
        }
        if !(max_guidance_weight.is_finite() && max_guidance_weight >= 0.0) {
            return Err(format!(
                "rtc_max_guidance_weight must be a finite number >= 0, got {max_guidance_weight}"
            ));
        }
        let noise_shape = inputs.iter().find(|s| s.name == NOISE).map(|s| {
            s.shape
                .iter()
                .map(|d| d.unwrap_or(1))
                .collect::<Vec<usize>>()
        });
        Ok(Self {
            execution_horizon,
            max_guidance_weight: max_guidance_weight as f32,
            chunk_size,
            width,
            noise_shape,
            seed,
            recorded_noise: Vec::new(),
        })
    }

    /// The RTC inputs of request number `request` (0 = the first since reset) whose chunk is
    /// expected `delay` ticks after the request; `left_over`: the unexecuted rows of the
    /// current plan, `None` when there is none.
    pub fn inputs(
        &self,
        left_over: Option<ArrayView2<'_, f32>>,
        delay: usize,
        request: u64,
    ) -> Vec<(&'static str, ArrayD<f32>)> {
        let mut prev = ArrayD::<f32>::zeros(IxDyn(&[1, self.chunk_size, self.width]));
        let (weight, horizon, delay) = match left_over.filter(|l| l.nrows() > 0) {
            None => (FIRST_WEIGHT, 1, 0),
            Some(rows) => {
                let n = rows.nrows().min(self.chunk_size);
                let w = rows.ncols().min(self.width);
                for i in 0..n {
                    for j in 0..w {
                        prev[[0, i, j]] = rows[[i, j]];
                    }
                }
                (
                    self.max_guidance_weight,
                    self.execution_horizon,
                    delay.min(self.execution_horizon),
                )
            }
        };
        let scalar = |v: f32| ArrayD::from_elem(IxDyn(&[]), v);
        let mut out = vec![
            (PREV_CHUNK_LEFT_OVER, prev),
            (INFERENCE_DELAY, scalar(delay as f32)),
            (MAX_GUIDANCE_WEIGHT, scalar(weight)),
            (EXECUTION_HORIZON, scalar(horizon as f32)),
        ];
        if let Some(shape) = &self.noise_shape {
            let noise = match self.recorded_noise.get(request as usize) {
                Some(n) => n.clone(),
                None => gaussian(shape, self.seed, request),
            };
            out.push((NOISE, noise));
        }
        out
    }
}

/// Standard-normal values from a seeded generator (splitmix64, Box-Muller): the same
/// `(seed, request)` always gives the same array.
pub fn gaussian(shape: &[usize], seed: u64, request: u64) -> ArrayD<f32> {
    let mut state = seed ^ request.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut spare: Option<f64> = None;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        if let Some(s) = spare.take() {
            return s as f32;
        }
        // Uniforms in (0, 1]: 53 random bits, never 0.
        let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
        spare = Some(r * s);
        (r * c) as f32
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::DType;
    use ndarray::Array2;

    fn ports(with_noise: bool) -> Vec<TensorSpec> {
        let mut v = vec![
            TensorSpec {
                name: PREV_CHUNK_LEFT_OVER.into(),
                shape: vec![Some(1), Some(16), Some(6)],
                dtype: DType::F32,
            },
            TensorSpec {
                name: INFERENCE_DELAY.into(),
                shape: vec![],
                dtype: DType::I64,
            },
            TensorSpec {
                name: MAX_GUIDANCE_WEIGHT.into(),
                shape: vec![],
                dtype: DType::F32,
            },
            TensorSpec {
                name: EXECUTION_HORIZON.into(),
                shape: vec![],
                dtype: DType::I64,
            },
        ];
        if with_noise {
            v.push(TensorSpec {
                name: NOISE.into(),
                shape: vec![Some(1), Some(16), Some(6)],
                dtype: DType::F32,
            });
        }
        v
    }

    #[test]
    fn horizon_limits_and_first_chunk() {
        assert!(
            RtcSettings::from_ports(&ports(false), 9, 5.0, 0).is_err(),
            "more than half the chunk"
        );
        assert!(RtcSettings::from_ports(&ports(false), 0, 5.0, 0).is_err());
        assert!(RtcSettings::from_ports(&ports(false), 8, -1.0, 0).is_err());
        let s = RtcSettings::from_ports(&ports(true), 6, 5.0, 7).unwrap();
        let first = s.inputs(None, 3, 0);
        assert_eq!(first[1].1[[]], 0.0, "no delay on the first chunk");
        assert_eq!(first[2].1[[]], 1e-8);
        assert_eq!(first[3].1[[]], 1.0);
        let rows = Array2::from_shape_fn((5, 6), |(i, j)| (i * 10 + j) as f32);
        let next = s.inputs(Some(rows.view()), 9, 1);
        assert_eq!(next[0].1.shape(), &[1, 16, 6]);
        assert_eq!(next[0].1[[0, 4, 5]], 45.0);
        assert_eq!(next[0].1[[0, 5, 0]], 0.0, "padded with zeros");
        assert_eq!(next[1].1[[]], 6.0, "delay clamped to the horizon");
        assert_eq!(next[2].1[[]], 5.0);
        // Noise: reproducible per request, different across requests, roughly N(0, 1).
        assert_eq!(s.inputs(None, 0, 4)[4].1, s.inputs(None, 0, 4)[4].1);
        assert_ne!(s.inputs(None, 0, 4)[4].1, s.inputs(None, 0, 5)[4].1);
        let g = gaussian(&[100_000], 1, 0);
        let mean = g.iter().map(|v| f64::from(*v)).sum::<f64>() / 1e5;
        let var = g
            .iter()
            .map(|v| (f64::from(*v) - mean).powi(2))
            .sum::<f64>()
            / 1e5;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }
}
