//! Shared helpers of the integration tests: fixture paths, compiled backends, reference data.
#![allow(dead_code)]

#[cfg(feature = "ros")]
pub mod ros;
pub mod triton;

use std::path::PathBuf;

use ndarray::{ArrayD, Axis};
use policy_node::export::ExportBackend;
use policy_node::npy::read_npy;
use policy_node::policy::Observation;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python (the test peers and the fixture scripts run with it):
/// `POLICY_NODE_TEST_PYTHON`, else `$POLICY_NODE_VENV/bin/python`, else `.venv/bin/python`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("POLICY_NODE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("POLICY_NODE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let p = venv.join("bin/python");
    assert!(
        p.exists(),
        "{} is missing: run tools/setup.sh (or set POLICY_NODE_TEST_PYTHON)",
        p.display()
    );
    p
}

/// The runtimes' Python (`.venv`: onnx, onnxruntime, torch), for the fixture scripts; the
/// peers' [`python`] may be a ROS-only venv (the Jazzy leg's `.venv-jazzy`).
pub fn runtime_python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    if p.exists() {
        p
    } else {
        python()
    }
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// The fixture export directory of `backend` for the tiny ACT policy.
pub fn act_tiny(backend: ExportBackend) -> PathBuf {
    fixture(&format!("act_tiny/{}", backend.as_str()))
}

/// Backends compiled into this test build.
pub fn backends() -> Vec<ExportBackend> {
    policy_node::runtime::compiled_backends()
}

/// Reference data: `reference/<name>.npy`.
pub fn reference(model: &str, name: &str) -> ArrayD<f32> {
    read_npy(fixture(&format!("{model}/reference/{name}.npy"))).unwrap()
}

/// Observation `i` of the act_tiny reference set (no batch dimension).
pub fn act_tiny_observation(i: usize) -> Observation {
    let state = reference("act_tiny", "state")
        .index_axis(Axis(0), i)
        .to_owned();
    let images = reference("act_tiny", "images")
        .index_axis(Axis(0), i)
        .to_owned();
    let mut obs = Observation::new();
    obs.insert("state", state);
    obs.insert("images", images);
    obs
}

/// The PyTorch reference chunk `[chunk, A]` for observation `i`.
pub fn act_tiny_action(i: usize) -> ArrayD<f32> {
    reference("act_tiny", "action")
        .index_axis(Axis(0), i)
        .to_owned()
}

/// Largest absolute difference between two arrays of the same shape.
pub fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Sends each line read from `r` on the returned channel, from a thread (a child's stdout).
pub fn line_channel(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Appends everything read from `r` to `buf`, from a thread (a child's stderr or log).
pub fn collect(
    mut r: impl std::io::Read + Send + 'static,
    buf: std::sync::Arc<std::sync::Mutex<String>>,
) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
}

/// Writes `a` as a float32 `.npy` file.
pub fn save_npy(path: &std::path::Path, a: &ArrayD<f32>) {
    let v: Vec<f32> = a.iter().copied().collect();
    std::fs::write(
        path,
        policy_node::npy::encode_npy(a.shape(), policy_node::npy::NpyData::F32(&v)),
    )
    .unwrap();
}

/// Runs the Python peer `tests/peers/SCRIPT` with `args` and returns the JSON it prints on
/// its `RESULT ` line (failing the test with the peer's output if there is none).
pub fn run_peer<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> serde_json::Value {
    let out = std::process::Command::new(python())
        .arg(root().join("tests/peers").join(script))
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "{script} printed no result (status {}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script}: RESULT is not JSON: {e}"))
}

/// physicalai 0.3.0 (`tests/peers/physicalai_oracle.py`) on `jobs`: one result per job.
pub fn physicalai_oracle(jobs: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.json");
    std::fs::write(&file, serde_json::to_string(jobs).unwrap()).unwrap();
    match run_peer("physicalai_oracle.py", &[&file]) {
        serde_json::Value::Array(results) => {
            // Callers zip the answers with their own cases: a short answer would pass unseen.
            assert_eq!(
                results.len(),
                jobs.len(),
                "the oracle answered {} result(s) for {} job(s)",
                results.len(),
                jobs.len()
            );
            results
        }
        other => panic!("the oracle answered {other}, not one result per job"),
    }
}

/// `policyctl replay` of the demo recording (tests/fixtures/demo_bag) with the act_tiny ONNX
/// export, its parameter file, one thread and `extra` flags, commands written to `out`.
/// Returns what it printed; panics (with it) when it fails.
pub fn replay_demo(extra: &[&str], out: &std::path::Path) -> String {
    let demo = fixture("demo_bag");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_policyctl"))
        .arg("replay")
        .arg(demo.join("mcap"))
        .arg(fixture("act_tiny/onnx"))
        .arg("--params")
        .arg(demo.join("params.yaml"))
        .arg("--threads")
        .arg("1")
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "policyctl replay {extra:?}:\n{text}");
    text
}
