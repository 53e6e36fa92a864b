//! The rclpy-peer harness of the end-to-end tests: a private ROS 2 world (domain id, HOME,
//! localhost discovery), the `policy_node` process and a Python peer process whose stdout
//! lines and `RESULT {json}` are read back. Waiting is deadline-based polling.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{collect, line_channel, python, root};

pub const NODE: &str = env!("CARGO_BIN_EXE_policy_node");

/// A private ROS 2 world: domain id and HOME (rcl logs there).
pub struct World {
    pub domain: u32,
    pub home: tempfile::TempDir,
}

impl World {
    /// A domain id in `first..first + span`, distinct per test in this process and spread by
    /// pid across concurrent runs (Fast DDS accepts ids up to 232).
    pub fn new(first: u32, span: u32) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let per_run = span.div_ceil(2).max(1);
        let domain = first
            + (std::process::id() % 2) * (span / 2)
            + NEXT.fetch_add(1, Ordering::Relaxed) % per_run;
        World {
            domain: domain.min(first + span - 1),
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(root())
            .env("ROS_DOMAIN_ID", self.domain.to_string())
            .env("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
            .env_remove("ROS_LOCALHOST_ONLY")
            .env_remove("ROS_STATIC_PEERS")
            .env("HOME", self.home.path())
            .env("ROS_LOG_DIR", self.home.path().join("log"))
            .env("RCUTILS_COLORIZED_OUTPUT", "0")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn node(&self, args: &[&str]) -> NodeProc {
        let mut cmd = self.command(NODE);
        cmd.arg("--ros-args").args(args);
        NodeProc::spawn(cmd)
    }

    /// `tests/peers/<script>` with a scenario and its JSON configuration.
    pub fn peer(&self, script: &str, scenario: &str, config: Value) -> PeerProc {
        let mut cmd = self.command(python());
        cmd.arg(root().join("tests/peers").join(script))
            .arg(scenario)
            .arg("--config")
            .arg(config.to_string());
        let mut child = cmd.spawn().expect("start the Python peer");
        let rx = line_channel(child.stdout.take().expect("stdout"));
        let err = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().expect("stderr"), err.clone());
        PeerProc {
            child,
            lines: rx,
            stderr: err,
        }
    }

    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.home.path().join(rel)
    }
}

/// The node under test; killed if a test fails before stopping it.
pub struct NodeProc {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl NodeProc {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("start policy_node");
        let log = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("stdout"), log.clone());
        collect(child.stderr.take().expect("stderr"), log.clone());
        NodeProc { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Polls the log for `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "policy_node exited ({status}) before logging `{needle}`:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "policy_node did not log `{needle}` within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Waits for the exit (polling) up to `timeout`: the status and the time it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let took = start.elapsed();
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return Some((status, took));
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGINT, then the exit status (asserted 0) and the log.
    pub fn stop(mut self) -> String {
        self.signal("INT");
        let (status, _) = self
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("policy_node ignored SIGINT:\n{}", self.log()));
        assert!(
            status.success(),
            "policy_node exited with {status}:\n{}",
            self.log()
        );
        self.log()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct PeerProc {
    pub child: Child,
    pub lines: Receiver<String>,
    pub stderr: Arc<Mutex<String>>,
}

impl PeerProc {
    /// Waits for a stdout line starting with `prefix` (the rest of it is returned); other
    /// lines are passed to `other`.
    pub fn wait_line_with(
        &mut self,
        prefix: &str,
        timeout: Duration,
        node: &NodeProc,
        mut other: impl FnMut(&str),
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => match line.strip_prefix(prefix) {
                    Some(rest) => return rest.to_string(),
                    None => other(&line),
                },
                Err(_) if Instant::now() >= deadline => panic!(
                    "the peer printed no `{prefix}` line within {timeout:?}\npeer stderr:\n{}\nnode log:\n{}",
                    self.stderr.lock().unwrap(),
                    node.log()
                ),
                Err(_) => {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                            if let Some(rest) = line.strip_prefix(prefix) {
                                return rest.to_string();
                            }
                            other(&line);
                        }
                        panic!(
                            "the peer exited without a `{prefix}` line\npeer stderr:\n{}\nnode log:\n{}",
                            self.stderr.lock().unwrap(),
                            node.log()
                        );
                    }
                }
            }
        }
    }

    pub fn wait_line(&mut self, prefix: &str, timeout: Duration, node: &NodeProc) -> String {
        self.wait_line_with(prefix, timeout, node, |_| {})
    }

    /// The peer's `RESULT` JSON (asserted `ok`), waiting up to `timeout`.
    pub fn result_within(mut self, timeout: Duration, node: &NodeProc) -> Value {
        let line = self.wait_line("RESULT ", timeout, node);
        let v: Value = serde_json::from_str(&line).expect("peer RESULT is JSON");
        assert_eq!(
            v["ok"],
            json!(true),
            "peer failed: {}\npeer stderr:\n{}\nnode log:\n{}",
            v["error"],
            self.stderr.lock().unwrap(),
            node.log()
        );
        let _ = self.child.wait();
        v
    }

    pub fn result(self, node: &NodeProc) -> Value {
        self.result_within(Duration::from_secs(120), node)
    }
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An export directory of `tests/fixtures`, as a string argument.
pub fn export(rel: &str) -> String {
    root()
        .join("tests/fixtures")
        .join(rel)
        .display()
        .to_string()
}

/// Whether `path` exists (for skip messages).
pub fn exists(path: &Path) -> bool {
    path.exists()
}
