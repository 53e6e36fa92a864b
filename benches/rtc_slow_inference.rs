//! Real-time chunking under a slow inference, on the real clock: figures, not a test
//! (`cargo bench --bench rtc_slow_inference`; `tests/vla_rtc.rs` is the conformance test
//! against physicalai).
//!
//! The RTC fixture (`vla_pi05_rtc`, chunk 16) with its inference slowed to 5 ticks (165 ms at
//! 30 Hz; a chunk of 16 cannot hide much more: each switch leaves 16 - delay rows), on the
//! real clock with the asynchronous worker, delay 6 and horizon 8 (the guidance must reach
//! past the delay), guided (rtc) against the same run with guidance 0 (replace). Reports
//! overruns after the first chunk and the command's step at the chunk switches against inside
//! chunks: guidance should make the step at the switches close to the step inside chunks.
//!
//! Figures (a debug build, `cargo test --all-features --bench rtc_slow_inference`, on the
//! 2-core development machine, 2026-12-07):
//!
//! ```text
//! rtc (guided): 294 commands, 0 overrun(s) after the first chunk, 48 switches; step at
//!   switches median 0.3050 max 0.4886 rad, inside chunks median 0.1574 rad
//! replace (guidance 0): 294 commands, 0 overrun(s) after the first chunk, 48 switches; step
//!   at switches median 0.6027 max 0.9816 rad, inside chunks median 0.1409 rad
//! ```
//!
//! Guidance halves the step at the switches (median 0.61 -> 0.31 rad).

use std::path::PathBuf;

use ndarray::{ArrayD, Axis};
use policy_node::npy::read_npy;
use policy_node::policy::rtc::RtcSettings;
use policy_node::policy::{ControlPolicy, InferenceModel, Observation, RefillMode, TickOutcome};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn reference(model: &str, name: &str) -> ArrayD<f32> {
    read_npy(fixture(&format!("{model}/reference/{name}.npy"))).unwrap()
}

fn main() {
    use std::time::{Duration, Instant};
    let period = Duration::from_secs_f64(1.0 / 30.0);
    let slow = Duration::from_millis(165);
    let state = reference("vla_pi05_rtc", "state");
    let top = reference("vla_pi05_rtc", "images.top");
    let wrist = reference("vla_pi05_rtc", "images.wrist");
    for (label, weight) in [("rtc (guided)", 5.0), ("replace (guidance 0)", 0.0)] {
        let dir = fixture("vla_pi05_rtc/onnx");
        let model = InferenceModel::builder(&dir)
            .threads(1)
            .tokenizer_dir(fixture("vla_hf_home/hub"))
            .build()
            .unwrap();
        let rtc = RtcSettings::from_ports(model.predictor().inputs(), 8, weight, 0).unwrap();
        // Delay 6 ticks: the 165 ms inference plus a tick of margin.
        let mut policy = ControlPolicy::new(model, RefillMode::Asynchronous, 6).with_rtc(rtc);
        let (mut actions, mut switches, mut overruns, mut first) =
            (Vec::new(), Vec::new(), 0, None);
        let start = Instant::now();
        let mut last_switch = None;
        for t in 0..300usize {
            let due = start + period * t as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut obs = Observation::new();
            obs.insert("state", state.index_axis(Axis(0), t % 64).to_owned());
            obs.insert("images.top", top.clone());
            obs.insert("images.wrist", wrist.clone());
            obs.set_text("task", "pick up the red cube");
            let outcome = policy
                .tick(move || {
                    std::thread::sleep(slow);
                    Ok(obs)
                })
                .unwrap();
            match outcome {
                TickOutcome::Action(a) => {
                    first.get_or_insert(t);
                    actions.push((t, a.to_vec()));
                }
                TickOutcome::Overrun if first.is_some() => overruns += 1,
                TickOutcome::Overrun => {}
            }
            let s = policy.scheduler().last_switch();
            if s != last_switch {
                switches.push(t);
                last_switch = s;
            }
        }
        let step = |i: usize| -> f64 {
            actions[i]
                .1
                .iter()
                .zip(&actions[i - 1].1)
                .map(|(a, b)| f64::from((a - b).abs()))
                .fold(0.0, f64::max)
        };
        let (mut at, mut inside) = (Vec::new(), Vec::new());
        for i in 1..actions.len() {
            if actions[i].0 != actions[i - 1].0 + 1 {
                continue;
            }
            if switches.contains(&actions[i].0) {
                at.push(step(i));
            } else {
                inside.push(step(i));
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let max_at = at.iter().copied().fold(0.0, f64::max);
        println!(
            "{label}: {} commands, {overruns} overrun(s) after the first chunk, {} switches; \
             step at switches median {:.4} max {:.4} rad, inside chunks median {:.4} rad",
            actions.len(),
            at.len(),
            med(&mut at),
            max_at,
            med(&mut inside)
        );
    }
}
