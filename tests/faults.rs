//! Injected faults, end to end: `policy_node` with the fault-injection fixture
//! (`tests/fixtures/faults/onnx`, `tools/make_fault_fixture.py`) against an rclpy robot
//! (`tests/peers/fault_peer.py`) that switches the faults on and off mid-run, and each test
//! asserts what the robot received.
//!
//! The fixture copies the state into the first five joints of every row and writes the row
//! index into the sixth, and the robot sends a message counter as joint 1: each command tells
//! the observation it came from and its row. Joints 2, 3 and 4 switch on the model's NaN,
//! slow and error branches.
#![cfg(all(feature = "ros", feature = "onnx"))]

mod common;

use std::time::Duration;

use common::ros::{export, NodeProc, World};
use serde_json::{json, Value};

/// Counter increment per joint message (the peer's `COUNTER_STEP`), at 30 Hz like the ticks.
const STEP: f64 = 0.01;

fn world() -> World {
    // tests/node_integration.rs uses 10..=141, tests/replay_live.rs 150..=219.
    World::new(220, 12)
}

fn node(world: &World, extra: &[&str]) -> NodeProc {
    let export = format!("export_dir:={}", export("faults/onnx"));
    let mut args = vec![
        "-p",
        &export,
        "-p",
        "joint_names:=[joint1, joint2, joint3, joint4, joint5, joint6]",
        "-p",
        "max_observation_age_ms:=300.0",
        "-p",
        "threads:=1",
    ];
    args.extend_from_slice(extra);
    world.node(&args)
}

/// One command as the robot received it.
#[derive(Debug, Clone)]
struct Cmd {
    /// Peer monotonic time of receipt, seconds.
    t: f64,
    /// The peer's counter when it arrived.
    counter_now: f64,
    /// The command; `None` for a non-finite value.
    values: Vec<Option<f64>>,
    /// The node's stamp of the command's tick (`sensor_msgs/JointState` commands only).
    stamp_ns: Option<i64>,
}

impl Cmd {
    /// The counter of the observation it was computed from.
    fn obs(&self) -> f64 {
        self.values[0].expect("finite")
    }
    /// Its row in the chunk.
    fn row(&self) -> usize {
        self.values[5].expect("finite").round() as usize
    }
    /// Ticks between its observation and its arrival (one message per tick).
    fn age_ticks(&self) -> f64 {
        (self.counter_now - self.obs()) / STEP
    }
    fn finite(&self) -> bool {
        self.values.iter().all(Option::is_some)
    }
}

struct Phase {
    t0: f64,
    t1: f64,
    /// The phase's start and end on the ROS clock the robot stamps its messages with.
    stamp0_ns: i64,
    stamp1_ns: i64,
    counter0: f64,
}

struct Run {
    commands: Vec<Cmd>,
    phases: Vec<(String, Phase)>,
    diagnostics: Vec<Value>,
    last_diag: Value,
}

impl Run {
    fn from(r: &Value) -> Self {
        let commands = r["commands"]
            .as_array()
            .expect("commands")
            .iter()
            .map(|c| Cmd {
                t: c[0].as_f64().unwrap(),
                counter_now: c[1].as_f64().unwrap(),
                values: c[2].as_array().unwrap().iter().map(Value::as_f64).collect(),
                stamp_ns: c[3].as_i64(),
            })
            .collect();
        let phases = r["phases"]
            .as_array()
            .expect("phases")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    Phase {
                        t0: p["t0"].as_f64().unwrap(),
                        t1: p["t1"].as_f64().unwrap(),
                        stamp0_ns: p["stamp0_ns"].as_i64().unwrap(),
                        stamp1_ns: p["stamp1_ns"].as_i64().unwrap(),
                        counter0: p["counter0"].as_f64().unwrap(),
                    },
                )
            })
            .collect();
        Run {
            commands,
            phases,
            diagnostics: r["all_diagnostics"].as_array().cloned().unwrap_or_default(),
            last_diag: r["diagnostics"].clone(),
        }
    }

    fn phase(&self, name: &str) -> &Phase {
        &self
            .phases
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no phase {name}"))
            .1
    }

    fn between(&self, t0: f64, t1: f64) -> Vec<&Cmd> {
        self.commands
            .iter()
            .filter(|c| c.t >= t0 && c.t < t1)
            .collect()
    }

    /// The first command at or after `t`.
    fn first_after(&self, t: f64) -> Option<&Cmd> {
        self.commands.iter().find(|c| c.t >= t)
    }

    /// `/diagnostics` statuses received in `[t0, t1)`.
    fn diags_between(&self, t0: f64, t1: f64) -> Vec<&Value> {
        self.diagnostics
            .iter()
            .filter(|d| {
                let t = d["t"].as_f64().unwrap();
                t >= t0 && t < t1
            })
            .collect()
    }

    /// Phases and commands, compactly: `time@counter:obs/row` (time from the first phase;
    /// `NaN` for a non-finite command).
    fn summary(&self) -> String {
        let start = self.phases.first().map_or(0.0, |p| p.1.t0);
        let rows: Vec<String> = self
            .commands
            .iter()
            .map(|c| match (c.values[0], c.values[5]) {
                (Some(obs), Some(row)) => {
                    format!("{:.3}@{:.2}:{obs:.2}/{row}", c.t - start, c.counter_now)
                }
                _ => format!("{:.3}@{:.2}:NaN", c.t - start, c.counter_now),
            })
            .collect();
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(n, p)| {
                format!(
                    "{n} {:.3}..{:.3} from counter {:.2}",
                    p.t0 - start,
                    p.t1 - start,
                    p.counter0
                )
            })
            .collect();
        format!(
            "phases: {phases:?}\ncommands (time@counter:observation/row): {}",
            rows.join(" ")
        )
    }
}

fn diag_num(d: &Value, key: &str) -> f64 {
    d["values"][key]
        .as_str()
        .unwrap_or_else(|| panic!("/diagnostics has no `{key}`: {d}"))
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` is not a number: {d}"))
}

/// Commands stop while an input is away (after `max_observation_age_ms`), resume when it
/// returns, and the first command after the return comes from a fresh chunk computed from an
/// observation taken after the return: the plan from before the gap never resumes.
///
/// Timed on the node's own clock: the commands are `sensor_msgs/JointState`, stamped with
/// their tick's time, so how late the robot receives them (a loaded machine) does not matter.
#[test]
fn joint_state_and_camera_dropout_stop_commands_and_resume_fresh() {
    let world = world();
    let node = node(&world, &["-p", "command_type:=joint_state"]);
    let r = world
        .peer(
            "fault_peer.py",
            "dropout",
            json!({"command_type": "joint_state"}),
        )
        .result(&node);
    let log = node.stop();
    let run = Run::from(&r);
    let ctx = run.summary();
    assert!(
        run.commands.iter().all(|c| c.stamp_ns.is_some()),
        "unstamped commands\n{ctx}"
    );
    /// `max_observation_age_ms` of `node()`.
    const MAX_AGE_NS: i64 = 300_000_000;
    /// The robot may stamp a message a moment after the phase mark that stopped it (its
    /// publishing timer and the phase switch run on different threads).
    const MARK_NS: i64 = 10_000_000;

    for (off, back, topic) in [
        ("joints_off", "joints_back", "joint_states"),
        ("camera_off", "camera_back", "image_raw"),
    ] {
        let (p_off, p_back) = (run.phase(off), run.phase(back));
        // No command from a tick more than the maximum age after the topic's last message:
        // every message of the topic was stamped before the phase began.
        let during: Vec<&Cmd> = run
            .commands
            .iter()
            .filter(|c| {
                let s = c.stamp_ns.unwrap();
                s > p_off.stamp0_ns + MAX_AGE_NS + MARK_NS && s < p_back.stamp0_ns
            })
            .collect();
        assert!(
            during.is_empty(),
            "{off}: {} command(s) ticked more than {MAX_AGE_NS} ns after {topic} stopped: {during:?}\n{ctx}",
            during.len()
        );
        let first = run
            .first_after(p_back.t0)
            .filter(|c| c.t < p_back.t1)
            .unwrap_or_else(|| panic!("{back}: no command while {topic} was back\n{ctx}"));
        assert!(
            first.obs() >= p_back.counter0 - 1e-5,
            "{back}: the first command came from observation {} before the return ({})\n{ctx}",
            first.obs(),
            p_back.counter0
        );
        assert!(
            first.row() <= 2,
            "{back}: the first command is row {} of its chunk, not the start of a fresh one\n{ctx}",
            first.row()
        );
        // Commands flow again: ticks of the phase (node time) commanded.
        let back_ticks = run
            .commands
            .iter()
            .filter(|c| {
                let s = c.stamp_ns.unwrap();
                s >= p_back.stamp0_ns && s < p_back.stamp1_ns
            })
            .count();
        assert!(back_ticks >= 10, "{back}: {back_ticks} commands\n{ctx}");
        let warned = run
            .diags_between(p_off.t0, p_back.t0 + 0.5)
            .into_iter()
            .any(|d| d["level"] == json!(1) && d["message"].as_str().unwrap().contains(topic));
        assert!(
            warned,
            "{off}: no WARN on /diagnostics naming {topic}\n{ctx}"
        );
        assert!(
            log.contains(&format!("no command: `{topic}` is stale")),
            "{off}: {log}"
        );
    }
    assert!(diag_num(&run.last_diag, "stale_ticks") > 0.0);
    // The start and each return begin a plan whose first chunk is computed while ticks pass:
    // those ticks wait for it, and are not counted as missed deadlines.
    assert!(
        diag_num(&run.last_diag, "waiting_ticks") >= 3.0,
        "waiting_ticks: {}\n{ctx}",
        diag_num(&run.last_diag, "waiting_ticks")
    );
}

/// A chunk holding NaN commands nothing: the rows already queued from the last good chunk
/// keep flowing, then nothing, the fault is counted and reported (ERROR on /diagnostics,
/// naming the non-finite value), and commands resume from the first finite chunk.
#[test]
fn nan_chunk_commands_nothing_and_output_resumes() {
    let world = world();
    let node = node(&world, &[]);
    let r = world.peer("fault_peer.py", "nan", json!({})).result(&node);
    let log = node.stop();
    let run = Run::from(&r);
    let ctx = run.summary();

    assert!(
        run.commands.iter().all(Cmd::finite),
        "a non-finite command reached the robot\n{ctx}"
    );
    let nan = run.phase("nan");
    for c in run.between(nan.t0, nan.t1) {
        // Joint 2 repeats the NaN switch: a command from a NaN-phase observation would
        // carry 9 (it would be NaN in any case).
        assert!(
            c.values[1].unwrap() < 5.0,
            "a command came from a NaN chunk's observation: {c:?}\n{ctx}"
        );
    }
    let finite = run.phase("finite");
    // Resumed within the phase (how soon depends on the machine: reported).
    let first = run
        .first_after(finite.t0 + 0.05)
        .filter(|c| c.t < finite.t1)
        .unwrap_or_else(|| panic!("no command after the outputs were finite again\n{ctx}"));
    eprintln!(
        "resumed {:.3} s after the outputs were finite",
        first.t - finite.t0
    );
    assert!(run.between(finite.t0, finite.t1).len() >= 20, "{ctx}");
    let errors: Vec<&Value> = run
        .diags_between(nan.t0, finite.t1)
        .into_iter()
        .filter(|d| d["level"] == json!(2))
        .collect();
    assert!(
        errors
            .iter()
            .any(|d| d["message"].as_str().unwrap().contains("non-finite")),
        "no ERROR on /diagnostics naming the non-finite action\n{ctx}"
    );
    assert!(diag_num(&run.last_diag, "errors") >= 1.0);
    assert!(
        log.contains("no command:") && log.contains("non-finite"),
        "{log}"
    );
}

/// Inference slower than a chunk's worth of ticks: overruns are counted, the chunk that
/// arrives too late is dropped (no command is ever older than a chunk), and output recovers
/// once inference is fast again.
#[test]
fn slow_inference_counts_overruns_and_never_resumes_a_stale_plan() {
    let world = world();
    let node = node(&world, &[]);
    // About 5 ms per product on one thread: ~1 s per slow inference (a chunk is 333 ms).
    let r = world
        .peer("fault_peer.py", "slow", json!({"slow_products": 200}))
        .result(&node);
    let log = node.stop();
    let run = Run::from(&r);
    let ctx = run.summary();

    // A command's row is at most chunk - 1 = 9 ticks after its observation; allow 6 ticks of
    // transport and stamping. A plan resumed after a slow chunk would be ~30 ticks old.
    for c in &run.commands {
        assert!(
            c.age_ticks() <= 15.0,
            "a command {:.1} ticks older than its observation reached the robot: {c:?}\n{ctx}",
            c.age_ticks()
        );
    }
    let slow = run.phase("slow");
    let fast = run.phase("fast");
    let overruns_in_slow = run
        .diags_between(slow.t0, fast.t0 + 1.0)
        .into_iter()
        .filter(|d| d["level"] == json!(1) && d["message"].as_str().unwrap().contains("overrun"))
        .count();
    assert!(
        overruns_in_slow > 0,
        "no overrun WARN on /diagnostics\n{ctx}"
    );
    assert!(
        diag_num(&run.last_diag, "overruns") > 0.0,
        "{}",
        run.last_diag
    );
    assert!(
        diag_num(&run.last_diag, "late_chunks") >= 1.0,
        "{}",
        run.last_diag
    );
    // The automatic refill-ahead saw the slow inferences: the node's recent p99 latency rose
    // above a control period and well above what it measured before them, and the refill
    // moved ahead. Relative to the node's own figures, so a fast CPU (shorter slow
    // inferences) and a loaded one (longer fast ones) both hold.
    let good = run.phase("good");
    let before = run
        .diags_between(good.t0, slow.t0)
        .into_iter()
        .next_back()
        .unwrap_or_else(|| panic!("no /diagnostics before the slow phase\n{ctx}"));
    let during = run.diags_between(slow.t0 + 0.5, fast.t0 + 1.0);
    let p99 = |d: &Value| diag_num(d, "latency_recent_p99_ms");
    let slow_p99 = during.iter().map(|d| p99(d)).fold(0.0, f64::max);
    assert!(
        slow_p99 > 1000.0 / 30.0 && slow_p99 > 3.0 * p99(before),
        "recent p99 {slow_p99} ms during the slow phase, {} ms before it\n{ctx}",
        p99(before)
    );
    let ahead = |d: &Value| diag_num(d, "refill_ahead_steps");
    let raised = during.iter().map(|d| ahead(d)).fold(0.0, f64::max);
    assert!(
        raised > ahead(before),
        "refill_ahead_steps {} before the slow inferences, at most {raised} during them\n{ctx}",
        ahead(before)
    );
    // Output recovers within the fast phase, from chunks computed in it.
    let first = run
        .first_after(fast.t0)
        .filter(|c| c.t < fast.t1)
        .unwrap_or_else(|| panic!("no command once inference was fast again\n{ctx}"));
    eprintln!(
        "recovered {:.3} s after inference was fast again",
        first.t - fast.t0
    );
    let settled = run.between(fast.t0 + 1.5, fast.t1);
    assert!(
        settled.len() >= 20,
        "{} commands in the last 2 s (60 ticks)\n{ctx}",
        settled.len()
    );
    assert!(log.contains("overrun"), "{log}");
}

/// A refill that fails at run time (ONNX Runtime error) is reported on /diagnostics (ERROR,
/// naming the failing node), nothing is commanded from it, and the next good chunk restores
/// output.
#[test]
fn refill_worker_error_is_reported_and_output_recovers() {
    let world = world();
    let node = node(&world, &[]);
    let r = world
        .peer("fault_peer.py", "error", json!({}))
        .result(&node);
    let log = node.stop();
    let run = Run::from(&r);
    let ctx = run.summary();

    let error = run.phase("error");
    for c in run.between(error.t0, error.t1) {
        assert!(
            c.values[3].unwrap() < 5.0,
            "a command came from a failed refill's observation: {c:?}\n{ctx}"
        );
    }
    let recovered = run.phase("recovered");
    let errors: Vec<&Value> = run
        .diags_between(error.t0, recovered.t1)
        .into_iter()
        .filter(|d| d["level"] == json!(2))
        .collect();
    assert!(
        errors
            .iter()
            .any(|d| d["message"].as_str().unwrap().contains("Reshape")),
        "no ERROR on /diagnostics naming the failing node\n{ctx}"
    );
    // Recovered within the phase (how soon depends on the machine: reported).
    let first = run
        .first_after(recovered.t0 + 0.05)
        .filter(|c| c.t < recovered.t1)
        .unwrap_or_else(|| panic!("no command after recovery\n{ctx}"));
    eprintln!(
        "recovered {:.3} s after the refill worked again",
        first.t - recovered.t0
    );
    assert!(
        first.obs() >= recovered.counter0 - 0.05,
        "the first command after recovery is from before it: {first:?}\n{ctx}"
    );
    assert!(run.between(recovered.t0, recovered.t1).len() >= 20, "{ctx}");
    assert!(
        log.contains("no command:") && log.contains("Reshape"),
        "{log}"
    );
}

/// `/clock` jumping back 10 s under `use_sim_time` (a looping bag): the node resets cleanly
/// (logged, counted), its timer keeps ticking at the control rate (no stuck timer, no burst
/// of commands), and commands resume from a fresh chunk on the new timeline.
#[test]
fn clock_jumping_back_resets_cleanly() {
    let world = world();
    // JointState commands carry their tick's sim time: rate and bursts are read on the node's
    // own clock, not from when a loaded machine delivered them.
    let node = node(
        &world,
        &[
            "-p",
            "use_sim_time:=true",
            "-p",
            "command_type:=joint_state",
        ],
    );
    let r = world
        .peer(
            "fault_peer.py",
            "clock",
            json!({"sim_time": true, "command_type": "joint_state"}),
        )
        .result(&node);
    let log = node.stop();
    let run = Run::from(&r);
    let ctx = run.summary();
    let stamp = |c: &Cmd| c.stamp_ns.expect("a stamped command");
    let in_sim = |t0: i64, t1: i64| -> Vec<&Cmd> {
        run.commands
            .iter()
            .filter(|c| (t0..t1).contains(&stamp(c)))
            .collect()
    };
    const PERIOD_NS: i64 = 33_333_333;

    let before = run.phase("before");
    let after = run.phase("after_jump");
    // The sim clock ran 3 s before the jump: 90 periods (ticks a starved node lost aside).
    assert!(
        in_sim(before.stamp0_ns, before.stamp1_ns).len() >= 45,
        "{ctx}"
    );
    // After the jump: commands on the new timeline (stamps 10 s back), from a fresh chunk.
    let new_timeline = in_sim(after.stamp0_ns, after.stamp1_ns + PERIOD_NS);
    let first = new_timeline
        .first()
        .unwrap_or_else(|| panic!("no command on the new timeline (stuck timer?)\n{ctx}"));
    assert!(
        first.obs() >= after.counter0 - 1e-5 && first.row() <= 2,
        "the first command after the jump is not from a fresh chunk on the new timeline: {first:?}\n{ctx}"
    );
    // No burst: in order, and at 30 Hz a 200 ms window of sim time holds 6 ticks. A stamp
    // is the node's clock when its tick ran, at or after the tick's time (later on a loaded
    // machine, whose robot also publishes /clock in uneven steps): a few more may fall in a
    // window, a timer catching up after the jump would put many there.
    for (i, c) in new_timeline.iter().enumerate() {
        let n = new_timeline[i..]
            .iter()
            .take_while(|d| stamp(d) < stamp(c) + 200_000_000)
            .count();
        assert!(
            n <= 10,
            "{n} commands within 200 ms of sim time from {c:?}\n{ctx}"
        );
    }
    assert!(
        new_timeline.windows(2).all(|w| stamp(w[1]) >= stamp(w[0])),
        "commands out of order in sim time\n{ctx}"
    );
    // The timer keeps ticking at the control rate: from 1 s after the jump to the end of the
    // phase, at most one command per period and at least half of them.
    let (t0, t1) = (after.stamp0_ns + 1_000_000_000, after.stamp1_ns);
    let settled = in_sim(t0, t1).len() as f64;
    let periods = (t1 - t0) as f64 / PERIOD_NS as f64;
    assert!(
        settled <= periods + 1.0 && settled >= 0.5 * periods,
        "{settled} commands in {periods:.1} periods of sim time after the jump\n{ctx}"
    );
    let back: f64 = log
        .split("time jumped back by ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `time jumped back` line:\n{log}"));
    // 10 s back, less the sim time between the last tick before the jump and the first after.
    assert!(
        (9.5..=10.0).contains(&back),
        "jumped back by {back} s:\n{log}"
    );
    assert!(diag_num(&run.last_diag, "clock_jumps") >= 1.0);
}

/// SIGTERM while an inference is running (a ~30 s one): the node exits cleanly, with its
/// summary, without waiting for the inference: it says so, and exits in a fraction of the
/// inference's time.
#[test]
fn sigterm_during_an_inference_exits_without_waiting_for_it() {
    let world = world();
    let mut node = node(&world, &[]);
    // About 5 ms per product on one thread: ~30 s here, still over 5 s on a CPU 6 times as
    // fast; a loaded machine only makes it longer.
    let mut peer = world.peer(
        "fault_peer.py",
        "sigterm",
        json!({"slow_products": 6000, "duration_s": 90.0}),
    );
    peer.wait_line("STREAMING", Duration::from_secs(60), &node);
    node.signal("TERM");
    let (status, took) = node
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no exit on SIGTERM:\n{}", node.log()));
    let log = node.log();
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM during an inference: exit took {took:?} (the inference takes ~30 s)\n{log}"
    );
    assert_eq!(status.code(), Some(0), "exit status {status}:\n{log}");
    assert!(log.contains("stopped on SIGTERM"), "{log}");
    assert!(
        log.contains("not waiting for the inference in progress"),
        "the inference was not in progress at SIGTERM:\n{log}"
    );
    for bad in [
        "terminate called",
        "panicked",
        "Segmentation",
        "core dumped",
    ] {
        assert!(!log.contains(bad), "{bad}:\n{log}");
    }
}
