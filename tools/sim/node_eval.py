#!/usr/bin/env python3
"""Closed-loop evaluation through policy_node: the built node drives the simulated ALOHA
(tools/sim/bridge.py) with a policy package, one ``~/run_policy`` goal per episode.

Episode i resets the simulator with cube seed ``seed + i``, sends a goal, lets the node drive
until the task succeeds (reward 4) or 400 steps, then ends the goal on ``~/end_episode`` with
the outcome. Modes: ``lockstep`` (sim time, synchronous refill, the bridge steps on each
tick's command: the same on any machine) and ``realtime`` (wall clock at 50 Hz, asynchronous
refill, the bridge applies the newest command each period).

Writes the JSON of tools/sim_eval.sh, plus ``node`` (the node's exit summary: ticks, queue
tick p99, overruns) and ``bridge`` (refused commands, held steps); ``--trajectories`` keeps
each episode's observed joints and applied actions; ``--video`` the first episode as a GIF.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))


def parse_summary(text: str) -> dict:
    """The node's exit summary line: ticks, overruns, queue-served tick latency."""
    out: dict = {}
    m = re.search(r"(\d+) command\(s\) published", text)
    if m:
        out["commands"] = int(m.group(1))
    m = re.search(r"(\d+) tick\(s\) \([\d.]+ Hz\): (\d+) stale, (\d+) overrun\(s\), (\d+) error\(s\)", text)
    if m:
        out.update(ticks=int(m.group(1)), stale=int(m.group(2)), overruns=int(m.group(3)), errors=int(m.group(4)))
    m = re.search(r"of which (\d+) served from the queue ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", text)
    if m:
        out.update(queue_ticks=int(m.group(1)), queue_p50_ms=float(m.group(2)), queue_p99_ms=float(m.group(4)),
                   queue_max_ms=float(m.group(5)))
    m = re.search(r"(\d+) refill tick\(s\) \(chunk requested, computed on the tick when synchronous\) ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", text)
    if m:
        out.update(refill_ticks=int(m.group(1)), refill_p99_ms=float(m.group(4)))
    m = re.search(r"(\d+) late tick\(s\)", text)
    if m:
        out["late_ticks"] = int(m.group(1))
    return out


def start_node(args, log_path: Path) -> subprocess.Popen:
    params = [
        "--params-file", str(ROOT / "config" / "sim_aloha.yaml"),
        "-p", f"export_dir:={args.package}",
        "-p", f"io_map:={ROOT / 'config' / 'io_map_sim_aloha.yaml'}",
    ]
    if args.mode == "lockstep":
        params += ["-p", "use_sim_time:=true", "-p", "refill_mode:=sync", "-p", "sim_input_wait_ms:=5000.0"]
    for p in args.param:
        params += ["-p", p]
    cmd = [args.node_bin, "--ros-args", *params]
    log = open(log_path, "w")
    print(f"[sim_eval] {' '.join(cmd)}", file=sys.stderr)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["lockstep", "realtime"], required=True)
    ap.add_argument("--package", required=True, help="policy package directory (manifest.json)")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", required=True)
    ap.add_argument("--trajectories", help="an .npz of each episode's observed joints and applied actions")
    ap.add_argument("--video", help="a GIF of the first episode (top camera, joints plotted)")
    ap.add_argument("--node-bin", default=str(ROOT / "target" / "release" / "policy_node"))
    ap.add_argument("--log-dir", default=None, help="where the node's log goes (default: beside --json)")
    ap.add_argument("-p", "--param", action="append", default=[], help="another node parameter NAME:=VALUE")
    ap.add_argument("--tick-timeout", type=float, default=5.0,
                    help="lockstep: seconds to wait for a tick's commands before holding the last one")
    ap.add_argument("--publish-camera", default=None, help="also publish the top camera, WxH (e.g. 160x120)")
    args = ap.parse_args()
    args.package = str(Path(args.package).resolve())

    import numpy as np
    import rclpy
    from rclpy.action import ActionClient
    from std_msgs.msg import Bool

    from aloha_sim import wilson_interval
    from bridge import EpisodeLog, SimBridge, Spinner, run_lockstep, run_realtime
    from policy_node_interfaces.action import RunPolicy

    out_json = Path(args.json)
    log_dir = Path(args.log_dir) if args.log_dir else out_json.parent
    log_dir.mkdir(parents=True, exist_ok=True)
    node_log = log_dir / f"policy_node_{args.mode}.log"
    node = start_node(args, node_log)

    rclpy.init()
    camera = tuple(int(v) for v in args.publish_camera.split("x")) if args.publish_camera else None
    bridge = SimBridge(args.mode, camera=camera)
    client = ActionClient(bridge, RunPolicy, "/policy_node/run_policy")
    end_pub = bridge.create_publisher(Bool, "/policy_node/end_episode", 10)
    spinner = Spinner(bridge)

    results = []
    logs: list[EpisodeLog] = []
    started = time.monotonic()
    try:
        if not client.wait_for_server(timeout_sec=60.0):
            raise RuntimeError(f"/policy_node/run_policy: no action server in 60 s (node log: {node_log})")
        for i in range(args.episodes):
            seed = args.seed + i
            bridge.sim.reset(seed)
            bridge.clear_commands()
            log = EpisodeLog(seed=seed)
            goal = RunPolicy.Goal(task="", policy="", max_duration_s=0.0, record=False)
            # Lockstep: the node's time stands still until /clock moves, so the goal is
            # accepted (a service exchange) while the bridge keeps the clock where it is.
            sent = client.send_goal_async(goal)
            t0 = time.monotonic()
            while not sent.done():
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("the goal was not answered in 30 s")
                time.sleep(0.002)
            handle = sent.result()
            if not handle.accepted:
                raise RuntimeError(f"episode {i}: the node refused the goal (see {node_log})")
            video = (240, 180) if (args.video and i == 0) else None
            t_ep = time.monotonic()
            if args.mode == "lockstep":
                run_lockstep(bridge, log, args.tick_timeout, 30.0, video)
            else:
                run_realtime(bridge, log, 30.0, video)
            t_run = time.monotonic() - t_ep
            end_pub.publish(Bool(data=log.success))
            result = handle.get_result_async()
            t0 = time.monotonic()
            while not result.done():
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("the episode did not end in 30 s after ~/end_episode")
                if args.mode == "lockstep":
                    bridge.advance_clock()  # the end takes effect on a tick; the physics stays
                    time.sleep(0.005)
                else:
                    bridge.publish_state(time.time_ns())
                    time.sleep(0.02)
            r = result.result().result
            logs.append(log)
            s = log.summary()
            s["node_steps"] = int(r.steps)
            s["node_reason"] = r.reason
            results.append(s)
            print(f"[sim_eval] {args.mode} episode {i} seed {seed}: success {log.success} max_reward {log.max_reward:g} "
                  f"steps {log.steps} in {t_run:.1f} s (node: {r.reason}, {r.steps} commands; held steps {log.gap_steps}; "
                  f"ended in {time.monotonic() - t_ep - t_run:.2f} s)", file=sys.stderr)
            time.sleep(0.1)  # the end's on_stop messages arrive before the next episode's clear
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
        spinner.stop()
    summary = parse_summary(node_log.read_text(errors="replace"))
    n = len(results)
    out = {
        "mode": args.mode,
        "seed": args.seed,
        "episodes": [{k: e[k] for k in ("seed", "success", "max_reward", "steps")} for e in results],
        "success_rate": (sum(e["success"] for e in results) / n) if n else 0.0,
        "success_rate_95ci": list(wilson_interval(sum(e["success"] for e in results), n)),
        "node": summary,
        "bridge": {
            "refused": bridge.refused,
            "accepted": bridge.accepted,
            "held_steps": sum(lg.gap_steps for lg in logs),
            "desync": bridge.desync_total,
            "longest_gap_ms": max((lg.longest_gap_ms for lg in logs), default=0.0),
        },
        "node_results": [{k: e[k] for k in ("seed", "node_steps", "node_reason")} for e in results],
        "wall_s": round(time.monotonic() - started, 1),
        "node_log": str(node_log),
    }
    out_json.write_text(json.dumps(out, indent=1))
    if args.trajectories:
        arrays = {}
        for lg in logs:
            arrays[f"qpos_{lg.seed}"] = np.asarray(lg.qpos, np.float64)
            arrays[f"actions_{lg.seed}"] = np.asarray(lg.actions, np.float64)
            arrays[f"first_contact_{lg.seed}"] = np.asarray(-1 if lg.first_contact_step is None else lg.first_contact_step)
        np.savez(args.trajectories, **arrays)
    if args.video and logs:
        from video import write_gif

        write_gif(args.video, logs[0])
    print(f"[sim_eval] {args.mode}: success rate {out['success_rate']:.2f} over {n} episode(s) in {out['wall_s']} s; "
          f"node {summary}; refused {bridge.refused_total()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
