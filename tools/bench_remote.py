#!/usr/bin/env python3
"""Remote predict round trip: policy_node's ``remote`` adapter vs NVIDIA's Python gRPC client.

Starts one real Triton Inference Server (tests/peers/triton_server.py: PyTriton, the export's
ONNX model run with onnxruntime) and times, against that same server and model, in
interleaved rounds (python, rust, python, rust, ...; the order alternates per round so drifting
load hits both sides alike):

- rust:   ``policyctl bench EXPORT --backend remote --remote-url URL --json``: one
          ``RuntimeAdapter::predict`` per iteration (inputs converted and encoded, the call,
          the answer checked and decoded to f32);
- python: ``tritonclient.grpc.InferenceServerClient.infer`` with the same inputs
          (``InferInput.set_data_from_numpy`` per call, ``as_numpy`` on the result).

Both sides keep one connection for the whole run and do the same warm-up calls. Prints per
round the median of each side and their ratio, then the median of the per-round ratios
(rust / python; below 1.0 means our adapter's round trip is shorter)::

    .venv-triton/bin/python tools/bench_remote.py                      # act_tiny fixture
    .venv-triton/bin/python tools/bench_remote.py --export fixtures-large/act_full/onnx

Run it with the Python of .venv-triton (tritonclient, PyTriton). ``--policyctl`` defaults to
target/bench/release/policyctl, else target/release/policyctl (build with
``cargo build --release --features remote``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interleaved import interleaved_rounds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def start_server(model_path: Path, model: str, threads: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/peers/triton_server.py"),
         "--model", f"{model}={model_path};threads={threads}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("READY "):
            info = json.loads(line[len("READY "):])
            # Keep draining the server's output so it never blocks on a full pipe.
            import threading
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, info["grpc_port"]
    raise SystemExit(f"the Triton server exited ({proc.wait()}) before it was ready")


def python_round(url: str, model: str, iterations: int, warmup: int) -> list[float]:
    client = grpcclient.InferenceServerClient(url.removeprefix("http://"))
    meta = client.get_model_metadata(model)
    rng = np.random.default_rng(0)
    arrays = [(t.name, t.datatype, [int(d) for d in t.shape],
               rng.random([int(d) for d in t.shape]).astype(np.float32)) for t in meta.inputs]
    outputs = [t.name for t in meta.outputs]

    def call():
        inputs = []
        for name, dtype, shape, value in arrays:
            i = grpcclient.InferInput(name, shape, dtype)
            i.set_data_from_numpy(value)
            inputs.append(i)
        result = client.infer(model, inputs)
        return [result.as_numpy(o) for o in outputs]

    for _ in range(warmup):
        call()
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e6)
    client.close()
    return times


def rust_round(policyctl: Path, export: Path, url: str, model: str, iterations: int,
               warmup: int) -> dict:
    out = subprocess.run(
        [str(policyctl), "bench", str(export), "--backend", "remote", "--remote-url", url,
         "--remote-model", model, "--iterations", str(iterations), "--warmup", str(warmup),
         "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"policyctl bench failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=ROOT / "tests/fixtures/act_tiny/onnx")
    ap.add_argument("--model", default="act", help="the model's name on the server")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--server-threads", type=int, default=1,
                    help="onnxruntime intra-op threads inside the server")
    ap.add_argument("--policyctl", type=Path)
    args = ap.parse_args()

    policyctl = args.policyctl
    if policyctl is None:
        for p in (ROOT / "target/bench/release/policyctl", ROOT / "target/release/policyctl"):
            if p.exists():
                policyctl = p
                break
    if policyctl is None or not policyctl.exists():
        raise SystemExit("no release policyctl: cargo build --release --features remote --bin policyctl")
    model_files = sorted(args.export.glob("*.onnx"))
    if not model_files:
        raise SystemExit(f"{args.export}: no .onnx model to serve")

    proc, port = start_server(model_files[0], args.model, args.server_threads)
    url = f"http://127.0.0.1:{port}"
    print(f"Triton (PyTriton) at {url} serving {model_files[0]} as `{args.model}`; "
          f"{args.rounds} rounds x {args.iterations} calls (+{args.warmup} warm-up) per side")
    try:
        interleaved_rounds(
            args.rounds,
            rust=lambda: rust_round(policyctl, args.export, url, args.model, args.iterations,
                                    args.warmup)["latency_us"]["median"],
            python=lambda: statistics.median(python_round(url, args.model, args.iterations, args.warmup)),
            python_label="tritonclient.grpc", rust_label="policy_node remote adapter")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
