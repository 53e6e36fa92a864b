//! `InferenceModel` and `ControlPolicy` on a real exported policy: queue behaviour, input
//! aliasing, shape errors, temporal ensembling and asynchronous refill.
//!
//! Needs a local backend: without one the file is compiled out, not passed.
#![cfg(any(feature = "onnx", feature = "openvino", feature = "torch"))]

mod common;

use std::time::Duration;

use common::*;
use ndarray::{ArrayD, Axis};
use policy_node::policy::{
    ControlPolicy, InferenceModel, Observation, PolicyError, RefillMode, TickOutcome,
};

/// Same runtime, same input: results are bitwise repeatable, but allow for kernels that
/// split work differently from call to call.
const TOL_SAME: f32 = 1e-5;

/// The tiny ACT export of the first compiled local backend (one is, by the file's `cfg`).
fn first_backend_dir() -> std::path::PathBuf {
    let b = backends()
        .into_iter()
        .find(|b| *b != policy_node::export::ExportBackend::Remote)
        .expect("a local backend is compiled in (this file's cfg)");
    act_tiny(b)
}

fn model() -> InferenceModel {
    InferenceModel::builder(first_backend_dir())
        .threads(1)
        .build()
        .unwrap()
}

fn row(chunk: &ArrayD<f32>, i: usize) -> ArrayD<f32> {
    chunk.index_axis(Axis(0), i).to_owned()
}

#[test]
fn queue_infers_once_per_chunk_and_pops_in_order() {
    let mut m = model();
    assert_eq!(m.config().chunk_size, 10);
    assert!(m.config().serves_single_actions());
    let obs0 = act_tiny_observation(0);
    let chunk0 = m.predict_chunk(&obs0).unwrap().into_dyn();

    let a0 = m.select_action(&obs0).unwrap();
    assert_eq!(a0.shape(), &[6]);
    assert!(max_abs_diff(&a0, &row(&chunk0, 0)) <= TOL_SAME);
    assert_eq!(m.queue_len(), 9, "first call queues chunk - 1 actions");
    // Later calls pop, whatever the observation says.
    let other = act_tiny_observation(5);
    for i in 1..10 {
        let a = m.select_action(&other).unwrap();
        assert!(max_abs_diff(&a, &row(&chunk0, i)) <= TOL_SAME, "step {i}");
    }
    assert_eq!(m.queue_len(), 0);
    assert_eq!(m.scheduler().stats().chunks, 1);
    // The 11th call refills from the observation it is given.
    let chunk5 = m.predict_chunk(&other).unwrap().into_dyn();
    let a10 = m.select_action(&other).unwrap();
    assert!(max_abs_diff(&a10, &row(&chunk5, 0)) <= TOL_SAME);
    assert_eq!(m.scheduler().stats().chunks, 2);
}

#[test]
fn reset_clears_the_queue() {
    let mut m = model();
    let obs0 = act_tiny_observation(0);
    let obs5 = act_tiny_observation(5);
    m.select_action(&obs0).unwrap();
    m.select_action(&obs0).unwrap();
    m.reset();
    assert_eq!(m.queue_len(), 0);
    let chunk5 = m.predict_chunk(&obs5).unwrap().into_dyn();
    let a = m.select_action(&obs5).unwrap();
    assert!(
        max_abs_diff(&a, &row(&chunk5, 0)) <= TOL_SAME,
        "after reset the next call infers"
    );
}

#[test]
fn n_action_steps_executes_only_the_first_actions() {
    let dir = first_backend_dir();
    let mut m = InferenceModel::builder(&dir)
        .n_action_steps(3)
        .build()
        .unwrap();
    let obs0 = act_tiny_observation(0);
    let obs1 = act_tiny_observation(1);
    let chunk0 = m.predict_chunk(&obs0).unwrap().into_dyn();
    let chunk1 = m.predict_chunk(&obs1).unwrap().into_dyn();
    m.select_action(&obs0).unwrap();
    assert_eq!(m.queue_len(), 2);
    m.select_action(&obs0).unwrap();
    let a2 = m.select_action(&obs0).unwrap();
    assert!(max_abs_diff(&a2, &row(&chunk0, 2)) <= TOL_SAME);
    let a3 = m.select_action(&obs1).unwrap();
    assert!(
        max_abs_diff(&a3, &row(&chunk1, 0)) <= TOL_SAME,
        "refill after 3 steps"
    );

    let e = InferenceModel::builder(&dir)
        .n_action_steps(11)
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("n_action_steps") && e.contains("10"), "{e}");
}

#[test]
fn without_queue_the_whole_chunk_is_returned() {
    let dir = first_backend_dir();
    let mut m = InferenceModel::builder(&dir)
        .use_action_queue(false)
        .build()
        .unwrap();
    let out = m.select_action(&act_tiny_observation(2)).unwrap();
    assert_eq!(out.shape(), &[10, 6]);
    assert!(
        max_abs_diff(&out, &act_tiny_action(2)) <= 1e-4,
        "matches the PyTorch reference"
    );
}

#[test]
fn aliases_and_batch_dims_bind() {
    let mut m = model();
    let base = act_tiny_observation(1);
    let mut obs = Observation::new();
    obs.insert(
        "observation.state",
        base.get("state").unwrap().clone().insert_axis(Axis(0)),
    );
    obs.insert(
        "observation.images.top",
        base.get("images").unwrap().clone(),
    );
    let got = m.predict_chunk(&obs).unwrap().into_dyn();
    assert!(max_abs_diff(&got, &act_tiny_action(1)) <= 1e-4);
}

#[test]
fn shape_mismatch_names_tensor_and_shapes() {
    let mut m = model();
    let mut obs = act_tiny_observation(0);
    obs.insert("images", ArrayD::zeros(vec![3, 32, 32]));
    let e = m.select_action(&obs).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PolicyError::Shape { .. }), "{msg}");
    assert!(
        msg.contains("`images`") && msg.contains("[1, 3, 64, 64]") && msg.contains("[3, 32, 32]"),
        "{msg}"
    );

    let mut obs = act_tiny_observation(0);
    obs.remove("state");
    let msg = m.select_action(&obs).unwrap_err().to_string();
    assert!(msg.contains("`state`"), "{msg}");

    let mut obs = act_tiny_observation(0);
    obs.get_mut("state").unwrap()[[2]] = f32::NAN;
    let msg = m.select_action(&obs).unwrap_err().to_string();
    assert!(msg.contains("state") && msg.contains("non-finite"), "{msg}");
}

#[test]
fn preprocess_hook_runs_before_binding() {
    let dir = first_backend_dir();
    // The hook renames a custom key to what the model expects.
    let mut m = InferenceModel::builder(&dir)
        .preprocess(|obs: &mut Observation| {
            let s = obs
                .remove("joint_positions")
                .ok_or_else(|| PolicyError::Preprocess("no joint_positions".into()))?;
            obs.insert("state", s);
            Ok(())
        })
        .build()
        .unwrap();
    let base = act_tiny_observation(4);
    let mut obs = Observation::new();
    obs.insert("joint_positions", base.get("state").unwrap().clone());
    obs.insert("images", base.get("images").unwrap().clone());
    let got = m.predict_chunk(&obs).unwrap().into_dyn();
    assert!(max_abs_diff(&got, &act_tiny_action(4)) <= 1e-4);
}

#[test]
fn temporal_ensembling_averages_overlapping_chunks() {
    let dir = first_backend_dir();
    let coeff = 0.1f64;
    let mut m = InferenceModel::builder(&dir)
        .temporal_ensemble_coeff(coeff)
        .build()
        .unwrap();
    let obs: Vec<Observation> = (0..3).map(act_tiny_observation).collect();
    let chunks: Vec<ArrayD<f32>> = obs
        .iter()
        .map(|o| m.predict_chunk(o).unwrap().into_dyn())
        .collect();
    let a0 = m.select_action(&obs[0]).unwrap();
    let a1 = m.select_action(&obs[1]).unwrap();
    let a2 = m.select_action(&obs[2]).unwrap();
    assert!(max_abs_diff(&a0, &row(&chunks[0], 0)) <= TOL_SAME);
    let w = |i: i32| (-coeff * f64::from(i)).exp() as f32;
    let expect1 = (row(&chunks[0], 1) * w(0) + row(&chunks[1], 0) * w(1)) / (w(0) + w(1));
    assert!(max_abs_diff(&a1, &expect1) <= 1e-5);
    let expect2 =
        (row(&chunks[0], 2) * w(0) + row(&chunks[1], 1) * w(1) + row(&chunks[2], 0) * w(2))
            / (w(0) + w(1) + w(2));
    assert!(max_abs_diff(&a2, &expect2) <= 1e-5);
}

/// The asynchronous policy, given time for each refill, serves exactly what the synchronous
/// one serves with the same refill-ahead setting (this is what makes live runs and offline
/// replays agree).
#[test]
fn async_refill_matches_sync_when_in_time() {
    let dir = first_backend_dir();
    let build = |mode| {
        ControlPolicy::new(
            InferenceModel::builder(&dir).threads(1).build().unwrap(),
            mode,
            3,
        )
    };
    let mut sync = build(RefillMode::Synchronous);
    let mut asyn = build(RefillMode::Asynchronous);
    let mut overruns = 0;
    for t in 0..25 {
        let o = act_tiny_observation(t % 8);
        let s = sync.tick({
            let o = o.clone();
            move || Ok(o)
        });
        let a = asyn.tick(move || Ok(o));
        match (s.unwrap(), a.unwrap()) {
            (TickOutcome::Action(x), TickOutcome::Action(y)) => {
                assert!(
                    max_abs_diff(&x.into_dyn(), &y.into_dyn()) <= TOL_SAME,
                    "tick {t}"
                )
            }
            // Tick 0: the async chunk (from tick 0's observation) is still being computed; it is
            // switched in at tick 1 starting at its row 1, exactly where the sync one is.
            (TickOutcome::Action(_), TickOutcome::Overrun) if t == 0 => overruns += 1,
            (x, y) => panic!("tick {t}: sync {x:?} async {y:?}"),
        }
        // Give the worker the time a control period would.
        assert!(asyn.wait_for_refill(Duration::from_secs(10)).unwrap());
    }
    assert_eq!(
        overruns, 1,
        "the async policy has nothing to serve on its very first tick"
    );
    // Chunks from ticks 0, 7, 14, 21: 10 rows, then 7 (3 skipped for the refill-ahead) each.
    assert_eq!(asyn.latency().count, 4);
    assert_eq!(sync.latency().count, 4);
}

#[test]
fn reset_discards_the_in_flight_refill() {
    let dir = first_backend_dir();
    let mut p = ControlPolicy::new(
        InferenceModel::load(&dir).unwrap(),
        RefillMode::Asynchronous,
        0,
    );
    let o = act_tiny_observation(0);
    assert_eq!(p.tick(move || Ok(o)).unwrap(), TickOutcome::Overrun);
    let (dropped, in_flight) = p.reset();
    assert_eq!((dropped, in_flight), (0, true));
    std::thread::sleep(Duration::from_millis(200));
    // The old chunk arrives but belongs to the previous episode: still nothing to serve,
    // and a new request goes out.
    let o = act_tiny_observation(1);
    assert_eq!(p.tick(move || Ok(o)).unwrap(), TickOutcome::Overrun);
    assert_eq!(p.scheduler().stats().chunks, 0);
    assert!(p.wait_for_refill(Duration::from_secs(10)).unwrap());
    assert_eq!(p.scheduler().stats().chunks, 1);
}

#[test]
fn bad_observation_in_async_mode_is_reported() {
    let dir = first_backend_dir();
    let mut p = ControlPolicy::new(
        InferenceModel::load(&dir).unwrap(),
        RefillMode::Asynchronous,
        0,
    );
    let mut o = act_tiny_observation(0);
    o.insert("state", ArrayD::zeros(vec![5]));
    assert_eq!(p.tick(move || Ok(o)).unwrap(), TickOutcome::Overrun);
    let e = p
        .wait_for_refill(Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("state") && e.contains("[5]"), "{e}");
}
