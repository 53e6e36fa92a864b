#!/usr/bin/env python3
"""Reference outputs of physicalai 0.3.0's chunk smoothing for tests/chunk_blend.rs.

Reads one JSON object on stdin and prints one JSON object on stdout:

- ``merges``: ``[{remaining, incoming, steps}]`` -> ``LerpSmoother(duration_frames=steps)
  .merge(remaining, incoming)`` for each;
- ``queues``: ``[{steps, pushes: [{chunk, offset, pops}]}]`` -> the actions popped from a
  ``ChunkedActionQueue(LerpSmoother(steps))`` when each chunk is pushed with its offset and
  ``pops`` actions are popped after it (``null`` where the queue was empty);
- ``low_pass``: ``{alpha, actions}`` -> ``LowPassFilterCallback(alpha).on_action_ready`` over
  the actions in order.

Arrays are nested lists of float32 values; outputs are float32 values.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from physicalai.runtime import ChunkedActionQueue, LerpSmoother, LowPassFilterCallback


def f32(rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def main() -> int:
    req = json.load(sys.stdin)
    from importlib.metadata import version

    out: dict = {"physicalai": version("physicalai")}
    merges = []
    for m in req.get("merges", []):
        incoming = f32(m["incoming"])
        remaining = np.asarray(m["remaining"], dtype=np.float32).reshape(-1, incoming.shape[1])
        merged = LerpSmoother(duration_frames=int(m["steps"])).merge(remaining, incoming)
        merges.append(merged.astype(np.float32).tolist())
    out["merges"] = merges
    queues = []
    for q in req.get("queues", []):
        queue = ChunkedActionQueue(smoother=LerpSmoother(duration_frames=int(q["steps"])))
        popped = []
        for p in q["pushes"]:
            queue.push_chunk(f32(p["chunk"]), offset=int(p["offset"]))
            for _ in range(int(p["pops"])):
                a = queue.pop()
                popped.append(None if a is None else np.asarray(a, dtype=np.float32).tolist())
        queues.append(popped)
    out["queues"] = queues
    if "low_pass" in req:
        lp = req["low_pass"]
        f = LowPassFilterCallback(alpha=float(lp["alpha"]))
        out["low_pass"] = [
            np.asarray(f.on_action_ready(action=np.asarray(a, dtype=np.float32), step=i), dtype=np.float32).tolist()
            for i, a in enumerate(lp["actions"])
        ]
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
