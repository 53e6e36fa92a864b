#!/usr/bin/env python3
"""A fleet on one inference server, measured: one real Triton Inference Server (PyTriton,
tests/peers/triton_server.py, the export's ONNX model run with onnxruntime) and N policy_node
instances with ``backend: remote`` pointing at it, N = 1, 2, 4, 8 by default.

Every instance is a separate process on its own ROS_DOMAIN_ID (so its topics are its own),
fed by its own robot peer (tests/peers/node_peer.py ``bench``: joint states and a camera at
30 Hz), at control_rate_hz 30. Before the fleet, the same robot runs once with local ONNX
inference (``baseline``) for the tick latency of today's node on this machine, in this run.

Per N it reports, from each node's exit summary (src/ros/node.rs) and each peer's report:
round trip to the server p50 / p99 (the median over the N nodes, and the worst node), the
overruns (ticks with no action ready) and errors, the command rate, the queue-served tick
latency p99, and the server's batching (``--batching M`` turns on Triton's dynamic batching
with max batch size M; the model must then take a dynamic batch dimension)::

    .venv/bin/python tools/fleet_remote.py                                   # act_tiny
    .venv/bin/python tools/fleet_remote.py --export fixtures-large/act_full/onnx --duration 30
    .venv/bin/python tools/fleet_remote.py --fleet 1 2 --instances 2

Run it with the Python of .venv (rclpy for the peers); the server runs with .venv-triton's.
The node binary defaults to target/bench/release/policy_node, else target/release/policy_node
(build: ``cargo build --release --features remote --bin policy_node``). Exit status 0 when every
node published commands.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NUM = r"([\d.]+)"
QUAD = r"([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+)"


def drain(pipe, sink: list[str]):
    for line in pipe:
        sink.append(line)


def start_server(model: str, instances: int, batching: int, threads: int) -> tuple[subprocess.Popen, int]:
    tpy = os.environ.get("POLICY_NODE_TRITON_PYTHON", str(ROOT / ".venv-triton/bin/python"))
    opts = f"instances={instances};threads={threads}" + (f";batching={batching}" if batching else "")
    proc = subprocess.Popen([tpy, str(ROOT / "tests/peers/triton_server.py"), "--model", f"act={model};{opts}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("READY "):
            threading.Thread(target=drain, args=(proc.stdout, []), daemon=True).start()
            return proc, json.loads(line[6:])["grpc_port"]
    raise SystemExit(f"the Triton server exited ({proc.wait()}) before it was ready")


def export_info(export: Path) -> dict:
    meta = yaml.safe_load((export / "metadata.yaml").read_text())
    shapes = meta.get("input_shapes") or {}
    state = next((v for k, v in shapes.items() if k.split(".")[-1] == "state"), [6])
    image = next((v for k, v in shapes.items() if "image" in k), [3, 64, 64])
    n = int(state[-1])
    names = meta.get("joint_names") or [f"joint{i + 1}" for i in range(n)]
    return {"joints": names, "h": int(image[-2]), "w": int(image[-1])}


class Instance:
    """One node and its robot peer on a private ROS domain."""

    def __init__(self, args, index: int, domain: int, backend: str, url: str, info: dict, run_dir: Path):
        self.name = f"{backend}{index}"
        self.dir = run_dir / self.name
        self.dir.mkdir(parents=True)
        self.env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                        HOME=str(self.dir), ROS_LOG_DIR=str(self.dir / "log"), RCUTILS_COLORIZED_OUTPUT="0",
                        PYTHONUNBUFFERED="1")
        self.env.pop("ROS_LOCALHOST_ONLY", None)
        params = {
            "export_dir": str(args.export.resolve()),
            "control_rate_hz": 30.0,
            "joint_names": info["joints"],
            "camera_topics": ["image_raw"],
            "threads": args.threads,
            "refill_mode": "async",
            "refill_ahead_steps": args.refill_ahead,
            "backend": backend,
        }
        if backend == "remote":
            params.update({"remote_url": url, "remote_model": "act", "remote_timeout_ms": args.timeout_ms})
        pfile = self.dir / "params.yaml"
        pfile.write_text(yaml.safe_dump({"policy_node": {"ros__parameters": params}}))
        self.log_path = self.dir / "node.log"
        self.log = open(self.log_path, "w")
        self.node = subprocess.Popen([str(args.node), "--ros-args", "--params-file", str(pfile)], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        cam_h, cam_w = (args.camera or (info["h"], info["w"]))
        self.peer_cfg = {"duration_s": args.duration, "joints": len(info["joints"]),
                         "cameras": [{"topic": "image_raw", "camera": "top", "h": cam_h, "w": cam_w}]}
        self.peer = None
        self.peer_out: list[str] = []

    def wait_ready(self, timeout: float = 180.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready:" in self.log_path.read_text(errors="replace"):
                return
            if self.node.poll() is not None:
                raise SystemExit(f"{self.name}: policy_node exited:\n{self.log_path.read_text()}")
            time.sleep(0.1)
        raise SystemExit(f"{self.name}: not ready in {timeout} s:\n{self.log_path.read_text()}")

    def start_peer(self):
        self.peer = subprocess.Popen([sys.executable, str(ROOT / "tests/peers/node_peer.py"), "bench",
                                      "--config", json.dumps(self.peer_cfg)], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=drain, args=(self.peer.stdout, self.peer_out), daemon=True).start()

    def finish(self) -> dict:
        self.peer.wait(timeout=self.peer_cfg["duration_s"] + 120)
        time.sleep(0.2)
        peer = next((json.loads(l[7:]) for l in self.peer_out if l.startswith("RESULT ")), {"ok": False})
        self.node.send_signal(signal.SIGINT)
        try:
            self.node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.node.kill()
        self.log.close()
        text = self.log_path.read_text(errors="replace")
        line = next((l for l in text.splitlines() if "stopped on SIGINT" in l), "")
        r = {"name": self.name, "peer": peer, "rc": self.node.returncode, "line": line}

        def grab(pattern, names):
            m = re.search(pattern, line)
            if m:
                for n, v in zip(names, m.groups()):
                    r[n] = float(v)
        grab(r"(\d+) command\(s\) published on \S+ \(" + NUM + r" Hz achieved", ["commands", "cmd_rate"])
        grab(r"(\d+) tick\(s\) \(" + NUM + r" Hz\): (\d+) stale, (\d+) overrun\(s\), (\d+) error",
             ["ticks", "tick_rate", "stale", "overruns", "errors"])
        grab(r"served from the queue " + QUAD, ["q_p50", "q_p90", "q_p99", "q_max"])
        grab(r"p50/p90/p99/max " + QUAD + r" ms; of which", ["all_p50", "all_p90", "all_p99", "all_max"])
        grab(r"latency last/mean/max " + NUM + "/" + NUM + "/" + NUM, ["inf_last", "inf_mean", "inf_max"])
        grab(r"round trip p50/p99/mean/last " + QUAD + r" ms over (\d+) answered call\(s\) of (\d+), (\d+) error",
             ["rtt_p50", "rtt_p99", "rtt_mean", "rtt_last", "rtt_ok", "rtt_calls", "rtt_errors"])
        return r


def run_config(args, backend: str, n: int, url: str, info: dict, run_dir: Path, domain0: int) -> list[dict]:
    fleet = [Instance(args, i, domain0 + i, backend, url, info, run_dir) for i in range(n)]
    try:
        for inst in fleet:
            inst.wait_ready()
        for inst in fleet:
            inst.start_peer()
        return [inst.finish() for inst in fleet]
    finally:
        for inst in fleet:
            for p in (inst.peer, inst.node):
                if p is not None and p.poll() is None:
                    p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=ROOT / "tests/fixtures/act_tiny/onnx")
    ap.add_argument("--fleet", type=int, nargs="+", default=[1, 2, 4, 8], help="fleet sizes")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured per fleet size")
    ap.add_argument("--instances", type=int, default=1, help="Triton model instances (concurrent executions)")
    ap.add_argument("--batching", type=int, default=0, help="Triton dynamic batching: max batch size (0 = off)")
    ap.add_argument("--server-threads", type=int, default=1, help="onnxruntime threads per model instance")
    ap.add_argument("--threads", type=int, default=1, help="node `threads` (local baseline inference)")
    ap.add_argument("--timeout-ms", type=float, default=1000.0, help="remote_timeout_ms")
    ap.add_argument("--refill-ahead", type=int, default=-1,
                    help="refill_ahead_steps (-1: automatic, from the warm-up latency)")
    ap.add_argument("--camera", type=int, nargs=2, metavar=("H", "W"),
                    help="camera image size the peers publish (default: the model's input size)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the local ONNX run")
    ap.add_argument("--node", type=Path)
    args = ap.parse_args()
    if args.node is None:
        for p in (ROOT / "target/bench/release/policy_node", ROOT / "target/release/policy_node"):
            if p.exists():
                args.node = p
                break
    if args.node is None:
        raise SystemExit("no release policy_node: cargo build --release --features remote --bin policy_node")
    models = sorted(args.export.glob("*.onnx"))
    if not models:
        raise SystemExit(f"{args.export}: no .onnx model to serve")
    info = export_info(args.export)
    run_dir = Path(tempfile.mkdtemp(prefix="policy_node_fleet."))
    domain0 = int(os.environ.get("FLEET_DOMAIN_BASE", 120))
    print(f"export {args.export} ({len(info['joints'])} joints, images 3x{info['h']}x{info['w']}); "
          f"node {args.node}; {args.duration:g} s per configuration at 30 Hz; logs in {run_dir}", flush=True)

    results = []
    if not args.no_baseline:
        print("baseline: 1 node, local ONNX", flush=True)
        results.append(("onnx (local)", 1, run_config(args, "onnx", 1, "", info, run_dir / "baseline", domain0)))
    server, port = start_server(str(models[0]), args.instances, args.batching, args.server_threads)
    url = f"http://127.0.0.1:{port}"
    batching = f"dynamic batching, max batch {args.batching}" if args.batching else "no batching"
    print(f"Triton (PyTriton) at {url}: {args.instances} model instance(s), {batching}", flush=True)
    try:
        for n in args.fleet:
            print(f"fleet of {n}", flush=True)
            results.append(("remote", n, run_config(args, "remote", n, url, info, run_dir / f"fleet{n}", domain0)))
    finally:
        server.terminate()
        server.wait(timeout=60)

    ok = True
    hdr = (f"{'backend':<14}{'N':>3}{'rtt p50 ms':>12}{'rtt p99 ms':>12}{'worst p99':>11}{'overruns':>10}"
           f"{'errors':>8}{'cmd Hz':>8}{'queue tick p99 ms':>19}{'all tick p99 ms':>17}")
    print()
    print(f"server: Triton with {args.instances} instance(s) of `act`, {batching}; control_rate_hz 30, "
          f"refill_ahead_steps {args.refill_ahead}")
    print(hdr)
    for backend, n, runs in results:
        for r in runs:
            if not r.get("commands") or r["rc"] != 0 or not r["peer"].get("ok"):
                ok = False
        med = lambda k: statistics.median(r.get(k, float("nan")) for r in runs)  # noqa: E731
        worst = max(r.get("rtt_p99", float("nan")) for r in runs)
        rtt = (f"{med('rtt_p50'):>12.2f}{med('rtt_p99'):>12.2f}{worst:>11.2f}" if backend == "remote"
               else f"{'-':>12}{'-':>12}{'-':>11}")
        print(f"{backend:<14}{n:>3}{rtt}{sum(r.get('overruns', 0) for r in runs):>10.0f}"
              f"{sum(r.get('errors', 0) for r in runs):>8.0f}{med('cmd_rate'):>8.2f}"
              f"{max(r.get('q_p99', float('nan')) for r in runs):>19.3f}"
              f"{max(r.get('all_p99', float('nan')) for r in runs):>17.3f}")
    print("(rtt: median over the fleet's nodes of each node's round-trip percentile; worst p99: the"
          " slowest node; overruns/errors: summed over the fleet; tick p99: the worst node)")
    for backend, n, runs in results:
        for r in runs:
            print(f"[{backend} N={n} {r['name']}] {r['line'].split(']: ', 1)[-1] or '(no summary)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
