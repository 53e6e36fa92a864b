//! A real Triton Inference Server (PyTriton, tests/peers/triton_server.py) for the `remote`
//! backend's tests, and the small KServe v2 server that gives bad answers
//! (tests/peers/kserve_peer.py). Both run with `.venv-triton`'s Python (tools/setup.sh).
#![allow(dead_code)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::root;

/// How long a server may take to start (Triton loads each model's Python backend).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// The Python of `.venv-triton`: `POLICY_NODE_TRITON_PYTHON`, else `<repo>/.venv-triton/bin/python`.
pub fn triton_python() -> PathBuf {
    if let Some(p) = std::env::var_os("POLICY_NODE_TRITON_PYTHON") {
        return PathBuf::from(p);
    }
    let p = root().join(".venv-triton/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run tools/setup.sh (it creates .venv-triton with PyTriton), or set \
         POLICY_NODE_TRITON_PYTHON",
        p.display()
    );
    p
}

/// A server process started by a test: stopped with SIGINT (then SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    /// Everything the server printed.
    pub log: Arc<Mutex<String>>,
    args: Vec<String>,
    script: &'static str,
    python: PathBuf,
    scheme: String,
}

impl Server {
    fn spawn(script: &'static str, args: Vec<String>) -> Self {
        Self::spawn_with(triton_python(), "http", script, args)
    }

    /// `script` run by `python`; the server prints `READY {"grpc_port": N}` (or `"port"`) once
    /// it listens, and is reached at `scheme://127.0.0.1:N`.
    pub fn spawn_with(
        python: PathBuf,
        scheme: &str,
        script: &'static str,
        args: Vec<String>,
    ) -> Self {
        let mut child = Command::new(&python)
            .arg(root().join("tests/peers").join(script))
            .args(&args)
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        super::collect(child.stderr.take().unwrap(), log.clone());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<u16>();
        let out_log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // Triton's own log shares this stdout, so the marker can sit anywhere on a line
                // and other output may follow its JSON: read the first JSON value after it.
                let port = line.find("READY {").and_then(|at| {
                    serde_json::Deserializer::from_str(&line[at + 6..])
                        .into_iter::<serde_json::Value>()
                        .next()?
                        .ok()
                        .and_then(|v| {
                            v.get("grpc_port")
                                .or(v.get("port"))
                                .and_then(|p| p.as_u64())
                        })
                });
                if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
                    let _ = tx.send(port);
                }
                let mut l = out_log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(p) => break p,
                Err(_) if Instant::now() > deadline => {
                    let _ = child.kill();
                    panic!("{script} did not start in time:\n{}", log.lock().unwrap());
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("{script} exited with {status}:\n{}", log.lock().unwrap());
                    }
                }
            }
        };
        Self {
            child: Some(child),
            port,
            url: format!("{scheme}://127.0.0.1:{port}"),
            log,
            args,
            script,
            python,
            scheme: scheme.to_string(),
        }
    }

    /// Triton with `models` (`NAME=MODEL.onnx[;options]`, see triton_server.py) on a free port.
    pub fn triton(models: &[String]) -> Self {
        Self::triton_on(0, models)
    }

    /// Triton on `port` (0: a free one).
    pub fn triton_on(port: u16, models: &[String]) -> Self {
        let mut args = vec!["--grpc-port".to_string(), port.to_string()];
        for m in models {
            args.push("--model".into());
            args.push(m.clone());
        }
        Self::spawn("triton_server.py", args)
    }

    /// The bad-answer server (tests/peers/kserve_peer.py) on a free port.
    pub fn kserve_peer(args: &[&str]) -> Self {
        Self::spawn(
            "kserve_peer.py",
            args.iter().map(|s| s.to_string()).collect(),
        )
    }

    /// Stops the server (SIGINT, as a user would; SIGKILL after 30 s) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Kills the server at once (SIGKILL to the whole process group is not available here:
    /// SIGTERM to the Python process, which stops tritonserver, then waits).
    pub fn kill(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        self.stop();
    }

    /// Starts the same server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let mut args = self.args.clone();
        if let Some(i) = args
            .iter()
            .position(|a| a == "--grpc-port" || a == "--port")
        {
            args[i + 1] = self.port.to_string();
        }
        let fresh = Self::spawn_with(self.python.clone(), &self.scheme.clone(), self.script, args);
        assert_eq!(fresh.port, self.port);
        let mut fresh = fresh;
        self.child = fresh.child.take();
        self.log = fresh.log.clone();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `NAME=<fixture onnx>[;options]`.
pub fn model(name: &str, fixture: &str, options: &str) -> String {
    let path = root().join("tests/fixtures").join(fixture);
    if options.is_empty() {
        format!("{name}={}", path.display())
    } else {
        format!("{name}={};{options}", path.display())
    }
}

/// One Triton per test binary, shared by its tests, with the fixture models:
/// `act` (act_tiny), `act_2cam`, `ports` (f16 / i64 ports), `act_slow` (answers after 600 ms),
/// `act_wide` (declares `state` as [1, 7]). Never stopped by the test: it stops itself when
/// the test process exits.
pub fn shared() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::triton(&[
            model("act", "act_tiny/onnx/model.onnx", ""),
            model("act_2cam", "act_tiny_2cam/onnx/model.onnx", ""),
            model("ports", "ports/onnx/model.onnx", ""),
            model("act_slow", "act_tiny/onnx/model.onnx", "delay_ms=600"),
            model("act_wide", "act_tiny/onnx/model.onnx", "shape.state=1x7"),
        ])
    })
}
