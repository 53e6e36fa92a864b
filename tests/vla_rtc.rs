//! Real-time chunking against physicalai 0.3.0's RTC execution: the `vla_pi05_rtc` fixture's
//! reference is a 64-tick run recorded with physicalai's `RTCExecution` / `RTCActionQueue`
//! (horizon 6, guidance weight 5, every inference 2 ticks long, seeded noise). Our control
//! policy in `refill_mode: rtc`, fed the same observations, the same delay and the same noise,
//! requests at the same ticks, switches at the same ticks and commands the same actions.
#![cfg(feature = "onnx")]

mod common;

use common::{fixture, reference};
use ndarray::{ArrayD, Axis};
use policy_node::policy::rtc::RtcSettings;
use policy_node::policy::{ControlPolicy, InferenceModel, Observation, RefillMode, TickOutcome};

const TOL: f32 = 1e-4;

fn run(backend: &str, guidance: f64) -> (Vec<Vec<f32>>, Vec<u64>) {
    let dir = fixture(&format!("vla_pi05_rtc/{backend}"));
    let model = InferenceModel::builder(&dir)
        .threads(1)
        .tokenizer_dir(fixture("vla_hf_home/hub"))
        .build()
        .unwrap();
    let mut rtc = RtcSettings::from_ports(model.predictor().inputs(), 6, guidance, 0).unwrap();
    let noise = reference("vla_pi05_rtc", "noise");
    rtc.recorded_noise = (0..noise.shape()[0])
        .map(|i| noise.index_axis(Axis(0), i).to_owned())
        .collect();
    // Delay 2: the inference is switched in 2 ticks after it was requested.
    let mut policy = ControlPolicy::new(model, RefillMode::Synchronous, 2).with_rtc(rtc);
    let state = reference("vla_pi05_rtc", "state");
    let top = reference("vla_pi05_rtc", "images.top");
    let wrist = reference("vla_pi05_rtc", "images.wrist");
    let task: String = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(fixture("vla_pi05_rtc/reference/task.json")).unwrap(),
    )
    .unwrap()
    .as_str()
    .map(str::to_string)
    .unwrap_or_else(|| panic!("task.json holds one string"));
    let mut actions = Vec::new();
    let mut requests = Vec::new();
    for t in 0..state.shape()[0] {
        let mut obs = Observation::new();
        obs.insert("state", state.index_axis(Axis(0), t).to_owned());
        obs.insert("images.top", top.clone());
        obs.insert("images.wrist", wrist.clone());
        obs.set_text("task", task.clone());
        match policy.tick(move || Ok(obs)).unwrap() {
            TickOutcome::Action(a) => actions.push(a.to_vec()),
            TickOutcome::Overrun => panic!("overrun at tick {t}"),
        }
        if policy.requested_on_last_tick() {
            requests.push(t as u64);
        }
    }
    (actions, requests)
}

#[test]
fn rtc_equals_physicalai_rtc_execution() {
    let schedule: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("vla_pi05_rtc/reference/schedule.json")).unwrap(),
    )
    .unwrap();
    let want_requests: Vec<u64> = schedule["request_tick"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let executed = reference("vla_pi05_rtc", "executed");
    let unguided = reference("vla_pi05_rtc", "executed_unguided");
    let backends: &[&str] = if cfg!(feature = "openvino") {
        &["onnx", "openvino"]
    } else {
        &["onnx"]
    };
    for backend in backends {
        for (weight, want) in [(5.0, &executed), (0.0, &unguided)] {
            let (actions, requests) = run(backend, weight);
            assert_eq!(requests, want_requests, "{backend}: request ticks");
            let got = ArrayD::from_shape_vec(
                vec![actions.len(), actions[0].len()],
                actions.into_iter().flatten().collect(),
            )
            .unwrap();
            assert_eq!(got.shape(), want.shape(), "{backend}: executed actions");
            let d = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!(
                "{backend}, guidance {weight}: max |ours - physicalai RTC| = {d:.2e} over 64 ticks"
            );
            assert!(d <= TOL, "{backend} guidance {weight}: {d}");
        }
    }
}
