#!/usr/bin/env python3
"""The command's step at chunk switches against inside chunks, for every ``chunk_blend`` mode.

Replays recordings with ``policyctl replay`` once per mode (same parameters otherwise) and
tabulates the ``switches:`` line of its summary: the largest and the median step
``max_j |a_t - a_{t-1}|`` on the ticks that switched to a new chunk, the median step on the
other ticks, and their ratios. Replay is deterministic, so the figures are exact for the
recording, model and parameters.

Recordings (each with the parameter changes that make chunks overlap, so that there is
something to blend: ``n_action_steps`` below what is left of a chunk after the refill-ahead
skip):

- ``demo``: ``tests/fixtures/demo_bag/mcap`` with ``tests/fixtures/act_tiny/onnx`` (chunk 10,
  30 Hz): ``n_action_steps: 5``, ``refill_ahead_steps: 2``, ``chunk_blend_steps: 3``;
- ``act``: ``fixtures-large/demo_bag_large/mcap`` with ``fixtures-large/act_full/onnx``
  (ACT-size, chunk 100, 14 joints, 640x480 camera; created with ``tools/make_fixture.py
  --large`` and ``tools/make_demo_bag.py --large`` when missing): ``n_action_steps: 50``,
  ``refill_ahead_steps: 10``, ``chunk_blend_steps: 10``.

Usage: tools/chunk_blend_figures.py [--policyctl PATH] [--recordings demo,act] [--low-pass A]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ["none", "latest_only", "linear", "weighted_average", "average", "ensemble"]

RECORDINGS = {
    "demo": {
        "bag": ROOT / "tests/fixtures/demo_bag/mcap",
        "export": ROOT / "tests/fixtures/act_tiny/onnx",
        "params": ROOT / "tests/fixtures/demo_bag/params.yaml",
        "overrides": {"n_action_steps": 5, "refill_ahead_steps": 2, "chunk_blend_steps": 3},
    },
    "act": {
        "bag": ROOT / "fixtures-large/demo_bag_large/mcap",
        "export": ROOT / "fixtures-large/act_full/onnx",
        "params": ROOT / "fixtures-large/demo_bag_large/params.yaml",
        "overrides": {"n_action_steps": 50, "refill_ahead_steps": 10, "chunk_blend_steps": 10},
    },
}

LINE = re.compile(
    r"switches:\s+(\d+) chunk switch\(es\) with a step; .* at switches max ([\d.]+) / median ([\d.]+), "
    r"inside chunks median ([\d.]+) \(max ([\d.]+)\): switch max ([\d.]+)x, median ([\d.]+)x"
)


def params_file(base: Path, overrides: dict, dest: Path) -> Path:
    """The recording's parameter file with `overrides` appended under ros__parameters."""
    text = base.read_text()
    lines = text.rstrip("\n").splitlines()
    # Drop keys we override (a later duplicate key would be a YAML error).
    keep = [ln for ln in lines if not any(re.match(rf"\s+{k}\s*:", ln) for k in overrides)]
    indent = "    "
    keep += [f"{indent}{k}: {v}" for k, v in overrides.items()]
    dest.write_text("\n".join(keep) + "\n")
    return dest


def ensure_large() -> None:
    py = sys.executable
    if not (ROOT / "fixtures-large/act_full/onnx/metadata.yaml").exists():
        subprocess.run([py, str(ROOT / "tools/make_fixture.py"), "--large"], check=True)
    if not (ROOT / "fixtures-large/demo_bag_large/params.yaml").exists():
        subprocess.run([py, str(ROOT / "tools/make_demo_bag.py"), "--large"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policyctl", default=str(ROOT / "target/release/policyctl"))
    ap.add_argument("--recordings", default="demo,act")
    ap.add_argument("--low-pass", type=float, default=None, help="also set low_pass_alpha for every mode")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    names = [n for n in args.recordings.split(",") if n]
    if "act" in names:
        ensure_large()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rec = RECORDINGS[name]
            for mode in MODES:
                overrides = dict(rec["overrides"], chunk_blend=mode)
                if args.low_pass is not None:
                    overrides["low_pass_alpha"] = args.low_pass
                p = params_file(rec["params"], overrides, Path(tmp) / f"{name}_{mode}.yaml")
                cmd = [args.policyctl, "replay", str(rec["bag"]), str(rec["export"]), "--params", str(p),
                       "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{name} {mode}: replay failed:\n{out.stderr}{out.stdout}", file=sys.stderr)
                    return 1
                m = LINE.search(out.stdout)
                if not m:
                    print(f"{name} {mode}: no switches line in:\n{out.stdout}", file=sys.stderr)
                    return 1
                n, smax, smed, imed, imax, rmax, rmed = m.groups()
                rows.append((name, mode, int(n), float(smax), float(smed), float(imed), float(imax), float(rmax),
                             float(rmed)))
    lp = "" if args.low_pass is None else f", low_pass_alpha {args.low_pass}"
    print(f"step = max_j |a_t - a_(t-1)| (joint units){lp}")
    print("| recording | chunk_blend | switches | switch max | switch median | inside median | inside max | "
          "switch max / inside median | switch median / inside median |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mode, n, smax, smed, imed, imax, rmax, rmed in rows:
        print(f"| {name} | {mode} | {n} | {smax:.5f} | {smed:.5f} | {imed:.5f} | {imax:.5f} | {rmax:.2f}x | {rmed:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
