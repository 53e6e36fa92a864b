#!/usr/bin/env python3
"""Rust (``policyctl bench``) vs the runtimes' Python APIs (``bench_python.py``), side by side.

For every export root and every backend it has a sub-directory for, runs the
two benchmarks interleaved, ``--rounds`` times (python, rust, python, rust,
...), so drifting machine load hits both sides alike, then prints a table of
median latencies and the ratio rust / python::

    .venv/bin/python tools/compare_bench.py                       # default roots
    .venv/bin/python tools/compare_bench.py tests/fixtures/act_tiny --threads 2 --iterations 200

Default roots: ``tests/fixtures/act_tiny`` and, if present,
``fixtures-large/act_full`` (made by ``tools/make_fixture.py --large``).

Both sides print one JSON object of the same shape::

    {"backend", "device", "threads", "iterations", "load_ms",
     "latency_us": {"min", "median", "p99", "max"}}

The Rust side is ``POLICYCTL bench DIR/<backend> --backend B --threads N
--iterations K --json``. Unless ``--no-runtime-env`` is given, the Rust
process gets the runtime libraries of the Python environment running this
script where the variables are not already set: ``ORT_DYLIB_PATH`` (the
onnxruntime wheel's ``libonnxruntime.so.*``) and ``LD_LIBRARY_PATH`` extended
with ``torch/lib`` and ``openvino/libs``.

A table cell per (model, backend): median over rounds of each run's median
latency. A side that fails (binary missing, non-zero exit, bad JSON) is shown
as ``error`` and explained below the table; the others still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("onnx", "openvino", "torchscript")
DEFAULT_ROOTS = ("tests/fixtures/act_tiny", "fixtures-large/act_full")


@dataclass
class Cell:
    """Results of one (model, backend) pair on one side."""

    runs: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median_ms(self) -> float | None:
        if not self.runs:
            return None
        return statistics.median(r["latency_us"]["median"] for r in self.runs) / 1e3

    def load_ms(self) -> float | None:
        if not self.runs:
            return None
        return statistics.median(r["load_ms"] for r in self.runs)


def package_dir(name: str) -> Path | None:
    """Directory of an installed Python package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def runtime_env() -> dict[str, str]:
    """Environment for policyctl: runtime libraries from this Python environment, where unset."""
    env = dict(os.environ)
    ort = package_dir("onnxruntime")
    if "ORT_DYLIB_PATH" not in env and ort is not None:
        libs = sorted((ort / "capi").glob("libonnxruntime.so*"))
        if libs:
            env["ORT_DYLIB_PATH"] = str(libs[-1])
    extra = []
    for pkg, sub in (("torch", "lib"), ("openvino", "libs")):
        d = package_dir(pkg)
        if d is not None and (d / sub).is_dir():
            extra.append(str(d / sub))
    if extra:
        current = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(current + [p for p in extra if p not in current])
    return env


def run_json(cmd: list[str], env: dict[str, str] | None, timeout: float) -> tuple[dict | None, str | None]:
    """Run ``cmd``; return (parsed last JSON line of stdout, None) or (None, error text)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO_ROOT)
    except FileNotFoundError:
        return None, f"not found: {cmd[0]}"
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s: {' '.join(cmd)}"
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        return None, f"exit {proc.returncode}: {' | '.join(tail)}"
    for line in reversed(proc.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                return None, f"bad JSON ({err}): {line[:200]}"
            if not isinstance(data.get("latency_us"), dict) or "median" not in data["latency_us"]:
                return None, f"JSON without latency_us.median: {line[:200]}"
            return data, None
    return None, f"no JSON object on stdout: {proc.stdout.strip()[:200]}"


def fmt(value: float | None, digits: int = 2) -> str:
    return "error" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Run policyctl bench and tools/bench_python.py interleaved and compare median latencies.",
    )
    parser.add_argument("roots", nargs="*", type=Path, metavar="EXPORT_ROOT",
                        help="export roots with onnx/ openvino/ torchscript/ sub-directories "
                             f"(default: {DEFAULT_ROOTS[0]} and {DEFAULT_ROOTS[1]} if present)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated backends to run (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both sides (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=50, help="timed calls per run (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="python/rust pairs per cell (default %(default)s)")
    parser.add_argument("--policyctl", type=Path, default=REPO_ROOT / "target" / "release" / "policyctl",
                        help="Rust CLI binary (default target/release/policyctl)")
    parser.add_argument("--python", default=sys.executable,
                        help="Python interpreter for bench_python.py (default: this one)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per single run (default %(default)s)")
    parser.add_argument("--no-runtime-env", action="store_true",
                        help="do not set ORT_DYLIB_PATH / LD_LIBRARY_PATH for policyctl")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every raw result to FILE")
    args = parser.parse_args()

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    if args.threads < 1 or args.iterations < 1 or args.rounds < 1:
        parser.error("need --threads, --iterations and --rounds >= 1")
    if args.roots:
        roots = [r if r.is_absolute() else Path.cwd() / r for r in args.roots]
        missing = [str(r) for r in roots if not r.is_dir()]
        if missing:
            parser.error(f"not a directory: {', '.join(missing)}")
    else:
        roots = [REPO_ROOT / r for r in DEFAULT_ROOTS if (REPO_ROOT / r).is_dir()]
    policyctl = args.policyctl if args.policyctl.is_absolute() else Path.cwd() / args.policyctl
    rust_env = None if args.no_runtime_env else runtime_env()
    bench_py = Path(__file__).resolve().parent / "bench_python.py"
    common = ["--threads", str(args.threads), "--iterations", str(args.iterations), "--json"]

    if not policyctl.exists():
        print(f"note: {policyctl} does not exist; the Rust column will show errors", file=sys.stderr)

    results: dict[tuple[str, str], dict[str, Cell]] = {}
    for root in roots:
        for backend in backends:
            sub = root / backend
            if not sub.is_dir():
                continue
            cells = results.setdefault((root.name, backend), {"python": Cell(), "rust": Cell()})
            for rnd in range(args.rounds):
                sides = {
                    "python": [args.python, str(bench_py), str(root), "--backend", backend, *common],
                    "rust": [str(policyctl), "bench", str(sub), "--backend", backend, *common],
                }
                for side, cmd in sides.items():
                    data, err = run_json(cmd, rust_env if side == "rust" else None, args.timeout)
                    if data is not None:
                        cells[side].runs.append(data)
                        msg = f"median {data['latency_us']['median'] / 1e3:.3f} ms"
                    else:
                        cells[side].errors.append(err)
                        msg = f"error: {err}"
                    print(f"[{root.name}/{backend} round {rnd + 1}/{args.rounds}] {side:6s} {msg}",
                          file=sys.stderr, flush=True)

    if not results:
        sys.exit("error: no export root with a backend sub-directory to benchmark")

    header = ("model", "backend", "python ms", "rust ms", "rust/python", "paired ratio", "python load ms",
              "rust load ms")
    rows = []
    for (model, backend), cells in results.items():
        py, rs = cells["python"].median_ms(), cells["rust"].median_ms()
        ratio = rs / py if py and rs is not None else None
        # Each round runs python then rust back to back: the median of the per-round ratios is
        # less sensitive to load that comes and goes on a shared machine.
        pairs = [r["latency_us"]["median"] / p["latency_us"]["median"]
                 for p, r in zip(cells["python"].runs, cells["rust"].runs) if p["latency_us"]["median"] > 0]
        paired = statistics.median(pairs) if pairs else None
        rows.append((model, backend, fmt(py, 3), fmt(rs, 3), fmt(ratio), fmt(paired), fmt(cells["python"].load_ms(), 1),
                     fmt(cells["rust"].load_ms(), 1)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\nmedian latency per call, {args.threads} threads, {args.iterations} iterations, "
          f"median of {args.rounds} interleaved rounds")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))

    errors = [(m, b, side, e) for (m, b), cells in results.items() for side, c in cells.items()
              for e in dict.fromkeys(c.errors)]
    if errors:
        print("\nerrors:")
        for m, b, side, e in errors:
            print(f"  {m}/{b} {side}: {e}")

    if args.json:
        raw = [{"model": m, "backend": b, "python": c["python"].runs, "rust": c["rust"].runs,
                "errors": {s: c[s].errors for s in c}} for (m, b), c in results.items()]
        args.json.write_text(json.dumps({"threads": args.threads, "iterations": args.iterations,
                                         "rounds": args.rounds, "results": raw}, indent=2) + "\n")


if __name__ == "__main__":
    main()
