#!/usr/bin/env python3
"""The VLA preprocessors, ours vs physicalai's, on the same package and inputs, in one run.

Times ``normalize -> pi05 -> hf_tokenizer`` (the Pi0.5 chain of ``tests/fixtures/vla_pi05``,
its image resolution raised to 224 x 224) for two cameras (224 x 224 by default, so the step
only scales and stacks; ``--camera 480x640`` adds the resize), one observation per call,
single-threaded:

- physicalai 0.3.0: ``InferenceModel.preprocessors`` applied in order;
- ours: ``policyctl bench DIR --processors`` (the same steps in Rust).

Both sides run interleaved ``--rounds`` times; prints the medians and the ratio::

    .venv/bin/python tools/compare_vla_processors.py [--rounds 5] [--iterations 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "tests/fixtures/vla_pi05/onnx"
HUB = REPO / "tests/fixtures/vla_hf_home/hub"
TASK = "pick up the red cube and place it in the bowl"


def package_224(tmp: Path) -> Path:
    """A copy of the Pi0.5 package whose pi05 step resizes to 224 x 224."""
    out = tmp / "pkg"
    shutil.copytree(PKG, out)
    m = json.loads((out / "manifest.json").read_text())
    for p in m["model"]["preprocessors"]:
        if p.get("type") == "pi05":
            p["image_resolution"] = [224, 224]
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def inputs(tmp: Path, h: int, w: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {}
    arrays = {
        "state": rng.uniform(-0.5, 0.5, 6).astype(np.float32),
        "images.top": rng.uniform(0, 1, (3, h, w)).astype(np.float32),
        "images.wrist": rng.uniform(0, 1, (3, h, w)).astype(np.float32),
    }
    for name, a in arrays.items():
        files[name] = tmp / f"{name}.npy"
        np.save(files[name], a)
    return files


def physicalai_side(pkg: Path, files: dict[str, Path], iterations: int) -> float:
    from physicalai.inference import InferenceModel

    model = InferenceModel(str(pkg))
    obs = {k: np.load(p)[None] for k, p in files.items()}
    times = []
    for i in range(iterations + 5):
        x = {k: v.copy() for k, v in obs.items()}
        x["task"] = [TASK]
        t = time.perf_counter()
        for pre in model.preprocessors:
            x = pre(x)
        if i >= 5:
            times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


def our_side(policyctl: Path, pkg: Path, files: dict[str, Path], iterations: int) -> float:
    args = [str(policyctl), "bench", str(pkg), "--processors", "--json", "--threads", "1",
            "--iterations", str(iterations), "--task", TASK, "--tokenizer-dir", str(HUB)]
    for name, p in files.items():
        args += ["--input", f"{name}={p}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["processors_us"]["median"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--camera", default="224x224", help="camera frame H x W (default %(default)s)")
    ap.add_argument("--policyctl", type=Path, default=REPO / "target/release/policyctl")
    args = ap.parse_args()
    os.environ.update({"HF_HUB_CACHE": str(HUB), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        h, w = (int(v) for v in args.camera.split("x"))
        pkg, files = package_224(tmp), inputs(tmp, h, w)
        ours, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(physicalai_side(pkg, files, args.iterations))
            ours.append(our_side(args.policyctl, pkg, files, args.iterations))
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"normalize + pi05 (2 cameras {args.camera} -> 224x224) + hf_tokenizer, median of {args.rounds} rounds:")
    print(f"  ours {o:.0f} us, physicalai {t:.0f} us, ratio ours / physicalai {o / t:.3f}")


if __name__ == "__main__":
    main()
