#!/usr/bin/env python3
"""Latency of one exported policy through its runtime's own Python API.

The Python peer of ``policyctl bench``: same inputs, same statistics, same
JSON shape, so ``tools/compare_bench.py`` can put the two side by side::

    .venv/bin/python tools/bench_python.py tests/fixtures/act_tiny --backend onnx --threads 2 --json

EXPORT_ROOT is either an export root holding ``onnx/``, ``openvino/`` and
``torchscript/`` sub-directories (e.g. ``tests/fixtures/act_tiny``) or one
backend's export directory itself.

Per backend (CPU only):

- onnx:        ``onnxruntime.InferenceSession`` with ``intra_op_num_threads=N``,
               ``inter_op_num_threads=1``, ``ORT_ENABLE_ALL`` graph optimisation,
               CPU execution provider.
- openvino:    ``Core().compile_model(xml, "CPU", {INFERENCE_NUM_THREADS: N,
               PERFORMANCE_HINT: LATENCY, INFERENCE_PRECISION_HINT: f32})``.
               f32 is forced by default because OpenVINO picks bf16 on CPUs with
               bf16 support (``--ov-precision default`` leaves it to OpenVINO).
- torchscript: ``torch.jit.load`` + ``torch.set_num_threads(N)``, calls under
               ``torch.inference_mode()``; inputs passed positionally in the order
               of ``input_shapes`` in the metadata.

Inputs are float32 with the model's input shapes (batch 1); names starting
with ``images`` / ``observation.image`` get uniform [0, 1) values, the others
standard-normal ones, from ``numpy.random.default_rng(seed)`` in input order.

``load_ms`` covers creating the runtime objects plus reading and compiling the
model (not the Python import of the runtime module);
latency covers one predict call (inputs already built, output materialised as
a host array), after ``--warmup`` untimed calls. Statistics over the timed
calls: min, median (mean of the two middle values for an even count), p99
(nearest rank: the ceil(0.99 n)-th smallest) and max, in microseconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

BACKENDS = ("onnx", "openvino", "torchscript")
MODEL_SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}
RUNTIME_MODULE = {"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torch"}


# --------------------------------------------------------------------------- #
# Export directory helpers                                                    #
# --------------------------------------------------------------------------- #


def export_dir(root: Path, backend: str) -> Path:
    """``root/<backend>`` if it exists, else ``root`` itself."""
    sub = root / backend
    return sub if sub.is_dir() else root


def model_file(directory: Path, backend: str) -> Path:
    files = sorted(directory.glob(f"*{MODEL_SUFFIX[backend]}"))
    if len(files) != 1:
        raise SystemExit(
            f"error: expected exactly one *{MODEL_SUFFIX[backend]} file in {directory}, found {len(files)}"
        )
    return files[0]


def metadata_input_shapes(directory: Path) -> dict[str, list[int]] | None:
    """``input_shapes`` of the design-schema metadata (per sample, no batch), in file order."""
    for name in ("metadata.json", "metadata.yaml", "metadata.yml"):
        path = directory / name
        if not path.exists():
            continue
        if name.endswith(".json"):
            meta = json.loads(path.read_text())
        else:
            import yaml

            meta = yaml.safe_load(path.read_text())
        shapes = meta.get("input_shapes") if isinstance(meta, dict) else None
        if shapes:
            return {str(k): [int(d) for d in v] for k, v in shapes.items()}
    return None


def resolve_shapes(
    model_shapes: list[tuple[str, list]], meta: dict[str, list[int]] | None
) -> list[tuple[str, list[int]]]:
    """Fill dynamic dimensions of the model's input shapes: batch -> 1, others from the metadata."""
    resolved = []
    for name, dims in model_shapes:
        out = []
        for i, d in enumerate(dims):
            if isinstance(d, int) and d >= 0:
                out.append(d)
            elif i == 0:
                out.append(1)
            elif meta and name in meta and len(meta[name]) == len(dims) - 1:
                out.append(meta[name][i - 1])
            else:
                raise SystemExit(f"error: input `{name}` has dynamic dimension {i} and no metadata shape for it")
        resolved.append((name, out))
    return resolved


def random_inputs(shapes: list[tuple[str, list[int]]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape in shapes:
        if name.startswith(("images", "observation.image")):
            feeds[name] = rng.random(shape, dtype=np.float32)
        else:
            feeds[name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


# --------------------------------------------------------------------------- #
# Runtimes: each returns (device, input shapes, predict(feeds), runtime name)  #
# --------------------------------------------------------------------------- #

Loaded = tuple[str, list[tuple[str, list[int]]], Callable[[dict[str, np.ndarray]], object], str]


def load_onnx(directory: Path, threads: int, args: argparse.Namespace) -> Loaded:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(model_file(directory, "onnx")), opts, providers=["CPUExecutionProvider"])
    shapes = [(i.name, list(i.shape)) for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    return "CPU", shapes, lambda feeds: sess.run(outputs, feeds), f"onnxruntime {ort.__version__}"


def load_openvino(directory: Path, threads: int, args: argparse.Namespace) -> Loaded:
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if args.ov_precision != "default":
        config["INFERENCE_PRECISION_HINT"] = args.ov_precision
    compiled = ov.Core().compile_model(str(model_file(directory, "openvino")), "CPU", config)
    request = compiled.create_infer_request()
    shapes = []
    for port in compiled.inputs:
        ps = port.get_partial_shape()
        shapes.append((port.get_any_name(), [d.get_length() if d.is_static else -1 for d in ps]))

    def predict(feeds: dict[str, np.ndarray]) -> object:
        request.infer(feeds)
        return [request.get_output_tensor(i).data for i in range(len(compiled.outputs))]

    return "CPU", shapes, predict, f"openvino {ov.__version__}"


def load_torchscript(directory: Path, threads: int, args: argparse.Namespace) -> Loaded:
    import torch

    torch.set_num_threads(threads)
    module = torch.jit.load(str(model_file(directory, "torchscript")), map_location="cpu")
    module.eval()
    meta = metadata_input_shapes(directory)
    if meta is None:
        raise SystemExit(f"error: TorchScript needs `input_shapes` in the metadata of {directory}")
    # Batch 1 plus the per-sample shape, inputs in metadata order (= forward argument order).
    shapes = [(name, [1, *dims]) for name, dims in meta.items()]

    def predict(feeds: dict[str, np.ndarray]) -> object:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(v) for v in feeds.values()))
            return out.numpy()

    return "cpu", shapes, predict, f"torch {torch.__version__}"


LOADERS = {"onnx": load_onnx, "openvino": load_openvino, "torchscript": load_torchscript}


# --------------------------------------------------------------------------- #
# Benchmark                                                                   #
# --------------------------------------------------------------------------- #


def latency_stats(samples_ns: list[int]) -> dict[str, float]:
    s = np.sort(np.asarray(samples_ns, dtype=np.float64)) / 1e3
    p99 = s[max(0, math.ceil(0.99 * len(s)) - 1)]
    return {
        "min": round(float(s[0]), 3),
        "median": round(float(np.median(s)), 3),
        "p99": round(float(p99), 3),
        "max": round(float(s[-1]), 3),
    }


def bench(root: Path, backend: str, threads: int, iterations: int, warmup: int, seed: int,
          args: argparse.Namespace) -> dict:
    directory = export_dir(root, backend)
    # Import the runtime's Python module before the clock starts: load_ms is
    # about the model, not about Python importing a library (a Rust binary
    # has its runtime linked or dlopen'ed at start-up).
    importlib.import_module(RUNTIME_MODULE[backend])
    t0 = time.perf_counter_ns()
    device, model_shapes, predict, runtime = LOADERS[backend](directory, threads, args)
    load_ms = (time.perf_counter_ns() - t0) / 1e6

    shapes = resolve_shapes(model_shapes, metadata_input_shapes(directory))
    feeds = random_inputs(shapes, seed)
    for _ in range(warmup):
        predict(feeds)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        predict(feeds)
        samples.append(time.perf_counter_ns() - start)

    result = {
        "backend": backend,
        "device": device,
        "threads": threads,
        "iterations": iterations,
        "load_ms": round(load_ms, 3),
        "latency_us": latency_stats(samples),
        "model": str(model_file(directory, backend)),
        "runtime": runtime,
        "inputs": {name: shape for name, shape in shapes},
    }
    if backend == "openvino":
        result["inference_precision"] = args.ov_precision
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Benchmark an exported policy with the runtime's own Python API (CPU).",
        epilog="JSON keys: backend, device, threads, iterations, load_ms, latency_us{min,median,p99,max} "
               "(+ model, runtime, inputs, and inference_precision for openvino).",
    )
    parser.add_argument("export_root", type=Path, metavar="EXPORT_ROOT",
                        help="export root with onnx/ openvino/ torchscript/ sub-directories, "
                             "or one backend's export directory")
    parser.add_argument("--backend", choices=BACKENDS, required=True, help="runtime to use")
    parser.add_argument("--threads", type=int, default=1, help="intra-op / inference threads (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=100, help="timed predict calls (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed predict calls first (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default %(default)s)")
    parser.add_argument("--ov-precision", choices=("f32", "bf16", "f16", "default"), default="f32",
                        help="OpenVINO INFERENCE_PRECISION_HINT; 'default' leaves it to OpenVINO "
                             "(default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary line")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.iterations < 1 or args.warmup < 0:
        parser.error("need --threads >= 1, --iterations >= 1 and --warmup >= 0")

    result = bench(args.export_root, args.backend, args.threads, args.iterations, args.warmup, args.seed, args)
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_us"]
        print(
            f"{result['backend']} ({result['runtime']}, {result['device']}, {result['threads']} threads): "
            f"load {result['load_ms']:.1f} ms; latency over {result['iterations']} calls: "
            f"min {lat['min']:.0f} us, median {lat['median']:.0f} us, p99 {lat['p99']:.0f} us, max {lat['max']:.0f} us"
        )


if __name__ == "__main__":
    sys.exit(main())
