//! Replay through an I/O map, offline and live, on a recording with several state sources
//! and several command channels (`tools/make_demo_bag.py --multi`: the demo motion split
//! across `/arm/joint_states`, `/wrist/joint_states` and a gripper in thousandths, commanded
//! on two arm controllers, a wrist `JointTrajectory` and a `Float64` gripper).
//!
//! - Offline: `policyctl replay`'s rows are the published value of every channel, and equal
//!   the flat demo bag's replay (one `JointState`, one command topic) through the channels'
//!   split and transforms: the same motion, read from three topics instead of one.
//! - Live: the node on `/clock` with the same parameter file (`io_map` included), the bag
//!   played by `tests/peers/bag_player.py`, every channel recorded by
//!   `tests/peers/channel_recorder.py`: each channel's commands equal the offline columns
//!   within 1e-5, in order (after the first command, which a live node computes
//!   asynchronously; see `tests/replay_live.rs`).
//!
//! Private `ROS_DOMAIN_ID`s 142..=149 (shared with `tests/io_map_ros/node.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::ros::World;
use crate::common::{collect, line_channel, python, root};
use policy_node::bag::{replay, ReplayOptions};
use serde_json::Value;

const TOL: f64 = 1e-5;
const CHANNELS: [(&str, &str); 4] = [
    ("/shoulder_controller/commands", "Float64MultiArray"),
    ("/elbow_controller/commands", "Float64MultiArray"),
    ("/wrist_controller/joint_trajectory", "JointTrajectory"),
    ("/gripper_controller/command", "Float64"),
];

fn multi_bag() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(root().join("tools/make_demo_bag.py"))
        .arg("--multi")
        .arg(dir.path())
        .output()
        .expect("run tools/make_demo_bag.py --multi");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn export() -> PathBuf {
    root().join("tests/fixtures/act_tiny/onnx")
}

fn offline(bag: &Path, params: &Path) -> replay::ReplaySummary {
    replay::run(&ReplayOptions {
        bag: bag.to_path_buf(),
        export_dir: export(),
        params: Some(params.to_path_buf()),
        threads: Some(1),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("replay: {e}"))
}

#[test]
fn replay_reads_several_sources_and_writes_every_channel() {
    let dir = multi_bag();
    let multi = offline(&dir.path().join("mcap"), &dir.path().join("params.yaml"));
    let demo = root().join("tests/fixtures/demo_bag");
    let flat = offline(&demo.join("mcap"), &demo.join("params.yaml"));
    assert_eq!(
        multi.actions.joint_names,
        vec![
            "/shoulder_controller/commands[0]",
            "/shoulder_controller/commands[1]",
            "/elbow_controller/commands[0]",
            "joint4",
            "joint5",
            "/gripper_controller/command[0]"
        ]
    );
    assert_eq!(multi.input_topics, 4, "three state topics and the camera");
    assert_eq!(multi.actions.stamp_ns, flat.actions.stamp_ns);
    assert!(flat.actions.values.len() > 100);
    for (k, (m, f)) in multi
        .actions
        .values
        .iter()
        .zip(&flat.actions.values)
        .enumerate()
    {
        let want = [f[1], f[0], f[2], f[3], f[4], 1000.0 * f[5]];
        for (j, (a, b)) in m.iter().zip(want).enumerate() {
            let tol = if j == 5 { 1000.0 * TOL } else { TOL };
            assert!((a - b).abs() < tol, "row {k} column {j}: {a} vs {b}");
        }
    }
    // The CSV carries the channel columns.
    let csv = dir.path().join("out.csv");
    let again = replay::run(&ReplayOptions {
        bag: dir.path().join("mcap"),
        export_dir: export(),
        params: Some(dir.path().join("params.yaml")),
        threads: Some(1),
        output: Some(csv.clone()),
        ..Default::default()
    })
    .unwrap();
    let read = replay::read_csv(&csv).unwrap();
    assert_eq!(read.joint_names, again.actions.joint_names);
    assert_eq!(read.values.len(), again.actions.values.len());
}

/// A process whose stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn");
        let lines = line_channel(child.stdout.take().unwrap());
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().unwrap(), stderr.clone());
        Proc {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(line.clone());
                if let Some(rest) = line.strip_prefix(prefix) {
                    return rest.to_string();
                }
            }
        }
        panic!(
            "no `{prefix}` line within {timeout:?}:\n{}\n{}",
            self.seen.join("\n"),
            self.stderr.lock().unwrap()
        );
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn live_node_with_the_map_commands_what_offline_replay_computes_on_every_channel() {
    let _live = crate::live();
    let dir = multi_bag();
    let bag = dir.path().join("mcap");
    let params = dir.path().join("params.yaml");
    let expected = offline(&bag, &params);
    let columns = |topic: &str| -> Vec<usize> {
        expected
            .actions
            .joint_names
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.starts_with(topic) || (topic.contains("wrist") && c.starts_with("joint"))
            })
            .map(|(i, _)| i)
            .collect()
    };

    let world = World::new(142, 8);
    let mut node = world.node(&[
        "--params-file",
        &params.display().to_string(),
        "-p",
        &format!("export_dir:={}", export().display()),
        "-p",
        "use_sim_time:=true",
    ]);
    node.wait_for_log("ready:", Duration::from_secs(60));
    let mut recorder = world.command(python());
    recorder.arg(root().join("tests/peers/channel_recorder.py"));
    for (topic, kind) in CHANNELS {
        recorder.arg("--channel").arg(format!("{topic}:{kind}"));
    }
    let mut recorder = Proc::spawn(recorder);
    recorder.wait_line("READY", Duration::from_secs(60));
    let mut player = world.command(python());
    player
        .arg(root().join("tests/peers/bag_player.py"))
        .arg(&bag)
        .args(["--rate", "30", "--clock-subscribers", "2"]);
    let mut player = Proc::spawn(player);
    player.wait_line("READY", Duration::from_secs(60));
    player.wait_line("DONE", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    recorder.stop();
    let log = node.stop();

    let commands: Vec<Value> = recorder
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("CMD "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The node's first command is the replay's second row (its first chunk is computed
    // asynchronously); from there, the rows in order on every channel. A node starved of CPU
    // for a period on a loaded machine skips that tick (on sim time it cannot catch up): each
    // command must equal the offline row of its own tick, in order, and at most `lost` rows
    // may be missing.
    let lost = 2;
    let rows = &expected.actions.values[1..];
    for (topic, _) in CHANNELS {
        let got: Vec<Vec<f64>> = commands
            .iter()
            .filter(|c| c["topic"] == topic)
            .map(|c| {
                c["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            })
            .collect();
        let cols = columns(topic);
        let scale = if topic.contains("gripper") {
            1000.0
        } else {
            1.0
        };
        let equal = |g: &[f64], row: &[f64]| {
            g.len() == cols.len()
                && g.iter()
                    .zip(cols.iter().map(|c| row[*c]))
                    .all(|(a, b)| (a - b).abs() < scale * TOL)
        };
        let mut next = 0;
        for (k, g) in got.iter().enumerate() {
            let at = (next..rows.len())
                .find(|r| equal(g, &rows[*r]))
                .unwrap_or_else(|| {
                    panic!(
                        "{topic} command {k} {g:?} equals no offline row from row {next} on \
                         (next offline row {:?})\nnode log:\n{log}",
                        rows.get(next)
                    )
                });
            assert!(
                at - next <= lost,
                "{topic} command {k}: rows {next}..{at} were skipped, the node lost {lost} tick(s)"
            );
            next = at + 1;
        }
        assert!(
            got.len() + lost >= rows.len() && !got.is_empty(),
            "{topic}: {} commands, offline replay has {} after the first, {lost} tick(s) lost\nnode log:\n{log}",
            got.len(),
            rows.len()
        );
    }
}
