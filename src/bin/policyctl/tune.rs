//! `policyctl tune`: the command-line side (inputs, table, JSON, parameter file) of
//! [`policy_node::tune`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use policy_node::export::ExportDir;
use policy_node::policy::{InferenceModel, Observation};
use policy_node::runtime::TensorSpec;

use super::{bench_inputs, read_inputs};

pub(super) fn tune(
    dir: PathBuf,
    given: &[String],
    task: Option<String>,
    options: &policy_node::tune::TuneOptions,
    json: bool,
    write_params: Option<PathBuf>,
) -> Result<()> {
    if options.threads.contains(&0) {
        bail!("--threads: a thread count must be at least 1");
    }
    // The target is checked before any timing: a run of minutes must not end in an error.
    let params_file = write_params
        .as_ref()
        .map(|p| {
            std::fs::File::create(p)
                .with_context(|| format!("--write-params {}: cannot write it", p.display()))
        })
        .transpose()?;
    let given = read_inputs(given)?;
    let export = ExportDir::open(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let mut obs: Observation = if given.is_empty() {
        // Generated values for the model's ports, as `bench` makes them.
        // The model's ports; the metadata's when the export does not load (each candidate
        // then says why).
        let specs = match InferenceModel::builder(&dir).build() {
            Ok(model) => model.predictor().inputs().to_vec(),
            Err(_) => export
                .metadata
                .input_shapes
                .iter()
                .map(|(name, dims)| TensorSpec {
                    name: name.clone(),
                    shape: std::iter::once(Some(1))
                        .chain(dims.iter().map(|d| Some(*d)))
                        .collect(),
                    dtype: policy_node::runtime::DType::F32,
                })
                .collect(),
        };
        bench_inputs(&export, &specs, Vec::new())?
            .into_iter()
            .collect()
    } else {
        given.into_iter().collect()
    };
    if let Some(t) = task {
        obs.set_text("task", t);
    }
    let report = policy_node::tune::run(&dir, &obs, options, |o| {
        if !json {
            eprintln!(
                "  {:<10} {:<55} {}",
                o.candidate.backend.as_str(),
                o.candidate.settings(),
                if o.accepted {
                    format!("{:.0} us", o.median_us)
                } else {
                    o.error.clone().unwrap_or_default()
                }
            );
        }
    })
    .map_err(anyhow::Error::msg)?;
    let fmt_err = |e: Option<f32>| e.map_or("-".to_string(), |e| format!("{e:.2e}"));
    // Not timed (a candidate that did not load or run): `-`.
    let fmt_num = |x: f64, decimals: usize| {
        if x.is_finite() && (x > 0.0 || decimals == 0) {
            format!("{x:.decimals$}")
        } else {
            "-".to_string()
        }
    };
    if json {
        let candidates: Vec<serde_json::Value> = report
            .outcomes
            .iter()
            .map(|o| {
                let settings: serde_json::Map<String, serde_json::Value> = o
                    .candidate
                    .params()
                    .into_iter()
                    .skip(1)
                    .map(|(k, v)| {
                        let v = match k {
                            "threads" => v.parse::<u64>().map_or(v.clone().into(), Into::into),
                            "onnx_spinning" => {
                                v.parse::<bool>().map_or(v.clone().into(), Into::into)
                            }
                            _ => v.into(),
                        };
                        (k.to_string(), v)
                    })
                    .collect();
                let num = |x: f64| {
                    if x.is_finite() {
                        x.into()
                    } else {
                        serde_json::Value::Null
                    }
                };
                serde_json::json!({
                    "backend": o.candidate.backend.as_str(),
                    "settings": settings,
                    "median_us": num(o.median_us),
                    "p99_us": num(o.p99_us),
                    "load_ms": num(o.load_ms),
                    "max_error": o.max_error.filter(|e| e.is_finite()).map(f64::from),
                    "accepted": o.accepted,
                    "error": o.error,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "export": dir.display().to_string(),
                "reference": report.reference,
                "tolerance": options.tolerance,
                "iterations": options.iterations,
                "candidates": candidates,
                "winner": report.winner,
                "skipped": report.skipped,
            })
        );
    } else {
        println!(
            "policyctl tune {}: {} candidates, {} refills each; reference {}, tolerance {:.0e}",
            dir.display(),
            report.outcomes.len(),
            options.iterations,
            report.reference,
            options.tolerance
        );
        println!(
            "{:>4}  {:<10} {:<55} {:>11} {:>11} {:>9} {:>10}  ",
            "rank", "backend", "settings", "median us", "p99 us", "load ms", "max error"
        );
        for (i, o) in report.outcomes.iter().enumerate() {
            let rank = if o.accepted {
                (i + 1).to_string()
            } else {
                "-".into()
            };
            println!(
                "{:>4}  {:<10} {:<55} {:>11} {:>11} {:>9} {:>10}  {}",
                rank,
                o.candidate.backend.as_str(),
                o.candidate.settings(),
                fmt_num(o.median_us, 0),
                fmt_num(o.p99_us, 0),
                fmt_num(o.load_ms, 1),
                fmt_err(o.max_error),
                if o.accepted {
                    String::new()
                } else {
                    format!("rejected: {}", o.error.clone().unwrap_or_default())
                }
            );
        }
        for s in &report.skipped {
            println!("skipped: {s}");
        }
        match report.winner {
            Some(w) => {
                let o = &report.outcomes[w];
                println!(
                    "winner: {} {} ({:.0} us median refill); parameters: {}",
                    o.candidate.backend.as_str(),
                    o.candidate.settings(),
                    o.median_us,
                    o.candidate
                        .params()
                        .iter()
                        .map(|(k, v)| format!("{k}:={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            None => println!("winner: none (no candidate within the tolerance)"),
        }
    }
    if let (Some(mut file), Some(path)) = (params_file, write_params) {
        use std::io::Write;
        let Some(text) = policy_node::tune::params_yaml(&report, &dir) else {
            bail!(
                "--write-params {}: no candidate within the tolerance, nothing written",
                path.display()
            );
        };
        file.write_all(text.as_bytes())
            .with_context(|| format!("--write-params {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if report.winner.is_none() {
        bail!(
            "no candidate is within the tolerance {:.1e}",
            options.tolerance
        );
    }
    Ok(())
}
