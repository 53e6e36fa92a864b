#!/usr/bin/env python3
"""Episode-by-episode comparison of two closed-loop evaluations (tools/sim_eval.sh JSON and
their ``--trajectories`` .npz), for tests/sim_aloha.rs.

Usage: sim_compare.py REF.json REF.npz OTHER.json OTHER.npz

Prints ``RESULT {json}`` with one entry per episode: ``seed``, ``success`` of each,
``steps`` of each, ``first_contact`` (the earlier of the two first steps after which the cube touched
anything but the table; the whole episode when it never did) and, over the steps before it,
``max_qpos_diff`` (observed joints) and ``max_action_diff`` (applied actions).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main() -> int:
    ref_j, ref_n, oth_j, oth_n = sys.argv[1:5]
    ref, oth = json.load(open(ref_j)), json.load(open(oth_j))
    rz, oz = np.load(ref_n), np.load(oth_n)
    out = []
    for a, b in zip(ref["episodes"], oth["episodes"]):
        seed = a["seed"]
        assert b["seed"] == seed, (a, b)
        contacts = [int(z[f"first_contact_{seed}"]) for z in (rz, oz)]
        contacts = [c for c in contacts if c > 0]
        qa, qb = rz[f"qpos_{seed}"], oz[f"qpos_{seed}"]
        aa, ab = rz[f"actions_{seed}"], oz[f"actions_{seed}"]
        # Steps before the first contact: qpos[k] is observed before step k + 1.
        until = min(contacts) - 1 if contacts else min(len(qa), len(qb))
        until = min(until, len(qa), len(qb))
        out.append({
            "seed": seed,
            "success": [a["success"], b["success"]],
            "steps": [a["steps"], b["steps"]],
            "first_contact": until,
            "max_qpos_diff": float(np.abs(qa[:until] - qb[:until]).max()) if until else 0.0,
            "max_action_diff": float(np.abs(aa[:until] - ab[:until]).max()) if until else 0.0,
        })
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
