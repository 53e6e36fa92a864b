//! `policyctl tune`: the fastest accurate way to run an export on this machine.
//!
//! Every way this build can run the export is a candidate: each backend compiled in that can
//! load it (an ONNX model also runs on OpenVINO, which reads ONNX directly), each CPU thread
//! count, ONNX Runtime's graph optimisation levels and intra-op spinning (with more than one
//! thread), OpenVINO's inference precision (bf16 / f16
//! where the CPU has them; OpenVINO always compiles with the `LATENCY` hint). Each candidate is
//! loaded, checked against the f32 reference (the export's own backend with default settings)
//! on the same observation, and timed over whole `select_action` refills (processors, model,
//! postprocessors: what the robot waits for). A candidate whose output is further than the
//! tolerance from the reference, or that fails, is listed as rejected with its error; the
//! winner is the accepted candidate with the lowest median.

use std::path::Path;
use std::time::Instant;

use ndarray::Array2;

use crate::export::{ExportBackend, ExportDir};
use crate::policy::{InferenceModel, Observation};
use crate::runtime::{compiled_backends, GraphOptimization, Precision, RuntimeOptions};

/// How `tune` runs.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// Timed refills per candidate.
    pub iterations: usize,
    /// Untimed refills per candidate before timing.
    pub warmup: usize,
    /// Largest accepted absolute difference from the reference chunk.
    pub tolerance: f32,
    /// Thread counts to try (default: 1, 2, 4, ... up to the machine's CPUs, and that count).
    pub threads: Vec<usize>,
    /// Only f32 candidates (no bf16 / f16).
    pub f32_only: bool,
    /// A directory holding the tokenizer of a VLA package.
    pub tokenizer_dir: Option<std::path::PathBuf>,
}

impl Default for TuneOptions {
    fn default() -> Self {
        Self {
            iterations: 50,
            warmup: 3,
            tolerance: 1e-4,
            threads: default_threads(),
            f32_only: false,
            tokenizer_dir: None,
        }
    }
}

/// 1, 2, 4, ... up to the machine's CPUs, and that count.
pub fn default_threads() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |t| Some(t * 2))
        .take_while(|t| *t < n)
        .collect();
    v.push(n);
    v
}

/// One way to run the export.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub backend: ExportBackend,
    pub threads: usize,
    /// ONNX Runtime only.
    pub onnx_optimization: Option<GraphOptimization>,
    /// ONNX Runtime with more than one thread: idle threads spin.
    pub onnx_spinning: Option<bool>,
    /// OpenVINO only.
    pub precision: Option<Precision>,
}

impl Candidate {
    /// The node parameters that select this candidate.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("backend", self.backend.as_str().to_string()),
            ("threads", self.threads.to_string()),
        ];
        if let Some(o) = self.onnx_optimization {
            p.push(("onnx_optimization", optimization_name(o).into()));
        }
        if let Some(spin) = self.onnx_spinning {
            p.push(("onnx_spinning", spin.to_string()));
        }
        if let Some(x) = self.precision {
            p.push(("inference_precision", x.to_string()));
        }
        p
    }

    /// `threads=2 onnx_optimization=all`.
    pub fn settings(&self) -> String {
        self.params()
            .into_iter()
            .skip(1)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn options(&self) -> RuntimeOptions {
        RuntimeOptions {
            threads: Some(self.threads),
            onnx_optimization: self.onnx_optimization.unwrap_or_default(),
            onnx_spinning: self.onnx_spinning,
            precision: self.precision.unwrap_or_default(),
            ..Default::default()
        }
    }
}

fn optimization_name(o: GraphOptimization) -> &'static str {
    match o {
        GraphOptimization::Disable => "disable",
        GraphOptimization::Basic => "basic",
        GraphOptimization::Extended => "extended",
        GraphOptimization::All => "all",
    }
}

/// A candidate's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub candidate: Candidate,
    pub load_ms: f64,
    pub median_us: f64,
    pub p99_us: f64,
    /// Largest absolute difference from the reference chunk (`None`: no output).
    pub max_error: Option<f32>,
    pub accepted: bool,
    /// Why it was rejected.
    pub error: Option<String>,
}

/// Everything `tune` found.
#[derive(Debug, Clone)]
pub struct TuneReport {
    /// Fastest accepted first, then the rejected ones.
    pub outcomes: Vec<Outcome>,
    /// Index of the winner in `outcomes`.
    pub winner: Option<usize>,
    /// The reference: the export's own backend, f32, default settings.
    pub reference: String,
    /// Candidates not tried, and why (e.g. bf16 on a CPU without it).
    pub skipped: Vec<String>,
}

/// The backends compiled in that can load the export at `dir`.
pub fn loadable_backends(dir: &Path) -> Vec<ExportBackend> {
    compiled_backends()
        .into_iter()
        .filter(|b| *b != ExportBackend::Remote)
        .filter(|b| ExportDir::open_with_backend(dir, Some(*b)).is_ok())
        .collect()
}

/// Every candidate for the export, and the ones left out with the reason.
pub fn candidates(dir: &Path, options: &TuneOptions) -> (Vec<Candidate>, Vec<String>) {
    let mut out = Vec::new();
    #[allow(unused_mut)]
    let mut skipped = Vec::new();
    #[allow(unused_mut)]
    let mut precisions = vec![Precision::F32];
    #[cfg(feature = "openvino")]
    if !options.f32_only {
        let caps = crate::runtime::openvino::cpu_capabilities();
        for (p, cap) in [(Precision::Bf16, "BF16"), (Precision::F16, "FP16")] {
            if caps.iter().any(|c| c == cap) {
                precisions.push(p);
            } else {
                skipped.push(format!(
                    "openvino inference_precision={p}: this CPU has no {cap} (OpenVINO reports {})",
                    if caps.is_empty() {
                        "nothing".to_string()
                    } else {
                        caps.join(" ")
                    }
                ));
            }
        }
    }
    for backend in loadable_backends(dir) {
        for &threads in &options.threads {
            match backend {
                ExportBackend::Onnx => {
                    for o in [
                        GraphOptimization::All,
                        GraphOptimization::Extended,
                        GraphOptimization::Basic,
                        GraphOptimization::Disable,
                    ] {
                        // Spinning matters only when there are threads to wake.
                        let spins: &[Option<bool>] = if threads > 1 {
                            &[Some(true), Some(false)]
                        } else {
                            &[None]
                        };
                        for &spin in spins {
                            out.push(Candidate {
                                backend,
                                threads,
                                onnx_optimization: Some(o),
                                onnx_spinning: spin,
                                precision: None,
                            });
                        }
                    }
                }
                ExportBackend::OpenVino => {
                    for &p in &precisions {
                        out.push(Candidate {
                            backend,
                            threads,
                            onnx_optimization: None,
                            onnx_spinning: None,
                            precision: Some(p),
                        });
                    }
                }
                _ => out.push(Candidate {
                    backend,
                    threads,
                    onnx_optimization: None,
                    onnx_spinning: None,
                    precision: None,
                }),
            }
        }
    }
    (out, skipped)
}

fn build(
    dir: &Path,
    backend: Option<ExportBackend>,
    options: RuntimeOptions,
    tune: &TuneOptions,
) -> Result<InferenceModel, String> {
    let mut b = InferenceModel::builder(dir).runtime_options(options);
    if let Some(backend) = backend {
        b = b.backend(backend);
    }
    if let Some(t) = &tune.tokenizer_dir {
        b = b.tokenizer_dir(t);
    }
    b.build().map_err(|e| e.to_string())
}

fn max_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> Option<f32> {
    (a.shape() == b.shape()).then(|| {
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(
                0.0f32,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            )
    })
}

/// Runs every candidate on `observation` and ranks them. `progress` is called after each.
pub fn run(
    dir: &Path,
    observation: &Observation,
    options: &TuneOptions,
    mut progress: impl FnMut(&Outcome),
) -> Result<TuneReport, String> {
    if options.iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }
    if !(options.tolerance.is_finite() && options.tolerance >= 0.0) {
        return Err(format!(
            "--tolerance must be a finite number >= 0, got {}",
            options.tolerance
        ));
    }
    // The reference: the export's own backend, f32, the runtime's default settings. When it
    // fails, every candidate is still tried, so the report says what each one does.
    let (reference, reference_label) = match build(dir, None, RuntimeOptions::default(), options) {
        Err(e) => (
            Err(format!(
                "the export does not load with its own backend: {e}"
            )),
            String::from("none"),
        ),
        Ok(mut m) => {
            let label = format!("{} on {} (f32, default settings)", m.backend(), m.device());
            let chunk = m
                .predict_chunk(observation)
                .map_err(|e| e.to_string())
                .and_then(|c| match c.iter().position(|v| !v.is_finite()) {
                    Some(k) => Err(format!(
                        "a non-finite value ({}) at flat index {k}",
                        c.iter().nth(k).copied().unwrap_or(f32::NAN)
                    )),
                    None => Ok(c),
                });
            (
                chunk.map_err(|e| format!("the reference ({label}) fails: {e}")),
                label,
            )
        }
    };
    let (candidates, skipped) = candidates(dir, options);
    if candidates.is_empty() {
        return Err(format!(
            "no backend compiled into this build can load {} (compiled: {})",
            dir.display(),
            compiled_backends()
                .iter()
                .map(|b| b.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut outcomes = Vec::with_capacity(candidates.len());
    for c in candidates {
        let o = try_candidate(dir, &c, observation, reference.as_ref(), options);
        progress(&o);
        outcomes.push(o);
    }
    outcomes.sort_by(|a, b| {
        b.accepted
            .cmp(&a.accepted)
            .then(a.median_us.total_cmp(&b.median_us))
    });
    let winner = outcomes.first().filter(|o| o.accepted).map(|_| 0);
    if let Err(e) = &reference {
        log::warn!("tune: {e}");
    }
    Ok(TuneReport {
        outcomes,
        winner,
        reference: reference_label,
        skipped,
    })
}

fn try_candidate(
    dir: &Path,
    c: &Candidate,
    observation: &Observation,
    reference: Result<&Array2<f32>, &String>,
    options: &TuneOptions,
) -> Outcome {
    let mut outcome = Outcome {
        candidate: c.clone(),
        load_ms: 0.0,
        median_us: f64::INFINITY,
        p99_us: f64::INFINITY,
        max_error: None,
        accepted: false,
        error: None,
    };
    let start = Instant::now();
    let mut model = match build(dir, Some(c.backend), c.options(), options) {
        Ok(m) => m,
        Err(e) => {
            outcome.error = Some(format!("does not load: {e}"));
            return outcome;
        }
    };
    outcome.load_ms = start.elapsed().as_secs_f64() * 1e3;
    let chunk = match model.predict_chunk(observation) {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(format!("fails: {e}"));
            return outcome;
        }
    };
    if let Some(k) = chunk.iter().position(|v| !v.is_finite()) {
        outcome.error = Some(format!(
            "its output holds a non-finite value at flat index {k}"
        ));
        return outcome;
    }
    let reference = match reference {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(format!("no f32 reference to check it against ({e})"));
            return outcome;
        }
    };
    let Some(err) = max_abs_diff(&chunk, reference) else {
        outcome.error = Some(format!(
            "its chunk has shape {:?}, the reference {:?}",
            chunk.shape(),
            reference.shape()
        ));
        return outcome;
    };
    outcome.max_error = Some(err);
    // Whole refills: select_action on an empty queue (processors, model, postprocessors); a
    // policy without a queue returns whole chunks, timed as such.
    let queue = model.config().serves_single_actions();
    let once = |m: &mut InferenceModel| -> Result<(), String> {
        if queue {
            m.reset();
            m.select_action(observation).map(drop)
        } else {
            m.predict_chunk(observation).map(drop)
        }
        .map_err(|e| e.to_string())
    };
    for _ in 0..options.warmup {
        if let Err(e) = once(&mut model) {
            outcome.error = Some(format!("fails: {e}"));
            return outcome;
        }
    }
    let mut us = Vec::with_capacity(options.iterations);
    for _ in 0..options.iterations {
        let t = Instant::now();
        if let Err(e) = once(&mut model) {
            outcome.error = Some(format!("fails: {e}"));
            return outcome;
        }
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    let n = us.len();
    outcome.median_us = if n % 2 == 1 {
        us[n / 2]
    } else {
        0.5 * (us[n / 2 - 1] + us[n / 2])
    };
    outcome.p99_us = us[((0.99 * n as f64).ceil() as usize).clamp(1, n) - 1];
    if err <= options.tolerance {
        outcome.accepted = true;
    } else {
        outcome.error = Some(format!(
            "max error {err:.3e} from the reference is above the tolerance {:.1e}",
            options.tolerance
        ));
    }
    outcome
}

/// The winner's parameters as a ROS 2 parameter file the node (`--params-file`) and
/// `policyctl replay --params` accept.
pub fn params_yaml(report: &TuneReport, dir: &Path) -> Option<String> {
    let w = &report.outcomes[report.winner?];
    let mut s = format!(
        "# Written by `policyctl tune {}`: the fastest candidate within tolerance on this\n\
         # machine ({:.0} us median refill, max error {:.2e} from {}).\n\
         # Merge into the node's parameter file, or pass as a second --params-file.\n\
         policy_node:\n  ros__parameters:\n",
        dir.display(),
        w.median_us,
        w.max_error.unwrap_or(0.0),
        report.reference
    );
    for (k, v) in w.candidate.params() {
        s.push_str(&format!("    {k}: {v}\n"));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_threads_end_at_the_cpu_count() {
        let t = default_threads();
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(*t.last().unwrap(), n);
        assert_eq!(t[0], 1);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn candidate_params_name_the_node_parameters() {
        let c = Candidate {
            backend: ExportBackend::OpenVino,
            threads: 2,
            onnx_optimization: None,
            onnx_spinning: None,
            precision: Some(Precision::Bf16),
        };
        assert_eq!(c.settings(), "threads=2 inference_precision=bf16");
        let o = Candidate {
            backend: ExportBackend::Onnx,
            threads: 1,
            onnx_optimization: Some(GraphOptimization::Basic),
            onnx_spinning: Some(false),
            precision: None,
        };
        assert_eq!(
            o.params(),
            vec![
                ("backend", "onnx".to_string()),
                ("threads", "1".to_string()),
                ("onnx_optimization", "basic".to_string()),
                ("onnx_spinning", "false".to_string())
            ]
        );
    }

    #[test]
    fn nan_counts_as_an_infinite_error() {
        let a = Array2::from_elem((2, 2), 1.0f32);
        let mut b = a.clone();
        assert_eq!(max_abs_diff(&a, &b), Some(0.0));
        b[[1, 1]] = f32::NAN;
        assert_eq!(max_abs_diff(&a, &b), Some(f32::INFINITY));
        assert_eq!(max_abs_diff(&a, &Array2::zeros((1, 2))), None);
    }
}
