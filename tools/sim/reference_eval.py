#!/usr/bin/env python3
"""Plain-Python reference evaluation of a transfer-cube policy package with physicalai's runtime.

For episode i in 0..N-1 (seed S+i): ``TransferCube.reset(seed)``, then up to 400 steps of
observation {observation.state: qpos, observation.environment_state: cube xyz} (float32,
batch 1) -> ``InferenceModel.select_action`` -> ``step``; the episode stops at the first step
with reward 4 (success). ``select_action`` runs the whole package pipeline (normalize ->
model -> denormalize -> action_chunk_trimmer) when its action queue is empty and then pops one
action per call, so the policy re-infers every n_action_steps steps on the then-current
observation. ``reset()`` clears the queue between episodes.

    .venv/bin/python tools/sim/reference_eval.py --package tools/sim/policy --episodes 50 --seed 0 \\
        --json .cache/sim/reference.json --trajectories .cache/sim/reference_traj.npz

``--trajectories``: per episode (key suffix: its seed) ``qpos_*`` (the joints observed before
each step), ``actions_*`` (the action applied at each step) and ``first_contact_*`` (the
1-based step after which the cube first touched anything but the table; -1: never), as tools/sim/node_eval.py
writes them. ``--video``: a GIF of the first episode.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aloha_sim import EpisodeLog, TransferCube, wilson_interval  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", required=True, help="policy package directory (manifest.json)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", required=True, help="output JSON")
    ap.add_argument("--trajectories", help="optional .npz with per-episode qpos / actions")
    ap.add_argument("--backend", default="onnx", help="physicalai backend (default onnx)")
    ap.add_argument("--device", help="physicalai device (default: cpu for onnx, CPU for openvino)")
    ap.add_argument("--video", help="a GIF of the first episode (top camera, joints plotted)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    from loguru import logger

    logger.remove()  # physicalai logs every load at INFO
    logger.add(sys.stderr, level="WARNING")
    from physicalai.inference import InferenceModel

    device = args.device or ("CPU" if args.backend == "openvino" else "cpu")
    policy = InferenceModel(args.package, backend=args.backend, device=device)
    env = TransferCube()
    episodes, traj = [], {}
    first_log = None
    t0 = time.time()
    for i in range(args.episodes):
        seed = args.seed + i
        env.reset(seed)
        policy.reset()
        log = EpisodeLog(seed=seed)
        video = (240, 180) if (args.video and i == 0) else None
        while True:
            obs = {
                "observation.state": env.qpos().astype(np.float32)[None, :],
                "observation.environment_state": env.cube().astype(np.float32)[None, :],
            }
            if log.step(env, np.asarray(policy.select_action(obs)).reshape(-1), video):
                break
        ep = log.summary()
        episodes.append(ep)
        traj[f"qpos_{seed}"] = np.asarray(log.qpos, np.float64)
        traj[f"actions_{seed}"] = np.asarray(log.actions, np.float64)
        traj[f"first_contact_{seed}"] = np.asarray(-1 if log.first_contact_step is None else log.first_contact_step)
        if i == 0:
            first_log = log
        if not args.quiet:
            print(f"episode {i} seed {seed}: success {ep['success']} max reward {ep['max_reward']:.0f} "
                  f"steps {ep['steps']}", flush=True)
    rate = sum(e["success"] for e in episodes) / max(1, len(episodes))
    wins = sum(e["success"] for e in episodes)
    result = {"mode": "reference", "seed": args.seed, "episodes": episodes, "success_rate": rate,
              "success_rate_95ci": list(wilson_interval(wins, len(episodes))), "backend": args.backend}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.trajectories:
        np.savez_compressed(args.trajectories, **traj)
    if args.video and first_log is not None:
        from video import write_gif

        write_gif(args.video, first_log)
    print(f"success rate {rate:.2f} ({sum(e['success'] for e in episodes)}/{len(episodes)}) "
          f"in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
