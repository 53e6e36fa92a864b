//! The ROS-free control loop under the lifecycle and live parameters, on the tiny ONNX
//! policy with synchronous refill (deterministic): the plan of each chunk switched in is
//! exactly the commands drawn from it (position and rate limits included), live changes take
//! effect from the next tick, changes the loaded export cannot take are refused, and
//! deactivate drops the plan and the inputs.
#![cfg(feature = "onnx")]

mod common;

use common::fixture;
use policy_node::control::{
    ControlLoop, ImageData, LoopOptions, NodeParams, ParamMap, ParamValue, TickStatus,
};

const PERIOD_NS: i64 = 33_333_333;
const JOINTS: [&str; 6] = ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6"];

fn params(extra: &[(&str, ParamValue)]) -> NodeParams {
    let mut m = ParamMap::new();
    m.insert(
        "export_dir".into(),
        ParamValue::String(fixture("act_tiny/onnx").display().to_string()),
    );
    m.insert(
        "joint_names".into(),
        ParamValue::StringArray(JOINTS.iter().map(|s| s.to_string()).collect()),
    );
    m.insert("refill_mode".into(), ParamValue::String("sync".into()));
    m.insert("refill_ahead_steps".into(), ParamValue::Int(0));
    m.insert("threads".into(), ParamValue::Int(1));
    for (k, v) in extra {
        m.insert(k.to_string(), v.clone());
    }
    NodeParams::from_map(&m).expect("valid parameters").0
}

fn control(p: NodeParams) -> ControlLoop {
    let mut c = ControlLoop::new(
        p,
        LoopOptions {
            force_sync: true,
            auto_refill_from_warmup: false,
        },
    )
    .expect("load the tiny policy");
    c.activate();
    c
}

/// A state and an image that change with `t`, so that each chunk differs.
fn feed(c: &mut ControlLoop, t: i64) {
    let now = t * PERIOD_NS;
    let state: Vec<f64> = (0..6)
        .map(|j| 0.3 * ((t as f64) * 0.1 + j as f64).sin())
        .collect();
    c.on_joint_state(now, &JOINTS, &state).unwrap();
    let (w, h) = (64u32, 64u32);
    let data: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i as i64 * 7 + t * 13) % 256) as u8)
        .collect();
    let image = ImageData::raw(w, h, w * 3, "rgb8", data).unwrap();
    c.on_image(0, now, image).unwrap();
}

/// Runs `ticks` ticks from tick `from`: the commands, and each plan with the index of the
/// command it starts at.
/// Plans with the index of the command each starts at.
type Plans = Vec<(usize, Vec<Vec<f64>>)>;

fn run(c: &mut ControlLoop, from: i64, ticks: i64) -> (Vec<Vec<f64>>, Plans) {
    let mut commands = Vec::new();
    let mut plans = Vec::new();
    for t in from..from + ticks {
        feed(c, t);
        match c.tick(t * PERIOD_NS) {
            TickStatus::Command(cmd) => commands.push(cmd),
            other => panic!("tick {t}: {other:?}"),
        }
        if let Some(plan) = c.take_plan() {
            plans.push((commands.len() - 1, plan));
        }
        assert!(c.take_plan().is_none(), "a plan is taken once");
    }
    (commands, plans)
}

/// Each plan equals the commands drawn from it, and the plans tile the commands.
fn assert_plans_are_the_commands(commands: &[Vec<f64>], plans: &[(usize, Vec<Vec<f64>>)]) {
    assert!(plans.len() >= 3, "{} plans", plans.len());
    assert_eq!(plans[0].0, 0, "the first command starts a plan");
    for (i, (start, rows)) in plans.iter().enumerate() {
        if let Some((next, _)) = plans.get(i + 1) {
            assert_eq!(
                start + rows.len(),
                *next,
                "plan {i} ends where the next starts"
            );
        }
        for (k, row) in rows.iter().enumerate() {
            if let Some(cmd) = commands.get(start + k) {
                assert_eq!(cmd, row, "plan {i} row {k} vs command {}", start + k);
            }
        }
    }
}

#[test]
fn each_plan_is_the_commands_drawn_from_it_with_limits() {
    let mut free = control(params(&[]));
    let (raw, raw_plans) = run(&mut free, 0, 40);
    assert_plans_are_the_commands(&raw, &raw_plans);
    assert_eq!(raw_plans[0].1.len(), 10, "the whole chunk of 10");

    // Limits that bind: a rate limit smaller than the jumps at chunk switches, and position
    // limits inside the range the policy commands.
    let lo: Vec<f64> = (0..6)
        .map(|j| raw.iter().map(|c| c[j]).fold(f64::INFINITY, f64::min) + 0.01)
        .collect();
    let hi: Vec<f64> = lo.iter().map(|l| l + 0.05).collect();
    let mut limited = control(params(&[
        ("max_joint_delta", ParamValue::DoubleArray(vec![0.02])),
        ("joint_lower_limits", ParamValue::DoubleArray(lo.clone())),
        ("joint_upper_limits", ParamValue::DoubleArray(hi.clone())),
    ]));
    let (commands, plans) = run(&mut limited, 0, 40);
    assert_plans_are_the_commands(&commands, &plans);
    assert_ne!(commands, raw, "the limits changed the commands");
    for c in &commands {
        for j in 0..6 {
            assert!(c[j] >= lo[j] && c[j] <= hi[j], "{c:?}");
        }
    }
    for w in commands.windows(2) {
        for j in 0..6 {
            assert!((w[1][j] - w[0][j]).abs() <= 0.02 + 1e-12, "{w:?}");
        }
    }

    // Off by parameter, and with temporal ensembling (no plan is known in advance).
    let mut off = control(params(&[("publish_action_chunk", ParamValue::Bool(false))]));
    assert!(run(&mut off, 0, 12).1.is_empty());
    let mut ens = control(params(&[(
        "temporal_ensemble_coeff",
        ParamValue::Double(0.01),
    )]));
    assert!(run(&mut ens, 0, 12).1.is_empty());
}

#[test]
fn n_action_steps_with_refill_ahead_skips_the_rows_already_past() {
    // Refill 3 ahead, n_action_steps 8, chunk 10: the first chunk runs 8 rows; the next one is
    // requested 3 ticks before the switch, so its rows 0..3 are past and rows 3..10 remain
    // (7, the end of the chunk).
    let mut c = control(params(&[
        ("n_action_steps", ParamValue::Int(8)),
        ("refill_ahead_steps", ParamValue::Int(3)),
    ]));
    let (commands, plans) = run(&mut c, 0, 30);
    assert_plans_are_the_commands(&commands, &plans);
    assert_eq!(plans[0].1.len(), 8);
    assert_eq!(plans[1].1.len(), 7);
}

#[test]
fn live_changes_apply_from_the_next_tick() {
    let p = params(&[]);
    let mut c = control(p.clone());
    run(&mut c, 0, 5);

    // max_joint_delta: the next command moves at most that much.
    let mut q = p.clone();
    q.max_joint_delta = vec![0.001];
    let changes = c.apply_live(q.clone()).unwrap();
    assert!(
        changes.iter().any(|m| m.contains("max_joint_delta")),
        "{changes:?}"
    );
    let (before, _) = run(&mut c, 5, 1);
    let (after, _) = run(&mut c, 6, 3);
    let mut prev = before[0].clone();
    for cmd in &after {
        for j in 0..6 {
            assert!((cmd[j] - prev[j]).abs() <= 0.001 + 1e-12);
        }
        prev = cmd.clone();
    }

    // n_action_steps: the queued plan is dropped, the next tick starts a chunk of 4.
    let mut r = q.clone();
    r.max_joint_delta = vec![];
    r.n_action_steps = 4;
    let changes = c.apply_live(r.clone()).unwrap();
    assert!(changes[0].contains("4 action(s) per chunk"), "{changes:?}");
    let (_, plans) = run(&mut c, 9, 9);
    assert_eq!(plans[0].0, 0, "a fresh chunk on the next tick");
    assert!(plans.iter().all(|(_, rows)| rows.len() == 4), "{plans:?}");

    // max_observation_age_ms: inputs 100 ms old are stale from the next tick.
    let mut s = r.clone();
    s.max_observation_age_ms = 50.0;
    c.apply_live(s).unwrap();
    feed(&mut c, 20);
    assert!(
        matches!(
            c.tick(20 * PERIOD_NS + 100_000_000),
            TickStatus::Stale { .. }
        ),
        "stale after the change"
    );
}

#[test]
fn changes_the_loaded_export_cannot_take_are_refused() {
    let p = params(&[]);
    let mut c = control(p.clone());
    let mut too_many = p.clone();
    too_many.n_action_steps = 11;
    let e = c.apply_live(too_many).unwrap_err();
    assert!(
        e.contains("`n_action_steps`") && e.contains("chunk size of the loaded export (10)"),
        "{e}"
    );
    let mut rate = p.clone();
    rate.control_rate_hz = 50.0;
    let e = c.check_live(&rate).unwrap_err();
    assert!(e.contains("only max_observation_age_ms"), "{e}");
    // Nothing changed: the loop still runs on the old parameters.
    assert_eq!(c.params(), &p);
    let (commands, _) = run(&mut c, 0, 3);
    assert_eq!(commands.len(), 3);
}

#[test]
fn deactivate_drops_the_plan_and_the_inputs() {
    let mut c = control(params(&[]));
    run(&mut c, 0, 4);
    assert!(c.status().queue_depth > 0);
    let message = c.deactivate();
    assert!(message.contains("dropped 6 queued action(s)"), "{message}");
    assert_eq!(c.status().queue_depth, 0);
    c.activate();
    // Inputs from before are gone: nothing is commanded until new ones arrive...
    match c.tick(5 * PERIOD_NS) {
        TickStatus::Stale { what, age_ms: None } => {
            assert!(what.contains("nothing received yet"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    // ...and then a fresh chunk starts.
    let (_, plans) = run(&mut c, 6, 2);
    assert_eq!(plans[0].0, 0);
    assert_eq!(plans[0].1.len(), 10);
    let t = c.startup_times();
    assert!(t.load > std::time::Duration::ZERO && t.warmup > std::time::Duration::ZERO);
}

// ---- a VLA policy's task -------------------------------------------------------------------

const TASK_A: &str = "pick up the red cube";
const TASK_B: &str = "put the cube in the bin";

fn vla_params(task: &str, sync: bool) -> NodeParams {
    let mut m = ParamMap::new();
    let s = |v: &str| ParamValue::String(v.into());
    m.insert(
        "export_dir".into(),
        s(&fixture("vla_pi05/onnx").display().to_string()),
    );
    m.insert(
        "tokenizer_dir".into(),
        s(&fixture("vla_hf_home/hub").display().to_string()),
    );
    m.insert(
        "joint_names".into(),
        ParamValue::StringArray(JOINTS.iter().map(|s| s.to_string()).collect()),
    );
    m.insert(
        "camera_topics".into(),
        ParamValue::StringArray(vec!["top".into(), "wrist".into()]),
    );
    m.insert("task".into(), s(task));
    m.insert("refill_mode".into(), s(if sync { "sync" } else { "async" }));
    m.insert("refill_ahead_steps".into(), ParamValue::Int(0));
    m.insert("threads".into(), ParamValue::Int(1));
    NodeParams::from_map(&m).expect("valid parameters").0
}

fn vla_control(task: &str, sync: bool) -> ControlLoop {
    let mut c = ControlLoop::new(
        vla_params(task, sync),
        LoopOptions {
            force_sync: sync,
            auto_refill_from_warmup: false,
        },
    )
    .expect("load the VLA package");
    c.activate();
    c
}

/// A constant observation for the two cameras the package declares (48x64 and 40x40).
fn vla_feed(c: &mut ControlLoop, t: i64) {
    let now = t * PERIOD_NS;
    let state = [0.1, -0.3, 0.6, 0.05, -0.2, 0.4];
    c.on_joint_state(now, &JOINTS, &state).unwrap();
    for (i, (h, w)) in [(48u32, 64u32), (40, 40)].into_iter().enumerate() {
        let data: Vec<u8> = (0..w * h * 3)
            .map(|k| ((k * 7 + i as u32 * 31) % 251) as u8)
            .collect();
        c.on_image(i, now, ImageData::raw(w, h, w * 3, "rgb8", data).unwrap())
            .unwrap();
    }
}

/// `ticks` commands from tick `from` (each tick waits for an asynchronous refill, if any, by
/// retrying the tick's time slot until it commands).
fn vla_run(c: &mut ControlLoop, from: i64, ticks: i64) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    for t in from..from + ticks {
        vla_feed(c, t);
        match c.tick(t * PERIOD_NS) {
            TickStatus::Command(cmd) => out.push(cmd),
            other => panic!("tick {t}: {other:?}"),
        }
    }
    out
}

/// The task survives `reset`; a new one (live parameter, as `~/task` sets it) applies from the
/// next chunk, never to the rest of the current one; an empty one is refused and changes
/// nothing.
#[test]
fn vla_task_survives_reset_and_applies_from_the_next_chunk() {
    let a = vla_run(&mut vla_control(TASK_A, true), 0, 12);
    let b = vla_run(&mut vla_control(TASK_B, true), 0, 12);
    assert_ne!(a[0], b[0], "the two tasks should command differently");

    let mut c = vla_control(TASK_A, true);
    assert_eq!(vla_run(&mut c, 0, 5), a[..5]);
    let message = c.reset();
    assert!(message.contains("reset"), "{message}");
    assert_eq!(
        c.status().task.as_deref(),
        Some(TASK_A),
        "reset keeps the task"
    );
    assert_eq!(vla_run(&mut c, 5, 5), a[..5], "a fresh chunk, same task");

    let changes = c.apply_live(vla_params(TASK_B, true)).unwrap();
    assert!(changes.iter().any(|m| m.contains(TASK_B)), "{changes:?}");
    assert_eq!(c.status().task.as_deref(), Some(TASK_B));
    let next = vla_run(&mut c, 10, 7 + 12);
    assert_eq!(
        next[..7],
        a[5..],
        "the current chunk runs out under its own task"
    );
    assert_eq!(next[7..], b[..], "the next chunk is the new task's");

    let e = c.apply_live(vla_params("", true)).unwrap_err();
    assert!(e.contains("`task`") && e.contains("empty"), "{e}");
    assert_eq!(
        c.status().task.as_deref(),
        Some(TASK_B),
        "refused: unchanged"
    );
    assert_eq!(c.params().task, TASK_B);
}

/// Asynchronous refill: the prompt is taken when the chunk is requested, so a task that
/// changes while that inference runs applies to the next one only (no inference mixes two
/// prompts, whatever the worker's timing).
#[test]
fn vla_task_changed_during_an_inference_applies_to_the_next_one() {
    let a = vla_run(&mut vla_control(TASK_A, true), 0, 12);
    let mut c = vla_control(TASK_A, false);
    vla_feed(&mut c, 0);
    // Tick 0 requests the first chunk (queue empty: no command yet, and no overrun: nothing
    // was due)...
    assert!(
        matches!(c.tick(0), TickStatus::Waiting),
        "the first chunk is in flight"
    );
    let counters = c.status().counters;
    assert_eq!((counters.waiting, counters.overruns), (1, 0));
    // ...and the task changes while it is computed.
    c.apply_live(vla_params(TASK_B, false)).unwrap();
    // The tiny model takes milliseconds: give the worker time, so that the chunk serves from
    // tick 1 (a later arrival only shortens what is compared below).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let b = vla_run(&mut vla_control(TASK_B, true), 0, 12);
    let mut commands = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut t = 1;
    // Ticks 1..12 serve the first chunk (rows 0..12 of it, from the tick it arrived on);
    // then the next chunk, requested when the queue ran out.
    while commands.iter().filter(|(t, _)| *t >= 12).count() < 3 {
        assert!(std::time::Instant::now() < deadline, "no chunk in 30 s");
        vla_feed(&mut c, t);
        if let TickStatus::Command(cmd) = c.tick(t * PERIOD_NS) {
            commands.push((t, cmd));
        } else {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        t += 1;
    }
    let first: Vec<_> = commands.iter().filter(|(t, _)| *t < 12).collect();
    assert!(
        !first.is_empty(),
        "the first chunk arrived too late to serve a tick"
    );
    for (t, cmd) in first {
        assert_eq!(
            cmd, &a[*t as usize],
            "tick {t}: the chunk requested under task A"
        );
    }
    for (t, cmd) in commands.iter().filter(|(t, _)| *t >= 12) {
        assert!(b.contains(cmd), "tick {t}: a row of task B's chunk");
    }
}

/// `chunk_check: reject`: with limits the policy's chunks break, no command goes out (each
/// switch-in is refused whole, counted, and the error names the row and the joint); with the
/// default `clamp` the same limits only clamp. Limits the chunks keep: the same commands as
/// without a check.
#[test]
fn chunk_check_reject_refuses_a_chunk_that_breaks_the_limits_whole() {
    let mut free = control(params(&[]));
    let (raw, _) = run(&mut free, 0, 20);
    // An upper limit on joint 1 that some (not all) rows of the first chunk break.
    let j1: Vec<f64> = raw.iter().take(10).map(|c| c[1]).collect();
    let mid = (j1.iter().cloned().fold(f64::INFINITY, f64::min)
        + j1.iter().cloned().fold(f64::NEG_INFINITY, f64::max))
        / 2.0;
    let limits = |check: &str| {
        params(&[
            ("chunk_check", ParamValue::String(check.into())),
            (
                "joint_lower_limits",
                ParamValue::DoubleArray(vec![-10.0; 6]),
            ),
            (
                "joint_upper_limits",
                ParamValue::DoubleArray(vec![10.0, mid, 10.0, 10.0, 10.0, 10.0]),
            ),
        ])
    };
    let mut clamp = control(limits("clamp"));
    let (clamped, _) = run(&mut clamp, 0, 20);
    assert!(clamped.iter().all(|c| c[1] <= mid));

    let mut reject = control(limits("reject"));
    let mut statuses = Vec::new();
    for t in 0..20 {
        feed(&mut reject, t);
        statuses.push(reject.tick(t * PERIOD_NS));
    }
    // The first chunk breaks the limit: refused, no command on its tick. Later chunks (the
    // observation moves) may keep it and run: every command that went out keeps it unclamped.
    let errors: Vec<&String> = statuses
        .iter()
        .filter_map(|s| match s {
            TickStatus::Error(e) => Some(e),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&statuses[0], TickStatus::Error(_)),
        "{:?}",
        statuses[0]
    );
    assert!(
        errors[0].contains("chunk rejected")
            && errors[0].contains("joint `joint2`")
            && errors[0].contains("outside its limits"),
        "{}",
        errors[0]
    );
    for s in &statuses {
        if let TickStatus::Command(c) = s {
            assert!(c[1] <= mid, "a command beyond the limit: {c:?}");
        }
    }
    assert_eq!(
        reject.status().counters.rejected_chunks as usize,
        errors.len()
    );

    // Limits every row keeps: reject changes nothing.
    let mut wide = control(params(&[
        ("chunk_check", ParamValue::String("reject".into())),
        (
            "joint_lower_limits",
            ParamValue::DoubleArray(vec![-10.0; 6]),
        ),
        ("joint_upper_limits", ParamValue::DoubleArray(vec![10.0; 6])),
    ]));
    assert_eq!(run(&mut wide, 0, 20).0, raw);
}

/// `policies`: every entry is loaded at configure and checked against the `export_dir`
/// policy; an entry that does not load, or does not fit the wiring (two cameras for one
/// camera topic), fails the whole configure naming the entry; a good one switches in with the newest inputs.
#[test]
fn policies_load_together_and_a_bad_entry_is_named() {
    use policy_node::control::policies::load_all;
    let opts = LoopOptions {
        force_sync: true,
        auto_refill_from_warmup: false,
    };
    let tiny = fixture("act_tiny/onnx").display().to_string();
    let with = |entries: Vec<String>| params(&[("policies", ParamValue::StringArray(entries))]);
    let missing = with(vec![
        format!("a={tiny}"),
        "b=/nonexistent/export".to_string(),
    ]);
    let e = load_all(&missing, opts)
        .err()
        .expect("a missing export")
        .to_string();
    assert!(
        e.contains("`policies`, entry `b` (/nonexistent/export)"),
        "{e}"
    );
    let two_cams = fixture("act_tiny_2cam/onnx").display().to_string();
    let other = with(vec![format!("a={tiny}"), format!("cams={two_cams}")]);
    let e = load_all(&other, opts)
        .err()
        .expect("other inputs")
        .to_string();
    assert!(
        e.contains("entry `cams`") && e.contains("camera_topics"),
        "{e}"
    );
    let lerobot = fixture("act_tiny_lerobot/onnx").display().to_string();
    let good = with(vec![format!("a={tiny}"), format!("b={lerobot}")]);
    let (first, others) = load_all(&good, opts).expect("two policies");
    assert_eq!(first.name, "a", "export_dir is a's directory");
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].name, "b");
    // Switching: the newest inputs come along, the next tick commands.
    let mut a = first.control;
    a.activate();
    let mut b = others.into_iter().next().unwrap().control;
    feed(&mut a, 0);
    b.take_over_from(&mut a);
    assert!(
        matches!(b.tick(0), TickStatus::Command(_)),
        "b commands on its first tick from a's inputs"
    );
    assert!(
        matches!(a.tick(PERIOD_NS), TickStatus::Stale { .. }),
        "a keeps no inputs"
    );
}
