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
    server_at("ws", args, log)
}

/// [`server`] reached as `scheme` (`wss` with `--tls-cert` / `--tls-key`).
fn server_at(scheme: &str, args: &[&str], log: &Path) -> Server {
    let mut a: Vec<String> = vec![
        "--model".into(),
        model().to_string_lossy().into_owned(),
        "--log".into(),
        log.to_string_lossy().into_owned(),
        "--port".into(),
        "0".into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    Server::spawn_with(runtime_python(), scheme, "openpi_server.py", a)
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

/// `policyctl chunk` on the act_tiny export, fed reference observation `i` (written under
/// `dir`), with `extra`: the process's output, and the `action` it wrote to `out` if it ran.
fn chunk_act_tiny(
    dir: &Path,
    i: usize,
    extra: &[&str],
    out: &Path,
) -> (std::process::Output, Option<ArrayD<f32>>) {
    let (s, im) = inputs(i);
    let (sp, ip) = (dir.join("s.npy"), dir.join("i.npy"));
    save_npy(&sp, &s.index_axis(Axis(0), 0).to_owned());
    save_npy(&ip, &im.index_axis(Axis(0), 0).to_owned());
    let o = Command::new(env!("CARGO_BIN_EXE_policyctl"))
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
    let action = o.status.success().then(|| {
        policy_node::npy::read_npz(out)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "action")
            .unwrap()
            .1
    });
    (o, action)
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
        let run = |extra: &[&str], out: &Path| {
            let (o, action) = chunk_act_tiny(dir.path(), i, extra, out);
            assert!(
                o.status.success(),
                "policyctl chunk {extra:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            action.unwrap()
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

/// openpi's three robot schemas, each an I/O map of `tests/fixtures/openpi_maps/` for the
/// act_tiny fixture robot (no export on the robot) and the `--schema` / `--schema-map` that
/// serve act_tiny under it: (schema, server's map, the state inputs and how many values each
/// takes, the image input, the image's wire shape).
/// (schema, `--schema-map`, state inputs and their widths, image input, wire shape).
type Schema = (
    &'static str,
    &'static str,
    &'static [(&'static str, usize)],
    &'static str,
    [usize; 3],
);

const SCHEMAS: [Schema; 3] = [
    (
        "aloha",
        r#"{"state": "state", "images": "images/cam_high"}"#,
        &[("state", 6)],
        "images/cam_high",
        [3, 64, 64],
    ),
    (
        "droid",
        r#"{"state": ["observation/joint_position", "observation/gripper_position"],
            "images": "observation/exterior_image_1_left"}"#,
        &[
            ("observation/joint_position", 5),
            ("observation/gripper_position", 1),
        ],
        "observation/exterior_image_1_left",
        [64, 64, 3],
    ),
    (
        "libero",
        r#"{"state": "observation/state", "images": "observation/image"}"#,
        &[("observation/state", 6)],
        "observation/image",
        [64, 64, 3],
    ),
];

fn openpi_map(schema: &str) -> PathBuf {
    fixture(&format!("openpi_maps/{schema}.yaml"))
}

/// The value at `path` of a logged observation: nested at `/` or a flat key.
fn logged<'a>(
    obs: &'a serde_json::Value,
    path: &str,
    nested: bool,
) -> Option<&'a serde_json::Value> {
    if !nested {
        return obs.get(path);
    }
    path.split('/').try_fold(obs, |node, part| node.get(part))
}

/// Without an export: `policyctl chunk MAP --remote-url ws://...` for each of the three
/// schemas equals local ONNX on the export (within 1e-5), and the server received exactly
/// the schema (nested or flat keys, `uint8` images in the map's layout, float32 state, the
/// prompt).
#[test]
fn policyctl_chunk_without_export_equals_local_onnx_in_each_schema() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_policyctl");
    let (s, im) = inputs(3);
    let s = s.index_axis(Axis(0), 0).to_owned();
    // The image as a camera gives it: whole steps of 1/255 (the wire carries uint8).
    let im = im
        .index_axis(Axis(0), 0)
        .mapv(|v| (v * 255.0).round() / 255.0);
    let (ip, sp) = (dir.path().join("image.npy"), dir.path().join("state.npy"));
    save_npy(&ip, &im);
    save_npy(&sp, &s);
    let run = |target: &Path, extra: &[String], out: &Path| {
        let o = Command::new(bin)
            .arg("chunk")
            .arg(target)
            .args(extra)
            .arg("--output")
            .arg(out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "policyctl chunk {} {extra:?}: {}",
            target.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let npz = policy_node::npy::read_npz(out).unwrap();
        npz.into_iter().find(|(k, _)| k == "action").unwrap().1
    };
    let local = run(
        &fixture("act_tiny/onnx"),
        &[
            "--backend".into(),
            "onnx".into(),
            "--input".into(),
            format!("state={}", sp.display()),
            "--input".into(),
            format!("images={}", ip.display()),
        ],
        &dir.path().join("local.npz"),
    );
    for (schema, schema_map, states, image, wire_shape) in SCHEMAS {
        let log = dir.path().join(format!("{schema}.jsonl"));
        let srv = server(&["--schema", schema, "--schema-map", schema_map], &log);
        let mut args = vec![
            "--remote-url".to_string(),
            srv.url.clone(),
            "--task".into(),
            "stack the cubes".into(),
            "--input".into(),
            format!("{image}={}", ip.display()),
        ];
        let mut at = 0;
        for (i, (name, n)) in states.iter().enumerate() {
            let part = s.slice(ndarray::s![at..at + n]).to_owned().into_dyn();
            let p = dir.path().join(format!("{schema}_state{i}.npy"));
            save_npy(&p, &part);
            args.extend(["--input".into(), format!("{name}={}", p.display())]);
            at += n;
        }
        let remote = run(&openpi_map(schema), &args, &dir.path().join("remote.npz"));
        assert_eq!(remote.shape(), local.shape(), "{schema}");
        let d = max_abs_diff(&local, &remote);
        assert!(d <= 1e-5, "{schema}: differs from local ONNX by {d}");
        // What went over the wire: the probe (zeros) and the call, both in the schema.
        let requests = log_lines(&log);
        assert!(requests.len() >= 2, "{schema}: {requests:?}");
        let nested = schema == "aloha";
        for r in &requests {
            let obs = &r["obs"];
            let img = logged(obs, image, nested)
                .unwrap_or_else(|| panic!("{schema}: no `{image}` in {obs}"));
            assert_eq!(img["dtype"], "|u1", "{schema}: {obs}");
            assert_eq!(
                img["shape"],
                serde_json::json!(wire_shape),
                "{schema}: {obs}"
            );
            for (name, n) in states.iter() {
                let v = logged(obs, name, nested)
                    .unwrap_or_else(|| panic!("{schema}: no `{name}` in {obs}"));
                assert_eq!(v["dtype"], "<f4", "{schema}: {obs}");
                assert_eq!(v["shape"], serde_json::json!([n]), "{schema}: {obs}");
            }
            assert_eq!(obs["prompt"]["value"], "stack the cubes", "{schema}: {obs}");
            if nested {
                assert!(obs.get(image).is_none(), "{schema}: a flat key in {obs}");
            }
        }
    }
}

/// Without an export: `policyctl replay` of the demo recording through the server, for each
/// of the three schemas, commands what local ONNX commands (within 1e-5, every tick).
#[test]
fn policyctl_replay_without_export_equals_local_onnx_in_each_schema() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("onnx.csv");
    replay_demo(&["--backend", "onnx"], &local);
    let rows = |p: &Path| -> Vec<Vec<f64>> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
            .collect()
    };
    let expected = rows(&local);
    assert!(expected.len() > 100);
    // The demo's timing without its flat wiring (the map names the topics).
    let params = dir.path().join("params.yaml");
    std::fs::write(
        &params,
        "policy_node:\n  ros__parameters:\n    control_rate_hz: 30.0\n    max_observation_age_ms: 200.0\n    \
         refill_ahead_steps: 5\n    enable_on_start: true\n    threads: 1\n",
    )
    .unwrap();
    for (schema, schema_map, ..) in SCHEMAS {
        let srv = server(
            &["--schema", schema, "--schema-map", schema_map],
            &dir.path().join(format!("{schema}.jsonl")),
        );
        let out = dir.path().join(format!("{schema}.csv"));
        let o = Command::new(env!("CARGO_BIN_EXE_policyctl"))
            .arg("replay")
            .arg(fixture("demo_bag/mcap"))
            .arg(openpi_map(schema))
            .arg("--params")
            .arg(&params)
            .args(["--remote-url", &srv.url, "--remote-timeout-ms", "5000"])
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{schema}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = rows(&out);
        assert_eq!(got.len(), expected.len(), "{schema}");
        for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(a[0], b[0], "{schema}: tick {i} stamp");
            let d = a[1..]
                .iter()
                .zip(&b[1..])
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(d <= 1e-5, "{schema}: command {i} differs by {d}");
        }
    }
}

/// Without an export, the map and the server must agree: a map without `openpi:` (or with a
/// KServe URL) is refused naming what is missing; an answer whose width is not the map's
/// action width fails the probe naming the shape; a server that raises on the schema fails
/// with its traceback. Nothing runs in any of them.
#[test]
fn a_map_and_a_server_that_disagree_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_policyctl");
    let info = |target: &Path, url: &str| {
        let o = Command::new(bin)
            .arg("info")
            .arg(target)
            .args(["--remote-url", url, "--remote-timeout-ms", "3000"])
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // A KServe URL: the map stands for an export only with an openpi server.
    let e = info(&openpi_map("aloha"), "http://127.0.0.1:1");
    assert!(e.contains("openpi server") && e.contains("ws://"), "{e}");
    // A map without the section.
    let e = info(
        &fixture("../../config/io_map_aloha.yaml"),
        "ws://127.0.0.1:1",
    );
    assert!(e.contains("openpi:"), "{e}");
    // A bad section: an image input without its size, a key that is no input.
    let bad = dir.path().join("bad.yaml");
    let base = std::fs::read_to_string(openpi_map("libero")).unwrap();
    std::fs::write(&bad, base.replace("size: [64, 64], ", "")).unwrap();
    let e = info(&bad, "ws://127.0.0.1:1");
    assert!(
        e.contains("openpi.images.observation/image.size") && e.contains("required"),
        "{e}"
    );
    std::fs::write(
        &bad,
        base.replace("    observation/image: {", "    observation/wrist: {"),
    )
    .unwrap();
    let e = info(&bad, "ws://127.0.0.1:1");
    assert!(e.contains("openpi.images.observation/wrist"), "{e}");
    // One action column short: the probe's answer does not fit the map's 6 values.
    let (schema, schema_map, ..) = SCHEMAS[2];
    let srv = server(
        &[
            "--schema",
            schema,
            "--schema-map",
            schema_map,
            "--fault",
            "width",
        ],
        &dir.path().join("width.jsonl"),
    );
    let e = info(&openpi_map(schema), &srv.url);
    assert!(
        e.contains(&srv.url) && e.contains("probe") && e.contains("[10, 5]"),
        "{e}"
    );
    // The server wants ALOHA's nested keys; the LIBERO map sends flat ones: its traceback.
    let (schema, schema_map, ..) = SCHEMAS[0];
    let srv = server(
        &["--schema", schema, "--schema-map", schema_map],
        &dir.path().join("schema.jsonl"),
    );
    let e = info(&openpi_map("libero"), &srv.url);
    assert!(e.contains("KeyError") && e.contains("state"), "{e}");
}

/// The `pad` resize against openpi's own (`openpi_client.image_tools.resize_with_pad`, PIL
/// bilinear): the same geometry (resized size, black borders, placement) in every case, and the
/// same pixels within one level of 255 (PIL computes in fixed point), enlarging and shrinking
/// (both antialias when shrinking).
#[test]
fn the_pad_resize_matches_openpis_resize_with_pad() {
    use policy_node::observation::{ImageEncoding, ImageFit, ImagePreprocessor, RawImage};
    let dir = tempfile::tempdir().unwrap();
    // (input height, width, output height, width, largest difference allowed in levels)
    let cases = [
        (24usize, 40usize, 64usize, 64usize, 1u8), // wider: black bands above and below
        (40, 24, 64, 64, 1),                       // taller: bands left and right
        (30, 30, 64, 48, 1),                       // square into a portrait box
        (64, 64, 64, 64, 0),                       // the size already: untouched
        (120, 200, 64, 64, 1),                     // shrunk ~3x: both antialias
        (480, 640, 224, 224, 1),                   // a VGA camera into openpi's 224
    ];
    for (k, (ih, iw, oh, ow, tol)) in cases.into_iter().enumerate() {
        // A smooth image with some texture, the same bytes on both sides.
        let pixels: Vec<u8> = (0..ih * iw * 3)
            .map(|i| {
                let (y, x, c) = (i / (iw * 3), (i / 3) % iw, i % 3);
                ((x * 255 / iw + y * 97 / ih + c * 40 + (x * y) % 13) % 256) as u8
            })
            .collect();
        let input = dir.path().join(format!("in{k}.npy"));
        let img =
            ArrayD::from_shape_vec(vec![ih, iw, 3], pixels.iter().map(|v| *v as f32).collect())
                .unwrap();
        save_npy(&input, &img);
        let out = dir.path().join(format!("out{k}.npy"));
        let script = format!(
            "import numpy as np\nfrom openpi_client import image_tools\n\
             a = np.load('{}').astype(np.uint8)\n\
             np.save('{}', image_tools.resize_with_pad(a, {oh}, {ow}).astype(np.float32))\n",
            input.display(),
            out.display()
        );
        let o = Command::new(runtime_python())
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let theirs = read_npy(&out).unwrap();
        assert_eq!(theirs.shape(), &[oh, ow, 3]);
        let mut pre = ImagePreprocessor::new(oh, ow)
            .with_fit(ImageFit::Pad)
            .with_antialias(true);
        let ours = pre
            .raw(&RawImage {
                width: iw as u32,
                height: ih as u32,
                step: (iw * 3) as u32,
                encoding: ImageEncoding::Rgb8,
                data: &pixels,
            })
            .unwrap();
        // openpi's geometry, written out: ratio, resized size, padding before.
        let ratio = (iw as f64 / ow as f64).max(ih as f64 / oh as f64);
        let (rw, rh) = ((iw as f64 / ratio) as usize, (ih as f64 / ratio) as usize);
        let (left, top) = ((ow - rw) / 2, (oh - rh) / 2);
        let mut worst = 0u8;
        for y in 0..oh {
            for x in 0..ow {
                let inside = (top..top + rh).contains(&y) && (left..left + rw).contains(&x);
                for c in 0..3 {
                    let a = (ours[[c, y, x]] * 255.0).round() as u8;
                    let b = theirs[[y, x, c]] as u8;
                    if inside {
                        worst = worst.max(a.abs_diff(b));
                    } else {
                        assert_eq!(
                            (a, b),
                            (0, 0),
                            "{ih}x{iw} -> {oh}x{ow}: padding at ({y}, {x})"
                        );
                    }
                }
            }
        }
        println!("{ih}x{iw} -> {oh}x{ow}: largest difference {worst} levels");
        assert!(
            worst <= tol,
            "{ih}x{iw} -> {oh}x{ow}: {worst} levels apart (allowed {tol})"
        );
    }
}

/// `wss://`: the same server behind TLS (a certificate made here with the `openssl` tool).
/// With the certificate as `--remote-ca-file`, `policyctl chunk` equals local ONNX; without it
/// (the system's roots do not know it) the connection is refused naming the URL and the
/// certificate problem, and nothing is computed.
#[test]
fn wss_with_the_servers_ca_works_and_an_unknown_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl tool (Debian's `openssl` package, which ca-certificates needs)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = dir.path().join("requests.jsonl");
    let (cert_arg, key_arg) = (cert.to_string_lossy(), key.to_string_lossy());
    let srv = server_at(
        "wss",
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
        &log,
    );
    assert!(srv.url.starts_with("wss://"), "{}", srv.url);
    let run = |extra: &[&str], out: &Path| chunk_act_tiny(dir.path(), 2, extra, out);
    let local = run(&["--backend", "onnx"], &dir.path().join("local.npz"))
        .1
        .unwrap();
    let ca = cert.to_string_lossy().into_owned();
    let (o, remote) = run(
        &[
            "--backend",
            "remote",
            "--remote-url",
            &srv.url,
            "--remote-ca-file",
            &ca,
        ],
        &dir.path().join("remote.npz"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = max_abs_diff(&local, &remote.unwrap());
    assert!(d <= 1e-5, "wss:// differs from local ONNX by {d}");
    assert!(!log_lines(&log).is_empty());
    // The system's roots do not know this certificate.
    let refused = dir.path().join("refused.npz");
    let (o, _) = run(&["--backend", "remote", "--remote-url", &srv.url], &refused);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !refused.exists(), "{e}");
    assert!(
        e.contains(&srv.url) && e.to_lowercase().contains("certificate"),
        "{e}"
    );
}
