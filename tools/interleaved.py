"""Interleaved rounds for the side-by-side benchmarks (tools/bench_remote.py,
tools/bench_openpi.py): each round times both sides, in alternating order so drifting machine
load hits both alike, and the result is the median of the per-round ratios."""

from __future__ import annotations

import statistics
from typing import Callable


def interleaved_rounds(rounds: int, rust: Callable[[], float], python: Callable[[], float],
                       python_label: str, rust_label: str) -> float:
    """Runs ``rounds`` rounds of ``rust()`` and ``python()`` (each returns a median in
    microseconds), prints each round and the summary, and returns the median ratio
    rust / python."""
    rows = []
    for r in range(rounds):
        order = ("python", "rust") if r % 2 == 0 else ("rust", "python")
        med = {}
        for side in order:
            med[side] = python() if side == "python" else rust()
        ratio = med["rust"] / med["python"]
        rows.append((med["rust"], med["python"], ratio))
        print(f"round {r + 1}: rust {med['rust']:8.0f} us   python {med['python']:8.0f} us   ratio {ratio:.3f}")
    rust_us = statistics.median(x[0] for x in rows)
    py_us = statistics.median(x[1] for x in rows)
    ratio = statistics.median(x[2] for x in rows)
    print(f"median round trip: rust ({rust_label}) {rust_us:.0f} us, python ({python_label}) {py_us:.0f} us; "
          f"ratio rust/python = {ratio:.3f} (median of per-round ratios)")
    return ratio
