//! The `remote` backend's openpi protocol against a real openpi-protocol server
//! (tests/peers/openpi_server.py: openpi_client's own msgpack codec and `websockets`, the
//! fixture ONNX model run by ONNX Runtime), which the real `openpi_client`
//! `WebsocketClientPolicy` also talks to in the same test, so both clients are checked against
//! one server: the same observation on the wire, the same actions back.
#![cfg(all(feature = "remote", feature = "onnx"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::triton::Server;
use common::*;
use ndarray::{ArrayD, Axis};
use policy_node::export::{ExportBackend, ExportDir};
use policy_node::npy::read_npy;
use policy_node::policy::{ControlPolicy, InferenceModel, Observation, RefillMode, TickOutcome};
use policy_node::runtime::{
    get_adapter, RemoteFault, RemoteOptions, RuntimeAdapter, RuntimeError, RuntimeOptions,
    ServerState,
};

fn model() -> PathBuf {
    fixture("act_tiny/onnx/model.onnx")
}

/// The openpi server on a free port, with `args` (see the script) and a request log.
fn server(args: &[&str], log: &Path) -> Server {
    let mut a: Vec<String> = vec![
        "--model".into(),
        model().to_string_lossy().into_owned(),
        "--log".into(),
        log.to_string_lossy().into_owned(),
        "--port".into(),
        "0".into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    Server::spawn_with(runtime_python(), "ws", "openpi_server.py", a)
}

fn adapter(url: &str, timeout_ms: u64) -> Result<Box<dyn RuntimeAdapter>, RuntimeError> {
    let export =
        ExportDir::open_with_backend(fixture("act_tiny/onnx"), Some(ExportBackend::Remote))
            .unwrap();
    let opts = RuntimeOptions {
        remote: RemoteOptions {
            url: url.to_string(),
            timeout: Duration::from_millis(timeout_ms),
            ..Default::default()
        }
        .for_export(&export),
        ..Default::default()
    };
    let mut a = get_adapter(ExportBackend::Remote, &opts)?;
    a.load(&export.model_file)?;
    Ok(a)
}

/// Reference observation `i` with its batch dimension.
fn inputs(i: usize) -> (ArrayD<f32>, ArrayD<f32>) {
    let s = reference("act_tiny", "state")
        .index_axis(Axis(0), i)
        .insert_axis(Axis(0))
        .to_owned();
    let im = reference("act_tiny", "images")
        .index_axis(Axis(0), i)
        .insert_axis(Axis(0))
        .to_owned();
    (s, im)
}

fn predict(a: &mut dyn RuntimeAdapter, i: usize) -> Result<ArrayD<f32>, RuntimeError> {
    let (s, im) = inputs(i);
    let out = a.predict(&[("state", s.view()), ("images", im.view())])?;
    Ok(out["action"].clone())
}

fn fault(e: &RuntimeError) -> Option<RemoteFault> {
    match e {
        RuntimeError::Remote { fault, .. } => Some(*fault),
        _ => None,
    }
}

fn log_lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn our_client_and_openpi_client_send_the_same_observation_and_get_the_same_actions() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let srv = server(&[], &log);

    // openpi's own client: observations 0..3 (no batch dimension, float32), actions saved.
    let script = r#"
import sys, numpy as np
from openpi_client import websocket_client_policy as wcp
url, ref, out = sys.argv[1:4]
state = np.load(ref + "/state.npy"); images = np.load(ref + "/images.npy")
client = wcp.WebsocketClientPolicy(url)
assert client.get_server_metadata()["policy"] == "openpi_server fixture"
acts = [client.infer({"state": state[i].astype(np.float32), "images": images[i].astype(np.float32)})["actions"] for i in range(3)]
np.save(out, np.stack(acts))
"#;
    let theirs = dir.path().join("theirs.npy");
    let o = Command::new(runtime_python())
        .args(["-c", script, &srv.url])
        .arg(fixture("act_tiny/reference"))
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openpi_client: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let theirs = read_npy(&theirs).unwrap();
    let requests_before = log_lines(&log).len();
    assert_eq!(requests_before, 3);

    let mut ours = adapter(&srv.url, 5000).unwrap();
    assert!(ours.device().contains(&srv.url), "{}", ours.device());
    let link = ours.server_link().unwrap();
    for i in 0..3 {
        let a = predict(ours.as_mut(), i).unwrap();
        let t = theirs
            .index_axis(Axis(0), i)
            .insert_axis(Axis(0))
            .to_owned();
        assert_eq!(a.shape(), t.shape());
        // One server, one model, the same bytes in: the same numbers out.
        assert_eq!(max_abs_diff(&a, &t), 0.0, "observation {i}");
    }
    let s = link.snapshot();
    assert_eq!((&s.state, s.ok, s.errors()), (&ServerState::Ready, 3, 0));
    assert!(s.server.contains("openpi_server fixture"), "{}", s.server);
    assert!(s.server_infer_ms.is_some_and(|ms| ms > 0.0), "{s:?}");
    // On the wire, our observation is theirs: the same keys, dtypes and shapes.
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 6);
    for i in 0..3 {
        assert_eq!(lines[i]["obs"], lines[3 + i]["obs"], "request {i}");
        assert_eq!(lines[i]["bytes"], lines[3 + i]["bytes"], "request {i}");
    }
}

#[test]
fn policyctl_chunk_through_openpi_equals_local_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let srv = server(&[], &log);
    let bin = env!("CARGO_BIN_EXE_policyctl");
    for i in [0usize, 4] {
        let (s, im) = inputs(i);
        let (sp, ip) = (dir.path().join("s.npy"), dir.path().join("i.npy"));
        save_npy(&sp, &s.index_axis(Axis(0), 0).to_owned());
        save_npy(&ip, &im.index_axis(Axis(0), 0).to_owned());
        let run = |extra: &[&str], out: &Path| {
            let o = Command::new(bin)
                .arg("chunk")
                .arg(fixture("act_tiny/onnx"))
                .arg("--input")
                .arg(format!("state={}", sp.display()))
                .arg("--input")
                .arg(format!("images={}", ip.display()))
                .arg("--output")
                .arg(out)
                .args(extra)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "policyctl chunk {extra:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            policy_node::npy::read_npz(out)
                .unwrap()
                .into_iter()
                .find(|(k, _)| k == "action")
                .unwrap()
                .1
        };
        let local = run(&["--backend", "onnx"], &dir.path().join("local.npz"));
        // `ws://` implies the openpi protocol; `--remote-protocol openpi` says it outright.
        let remote = run(
            &["--backend", "remote", "--remote-url", &srv.url],
            &dir.path().join("remote.npz"),
        );
        let explicit = run(
            &[
                "--backend",
                "remote",
                "--remote-protocol",
                "openpi",
                "--remote-url",
                &srv.url,
            ],
            &dir.path().join("explicit.npz"),
        );
        assert!(max_abs_diff(&local, &remote) <= 1e-5, "observation {i}");
        assert_eq!(remote, explicit);
    }
    // A KServe URL with the openpi protocol: refused before any connection.
    let o = Command::new(bin)
        .args([
            "info",
            "--backend",
            "remote",
            "--remote-protocol",
            "openpi",
            "--remote-url",
            "http://127.0.0.1:1",
        ])
        .arg(fixture("act_tiny/onnx"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("ws://"), "{err}");
}

#[test]
fn bad_answers_are_errors_naming_the_url_and_never_actions() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, RemoteFault, &str)] = &[
        (
            "traceback",
            RemoteFault::Server,
            "fixture policy failure (--fault traceback)",
        ),
        (
            "width",
            RemoteFault::BadAnswer,
            "`actions` has shape [10, 5]; expected [10, 6]",
        ),
        (
            "nan",
            RemoteFault::BadAnswer,
            "non-finite value (NaN) at row 1, column 2",
        ),
        ("dtype", RemoteFault::BadAnswer, "dtype `<i8`"),
        ("garbage", RemoteFault::BadAnswer, "not valid msgpack"),
        ("oversize", RemoteFault::BadAnswer, "Message too long"),
    ];
    for (name, want, needle) in cases {
        let log = dir.path().join(format!("{name}.jsonl"));
        let srv = server(&["--fault", name, "--fault-after", "1"], &log);
        let mut a = adapter(&srv.url, 5000).unwrap();
        predict(a.as_mut(), 0).unwrap();
        let err = predict(a.as_mut(), 1).unwrap_err();
        let text = err.to_string();
        assert_eq!(fault(&err), Some(*want), "{name}: {text}");
        assert!(text.contains(&srv.url), "{name}: {text}");
        assert!(text.contains(needle), "{name}: `{needle}` not in {text}");
        let s = a.server_link().unwrap().snapshot();
        assert_eq!((s.ok, s.errors()), (1, 1), "{name}");
    }
}

#[test]
fn a_server_that_never_answers_misses_the_deadline_and_the_connection_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hang.jsonl");
    let srv = server(&["--fault", "hang", "--fault-after", "1"], &log);
    let mut a = adapter(&srv.url, 400).unwrap();
    predict(a.as_mut(), 0).unwrap();
    let t = Instant::now();
    let err = predict(a.as_mut(), 1).unwrap_err();
    assert_eq!(fault(&err), Some(RemoteFault::Timeout), "{err}");
    assert!(err.to_string().contains("400 ms"), "{err}");
    // The deadline holds (generous bound: the machine may be loaded).
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The next call is sent on a new connection (no late answer can be mistaken for it).
    let err = predict(a.as_mut(), 2).unwrap_err();
    assert_eq!(fault(&err), Some(RemoteFault::Timeout), "{err}");
    assert!(a.server_link().unwrap().snapshot().reconnects >= 1);
    assert_eq!(log_lines(&log).len(), 3);
}

#[test]
fn a_server_killed_and_restarted_mid_run_fails_calls_then_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("restart.jsonl");
    let mut srv = server(&[], &log);
    let mut a = adapter(&srv.url, 2000).unwrap();
    let first = predict(a.as_mut(), 3).unwrap();
    srv.kill();
    let err = predict(a.as_mut(), 3).unwrap_err();
    assert_eq!(fault(&err), Some(RemoteFault::Unreachable), "{err}");
    // Within the backoff, calls fail at once without touching the network.
    let err = predict(a.as_mut(), 3).unwrap_err();
    assert!(err.to_string().contains("next attempt in"), "{err}");
    srv.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        match predict(a.as_mut(), 3) {
            Ok(x) => break x,
            Err(e) if Instant::now() < deadline => {
                assert!(
                    matches!(fault(&e), Some(RemoteFault::Unreachable)),
                    "unexpected: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no answer after the restart: {e}"),
        }
    };
    assert_eq!(first, again);
    let s = a.server_link().unwrap().snapshot();
    assert_eq!(s.state, ServerState::Ready);
    assert!(s.reconnects >= 1 && s.skipped >= 1, "{s:?}");
}

#[test]
fn an_unreachable_server_is_an_error_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let err = adapter(&url, 300).err().expect("no server there");
    assert_eq!(fault(&err), Some(RemoteFault::Unreachable), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
}

/// `policyctl replay` of the demo recording through the openpi server gives, command for
/// command, what local ONNX Runtime gives (the server runs the same model).
#[cfg(feature = "ros")]
#[test]
fn policyctl_replay_through_openpi_equals_local_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&[], &dir.path().join("requests.jsonl"));
    let (local, remote) = (dir.path().join("onnx.csv"), dir.path().join("openpi.csv"));
    replay_demo(&["--backend", "onnx"], &local);
    replay_demo(
        &[
            "--backend",
            "remote",
            "--remote-url",
            &srv.url,
            "--remote-timeout-ms",
            "5000",
        ],
        &remote,
    );
    let (a, b) = (
        std::fs::read_to_string(&local).unwrap(),
        std::fs::read_to_string(&remote).unwrap(),
    );
    assert!(a.lines().count() > 50, "{a}");
    assert_eq!(a, b, "replay commands differ between local ONNX and openpi");
}

/// A server expecting another observation schema (DROID's flat keys) raises on the missing
/// key: the error carries its traceback, naming the key, and nothing is commanded.
#[test]
fn a_server_with_another_schema_fails_the_call_naming_the_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(
        &[
            "--schema",
            "droid",
            "--schema-map",
            r#"{"state": "observation/joint_position", "images": "observation/exterior_image_1_left"}"#,
        ],
        &dir.path().join("droid.jsonl"),
    );
    let mut a = adapter(&srv.url, 5000).unwrap();
    let err = predict(a.as_mut(), 0).unwrap_err();
    let text = err.to_string();
    assert_eq!(fault(&err), Some(RemoteFault::Server), "{text}");
    assert!(
        text.contains("KeyError") && text.contains("observation/joint_position"),
        "{text}"
    );
    assert!(text.contains(&srv.url), "{text}");
}

/// A constant observation for the policy-level tests.
fn observation(state: f32) -> Observation {
    let mut obs = Observation::new();
    obs.insert("state", ArrayD::from_elem(vec![6], state));
    obs.insert("images", ArrayD::from_elem(vec![3, 64, 64], 0.5));
    obs
}

/// A request in flight when `reset` comes is answered later; its chunk is dropped, as with
/// every backend: the actions after the reset come from the request made after it.
#[test]
fn a_late_answer_to_a_request_that_reset_discarded_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("slow.jsonl");
    let srv = server(&["--delay-ms", "400"], &log);
    let local_chunk = |state: f32| {
        let mut m = InferenceModel::builder(fixture("act_tiny/onnx"))
            .backend(ExportBackend::Onnx)
            .build()
            .unwrap();
        m.predict_chunk(&observation(state)).unwrap()
    };
    let (chunk_a, chunk_b) = (local_chunk(1.0), local_chunk(2.0));
    let model = InferenceModel::builder(fixture("act_tiny/onnx"))
        .backend(ExportBackend::Remote)
        .remote(RemoteOptions {
            url: srv.url.clone(),
            timeout: Duration::from_millis(3000),
            ..Default::default()
        })
        .build()
        .unwrap();
    let link = model.adapter().server_link().unwrap();
    let ok_before = link.snapshot().ok;
    let mut policy = ControlPolicy::new(model, RefillMode::Asynchronous, 0);
    // Request A, in flight on the server when `reset` comes.
    assert_eq!(
        policy.tick(|| Ok(observation(1.0))).unwrap(),
        TickOutcome::Overrun
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_lines(&log).len() < ok_before as usize + 1 {
        assert!(
            Instant::now() < deadline,
            "request A never reached the server"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (_, in_flight) = policy.reset();
    assert!(in_flight);
    // Request B after the reset.
    assert_eq!(
        policy.tick(|| Ok(observation(2.0))).unwrap(),
        TickOutcome::Overrun
    );
    assert!(policy.wait_for_refill(Duration::from_secs(10)).unwrap());
    assert_eq!(link.snapshot().ok - ok_before, 2);
    let row_of = |a: &ndarray::Array1<f32>, chunk: &ndarray::Array2<f32>| {
        (0..chunk.nrows()).find(|&k| {
            a.iter()
                .zip(chunk.row(k).iter())
                .all(|(x, y)| (x - y).abs() <= 1e-5)
        })
    };
    // Consecutive rows of B's chunk (from row 1: the tick that requested it was an overrun,
    // the asynchronous first-chunk rule), none of A's.
    let mut first = None;
    for i in 0..5 {
        match policy.tick(|| Ok(observation(2.0))).unwrap() {
            TickOutcome::Action(a) => {
                let row = row_of(&a, &chunk_b);
                let start = *first.get_or_insert(row.unwrap_or(usize::MAX));
                assert!(start <= 1, "action {i} is row {row:?} of B's chunk: {a}");
                assert_eq!(row, Some(start + i), "action {i}: {a}");
                assert_eq!(
                    row_of(&a, &chunk_a),
                    None,
                    "an action from the discarded request: {a}"
                );
            }
            TickOutcome::Overrun => panic!("no action after the refill arrived"),
        }
    }
}
