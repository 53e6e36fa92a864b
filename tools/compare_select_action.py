#!/usr/bin/env python3
"""``select_action`` through our ``InferenceModel`` vs physicalai's, on the same package.

For every package directory and backend, runs both sides interleaved ``--rounds`` times
(physicalai, ours, physicalai, ours, ...) so drifting machine load hits both alike, and
prints the median of each side's per-round medians and the ratio ours / physicalai for

- a **refill**: ``select_action`` on an empty queue (preprocessors + model + postprocessors);
- a **pop**: ``select_action`` served from the queue.

Same package, backend, inputs and thread count on both sides; OpenVINO with the f32
precision hint on both (our adapter's setting). Usage::

    .venv/bin/python tools/compare_select_action.py                      # the package fixtures
    .venv/bin/python tools/compare_select_action.py PKG_DIR... --threads 2 --rounds 5

Ours is ``policyctl bench DIR --pipeline --json`` (release build: ``target/release/policyctl``
unless ``--policyctl`` says otherwise). Inputs are the package's ``reference/*.npy`` sample 0
when it has them, else zeros shaped like the model inputs.

``--ours-params FILE`` (what ``policyctl tune --write-params FILE`` writes) runs our side with
the tuned settings (backend, threads, ONNX optimisation, OpenVINO precision) on the package's
ONNX directory, against physicalai's default (ONNX Runtime, default settings, ``--threads``
intra-op threads) on the same directory::

    policyctl tune PKG/onnx --threads 2 --write-params /tmp/tuned.yaml
    .venv/bin/python tools/compare_select_action.py PKG --threads 2 --ours-params /tmp/tuned.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PACKAGES = ("tests/fixtures/act_tiny_pkg", "tests/fixtures/act_tiny_lerobot")


def reference_inputs(package: Path) -> dict[str, np.ndarray]:
    """Sample 0 of ``reference/`` (every .npy but ``action``), without the batch dimension."""
    ref = package / "reference"
    return {p.stem: np.load(p)[0] for p in sorted(ref.glob("*.npy")) if p.stem != "action"}


def physicalai_side(export: Path, backend: str, threads: int, iterations: int, inputs) -> dict:
    import onnxruntime as ort
    from physicalai.inference import InferenceModel

    if backend == "onnx":
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        kwargs = {"sess_options": opts}
    else:
        kwargs = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    model = InferenceModel(str(export), **kwargs)
    obs = {k: v[None] for k, v in inputs.items()}
    for _ in range(3):
        model.reset()
        model.select_action(obs)
    refill, pop = [], []
    for _ in range(iterations):
        model.reset()
        t = time.perf_counter()
        model.select_action(obs)
        refill.append((time.perf_counter() - t) * 1e6)
        while model._action_buffer:  # noqa: SLF001 - the queue physicalai pops from
            t = time.perf_counter()
            model.select_action(obs)
            pop.append((time.perf_counter() - t) * 1e6)
    return {"refill": statistics.median(refill), "pop": statistics.median(pop)}


def tuned_flags(path: Path) -> list[str]:
    """policyctl flags for the parameters `policyctl tune --write-params` wrote."""
    import yaml

    params = yaml.safe_load(path.read_text())["policy_node"]["ros__parameters"]
    flags = []
    for key in ("backend", "threads", "onnx_optimization", "onnx_spinning", "inference_precision"):
        if key in params:
            value = params[key]
            flags += ["--" + key.replace("_", "-"), str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def our_side(policyctl: Path, export: Path, threads: int, iterations: int, inputs, tmp: Path,
             tuned: list[str] | None = None) -> dict:
    args = [str(policyctl), "bench", str(export), "--pipeline", "--json",
            "--iterations", str(iterations), "--warmup", "3"]
    args += tuned if tuned else ["--threads", str(threads)]
    for name, arr in inputs.items():
        p = tmp / f"{name}.npy"
        np.save(p, arr.astype(np.float32))
        args += ["--input", f"{name}={p}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    v = json.loads(out.stdout)
    return {"refill": v["latency_us"]["median"], "pop": v["pop_us"]["median"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packages", nargs="*", type=Path, help="package roots holding onnx/ and/or openvino/")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=50, help="refills per round (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--policyctl", type=Path, default=REPO_ROOT / "target" / "release" / "policyctl")
    ap.add_argument("--ours-params", type=Path, help="tuned parameters (policyctl tune --write-params) for our side")
    args = ap.parse_args()
    tuned = tuned_flags(args.ours_params) if args.ours_params else None
    if not args.policyctl.exists():
        sys.exit(f"{args.policyctl} is missing: build it with `tools/cargo build --release --bin policyctl`")
    packages = args.packages or [REPO_ROOT / p for p in DEFAULT_PACKAGES]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in packages:
            inputs = reference_inputs(pkg)
            for backend in (("onnx",) if tuned else ("onnx", "openvino")):
                export = pkg / backend
                if not (export / "manifest.json").exists():
                    continue
                ours, theirs = [], []
                for _ in range(args.rounds):
                    theirs.append(physicalai_side(export, backend, args.threads, args.iterations, inputs))
                    ours.append(our_side(args.policyctl, export, args.threads, args.iterations, inputs, Path(tmp),
                                         tuned))
                med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
                rows.append((pkg.name, backend, med(ours, "refill"), med(theirs, "refill"),
                             med(ours, "pop"), med(theirs, "pop")))
    print(f"select_action, median of {args.rounds} interleaved rounds, {args.threads} thread(s)"
          + (f"; ours tuned: {' '.join(tuned)}" if tuned else ""))
    print(f"{'package':<20} {'backend':<9} {'refill ours':>12} {'physicalai':>11} {'ratio':>6}"
          f" {'pop ours':>10} {'physicalai':>11} {'ratio':>7}")
    for name, backend, ro, rt, po, pt in rows:
        print(f"{name:<20} {backend:<9} {ro:>10.0f}us {rt:>9.0f}us {ro / rt:>6.2f}"
              f" {po:>8.2f}us {pt:>9.2f}us {po / pt:>7.3f}")


if __name__ == "__main__":
    main()
