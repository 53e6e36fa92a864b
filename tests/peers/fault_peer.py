#!/usr/bin/env python3
"""rclpy robot peer for the injected-fault tests (tests/faults.rs) and the soak (tools/soak.sh).

Publishes ``sensor_msgs/JointState`` (joint1..N) and ``sensor_msgs/Image`` (rgb8) at their own
rates, optionally ``/clock`` (then every stamp is on that simulated time), records what
policy_node commands (``std_msgs/Float64MultiArray``; ``sensor_msgs/JointState`` with
``--config '{"command_type": "joint_state"}'``, then with the node's stamp of each command's
tick) and reports on ``/diagnostics``, and prints ``RESULT {json}`` at the end (``MINUTE
{json}`` lines during a soak). Each phase is marked with its start and end on this process's
monotonic clock (``t0``, ``t1``) and on the ROS clock the messages are stamped with
(``stamp0_ns``, ``stamp1_ns``).

The joint state is ``[c, s1, s2, s3, 0, 0, ...]``: ``c`` counts the joint messages sent
(``0.01`` per message), so a command from the fault fixture (``tools/make_fault_fixture.py``:
row ``i`` = ``[s0..s4, i]``) tells the observation it came from and its row; ``s1``, ``s2``,
``s3`` are the fixture's NaN, slow and error switches, set per phase by the scenario.

Usage: fault_peer.py SCENARIO [--config JSON]

Scenarios (each a list of phases ``[name, seconds, {what changes}]``, see ``SCENARIOS``):
  dropout   joint states stop for 1 s, then the camera for 1 s
  nan       the model outputs NaN for 1.5 s
  slow      inference takes about --config slow_s seconds for 3 s
  error     inference fails (ONNX Runtime error) for 1.5 s
  clock     /clock (sim time) runs 3 s, jumps back 10 s, runs 3 s
  sigterm   inference is slow from the start; prints STREAMING once data flows
  soak      --config duration_s of data; MINUTE lines with the node's /diagnostics window
            and its RSS and open file descriptors (--config node_pid)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

DISCOVERY_TIMEOUT_S = 40.0
COUNTER_STEP = 0.01


def time_msg(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class Robot(Node):
    def __init__(self, cfg: dict):
        super().__init__("policy_node_fault_peer")
        self.cfg = cfg
        self.lock = threading.Lock()
        self.joints = int(cfg.get("joints", 6))
        self.names = [f"joint{i + 1}" for i in range(self.joints)]
        self.switches = {"s1": 0.0, "s2": 0.0, "s3": 0.0}
        self.joints_on = True
        self.camera_on = True
        self.sent_joints = 0
        self.sent_images = 0
        self.sim = bool(cfg.get("sim_time", False))
        self.sim_ns = int(cfg.get("sim_start_s", 1000.0) * 1e9)
        self.last_wall = time.monotonic()
        self.t0 = time.monotonic()
        h, w = int(cfg.get("h", 32)), int(cfg.get("w", 32))
        rng = np.random.default_rng(0)
        # A few frames, cycled (rendering each would cost the peer more than the node).
        self.frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes() for _ in range(4)]
        self.h, self.w = h, w
        self.joint_pub = self.create_publisher(JointState, cfg.get("joint_topic", "joint_states"), 10)
        self.image_pub = self.create_publisher(Image, cfg.get("image_topic", "image_raw"), qos_profile_sensor_data)
        # [(monotonic s, counter when received, [values], the node's stamp in ns or None)]
        self.commands = []
        if cfg.get("command_type") == "joint_state":
            self.create_subscription(JointState, cfg.get("command_topic", "joint_commands"), self.on_joint_command,
                                     QoSProfile(depth=500))
        else:
            self.create_subscription(Float64MultiArray, cfg.get("command_topic", "joint_commands"), self.on_command,
                                     QoSProfile(depth=500))
        self.diagnostics = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 50)
        if self.sim:
            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
            self.create_timer(float(cfg.get("clock_period_s", 0.005)), self.publish_clock)
        self.create_timer(1.0 / float(cfg.get("joint_hz", 30.0)), self.publish_joints)
        self.create_timer(1.0 / float(cfg.get("image_hz", 30.0)), self.publish_image)

    # ---- time -------------------------------------------------------------------------------
    def now_ns(self) -> int:
        if self.sim:
            with self.lock:
                return self.sim_ns
        return self.get_clock().now().nanoseconds

    def publish_clock(self):
        now = time.monotonic()
        with self.lock:
            self.sim_ns += int((now - self.last_wall) * 1e9)
            self.last_wall = now
            ns = self.sim_ns
        self.clock_pub.publish(Clock(clock=time_msg(ns)))

    def jump_clock(self, seconds: float):
        with self.lock:
            self.sim_ns += int(seconds * 1e9)

    # ---- publishing ---------------------------------------------------------------------
    def counter(self) -> float:
        return round(self.sent_joints * COUNTER_STEP, 6)

    def publish_joints(self):
        if not self.joints_on:
            return
        js = JointState()
        js.header.stamp = time_msg(self.now_ns())
        js.name = list(self.names)
        if self.cfg.get("wave"):
            # A slow sine per joint (the soak: a robot moving, no fault switches).
            t = time.monotonic() - self.t0
            state = [0.5 * math.sin(2 * math.pi * 0.25 * t + math.pi * j / self.joints) for j in range(self.joints)]
        else:
            state = [0.0] * self.joints
            state[0] = self.counter()
            state[1], state[2], state[3] = self.switches["s1"], self.switches["s2"], self.switches["s3"]
        js.position = state
        self.joint_pub.publish(js)
        self.sent_joints += 1

    def publish_image(self):
        if not self.camera_on:
            return
        msg = Image()
        msg.header.stamp = time_msg(self.now_ns())
        msg.height, msg.width = self.h, self.w
        msg.encoding = "rgb8"
        msg.step = self.w * 3
        msg.data = self.frames[self.sent_images % len(self.frames)]
        self.image_pub.publish(msg)
        self.sent_images += 1

    # ---- recording ----------------------------------------------------------------------
    def on_command(self, msg):
        values = [v if math.isfinite(v) else str(v) for v in msg.data]
        with self.lock:
            self.commands.append((time.monotonic(), self.counter(), values, None))

    def on_joint_command(self, msg):
        values = [v if math.isfinite(v) else str(v) for v in msg.position]
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.commands.append((time.monotonic(), self.counter(), values, stamp))

    def on_diagnostics(self, msg):
        for st in msg.status:
            if st.name.endswith(": policy"):
                level = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
                entry = {"t": time.monotonic(), "level": level, "message": st.message,
                         "values": {kv.key: kv.value for kv in st.values}}
                with self.lock:
                    self.diagnostics.append(entry)

    def n_commands(self) -> int:
        with self.lock:
            return len(self.commands)


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def start(robot: Robot):
    """Waits until the node commands (discovery, warm-up), then 1 s more."""
    wait_until(lambda: robot.n_commands() > 0, DISCOVERY_TIMEOUT_S, "the first command from policy_node")
    time.sleep(1.0)


def run_phases(robot: Robot, phases: list) -> list:
    """Each phase: set its switches / inputs, stay `seconds`; returns [{name, t0, t1, counter0}]."""
    marks = []
    for name, seconds, change in phases:
        robot.switches.update({k: float(v) for k, v in change.items() if k in robot.switches})
        robot.joints_on = bool(change.get("joints", True))
        robot.camera_on = bool(change.get("camera", True))
        if "jump_s" in change:
            robot.jump_clock(float(change["jump_s"]))
        marks.append({"name": name, "t0": time.monotonic(), "stamp0_ns": robot.now_ns(), "counter0": robot.counter()})
        time.sleep(float(seconds))
        marks[-1]["t1"] = time.monotonic()
        marks[-1]["stamp1_ns"] = robot.now_ns()
    return marks


def report(robot: Robot, marks: list) -> dict:
    with robot.lock:
        return {
            "phases": marks,
            "commands": robot.commands,
            "diagnostics": robot.diagnostics[-1] if robot.diagnostics else None,
            "all_diagnostics": [d for d in robot.diagnostics if d["t"] >= marks[0]["t0"]] if marks else [],
            "sent_joints": robot.sent_joints,
            "sent_images": robot.sent_images,
        }


def scenario_phases(phases):
    def run(robot: Robot, cfg: dict) -> dict:
        start(robot)
        marks = run_phases(robot, phases(cfg))
        wait_until(lambda: robot.diagnostics and robot.diagnostics[-1]["t"] > marks[-1]["t1"] - 0.5, 5,
                   "/diagnostics after the last phase")
        return report(robot, marks)

    return run


def scenario_sigterm(robot: Robot, cfg: dict) -> dict:
    # Fast data first so the node reaches its first command, then slow inference.
    start(robot)
    robot.switches["s2"] = float(cfg.get("slow_products", 2000))
    time.sleep(float(cfg.get("settle_s", 1.0)))
    print("STREAMING", flush=True)
    time.sleep(float(cfg.get("duration_s", 30.0)))
    return {"commands": robot.n_commands()}


def proc_stats(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:", "Threads:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as e:
        out["error"] = str(e)
    return out


def scenario_soak(robot: Robot, cfg: dict) -> dict:
    """`duration_s` of data after the first command; every `window_s` a MINUTE line with the
    newest completed /diagnostics window and the node's RSS / fds (from /proc)."""
    pid = int(cfg.get("node_pid", 0))
    goal = None
    if cfg.get("record"):
        # The whole run as one recorded episode (the node runs with episode_mode goal).
        from rclpy.action import ActionClient

        from policy_node_interfaces.action import RunPolicy

        client = ActionClient(robot, RunPolicy, "/policy_node/run_policy")
        if not client.wait_for_server(timeout_sec=DISCOVERY_TIMEOUT_S):
            raise RuntimeError("no ~/run_policy action server")
        g = RunPolicy.Goal()
        g.record = True
        fut = client.send_goal_async(g)
        wait_until(fut.done, 15, "the goal response")
        goal = fut.result()
        if not goal.accepted:
            raise RuntimeError("the recorded goal was refused")
    start(robot)
    t0 = time.monotonic()
    duration = float(cfg.get("duration_s", 600.0))
    period = float(cfg.get("sample_s", 10.0))
    samples = []
    windows = {}
    next_sample = t0
    while time.monotonic() - t0 < duration:
        now = time.monotonic()
        if now >= next_sample:
            s = {"t": round(now - t0, 3), **(proc_stats(pid) if pid else {})}
            samples.append(s)
            print("SAMPLE " + json.dumps(s), flush=True)
            next_sample += period
        with robot.lock:
            diag = robot.diagnostics[-1] if robot.diagnostics else None
        if diag and "window_index" in diag["values"]:
            idx = int(diag["values"]["window_index"])
            if idx not in windows:
                w = {k: v for k, v in diag["values"].items() if k.startswith("window_")}
                w.update({k: diag["values"].get(k) for k in ("refill_ahead_steps", "latency_recent_p99_ms",
                                                               "latency_max_ms", "inferences", "late_chunks")})
                w["t"] = round(now - t0, 3)
                w.update(proc_stats(pid) if pid else {})
                windows[idx] = w
                print("MINUTE " + json.dumps(w), flush=True)
        time.sleep(0.05)
    with robot.lock:
        n = len(robot.commands)
        diag = robot.diagnostics[-1] if robot.diagnostics else None
    recording = None
    if goal is not None:
        import pathlib

        import yaml

        fut = goal.cancel_goal_async()
        wait_until(fut.done, 15, "the cancel response")
        fut = goal.get_result_async()
        wait_until(fut.done, 300, "the goal result")
        res = fut.result().result
        with open(f"{res.recording}/metadata.yaml") as f:
            info = yaml.safe_load(f)["rosbag2_bagfile_information"]
        recording = {
            "dir": res.recording,
            "reason": res.reason,
            "messages": info["message_count"],
            "counts": {t["topic_metadata"]["name"]: t["message_count"] for t in info["topics_with_message_count"]},
            "dropped": int((info.get("custom_data") or {}).get("policy_node.dropped", -1)),
            "mb": sum(p.stat().st_size for p in pathlib.Path(res.recording).glob("*.mcap")) / 1e6,
        }
        print("RECORDING " + json.dumps(recording), flush=True)
    return {"duration_s": time.monotonic() - t0, "commands": n, "samples": samples, "recording": recording,
            "windows": [windows[k] for k in sorted(windows)], "diagnostics": diag,
            "sent_joints": robot.sent_joints, "sent_images": robot.sent_images}


SCENARIOS = {
    "dropout": scenario_phases(lambda c: [
        ["good", 1.5, {}],
        ["joints_off", 1.0, {"joints": False}],
        ["joints_back", 2.0, {}],
        ["camera_off", 1.0, {"camera": False}],
        ["camera_back", 2.0, {}],
    ]),
    "nan": scenario_phases(lambda c: [
        ["good", 1.5, {}],
        ["nan", 1.5, {"s1": 9}],
        ["finite", 2.5, {"s1": 0}],
    ]),
    "slow": scenario_phases(lambda c: [
        ["good", 1.5, {}],
        ["slow", 3.0, {"s2": c.get("slow_products", 200)}],
        ["fast", 3.5, {"s2": 0}],
    ]),
    "error": scenario_phases(lambda c: [
        ["good", 1.5, {}],
        ["error", 1.5, {"s3": 9}],
        ["recovered", 2.5, {"s3": 0}],
    ]),
    "clock": scenario_phases(lambda c: [
        ["before", 3.0, {}],
        ["after_jump", 3.0, {"jump_s": -10.0}],
    ]),
    "sigterm": scenario_sigterm,
    "soak": scenario_soak,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--config", default="{}")
    args = ap.parse_args()
    cfg = json.loads(args.config)
    rclpy.init()
    robot = Robot(cfg)
    executor = SingleThreadedExecutor()
    executor.add_node(robot)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        result = SCENARIOS[args.scenario](robot, cfg)
        result["ok"] = True
    except Exception as e:  # reported to the caller, which prints it
        result = {"ok": False, "error": f"{type(e).__name__}: {e}", "commands_received": robot.n_commands()}
    print("RESULT " + json.dumps(result), flush=True)
    executor.shutdown(timeout_sec=2.0)
    spinner.join(timeout=5.0)
    robot.destroy_node()
    rclpy.try_shutdown()
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
