#!/usr/bin/env python3
"""A real NVIDIA Triton Inference Server for the ``remote`` backend's tests and benchmarks.

PyTriton (PyPI ``nvidia-pytriton``) bundles a ``tritonserver`` binary and serves Python
callables through Triton's Python backend. Each model given here is an ONNX file run with
onnxruntime inside such a callable; Triton itself speaks the KServe v2 gRPC protocol to the
client, exactly as it does for a model repository.

Run it with the Python of ``.venv-triton`` (created by tools/setup.sh from Debian's own
Python 3.11, whose libpython is the one the server's Python backend loads)::

    .venv-triton/bin/python tests/peers/triton_server.py \
        --model act=tests/fixtures/act_tiny/onnx/model.onnx \
        --model 'act_slow=tests/fixtures/act_tiny/onnx/model.onnx;delay_ms=400' \
        --model 'act_wide=tests/fixtures/act_tiny/onnx/model.onnx;shape.state=1x7'

Model options after ``;``: ``delay_ms=N`` (sleep before answering), ``shape.NAME=AxB`` (declare
another shape for a port in the model's metadata), ``instances=N`` (model instances, i.e.
concurrent executions), ``batching=N`` (Triton dynamic batching with max batch size N; the
ONNX model must then take a dynamic first dimension), ``threads=N`` (onnxruntime intra-op
threads per instance, default 1).

Prints one line ``READY {json}`` on stdout once every model is loaded (``grpc_port``,
``http_port``, ``metrics_port``, ``models``), then serves until SIGINT or SIGTERM, or until its
parent process exits (so a test that dies never leaves a ``tritonserver`` behind). Ports given
as 0 are picked free.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import onnxruntime as ort
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_model(spec: str) -> dict:
    head, *opts = spec.split(";")
    name, _, path = head.partition("=")
    if not name or not path:
        raise SystemExit(f"--model {spec!r}: expected NAME=MODEL.onnx[;option=value...]")
    model = {"name": name, "path": path, "delay_ms": 0.0, "shapes": {}, "instances": 1,
             "batching": 0, "threads": 1}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "delay_ms":
            model["delay_ms"] = float(value)
        elif key.startswith("shape."):
            model["shapes"][key[len("shape."):]] = [int(d) for d in value.split("x")]
        elif key in ("instances", "batching", "threads"):
            model[key] = int(value)
        else:
            raise SystemExit(f"--model {spec!r}: unknown option {key!r}")
    return model


def dims(shape) -> tuple:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)


def make_callable(model: dict, session: ort.InferenceSession):
    """One model instance: runs the ONNX session on each request (or on the whole batch)."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    delay = model["delay_ms"] / 1e3

    def infer(requests):
        if delay:
            time.sleep(delay)
        if model["batching"]:
            # Dynamic batching: stack the requests along the first dimension, run once, split.
            sizes = [r[inputs[0]].shape[0] for r in requests]
            feed = {n: np.concatenate([r[n] for r in requests]) for n in inputs}
            result = session.run(outputs, feed)
            out, start = [], 0
            for n in sizes:
                out.append({k: v[start:start + n] for k, v in zip(outputs, result)})
                start += n
            return out
        return [dict(zip(outputs, session.run(outputs, {n: r[n] for n in inputs})))
                for r in requests]

    return infer


def bind(triton: Triton, model: dict) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = model["threads"]
    opts.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(model["path"], opts, providers=["CPUExecutionProvider"])
                for _ in range(max(1, model["instances"]))]
    first = sessions[0]

    def tensors(ports):
        out = []
        for p in ports:
            shape = model["shapes"].get(p.name, p.shape)
            shape = dims(shape)
            if model["batching"]:
                shape = shape[1:]  # Triton adds the batch dimension itself
            out.append(Tensor(name=p.name, dtype=ONNX_TYPES[p.type], shape=shape))
        return out

    if model["batching"]:
        config = ModelConfig(batching=True, max_batch_size=model["batching"],
                             batcher=DynamicBatcher(max_queue_delay_microseconds=2000))
    else:
        config = ModelConfig(batching=False)
    triton.bind(
        model_name=model["name"],
        infer_func=[make_callable(model, s) for s in sessions],
        inputs=tensors(first.get_inputs()),
        outputs=tensors(first.get_outputs()),
        config=config,
        strict=False,
    )
    return {"name": model["name"], "inputs": [i.name for i in first.get_inputs()],
            "outputs": [o.name for o in first.get_outputs()], "batching": model["batching"],
            "instances": len(sessions)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, type=parse_model)
    ap.add_argument("--grpc-port", type=int, default=0)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--metrics-port", type=int, default=0)
    ap.add_argument("--log-verbose", type=int, default=0)
    args = ap.parse_args()

    grpc_port = args.grpc_port or free_port()
    http_port = args.http_port or free_port()
    metrics_port = args.metrics_port or free_port()
    config = TritonConfig(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                          log_verbose=args.log_verbose, exit_timeout_secs=5)
    parent = os.getppid()
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def watch_parent():
        while not stop.is_set():
            if os.getppid() != parent:
                stop.set()
                return
            time.sleep(0.5)

    with Triton(config=config) as triton:
        models = [bind(triton, m) for m in args.model]
        triton.run()
        info = {"grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port,
                "models": models, "pid": os.getpid()}
        # One write, starting with a newline: Triton shares this stdout and may have left its
        # own last log line unterminated (print() may write the text and its end separately).
        sys.stdout.write("\nREADY " + json.dumps(info) + "\n")
        sys.stdout.flush()
        threading.Thread(target=watch_parent, daemon=True).start()
        while not stop.wait(0.2):
            pass
    print("STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
