//! The `remote` backend against real servers: NVIDIA Triton (PyTriton, one per test binary,
//! tests/common/triton.rs) and a small KServe v2 server that answers badly on purpose
//! (tests/peers/kserve_peer.py): preflight errors, deadlines, bad answers, TLS, a late answer
//! after `reset`, and `policyctl` (`info`, `replay`) with `--backend remote`.
//!
//! The conformance suite (tests/conformance.rs) runs the numerical checks through this backend;
//! the node's own tests (tests/node_integration.rs) cover the node with a server that is
//! killed and restarted mid-run.
#![cfg(all(feature = "remote", feature = "onnx"))]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::triton::{self, Server};
use common::*;
use ndarray::{ArrayD, Axis};
use policy_node::export::{ExportBackend, ExportDir};
use policy_node::policy::{ControlPolicy, InferenceModel, Observation, RefillMode, TickOutcome};
use policy_node::runtime::{
    get_adapter, RemoteFault, RemoteOptions, RuntimeAdapter, RuntimeError, RuntimeOptions,
    ServerState,
};

fn act_export() -> ExportDir {
    ExportDir::open_with_backend(fixture("act_tiny/onnx"), Some(ExportBackend::Remote)).unwrap()
}

fn remote_options(url: &str, model: &str, timeout_ms: u64) -> RemoteOptions {
    RemoteOptions {
        url: url.to_string(),
        model: model.to_string(),
        timeout: Duration::from_millis(timeout_ms),
        ..Default::default()
    }
}

/// The remote adapter for the act_tiny export (its metadata gives the expected ports).
fn adapter(remote: RemoteOptions) -> Result<Box<dyn RuntimeAdapter>, RuntimeError> {
    let export = act_export();
    let opts = RuntimeOptions {
        remote: remote.for_export(&export),
        ..Default::default()
    };
    let mut a = get_adapter(ExportBackend::Remote, &opts)?;
    a.load(&export.model_file)?;
    Ok(a)
}

fn inputs(state: f32) -> (ArrayD<f32>, ArrayD<f32>) {
    (
        ArrayD::from_elem(vec![1, 6], state),
        ArrayD::from_elem(vec![1, 3, 64, 64], 0.5),
    )
}

fn fault(e: &RuntimeError) -> Option<RemoteFault> {
    match e {
        RuntimeError::Remote { fault, .. } => Some(*fault),
        _ => None,
    }
}

/// A constant observation for the policy-level tests.
fn observation(state: f32) -> Observation {
    let mut obs = Observation::new();
    obs.insert("state", ArrayD::from_elem(vec![6], state));
    obs.insert("images", ArrayD::from_elem(vec![3, 64, 64], 0.5));
    obs
}

#[test]
fn the_kserve_peer_answers_raw_and_typed_contents_alike() {
    let peer = Server::kserve_peer(&[]);
    let (state, images) = inputs(0.25);
    let mut raw = adapter(remote_options(&peer.url, "echo", 2000)).unwrap();
    let mut typed = adapter(remote_options(&peer.url, "typed", 2000)).unwrap();
    assert_eq!(raw.device(), format!("kserve_peer 1 at {}", peer.url));
    let a = raw
        .predict(&[("state", state.view()), ("images", images.view())])
        .unwrap();
    let b = typed
        .predict(&[("state", state.view()), ("images", images.view())])
        .unwrap();
    assert_eq!(a["action"].shape(), [1, 10, 6]);
    assert_eq!(a["action"], b["action"]);
    // action[0, k, j] = state[j] + 0.001 k
    assert_eq!(a["action"][[0, 3, 2]], 0.25 + 0.003);
}

#[test]
fn bad_answers_are_errors_naming_the_url_the_model_and_the_tensor() {
    let peer = Server::kserve_peer(&[]);
    let (state, images) = inputs(0.25);
    let cases = [
        (
            "missing_output",
            RemoteFault::BadAnswer,
            "output `action` is missing",
        ),
        ("wrong_size", RemoteFault::BadAnswer, "wrong-sized tensor"),
        ("wrong_shape", RemoteFault::BadAnswer, "[1, 9, 6]"),
        (
            "nan",
            RemoteFault::BadAnswer,
            "non-finite value (NaN) at flat index 7",
        ),
        (
            "internal",
            RemoteFault::Server,
            "the model failed on purpose",
        ),
    ];
    for (model, want, text) in cases {
        let mut a = adapter(remote_options(&peer.url, model, 2000))
            .unwrap_or_else(|e| panic!("{model}: preflight: {e}"));
        for _ in 0..2 {
            // The adapter stays usable: the same error again, no panic, no stale result.
            let e = a
                .predict(&[("state", state.view()), ("images", images.view())])
                .unwrap_err();
            let msg = e.to_string();
            assert_eq!(fault(&e), Some(want), "{model}: {msg}");
            assert!(
                msg.contains(&peer.url)
                    && msg.contains(&format!("`{model}`"))
                    && msg.contains(text),
                "{model}: {msg}"
            );
            if want == RemoteFault::BadAnswer {
                assert!(msg.contains("action"), "{model}: {msg}");
            }
        }
        let link = a.server_link().unwrap().snapshot();
        assert_eq!((link.calls, link.ok), (2, 0), "{model}");
        if want == RemoteFault::BadAnswer {
            assert_eq!(link.bad_answers, 2, "{model}");
        } else {
            assert_eq!(link.server_errors, 2, "{model}");
        }
        assert_eq!(link.state, ServerState::Degraded, "{model}");
        assert!(link.last_error.unwrap().contains(text), "{model}");
    }
}

#[test]
fn preflight_errors_name_the_url_the_model_and_the_tensor() {
    let peer = Server::kserve_peer(&[]);
    // Unknown and unready models.
    let e = adapter(remote_options(&peer.url, "nope", 2000))
        .err()
        .unwrap();
    assert_eq!(fault(&e), Some(RemoteFault::UnknownModel), "{e}");
    assert!(
        e.to_string().contains(&peer.url) && e.to_string().contains("`nope`"),
        "{e}"
    );
    let e = adapter(remote_options(&peer.url, "unready", 2000))
        .err()
        .unwrap();
    assert_eq!(fault(&e), Some(RemoteFault::NotReady), "{e}");

    // A datatype no robot-side tensor converts to.
    let e = adapter(remote_options(&peer.url, "bytes_state", 2000))
        .err()
        .unwrap();
    assert_eq!(fault(&e), Some(RemoteFault::Mismatch), "{e}");
    assert!(
        e.to_string().contains("`state`") && e.to_string().contains("BYTES"),
        "{e}"
    );

    // Triton: a port with another shape, and another model's ports.
    let server = triton::shared();
    let e = adapter(remote_options(&server.url, "act_wide", 2000))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert_eq!(fault(&e), Some(RemoteFault::Mismatch), "{msg}");
    assert!(
        msg.contains(&server.url)
            && msg.contains("`act_wide`")
            && msg.contains("`state`")
            && msg.contains("[1, 7]")
            && msg.contains("[1, 6]"),
        "{msg}"
    );
    let e = adapter(remote_options(&server.url, "act_2cam", 2000))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert_eq!(fault(&e), Some(RemoteFault::Mismatch), "{msg}");
    assert!(
        msg.contains("`images`") && msg.contains("images.top"),
        "{msg}"
    );
    let e = adapter(RemoteOptions {
        model_version: "7".into(),
        ..remote_options(&server.url, "act", 2000)
    })
    .err()
    .unwrap();
    assert_eq!(fault(&e), Some(RemoteFault::UnknownModel), "{e}");
    assert!(e.to_string().contains("version `7`"), "{e}");

    // Through the policy layer, as the node and policyctl load it; the model name defaults to
    // the policy's (`act` for getiaction's ACT).
    let e = InferenceModel::builder(fixture("act_tiny/onnx"))
        .backend(ExportBackend::Remote)
        .remote(remote_options(&server.url, "act_wide", 2000))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("[1, 7]"), "{e}");
    let model = InferenceModel::builder(fixture("act_tiny/onnx"))
        .backend(ExportBackend::Remote)
        .remote(remote_options(&server.url, "", 2000))
        .build()
        .unwrap();
    assert_eq!(
        model.adapter().server_link().unwrap().snapshot().model,
        "act"
    );
    assert_eq!(model.config().chunk_size, 10);
}

#[test]
fn a_missed_deadline_is_an_error_and_the_queue_commands_nothing_from_it() {
    let server = triton::shared();
    let (state, images) = inputs(0.1);
    let mut a = adapter(remote_options(&server.url, "act_slow", 150)).unwrap();
    let start = Instant::now();
    let e = a
        .predict(&[("state", state.view()), ("images", images.view())])
        .unwrap_err();
    let msg = e.to_string();
    assert_eq!(fault(&e), Some(RemoteFault::Timeout), "{msg}");
    assert!(
        msg.contains(&server.url) && msg.contains("`act_slow`") && msg.contains("150 ms"),
        "{msg}"
    );
    // The deadline is kept (generously: a loaded CI machine), far below the server's 600 ms.
    assert!(
        start.elapsed() < Duration::from_millis(550),
        "{:?}",
        start.elapsed()
    );
    let link = a.server_link().unwrap().snapshot();
    assert_eq!((link.timeouts, link.ok), (1, 0));

    // In the control loop: ticks keep coming, every one an overrun or an error, never an
    // action, while each refill misses its deadline.
    let model = InferenceModel::builder(fixture("act_tiny/onnx"))
        .backend(ExportBackend::Remote)
        .remote(remote_options(&server.url, "act_slow", 150))
        .build()
        .unwrap();
    let link = model.adapter().server_link().unwrap();
    let mut policy = ControlPolicy::new(model, RefillMode::Asynchronous, 2);
    let (mut overruns, mut errors) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while link.snapshot().timeouts < 3 {
        assert!(
            Instant::now() < deadline,
            "no timeouts: {:?}",
            link.snapshot()
        );
        match policy.tick(|| Ok(observation(0.1))) {
            Ok(TickOutcome::Action(a)) => panic!("an action from a call that timed out: {a}"),
            Ok(TickOutcome::Overrun) => overruns += 1,
            Err(e) => {
                // Deadline errors; after two in a row the connection is replaced, and on a
                // busy machine making it may fail too: errors naming the server either way.
                let msg = e.to_string();
                assert!(
                    msg.contains(&server.url) && msg.contains("`act_slow`"),
                    "{msg}"
                );
                errors += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(33));
    }
    assert!(
        overruns > 0 && errors >= 2,
        "{overruns} overruns, {errors} errors"
    );
}

#[test]
fn a_late_answer_to_a_request_that_reset_discarded_is_dropped() {
    let peer = Server::kserve_peer(&["--delay-ms", "400"]);
    let model = InferenceModel::builder(fixture("act_tiny/onnx"))
        .backend(ExportBackend::Remote)
        .remote(remote_options(&peer.url, "slow_echo", 3000))
        .build()
        .unwrap();
    let link = model.adapter().server_link().unwrap();
    let ok_before = link.snapshot().ok; // the preflight makes no inference call
    let mut policy = ControlPolicy::new(model, RefillMode::Asynchronous, 0);
    // Request A (state 1.0), in flight on the server when `reset` comes.
    assert_eq!(
        policy.tick(|| Ok(observation(1.0))).unwrap(),
        TickOutcome::Overrun
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !peer.log().contains("INFER slow_echo") {
        assert!(
            Instant::now() < deadline,
            "request A never reached the server"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (_, in_flight) = policy.reset();
    assert!(in_flight);
    // Request B (state 2.0) after the reset.
    assert_eq!(
        policy.tick(|| Ok(observation(2.0))).unwrap(),
        TickOutcome::Overrun
    );
    assert!(policy.wait_for_refill(Duration::from_secs(10)).unwrap());
    // Both were answered; only B's chunk is used.
    assert_eq!(link.snapshot().ok - ok_before, 2);
    for _ in 0..5 {
        match policy.tick(|| Ok(observation(2.0))).unwrap() {
            TickOutcome::Action(a) => assert!(
                a.iter().all(|v| (2.0..2.01).contains(v)),
                "an action from the discarded request: {a}"
            ),
            TickOutcome::Overrun => panic!("no action after the refill arrived"),
        }
    }
}

/// A self-signed CA and a server certificate for 127.0.0.1 (openssl's command line).
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=policy_node test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[test]
fn tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    let peer = Server::kserve_peer(&["--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    let url = format!("https://127.0.0.1:{}", peer.port);
    let (state, images) = inputs(0.5);
    let mut a = adapter(RemoteOptions {
        ca_file: Some(dir.path().join("ca.pem")),
        ..remote_options(&url, "echo", 3000)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
    let out = a
        .predict(&[("state", state.view()), ("images", images.view())])
        .unwrap();
    assert_eq!(out["action"][[0, 0, 0]], 0.5);
    // Without the CA, the server's certificate is not trusted: a clear error, no connection.
    let e = adapter(remote_options(&url, "echo", 3000)).err().unwrap();
    assert_eq!(fault(&e), Some(RemoteFault::Unreachable), "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    // Plain gRPC to a TLS server fails as clearly.
    let plain = format!("http://127.0.0.1:{}", peer.port);
    assert!(adapter(remote_options(&plain, "echo", 3000)).is_err());
}

#[cfg(feature = "ros")]
#[test]
fn policyctl_replay_with_backend_remote_equals_local_onnx() {
    let server = triton::shared();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("onnx.csv");
    let remote = dir.path().join("remote.csv");
    replay_demo(&["--backend", "onnx"], &local);
    let text = replay_demo(
        &[
            "--backend",
            "remote",
            "--remote-url",
            &server.url,
            "--remote-timeout-ms",
            "5000",
        ],
        &remote,
    );
    assert!(text.contains("remote"), "{text}");
    let (a, b) = (
        std::fs::read_to_string(&local).unwrap(),
        std::fs::read_to_string(&remote).unwrap(),
    );
    assert!(a.lines().count() > 50, "{a}");
    // ONNX Runtime runs the same model on the server: the commands are the same numbers.
    assert_eq!(a, b, "replay commands differ between local ONNX and remote");
}

#[test]
fn policyctl_info_and_predict_with_backend_remote() {
    let server = triton::shared();
    let bin = env!("CARGO_BIN_EXE_policyctl");
    let o = Command::new(bin)
        .args([
            "info",
            "--json",
            "--backend",
            "remote",
            "--remote-url",
            &server.url,
        ])
        .arg(fixture("act_tiny/onnx"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["backend"], "remote");
    assert_eq!(v["chunk_size"], 10);
    assert_eq!(v["inputs"][1]["shape"], serde_json::json!([1, 3, 64, 64]));
    assert!(v["device"].as_str().unwrap().contains(&server.url), "{v}");

    // An unreachable server: a clear error naming the URL, exit status 1.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let o = Command::new(bin)
        .args([
            "info",
            "--backend",
            "remote",
            "--remote-timeout-ms",
            "300",
            "--remote-url",
            &url,
        ])
        .arg(fixture("act_tiny/onnx"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(&url) && err.contains("unreachable"), "{err}");

    // predict on the reference observation equals the PyTorch reference.
    let dir = tempfile::tempdir().unwrap();
    let npy = |name: &str, a: &ArrayD<f32>| {
        let p = dir.path().join(format!("{name}.npy"));
        let data: Vec<f32> = a.iter().copied().collect();
        let bytes = policy_node::npy::encode_npy(a.shape(), policy_node::npy::NpyData::F32(&data));
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let state = reference("act_tiny", "state")
        .index_axis(Axis(0), 2)
        .insert_axis(Axis(0))
        .to_owned();
    let images = reference("act_tiny", "images")
        .index_axis(Axis(0), 2)
        .insert_axis(Axis(0))
        .to_owned();
    let (s, i) = (npy("state", &state), npy("images", &images));
    let out = dir.path().join("out.npz");
    let o = Command::new(bin)
        .args([
            "predict",
            "--backend",
            "remote",
            "--remote-url",
            &server.url,
            "--remote-model",
            "act",
        ])
        .arg(fixture("act_tiny/onnx"))
        .arg("--input")
        .arg(format!("state={}", s.display()))
        .arg("--input")
        .arg(format!("images={}", i.display()))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let outputs = policy_node::npy::read_npz(&out).unwrap();
    let (name, action) = &outputs[0];
    assert_eq!(name, "action");
    let want = act_tiny_action(2).insert_axis(Axis(0));
    let d = max_abs_diff(action, &want);
    assert!(d <= 1e-4, "remote predict vs PyTorch reference: {d}");
}
