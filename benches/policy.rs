//! Policy-layer benchmarks: `select_action` served from a non-empty queue (the per-tick cost
//! when no inference is due), the scheduler alone, the scheduler per `chunk_blend` mode, one
//! `predict` per compiled backend on the tiny fixture, the package statistics (normalize +
//! denormalize), and a package's whole pipeline against the raw model call on the same graph.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Axis;
use policy_node::npy::read_npy;
use policy_node::policy::{ChunkBlend, InferenceModel, Observation, Scheduler};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn observation() -> Observation {
    let state = read_npy(fixture("act_tiny/reference/state.npy")).unwrap();
    let images = read_npy(fixture("act_tiny/reference/images.npy")).unwrap();
    let mut obs = Observation::new();
    obs.insert("state", state.index_axis(Axis(0), 0).to_owned());
    obs.insert("images", images.index_axis(Axis(0), 0).to_owned());
    obs
}

fn bench_queue(c: &mut Criterion) {
    let backends = policy_node::runtime::compiled_backends();
    let Some(backend) = backends.first() else {
        return;
    };
    let dir = fixture(&format!("act_tiny/{}", backend.as_str()));
    let mut model = InferenceModel::builder(&dir).threads(1).build().unwrap();
    let obs = observation();
    let chunk = model.config().chunk_size;
    // Only pops are timed: each round resets, fills the queue with one (untimed) inference,
    // then times the chunk - 1 calls served from the queue.
    c.bench_function("select_action from a non-empty queue", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                model.reset();
                model.select_action(&obs).unwrap();
                let n = ((chunk - 1) as u64).min(iters - done);
                let t = Instant::now();
                for _ in 0..n {
                    std::hint::black_box(model.select_action(&obs).unwrap());
                }
                total += t.elapsed();
                done += n;
            }
            total
        })
    });

    let rows = ndarray::Array2::<f32>::zeros((100, 14));
    let mut s = Scheduler::new(100, 0, None);
    c.bench_function("scheduler next_action (chunk 100 x 14)", |b| {
        b.iter(|| {
            if s.needs_refill() {
                s.requested();
                s.deliver(s.tick(), rows.clone());
            }
            std::hint::black_box(s.next_action())
        })
    });
}

/// The per-tick cost of each `chunk_blend` mode, switch ticks included (amortised over the
/// 50 ticks of a plan), for an ACT-size chunk (100 x 14 joints, 50 executed, 10 refilled
/// ahead), against `none` in the same run. Inference is instant (a prepared chunk is
/// delivered): what is timed is deliver + switch-in + blend + low-pass + pop.
fn bench_chunk_blend(c: &mut Criterion) {
    let rows: Vec<ndarray::Array2<f32>> = (0..4)
        .map(|k| {
            ndarray::Array2::from_shape_fn((100, 14), |(i, j)| {
                ((k * 31 + i * 7 + j) as f32 * 0.013).sin()
            })
        })
        .collect();
    let modes: [(&str, ChunkBlend, f64); 8] = [
        ("none", ChunkBlend::None, 1.0),
        ("latest_only", ChunkBlend::LatestOnly, 1.0),
        ("linear 10", ChunkBlend::Linear { steps: 10 }, 1.0),
        ("weighted_average", ChunkBlend::WeightedAverage, 1.0),
        ("average", ChunkBlend::Average, 1.0),
        ("ensemble 0.01", ChunkBlend::Ensemble { coeff: 0.01 }, 1.0),
        ("none + low_pass 0.5", ChunkBlend::None, 0.5),
        (
            "linear 10 + low_pass 0.5",
            ChunkBlend::Linear { steps: 10 },
            0.5,
        ),
    ];
    let mut group = c.benchmark_group("chunk_blend per tick (100 x 14, 50 executed, 10 ahead)");
    for (name, blend, alpha) in modes {
        let mut s = Scheduler::new(50, 10, None).with_blend(blend, alpha);
        let mut k = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                if s.needs_refill() {
                    s.requested();
                    k += 1;
                    s.deliver(s.tick(), rows[k % rows.len()].clone());
                }
                std::hint::black_box(s.next_action())
            })
        });
    }
    group.finish();
    // The worst tick of each mode: the switch to a new chunk (blending the whole plan),
    // timed alone; the ticks between switches run untimed.
    let mut group = c.benchmark_group("chunk_blend switch tick (100 x 14, 50 executed, 10 ahead)");
    for (name, blend, alpha) in modes {
        let mut s = Scheduler::new(50, 10, None).with_blend(blend, alpha);
        let mut k = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    if s.needs_refill() {
                        s.requested();
                        k += 1;
                        s.deliver(s.tick(), rows[k % rows.len()].clone());
                    }
                    let tick = s.tick();
                    let t = Instant::now();
                    let a = s.next_action();
                    let dt = t.elapsed();
                    std::hint::black_box(a);
                    if s.last_switch() == Some(tick) {
                        total += dt;
                        done += 1;
                    }
                }
                total
            })
        });
    }
    group.finish();
}

fn bench_predict(c: &mut Criterion) {
    let obs = observation();
    let state = obs.get("state").unwrap().clone().insert_axis(Axis(0));
    let images = obs.get("images").unwrap().clone().insert_axis(Axis(0));
    for backend in policy_node::runtime::compiled_backends() {
        let dir = fixture(&format!("act_tiny/{}", backend.as_str()));
        let export = policy_node::export::ExportDir::open(&dir).unwrap();
        let opts = policy_node::runtime::RuntimeOptions {
            threads: Some(1),
            ..Default::default()
        };
        let mut a = policy_node::runtime::get_adapter(backend, &opts).unwrap();
        a.load(&export.model_file).unwrap();
        let inputs: [(&str, ndarray::ArrayViewD<'_, f32>); 2] =
            [("state", state.view()), ("images", images.view())];
        c.bench_function(&format!("predict act_tiny {backend} (1 thread)"), |b| {
            b.iter(|| std::hint::black_box(a.predict(&inputs).unwrap()))
        });
    }
}

/// normalize (14-joint state) + denormalize (100 x 14 chunk): the processors' cost per
/// inference, mean_std with a mask and quantiles.
fn bench_normalize(c: &mut Criterion) {
    use policy_node::policy::processors::{FeatureStatsMap, NormMode, StatsSource, StatsTransform};
    let v = |x: f64| ndarray::ArrayD::from_elem(vec![14], x);
    let mut stats = FeatureStatsMap::new();
    stats.insert(
        "observation.state".to_string(),
        [("mean", v(0.1)), ("std", v(0.5)), ("mask", v(1.0))]
            .into_iter()
            .map(|(k, a)| (k.to_string(), a))
            .collect(),
    );
    stats.insert(
        "action".to_string(),
        [("q01", v(-1.0)), ("q99", v(2.0))]
            .into_iter()
            .map(|(k, a)| (k.to_string(), a))
            .collect(),
    );
    let src = || StatsSource::File("bench".into());
    let norm = StatsTransform::from_stats(
        NormMode::MeanStd,
        false,
        &stats,
        &["observation.state"],
        src(),
    )
    .unwrap();
    let denorm =
        StatsTransform::from_stats(NormMode::Quantiles, true, &stats, &["action"], src()).unwrap();
    let mut obs = std::collections::BTreeMap::new();
    obs.insert(
        "observation.state".to_string(),
        ndarray::ArrayD::from_elem(vec![14], 0.3f32),
    );
    let mut out = std::collections::BTreeMap::new();
    out.insert(
        "action".to_string(),
        ndarray::ArrayD::from_elem(vec![1, 100, 14], 0.2f32),
    );
    c.bench_function("normalize state 14 + denormalize chunk 100 x 14", |b| {
        b.iter(|| {
            norm.apply(&mut obs, None).unwrap();
            denorm.apply(&mut out, Some("action")).unwrap();
            std::hint::black_box((&obs, &out));
        })
    });
}

/// A package's whole pipeline (`predict_chunk`: normalize, graph, denormalize) against the
/// raw adapter call on the same graph with inputs normalised beforehand, in one run.
fn bench_package_pipeline(c: &mut Criterion) {
    for backend in policy_node::runtime::compiled_backends() {
        if backend == policy_node::export::ExportBackend::TorchScript {
            continue;
        }
        let dir = fixture(&format!("act_tiny_lerobot/{}", backend.as_str()));
        let mut model = InferenceModel::builder(&dir).threads(1).build().unwrap();
        let get = |n: &str| {
            read_npy(fixture(&format!("act_tiny_lerobot/reference/{n}.npy")))
                .unwrap()
                .index_axis(Axis(0), 0)
                .to_owned()
        };
        let obs: Observation = [
            ("observation.state", get("observation.state")),
            ("observation.images.top", get("observation.images.top")),
        ]
        .into_iter()
        .collect();
        c.bench_function(
            &format!("package pipeline act_tiny_lerobot {backend} (1 thread)"),
            |b| b.iter(|| std::hint::black_box(model.predict_chunk(&obs).unwrap())),
        );
        let export = policy_node::export::ExportDir::open(&dir).unwrap();
        let opts = policy_node::runtime::RuntimeOptions {
            threads: Some(1),
            ..Default::default()
        };
        let mut a = policy_node::runtime::get_adapter(backend, &opts).unwrap();
        a.load(&export.model_file).unwrap();
        let s = get("observation.state").insert_axis(Axis(0));
        let i = get("observation.images.top").insert_axis(Axis(0));
        let inputs = [
            ("observation.state", s.view()),
            ("observation.images.top", i.view()),
        ];
        c.bench_function(
            &format!("raw predict act_tiny_lerobot {backend} (1 thread)"),
            |b| b.iter(|| std::hint::black_box(a.predict(&inputs).unwrap())),
        );
    }
}

/// The VLA preprocessing of one observation: the `pi05` step for 2 cameras of 224 x 224
/// (scaling, stacking, the prompt) and the tokenizer of the `vla_pi05` fixture on that prompt.
fn bench_vla(c: &mut Criterion) {
    use policy_node::policy::processors::tokenizer::HfTokenizer;
    use policy_node::policy::processors::vla::{Pi05, TASK};
    let tok = HfTokenizer::from_file(
        &fixture("vla_hf_home/hub/models--policy-node--tiny-vla-tokenizer/snapshots/56970fdc8d7dab29016539388a970973edbf1a0f/tokenizer.json"),
        48,
    )
    .unwrap();
    let pi05 = Pi05::new(
        224,
        224,
        1,
        vec!["images.top".into(), "images.wrist".into()],
    );
    let mut obs = Observation::new();
    obs.insert("state", ndarray::ArrayD::from_elem(vec![6], 0.1f32));
    obs.insert(
        "images.top",
        ndarray::ArrayD::from_elem(vec![3, 224, 224], 0.5f32),
    );
    obs.insert(
        "images.wrist",
        ndarray::ArrayD::from_elem(vec![3, 224, 224], 0.25f32),
    );
    obs.set_text(TASK, "pick up the red cube and place it in the bowl");
    c.bench_function("pi05 step, 2 cameras 224x224", |b| {
        b.iter_batched(
            || obs.clone(),
            |mut o| {
                pi05.apply(&mut o).unwrap();
                o
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let prompt = "Task: pick up the red cube and place it in the bowl, State: 140 128 17 200 99 255;\nAction: ";
    c.bench_function("hf_tokenizer, a Pi0.5 prompt (48 tokens)", |b| {
        b.iter(|| std::hint::black_box(tok.encode(prompt).unwrap()))
    });
    c.bench_function("pi05 step + hf_tokenizer, 2 cameras 224x224", |b| {
        b.iter_batched(
            || obs.clone(),
            |mut o| {
                pi05.apply(&mut o).unwrap();
                tok.apply(&mut o).unwrap();
                o
            },
            criterion::BatchSize::LargeInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench_queue, bench_chunk_blend, bench_predict, bench_normalize, bench_package_pipeline, bench_vla
}
criterion_main!(benches);
