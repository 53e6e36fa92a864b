#!/usr/bin/env python3
"""openpi round trip: policy_node's openpi client vs openpi's own ``WebsocketClientPolicy``.

Writes an ALOHA-shaped export (state [14], four cameras ``cam_high``, ``cam_low``,
``cam_left_wrist``, ``cam_right_wrist`` [3, 224, 224] float32, action [50, 14]: a small ONNX
graph whose cost is negligible, so the round trip is the protocol's), starts one openpi
policy server on it (tests/peers/openpi_server.py: openpi_client's msgpack codec, `websockets`,
ONNX Runtime) and times, against that same server and observation, in interleaved rounds
(python, rust, rust, python, ...; the order alternates so drifting load hits both alike):

- rust:   ``policyctl bench EXPORT --backend remote --remote-url ws://... --json``: one
          ``RuntimeAdapter::predict`` per iteration (observation encoded, sent, the answer
          received, decoded and checked);
- python: ``openpi_client.websocket_client_policy.WebsocketClientPolicy.infer`` with the same
          observation.

``--schema aloha`` (the default) is openpi's ALOHA schema with no export on the robot: an I/O
map whose ``openpi:`` section sends ``{"state": [14], "images": {"cam_high": uint8 [3, 224,
224], ...}}`` (our client converts the node's float images to uint8 on every call; the Python
client is handed uint8 arrays ready made). ``--schema export`` sends the export's own inputs
(float32, ``images.cam_high`` [3, 224, 224], ...), as ``policyctl bench EXPORT`` does.

Prints per round the median of each side and their ratio, then the median of the per-round
ratios (rust / python; below 1.0 means our client's round trip is shorter)::

    .venv/bin/python tools/bench_openpi.py [--rounds 5] [--iterations 100]

``--policyctl`` defaults to target/bench/release/policyctl, else target/release/policyctl
(``cargo build --release --no-default-features --features onnx,remote --bin policyctl``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved import interleaved_rounds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")


def write_export(out: Path, size: int, chunk: int, joints: int) -> None:
    """An ALOHA-shaped ONNX export: action = reshape(state @ W) + mean of each camera."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((joints, chunk * joints)).astype(np.float32) * 0.1, "w")
    shape = numpy_helper.from_array(np.array([1, chunk, joints], dtype=np.int64), "shape")
    inputs = [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, joints])]
    nodes = [helper.make_node("MatMul", ["state", "w"], ["flat"]),
             helper.make_node("Reshape", ["flat", "shape"], ["acc0"])]
    for i, cam in enumerate(CAMERAS):
        name = f"images.{cam}"
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, size, size]))
        nodes.append(helper.make_node("ReduceMean", [name], [f"m{i}"], axes=[1, 2, 3], keepdims=0))
        nodes.append(helper.make_node("Add", [f"acc{i}", f"m{i}"],
                                      ["action" if i == len(CAMERAS) - 1 else f"acc{i + 1}"]))
    graph = helper.make_graph(nodes, "aloha_shaped", inputs,
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, chunk, joints])],
                              initializer=[w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out / "model.onnx")
    shapes = "\n".join(f"  images.{c}: [3, {size}, {size}]" for c in CAMERAS)
    (out / "metadata.yaml").write_text(
        "backend: onnx\nchunk_size: %d\nuse_action_queue: true\ninput_shapes:\n  state: [%d]\n%s\n"
        "output_shapes:\n  action: [%d, %d]\n" % (chunk, joints, shapes, chunk, joints))


def write_map(out: Path, size: int, joints: int) -> None:
    """The I/O map of the ALOHA schema: 14 joints, four cameras, no export."""
    select = ", ".join(f"position.j{i}" for i in range(joints))
    cams = "".join(f"  images/{c}:\n    topic: /{c}/image_raw\n" for c in CAMERAS)
    images = "".join(f"    images/{c}: {{size: [{size}, {size}], layout: chw, dtype: uint8, resize: pad}}\n"
                     for c in CAMERAS)
    out.write_text(
        f"inputs:\n  state:\n    topic: /joint_states\n    type: sensor_msgs/msg/JointState\n"
        f"    select: [{select}]\n{cams}"
        f"outputs:\n  - topic: /commands\n    type: std_msgs/msg/Float64MultiArray\n"
        f"    action: [{', '.join(str(i) for i in range(joints))}]\n"
        f"openpi:\n  keys: nested\n  images:\n{images}")


def start_server(model: Path, schema: str) -> tuple[subprocess.Popen, int]:
    extra = []
    if schema == "aloha":
        mapping = {"state": "state", **{f"images.{c}": f"images/{c}" for c in CAMERAS}}
        extra = ["--schema", "aloha", "--schema-map", json.dumps(mapping)]
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/peers/openpi_server.py"), "--model", str(model),
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("READY "):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, json.loads(line[len("READY "):])["port"]
    raise SystemExit(f"the openpi server exited ({proc.wait()}) before it was ready")


def python_round(url: str, schema: str, size: int, joints: int, iterations: int, warmup: int) -> list[float]:
    from openpi_client import websocket_client_policy

    rng = np.random.default_rng(0)
    obs = {"state": rng.random(joints).astype(np.float32)}
    if schema == "aloha":
        obs["images"] = {c: rng.integers(0, 256, (3, size, size), dtype=np.uint8) for c in CAMERAS}
    else:
        for cam in CAMERAS:
            obs[f"images.{cam}"] = rng.random((3, size, size)).astype(np.float32)
    client = websocket_client_policy.WebsocketClientPolicy(url)
    for _ in range(warmup):
        client.infer(obs)
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        client.infer(obs)["actions"]
        times.append((time.perf_counter() - t) * 1e6)
    client._ws.close()
    return times


def rust_round(policyctl: Path, export: Path, url: str, iterations: int, warmup: int) -> dict:
    backend = [] if export.is_file() else ["--backend", "remote"]
    out = subprocess.run([str(policyctl), "bench", str(export), *backend, "--remote-url", url,
                          "--iterations", str(iterations), "--warmup", str(warmup), "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"policyctl bench failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--size", type=int, default=224, help="camera height and width")
    ap.add_argument("--schema", choices=("aloha", "export"), default="aloha")
    ap.add_argument("--policyctl", type=Path)
    args = ap.parse_args()
    policyctl = args.policyctl or next(
        (p for p in (ROOT / "target/bench/release/policyctl", ROOT / "target/release/policyctl") if p.exists()), None)
    if policyctl is None or not policyctl.exists():
        raise SystemExit("no release policyctl: cargo build --release --no-default-features "
                         "--features onnx,remote --bin policyctl")
    chunk, joints = 50, 14
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "aloha_shaped"
        write_export(export, args.size, chunk, joints)
        target = export
        if args.schema == "aloha":
            target = Path(tmp) / "aloha_map.yaml"
            write_map(target, args.size, joints)
        proc, port = start_server(export / "model.onnx", args.schema)
        url = f"ws://127.0.0.1:{port}"
        pixel = 1 if args.schema == "aloha" else 4
        mb = (joints * 4 + 4 * 3 * args.size * args.size * pixel) / 1e6
        kind = "uint8 (ALOHA schema, no export)" if args.schema == "aloha" else "float32 (the export's inputs)"
        print(f"openpi server at {url}: state [{joints}] + 4 cameras [3, {args.size}, {args.size}] {kind} "
              f"({mb:.2f} MB per observation), actions [{chunk}, {joints}]; "
              f"{args.rounds} rounds x {args.iterations} calls (+{args.warmup} warm-up) per side")
        try:
            interleaved_rounds(
                args.rounds,
                rust=lambda: rust_round(policyctl, target, url, args.iterations,
                                        args.warmup)["latency_us"]["median"],
                python=lambda: statistics.median(
                    python_round(url, args.schema, args.size, joints, args.iterations, args.warmup)),
                python_label="openpi_client.WebsocketClientPolicy", rust_label="policy_node openpi client")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
