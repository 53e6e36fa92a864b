//! Live replay: the demo recording played in real time with `/clock`
//! (`tests/peers/bag_player.py`, rclpy + rosbags, raw CDR from the bag) into the
//! `policy_node` binary running with `use_sim_time: true` and the demo's parameter file; the
//! commands it publishes are recorded (`tests/peers/recorder.py`) and compared with the
//! offline replay (`policy_node::bag::replay`) of the same bag.
//!
//! Why they must agree: the bag starts on a multiple of the control period, so the node's
//! sim-time timer ticks on the replay's tick grid; every sample is stamped half a period away
//! from the ticks, so which sample is the newest at a tick never depends on delivery jitter
//! below ~16 ms; and with `refill_ahead_steps: 5` each chunk is requested 5 ticks (~167 ms)
//! before it is needed, from the same tick's observation as in the synchronous replay. The
//! one expected difference: the node computes its first chunk asynchronously, so its first
//! tick with data waits for it and its first command is the replay's second (row 1 of the
//! first chunk; a later row when that chunk takes longer than a tick); the sequences are
//! compared after aligning the first command.
//!
//! Asserted: every recorded command equals the aligned offline action within
//! [`VALUE_TOLERANCE`], in order, none missing or extra (the node's commands are the
//! replay's rows from the first command's to the end), and none arrives before the
//! recorder's `/clock` reached the
//! period before its tick. The bag is played at [`SPEED`] times real time: a node ticking on
//! its own (wall) clock instead of `/clock` would command more often than the bag's tick grid
//! and fail the count at once. Nothing is asserted on wall-clock latency (a loaded machine
//! delays every process); the latency from a tick's `/clock` to the command's arrival is
//! reported. A run the machine disturbed (the node missed a timer tick, or the player fell
//! behind so that a sample could reach the node after its tick's `/clock`) is repeated, up
//! to 3 attempts; a difference in a run the player kept in time fails at once.
//!
//! Runs on a private `ROS_DOMAIN_ID`, localhost-only discovery and a private `HOME`.
#![cfg(all(feature = "ros", feature = "onnx"))]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{collect, line_channel, python, root};
use policy_node::bag::{replay, ReplayOptions};
use serde_json::Value;

const NODE: &str = env!("CARGO_BIN_EXE_policy_node");
/// The node and the replay run the same ONNX model (possibly with different thread counts).
const VALUE_TOLERANCE: f64 = 1e-5;
/// Sim seconds per real second of the playback: half speed, so that a node on its own clock
/// ticks twice per sim period, and a loaded machine has twice the time per tick.
const SPEED: f64 = 0.5;

/// A running process whose stdout lines arrive on a channel and whose stderr is collected.
struct Proc {
    name: &'static str,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command) -> Self {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let rx = line_channel(child.stdout.take().expect("stdout"));
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().expect("stderr"), stderr.clone());
        Proc {
            name,
            child,
            lines: rx,
            seen: Vec::new(),
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "{} stdout:\n{}\n{} stderr:\n{}",
            self.name,
            self.seen.join("\n"),
            self.name,
            self.stderr.lock().unwrap()
        )
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest of it.
    fn wait_line(&mut self, prefix: &str, timeout: Duration, others: &[&Proc]) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        // Drain what is left, then fail.
                        std::thread::sleep(Duration::from_millis(100));
                        while let Ok(l) = self.lines.try_recv() {
                            self.seen.push(l);
                        }
                        let ctx: Vec<String> = others.iter().map(|p| p.output()).collect();
                        panic!(
                            "{} exited ({status}) before printing `{prefix}`:\n{}\n{}",
                            self.name,
                            self.output(),
                            ctx.join("\n")
                        );
                    }
                }
                Err(_) => {
                    let ctx: Vec<String> = others.iter().map(|p| p.output()).collect();
                    panic!(
                        "{} did not print `{prefix}` within {timeout:?}:\n{}\n{}",
                        self.name,
                        self.output(),
                        ctx.join("\n")
                    );
                }
            }
        }
    }

    /// SIGINT, wait for the exit, then every stdout line not yet seen.
    fn stop(&mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l.clone());
            rest.push(l);
        }
        rest
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ros_command(
    program: impl AsRef<std::ffi::OsStr>,
    domain: u32,
    home: &std::path::Path,
) -> Command {
    let mut c = Command::new(program);
    c.current_dir(root())
        .env("ROS_DOMAIN_ID", domain.to_string())
        .env("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        .env_remove("ROS_LOCALHOST_ONLY")
        .env_remove("ROS_STATIC_PEERS")
        .env("HOME", home)
        .env("ROS_LOG_DIR", home.join("log"))
        .env("RCUTILS_COLORIZED_OUTPUT", "0")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// One live run: the recorded commands (`CMD` JSON), the player's `DONE` JSON, and the
/// processes' output for failure messages.
struct LiveRun {
    commands: Vec<Value>,
    done: Value,
    context: String,
}

fn live_run(bag: &std::path::Path, params: &std::path::Path, export: &std::path::Path) -> LiveRun {
    let home = tempfile::tempdir().unwrap();
    static ATTEMPT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let domain = 150
        + (std::process::id() % 23) * 3
        + ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 3;
    let mut node = ros_command(NODE, domain, home.path());
    node.arg("--ros-args")
        .arg("--params-file")
        .arg(params)
        .args([
            "-p",
            &format!("export_dir:={}", export.display()),
            "-p",
            "use_sim_time:=true",
        ]);
    let mut node = Proc::spawn("policy_node", node);
    let mut recorder = ros_command(python(), domain, home.path());
    recorder
        .arg(root().join("tests/peers/recorder.py"))
        .args(["--topic", "/joint_commands"]);
    let mut recorder = Proc::spawn("recorder", recorder);
    recorder.wait_line("READY", Duration::from_secs(60), &[&node]);
    let mut player = ros_command(python(), domain, home.path());
    player
        .arg(root().join("tests/peers/bag_player.py"))
        .arg(bag)
        .args(["--rate", "30", "--clock-subscribers", "2"])
        .args(["--speed", &SPEED.to_string()]);
    let mut player = Proc::spawn("bag_player", player);
    player.wait_line("READY", Duration::from_secs(60), &[&node, &recorder]);
    let done = player.wait_line("DONE", Duration::from_secs(60), &[&node, &recorder]);
    let done: Value = serde_json::from_str(&done).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    recorder.stop();
    let node_lines = node.stop();
    let node_log = format!("{}\n{}", node_lines.join("\n"), node.stderr.lock().unwrap());
    let commands = recorder
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("CMD "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let context = format!(
        "{}\n{}\npolicy_node log:\n{node_log}",
        recorder.output(),
        player.output()
    );
    LiveRun {
        commands,
        done,
        context,
    }
}

#[test]
fn live_node_on_sim_time_commands_what_offline_replay_computes() {
    live_equals_offline(&root().join("tests/fixtures/demo_bag/params.yaml"));
}

/// The same with chunks that overlap (4 of 10 rows executed, 3 refilled ahead) and the
/// `linear` hand-over: blending happens at switch ticks that do not depend on when a chunk
/// arrived, so live and offline still agree.
#[test]
fn live_node_with_chunk_blend_commands_what_offline_replay_computes() {
    let dir = tempfile::tempdir().unwrap();
    let params = dir.path().join("params.yaml");
    let demo = std::fs::read_to_string(root().join("tests/fixtures/demo_bag/params.yaml")).unwrap();
    let demo: String = demo
        .lines()
        .filter(|l| !l.trim_start().starts_with("refill_ahead_steps:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &params,
        format!(
            "{demo}    refill_ahead_steps: 3\n    n_action_steps: 4\n    chunk_blend: linear\n    chunk_blend_steps: 3\n"
        ),
    )
    .unwrap();
    live_equals_offline(&params);
}

/// Real-time chunking (`refill_mode: rtc`) on the VLA package `vla_pi05_rtc` (two cameras, a
/// task, a tokenizer): each request carries the unexecuted rest of the plan, the delay (the
/// 4 ticks ahead) and seeded noise, and the chunk is switched in 4 ticks later, so live and
/// offline still agree. The bag (the demo motion seen by the two cameras the package
/// declares) is written by `tools/make_demo_bag.py --vla`.
#[test]
fn live_node_with_rtc_commands_what_offline_replay_computes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(root().join("tools/make_demo_bag.py"))
        .arg("--vla")
        .arg(dir.path())
        .output()
        .expect("run tools/make_demo_bag.py");
    assert!(
        out.status.success(),
        "make_demo_bag.py --vla: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    live_equals_offline_on(
        &dir.path().join("mcap"),
        &dir.path().join("params.yaml"),
        &root().join("tests/fixtures/vla_pi05_rtc/onnx"),
    );
}

fn live_equals_offline(params: &std::path::Path) {
    let demo = root().join("tests/fixtures/demo_bag");
    live_equals_offline_on(
        &demo.join("mcap"),
        params,
        &root().join("tests/fixtures/act_tiny/onnx"),
    );
}

fn live_equals_offline_on(
    bag: &std::path::Path,
    params: &std::path::Path,
    export: &std::path::Path,
) {
    let bag = bag.to_path_buf();
    let params = params.to_path_buf();
    let export = export.to_path_buf();

    // Offline.
    let offline = replay::run(&ReplayOptions {
        bag: bag.clone(),
        export_dir: export.clone(),
        params: Some(params.clone()),
        ..Default::default()
    })
    .expect("offline replay");
    let expected = &offline.actions;
    assert!(expected.values.len() > 100);
    let period_ns = expected.stamp_ns[1] - expected.stamp_ns[0];
    // The node's first command is row 1 of the first chunk (async first refill), or a later
    // row when that chunk took longer than a tick.

    let values = |c: &Value| -> Vec<f64> {
        c["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= VALUE_TOLERANCE)
    };

    // A starved machine (other test binaries, a loaded CI machine) can make a run say
    // nothing about replay: a timer tick is missed (from then on the tick-indexed queue is a
    // tick off), or the player itself falls behind and a sample reaches the node after the
    // /clock of the tick that should see it. (A first chunk a tick late only moves the first
    // command to row 2: the rest is compared from there.) Such runs are
    // repeated (up to ATTEMPTS). A difference on a run the player kept in time, or more
    // commands than ticks (a node not ticking on /clock), fails at once.
    const ATTEMPTS: usize = 3;
    // The player's own lateness above which deliveries may have been reordered (a sample
    // lies half a period, 33 ms of wall time at SPEED, from the ticks around it).
    const PLAYER_LATE_MS: f64 = 10.0;
    let mut run = None;
    for attempt in 1..=ATTEMPTS {
        let r = live_run(&bag, &params, &export);
        assert!(!r.commands.is_empty(), "no command recorded\n{}", r.context);
        let player_late_ms = r.done["max_late_ms"].as_f64().unwrap_or(f64::NAN);
        let first = values(&r.commands[0]);
        let found = (1..expected.values.len().min(6)).find(|&i| close(&first, &expected.values[i]));
        let problem = match found {
            None => Some(format!(
                "the first live command {first:?} is none of offline rows 1..5"
            )),
            Some(k) => {
                let rows = expected.values.len() - k;
                // More commands than ticks: not a starved node but one that does not tick
                // on /clock.
                assert!(
                    r.commands.len() <= rows,
                    "{} commands for {rows} ticks of the bag from the first: the node does not tick on /clock\n{}",
                    r.commands.len(),
                    r.context
                );
                let differs = r
                    .commands
                    .iter()
                    .enumerate()
                    .find(|(i, c)| !close(&values(c), &expected.values[k + i]))
                    .map(|(i, _)| i);
                if r.commands.len() < rows {
                    Some(format!(
                        "{} commands recorded for {rows} offline rows from the first: the node missed a tick; /clock at each command (ms from the start): {:?}",
                        r.commands.len(),
                        r.commands.iter().map(|c| (c["clock_ns"].as_i64().unwrap_or(0) - expected.stamp_ns[0]) / 1_000_000).collect::<Vec<_>>()
                    ))
                } else if let Some(i) = differs {
                    let msg = format!(
                        "command {i}: {:?} vs offline row {} {:?}",
                        values(&r.commands[i]),
                        k + i,
                        expected.values[k + i]
                    );
                    // Only a player that fell behind excuses a different value.
                    assert!(
                        player_late_ms > PLAYER_LATE_MS,
                        "{msg} (the player kept in time: {player_late_ms:.1} ms late at most)\n{}",
                        r.context
                    );
                    Some(msg)
                } else {
                    None
                }
            }
        };
        match problem {
            None => {
                // Row 1 on time; a later row when the first chunk took longer than a tick
                // (the node skips the rows already past, as a tick-indexed plan does).
                run = Some((r, found.expect("matched")));
                break;
            }
            Some(p) => {
                eprintln!(
                    "attempt {attempt}: {p} (starved of CPU; the player was {player_late_ms:.1} ms late at most)"
                );
                assert!(
                    attempt < ATTEMPTS,
                    "no undisturbed run in {ATTEMPTS} attempts; the last: {p}\n{}",
                    r.context
                );
            }
        }
    }
    let (
        LiveRun {
            commands,
            done,
            context,
        },
        offset,
    ) = run.expect("a complete run");

    let tick_walls: std::collections::HashMap<i64, f64> = done["tick_walls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    let mut worst_value = 0.0f64;
    let mut latencies = Vec::new();
    let mut on_tick_clock = 0;
    for (i, c) in commands.iter().enumerate() {
        let row = offset + i;
        let (got, want) = (values(c), &expected.values[row]);
        for (x, y) in got.iter().zip(want) {
            worst_value = worst_value.max((x - y).abs());
        }
        assert!(
            close(&got, want),
            "command {i}: {got:?} vs offline row {row} {want:?}\n{context}"
        );
        let tick_ns = expected.stamp_ns[row];
        // Wall time: from just before the player published this tick's /clock to the
        // command's arrival at the recorder.
        let due = tick_walls
            .get(&tick_ns)
            .copied()
            .unwrap_or_else(|| panic!("tick {tick_ns} was not played\n{context}"));
        // Reported, not asserted: how long a (possibly loaded) machine took.
        latencies.push(c["recv_unix"].as_f64().unwrap() - due);
        // Sim time: the recorder's newest /clock when the command arrived. It sees /clock
        // and the command on separate paths, so the command may overtake its tick's /clock
        // by a little; it can never come a period earlier (how much later depends on load).
        let clock = c["clock_ns"].as_i64().unwrap_or(0);
        assert!(
            clock >= tick_ns - period_ns,
            "command {i} (tick {tick_ns}) arrived at /clock {clock} ({:+.1} ms): before its tick\n{context}",
            (clock - tick_ns) as f64 / 1e6
        );
        on_tick_clock += usize::from(clock == tick_ns);
    }
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    eprintln!(
        "live replay: {} commands equal to offline rows {offset}..{} in order (max |diff| {worst_value:.2e}); \
         latency tick /clock -> recorder median {:.1} ms, max {:.1} ms; {on_tick_clock} received at their tick's \
         /clock; player max lateness {:.1} ms, sim time paused {:.1} ms in all",
        commands.len(),
        expected.values.len(),
        median * 1e3,
        latencies[latencies.len() - 1] * 1e3,
        done["max_late_ms"].as_f64().unwrap_or(f64::NAN),
        done["slip_ms"].as_f64().unwrap_or(f64::NAN)
    );
}
