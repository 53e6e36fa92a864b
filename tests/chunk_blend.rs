//! Chunk hand-over against its reference: physicalai 0.3.0's `LerpSmoother`,
//! `ChunkedActionQueue` and `LowPassFilterCallback` (run by `tests/peers/physicalai_reference.py`
//! in the venv's Python) are fed the same rows as `policy::blend` and the `Scheduler`, and
//! must give the same actions within `TOL` (float32 arithmetic in a different order).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use ndarray::{Array1, Array2};
use policy_node::policy::blend::{lerp_merge, LowPass};
use policy_node::policy::{ChunkBlend, Scheduler};
use serde_json::{json, Value};

/// Largest allowed |ours - physicalai| (values are O(1)).
const TOL: f32 = 1e-6;
const JOINTS: usize = 14;

/// A deterministic generator of values in [-1, 1) (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        (v as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn rows(&mut self, n: usize) -> Array2<f32> {
        Array2::from_shape_fn((n, JOINTS), |_| self.next())
    }
}

fn to_json(a: &Array2<f32>) -> Value {
    json!(a.rows().into_iter().map(|r| r.to_vec()).collect::<Vec<_>>())
}

fn rows_of(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "row lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn reference(request: &Value) -> Value {
    let mut child = Command::new(common::python())
        .arg(common::root().join("tests/peers/physicalai_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the physicalai reference script");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("reference script output");
    assert!(
        out.status.success(),
        "physicalai reference failed (is physicalai==0.3.0 installed? tools/setup.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("reference JSON");
    assert_eq!(v["physicalai"], json!("0.3.0"), "reference version");
    v
}

/// `linear` pairs: remaining rows, incoming rows, chunk_blend_steps; every edge (nothing
/// left, more left than incoming, window longer or shorter than what is left, one step).
const MERGES: &[(usize, usize, usize)] = &[
    (0, 10, 5),
    (3, 10, 5),
    (6, 10, 3),
    (12, 10, 5),
    (5, 5, 1),
    (1, 8, 5),
    (7, 20, 100),
    (40, 90, 10),
];

#[test]
fn linear_lerp_queue_and_low_pass_match_physicalai() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let merges: Vec<(Array2<f32>, Array2<f32>, usize)> = MERGES
        .iter()
        .map(|&(r, i, steps)| (rng.rows(r), rng.rows(i), steps))
        .collect();

    // The scheduler, as the control loop drives it with inline inference: chunk 10, 4 rows
    // executed per chunk, 2 steps refilled ahead, linear over 3 ticks. Each chunk requested
    // is recorded with the tick of its observation, each switch with its tick.
    let (chunk_len, n_action_steps, ahead, steps) = (10usize, 4usize, 2usize, 3usize);
    let mut s =
        Scheduler::new(n_action_steps, ahead, None).with_blend(ChunkBlend::Linear { steps }, 1.0);
    let mut requested: Vec<(u64, Array2<f32>)> = Vec::new();
    let mut actions: Vec<Array1<f32>> = Vec::new();
    let mut switches: Vec<(u64, usize)> = Vec::new(); // (tick, index into requested)
    for _ in 0..60 {
        if s.needs_refill() {
            s.requested();
            let c = rng.rows(chunk_len);
            requested.push((s.tick(), c.clone()));
            s.deliver(s.tick(), c);
        }
        let tick = s.tick();
        actions.push(s.next_action().expect("inline inference never overruns"));
        if s.last_switch() == Some(tick) {
            switches.push((tick, requested.len() - 1));
        }
    }
    // The same hand-over in physicalai's queue: each chunk pushed at its switch tick, its
    // rows for ticks already past skipped (offset), then popped until the next switch.
    let mut pushes = Vec::new();
    for (k, (tick, idx)) in switches.iter().enumerate() {
        let (t0, c) = &requested[*idx];
        let next = switches.get(k + 1).map_or(actions.len() as u64, |s| s.0);
        pushes.push(json!({
            "chunk": to_json(c),
            "offset": tick - t0,
            "pops": next - tick,
        }));
    }
    assert!(switches.len() >= 8, "too few switches: {switches:?}");
    assert!(
        switches
            .iter()
            .skip(1)
            .all(|(t, i)| t - requested[*i].0 == ahead as u64),
        "every later chunk is switched in {ahead} ticks after its observation"
    );

    let lp_actions: Vec<Vec<f32>> = (0..30).map(|_| rng.rows(1).row(0).to_vec()).collect();
    let alpha = 0.3;

    let request = json!({
        "merges": merges.iter().map(|(r, i, steps)| json!({
            "remaining": to_json(r), "incoming": to_json(i), "steps": steps,
        })).collect::<Vec<_>>(),
        "queues": [{"steps": steps, "pushes": pushes}],
        "low_pass": {"alpha": alpha, "actions": lp_actions},
    });
    let reply = reference(&request);
    assert_eq!(
        reply["merges"].as_array().unwrap().len(),
        merges.len(),
        "one physicalai merge per case"
    );
    assert_eq!(
        rows_of(&reply["low_pass"]).len(),
        lp_actions.len(),
        "one physicalai low-pass output per action"
    );

    for (k, ((r, i, steps), want)) in merges
        .iter()
        .zip(reply["merges"].as_array().unwrap())
        .enumerate()
    {
        let ours = lerp_merge(r.view(), i.view(), *steps);
        let want = rows_of(want);
        assert_eq!(ours.nrows(), want.len(), "merge {k}: row count");
        for (j, w) in want.iter().enumerate() {
            let d = max_diff(ours.row(j).as_slice().unwrap(), w);
            assert!(
                d <= TOL,
                "merge {k} {:?} row {j}: differs by {d}",
                MERGES[k]
            );
        }
    }

    let popped = reply["queues"][0].as_array().unwrap();
    assert_eq!(popped.len(), actions.len(), "actions popped");
    for (t, (ours, want)) in actions.iter().zip(popped).enumerate() {
        assert!(!want.is_null(), "tick {t}: physicalai's queue was empty");
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let d = max_diff(ours.as_slice().unwrap(), &want);
        assert!(
            d <= TOL,
            "tick {t}: scheduler differs from physicalai by {d}"
        );
    }

    let mut lp = LowPass::new(alpha);
    for (k, (a, want)) in lp_actions
        .iter()
        .zip(rows_of(&reply["low_pass"]))
        .enumerate()
    {
        let mut x = Array1::from_vec(a.clone());
        lp.apply(&mut x);
        let d = max_diff(x.as_slice().unwrap(), &want);
        assert!(d <= TOL, "low-pass step {k} differs by {d}");
    }
}

/// How `chunk_blend` meets the rest of the configuration: `ensemble` takes the temporal
/// ensembling coefficient (per-tick ensembling then stays off), any other blend mode cannot
/// be combined with per-tick ensembling, and `low_pass_alpha` must be in (0, 1]; errors name
/// the parameter.
#[test]
fn chunk_blend_configuration_rules() {
    let dir = common::fixture("act_tiny/onnx");
    let m = policy_node::policy::InferenceModel::builder(&dir)
        .chunk_blend(ChunkBlend::Ensemble { coeff: 0.01 })
        .temporal_ensemble_coeff(0.2)
        .build()
        .unwrap();
    assert_eq!(m.config().chunk_blend, ChunkBlend::Ensemble { coeff: 0.2 });
    assert_eq!(m.config().temporal_ensemble_coeff, None);
    assert!(!m.scheduler().is_ensembling());

    let e = policy_node::policy::InferenceModel::builder(&dir)
        .chunk_blend(ChunkBlend::Linear { steps: 3 })
        .temporal_ensemble_coeff(0.2)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`chunk_blend`") && e.contains("temporal_ensemble_coeff"),
        "{e}"
    );
    for alpha in [0.0, -1.0, 1.5, f64::NAN] {
        let e = policy_node::policy::InferenceModel::builder(&dir)
            .low_pass_alpha(alpha)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`low_pass_alpha`"), "{alpha}: {e}");
    }
    // select_action blends too: 4 of 10 rows executed, linear over 3 ticks.
    let mut m = policy_node::policy::InferenceModel::builder(&dir)
        .n_action_steps(4)
        .chunk_blend(ChunkBlend::Linear { steps: 3 })
        .build()
        .unwrap();
    let mut plain = policy_node::policy::InferenceModel::builder(&dir)
        .n_action_steps(4)
        .build()
        .unwrap();
    let (a, b) = (
        common::act_tiny_observation(0),
        common::act_tiny_observation(5),
    );
    let mut differ = false;
    for t in 0..8 {
        let obs = if t < 4 { &a } else { &b };
        let x = m.select_action(obs).unwrap();
        let y = plain.select_action(obs).unwrap();
        if t == 4 {
            // The switch tick: linear starts on the old plan (row 4 of the first chunk).
            let chunk = common::act_tiny_action(0);
            let d = x
                .iter()
                .zip(chunk.index_axis(ndarray::Axis(0), 4).iter())
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(d < 1e-5, "switch tick differs from the old plan by {d}");
        }
        differ |= x != y;
    }
    assert!(differ, "blending changed nothing");
}
