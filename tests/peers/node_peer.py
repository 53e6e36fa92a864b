#!/usr/bin/env python3
"""rclpy peer for the policy_node integration tests (tests/node_integration.rs).

Plays a robot: publishes joint states and camera images at 30 Hz (the synthetic demo of
tools/synthetic_demo.py, or one constant observation), records what policy_node publishes
(commands, /diagnostics), calls its services, and prints one line ``RESULT {json}`` on
stdout at the end. The Rust test asserts on that JSON (and on the node's log).

Usage: node_peer.py SCENARIO [--config JSON]

Scenarios:
  rate_offline        constant observation; command count over 3 s, first 20 commands,
                      the observation sent (for the offline comparison), /diagnostics (the
                      last, and every one with counters from 1.5 s before the window on,
                      with its header stamp)
  reset_enable        constant observation; ~/reset mid-chunk, ~/enable false / true
  silent_camera       demo playback; the camera goes silent for 1.6 s, then returns
  bad_messages        wrong encoding, truncated image, unknown joint names, wrong state
                      length (1 s each, no good data of that kind), then good data
  multicam            constant observation on two cameras (one raw, one PNG compressed),
                      first 12 commands (any command type)
  stream              demo playback until killed; prints STREAMING at the first command
  quiet               constant observation for --config duration_s seconds, no command
                      awaited (a node that must refuse to start); the command count
  outage              constant observation until --config stop_file exists (the test takes
                      the inference server away and brings it back meanwhile); prints
                      STREAMING at the first command; reports every command with its time,
                      the longest gap between commands and every /diagnostics
  demo                demo playback for --config duration seconds; prints a report
  lifecycle_walk      (autostart false) the lifecycle walk as `ros2 lifecycle set` calls it:
                      configure, activate, deactivate, activate, deactivate, cleanup, a
                      transition from the wrong state, shutdown; commands only while active
  failed_configure    (autostart false, a bad export_dir) configure fails -> unconfigured;
                      export_dir set through set_parameters; configure, activate: commands
  policy_swap         one-camera policy, then cleanup, export_dir / camera_topics /
                      camera_inputs set, configure, activate: the two-camera policy; the
                      node's refill thread counted from /proc at each step (`node_pid`)
  live_params         rcl_interfaces calls as `ros2 param` makes them: list, describe, a
                      live change, invalid values, a read-only parameter, atomically
  action_chunk        commands (sensor_msgs/JointState, stamped) and ~/action_chunk
  safety              heartbeats on / off, ~/estop true / false and ~/reset (see the function):
                      the commands in each phase and /diagnostics
  lifecycle_bench     (autostart false; tools/bench_node.sh --lifecycle) `rounds` times:
                      configure, activate (until the first command), deactivate, cleanup;
                      each call's time and the node's resident memory (`node_pid`) after it
  bench               speed benchmark robot (tools/bench_node.sh): `joints` names joint1..N,
                      images at each camera's h x w (e.g. 640x480 rgb8), a few pre-rendered
                      frames cycled, for --config duration seconds after the first command;
                      reports command count, rate and inter-arrival times seen here
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import threading
import time
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import synthetic_demo as demo  # noqa: E402

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, qos_profile_sensor_data  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import TransitionEvent  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetAvailableStates, GetAvailableTransitions, GetState  # noqa: E402
from rcl_interfaces.msg import ParameterEvent  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Empty, Float64MultiArray, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

RATE_HZ = 30.0
#: The constant observation's time in the demo.
CONST_T = 0.7
DISCOVERY_TIMEOUT_S = 40.0


def png_bytes(rgb: np.ndarray) -> bytes:
    """A minimal lossless PNG (8-bit RGB, no filter) of a uint8 [H, W, 3] image."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class Peer(Node):
    def __init__(self, cfg: dict):
        super().__init__("policy_node_test_peer")
        self.cfg = cfg
        self.lock = threading.Lock()
        self.names = demo.joint_names()
        # What the publish timer sends: see `publish`.
        self.joints_mode = None
        self.images_mode = None
        self.obs_mode = "const"
        self.t_start = time.monotonic()
        self.sent_joint_msgs = 0
        self.sent_image_msgs = 0
        # cameras: [{topic, camera (demo view), h, w, compressed}]
        self.cameras = cfg.get("cameras") or [{"topic": "image_raw", "camera": "top", "h": 64, "w": 64}]
        self.joint_pub = self.create_publisher(JointState, cfg.get("joint_topic", "joint_states"), 10)
        # `joint_topics` [{topic, count}]: the joints split across several topics instead (in
        # order), as a robot with one driver per arm publishes them.
        self.joint_splits = [
            (self.create_publisher(JointState, j["topic"], 10), int(j["count"])) for j in cfg.get("joint_topics", [])
        ]
        self.image_pubs = []
        for cam in self.cameras:
            cam["compressed"] = cam["topic"].endswith("/compressed")
            kind = CompressedImage if cam["compressed"] else Image
            self.image_pubs.append(self.create_publisher(kind, cam["topic"], qos_profile_sensor_data))
        self.const_images = [demo.render_image(CONST_T, c["h"], c["w"], c["camera"]) for c in self.cameras]
        self.const_state = demo.state_at(CONST_T)

        self.commands = []  # [(monotonic s, payload)]
        command_type = cfg.get("command_type", "float64_multi_array")
        kind = {
            "float64_multi_array": Float64MultiArray,
            "joint_trajectory": JointTrajectory,
            "joint_state": JointState,
        }[command_type]
        self.create_subscription(kind, cfg.get("command_topic", "joint_commands"), self.on_command, QoSProfile(depth=200))
        self.diagnostics = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)
        node = cfg.get("node_name", "policy_node")
        self.reset_client = self.create_client(Trigger, f"/{node}/reset")
        # The safety inputs: ~/estop, and ~/heartbeat sent by the publish timer while
        # `heartbeats` is true.
        self.estop_pub = self.create_publisher(Bool, f"/{node}/estop", 10)
        self.heartbeat_pub = self.create_publisher(Empty, f"/{node}/heartbeat", 10)
        self.intervention_pub = self.create_publisher(Bool, f"/{node}/intervention", 10)
        self.heartbeats = False
        self.enable_client = self.create_client(SetBool, f"/{node}/enable")
        self.timer = self.create_timer(1.0 / RATE_HZ, self.publish)
        # The managed-node interface, as `ros2 lifecycle` uses it.
        self.node_name = f"/{node}"
        self.lc = {
            "get_state": self.create_client(GetState, f"/{node}/get_state"),
            "get_available_states": self.create_client(GetAvailableStates, f"/{node}/get_available_states"),
            "get_available_transitions": self.create_client(GetAvailableTransitions, f"/{node}/get_available_transitions"),
            "get_transition_graph": self.create_client(GetAvailableTransitions, f"/{node}/get_transition_graph"),
            "change_state": self.create_client(ChangeState, f"/{node}/change_state"),
        }
        self.transition_events = []
        self.create_subscription(TransitionEvent, f"/{node}/transition_event", self.on_transition_event, 50)
        self.plans = []  # [(monotonic s, plan)]
        self.create_subscription(JointTrajectory, f"/{node}/action_chunk", self.on_plan, QoSProfile(depth=200))
        self.parameter_events = []
        self.create_subscription(ParameterEvent, "/parameter_events", self.on_parameter_event, 50)

    # ---- recording ---------------------------------------------------------------------
    def on_command(self, msg):
        if isinstance(msg, Float64MultiArray):
            payload = list(msg.data)
        elif isinstance(msg, JointTrajectory):
            payload = {
                "joint_names": list(msg.joint_names),
                "points": [
                    {
                        "positions": list(p.positions),
                        "time_from_start": p.time_from_start.sec + p.time_from_start.nanosec * 1e-9,
                    }
                    for p in msg.points
                ],
            }
        else:
            payload = {
                "name": list(msg.name),
                "position": list(msg.position),
                "stamp": msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                "stamp_ns": msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
            }
        with self.lock:
            self.commands.append((time.monotonic(), payload))

    def on_transition_event(self, msg):
        with self.lock:
            self.transition_events.append(
                {
                    "transition": [msg.transition.id, msg.transition.label],
                    "start": [msg.start_state.id, msg.start_state.label],
                    "goal": [msg.goal_state.id, msg.goal_state.label],
                }
            )

    def on_plan(self, msg):
        plan = {
            "stamp": msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
            "stamp_ns": msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
            "joint_names": list(msg.joint_names),
            "points": [
                {"positions": list(p.positions), "time_from_start": p.time_from_start.sec + p.time_from_start.nanosec * 1e-9}
                for p in msg.points
            ],
        }
        with self.lock:
            self.plans.append((time.monotonic(), plan))

    def on_parameter_event(self, msg):
        if msg.node != self.node_name:
            return
        with self.lock:
            self.parameter_events.append(
                {"new": [p.name for p in msg.new_parameters], "changed": [p.name for p in msg.changed_parameters]}
            )

    def on_diagnostics(self, msg):
        for st in msg.status:
            if st.name.endswith(": policy"):
                entry = {
                    "t": time.monotonic(),
                    # The node's clock when it published (its own time base).
                    "stamp_ns": msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                    "level": int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level),
                    "message": st.message,
                    "values": {kv.key: kv.value for kv in st.values},
                }
                with self.lock:
                    self.diagnostics.append(entry)

    def n_commands(self) -> int:
        with self.lock:
            return len(self.commands)

    def commands_since(self, t: float) -> int:
        with self.lock:
            return sum(1 for at, _ in self.commands if at >= t)

    # ---- publishing --------------------------------------------------------------------
    def observation(self):
        if self.obs_mode == "const":
            return self.const_state, self.const_images
        if self.obs_mode == "bench":
            t = time.monotonic() - self.t_start
            k = int(t * RATE_HZ) % len(self.bench_frames)
            return self.bench_state(t), self.bench_frames[k]
        t = time.monotonic() - self.t_start
        return demo.state_at(t), [demo.render_image(t, c["h"], c["w"], c["camera"]) for c in self.cameras]

    def publish(self):
        if self.heartbeats:
            self.heartbeat_pub.publish(Empty())
        state, images = self.observation()
        stamp = self.get_clock().now().to_msg()
        if self.joints_mode is not None:
            js = JointState()
            js.header.stamp = stamp
            js.name = list(self.names)
            js.position = [float(v) for v in state]
            if self.joints_mode == "unknown_names":
                js.name = [f"other{i + 1}" for i in range(len(self.names))]
            elif self.joints_mode == "wrong_length":
                js.position = js.position[:-1]
            elif self.joints_mode == "nan_position":
                js.position[0] = float("nan")
            elif self.joints_mode == "duplicate_name":
                js.name.append(js.name[0])
                js.position.append(0.0)
            if self.joint_splits:
                start = 0
                for pub, k in self.joint_splits:
                    part = JointState()
                    part.header.stamp = stamp
                    part.name = js.name[start : start + k]
                    part.position = js.position[start : start + k]
                    pub.publish(part)
                    start += k
            else:
                self.joint_pub.publish(js)
            self.sent_joint_msgs += 1
        if self.images_mode is not None:
            for cam, pub, rgb in zip(self.cameras, self.image_pubs, images):
                if cam["compressed"]:
                    msg = CompressedImage()
                    msg.header.stamp = stamp
                    msg.format = "rgb8; png compressed rgb8"
                    msg.data = png_bytes(rgb)
                else:
                    msg = Image()
                    msg.header.stamp = stamp
                    msg.height, msg.width = rgb.shape[0], rgb.shape[1]
                    msg.encoding = "rgb8"
                    msg.step = rgb.shape[1] * 3
                    data = rgb.tobytes()
                    if self.images_mode == "bad_encoding":
                        msg.encoding = "yuv422"
                        msg.step = rgb.shape[1] * 2
                        data = data[: msg.step * msg.height]
                    elif self.images_mode == "truncated":
                        data = data[: len(data) - 3 * rgb.shape[1]]  # one row short
                    elif self.images_mode == "zero_size":
                        msg.height, msg.width, msg.step = 0, 0, 0
                        data = b""
                    elif self.images_mode == "step_too_small":
                        msg.step = rgb.shape[1] * 3 - 1
                        data = data[: msg.step * msg.height]
                    msg.data = data
                pub.publish(msg)
            self.sent_image_msgs += 1

    # ---- services ----------------------------------------------------------------------
    def call(self, client, request, timeout=15.0):
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {client.srv_name} not available after {timeout} s")
        sent = time.monotonic()
        n_before = self.n_commands()
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"service {client.srv_name} did not answer in {timeout} s")
            time.sleep(0.001)
        res = future.result()
        return {
            "success": bool(res.success),
            "message": res.message,
            "sent_at_index": n_before,
            "answered_at_index": self.n_commands(),
            "latency_s": time.monotonic() - sent,
        }


    # ---- the managed-node interface, as `ros2 lifecycle` calls it ------------------------
    def lc_call(self, name, request, timeout=30.0):
        client = self.lc[name]
        if not client.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT_S):
            raise RuntimeError(f"service {client.srv_name} not available")
        return wait_future(client.call_async(request), timeout, client.srv_name)

    def lc_state(self):
        s = self.lc_call("get_state", GetState.Request()).current_state
        return [s.id, s.label]

    def lc_set(self, label: str, query_state: bool = True) -> dict:
        """`ros2 lifecycle set NODE LABEL`: the transition is looked up by label among the
        available ones (else the CLI prints "Unknown transition requested"), then requested
        with its id and label on ~/change_state."""
        available = self.lc_call("get_available_transitions", GetAvailableTransitions.Request()).available_transitions
        labels = [t.transition.label for t in available]
        match = next((t for t in available if t.transition.label == label), None)
        if match is None:
            return {"label": label, "known": False, "available": labels}
        n_before = self.n_commands()
        req = ChangeState.Request()
        req.transition = match.transition
        res = self.lc_call("change_state", req, timeout=120.0)
        return {
            "label": label,
            "known": True,
            "id": match.transition.id,
            "success": bool(res.success),
            # (After shutdown the node exits: no more questions.)
            "state": self.lc_state() if query_state else None,
            "available": labels,
            "sent_at_index": n_before,
            "answered_at_index": self.n_commands(),
        }

    def commands_in(self, seconds: float) -> int:
        n = self.n_commands()
        sleep(seconds)
        return self.n_commands() - n


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def sleep(s: float):
    time.sleep(s)


# ---- scenarios ---------------------------------------------------------------------------


def observation_json(peer: Peer) -> dict:
    """The constant observation, for the offline comparison."""
    return {
        "state": [float(v) for v in peer.const_state],
        "images": [img.reshape(-1).tolist() for img in peer.const_images],
        "image_shapes": [list(img.shape) for img in peer.const_images],
    }


def wait_future(future, timeout: float, what: str):
    wait_until(future.done, timeout, what)
    return future.result()


def parameter_services(peer: Peer, node: str) -> dict:
    """What the node's parameter services answer: every parameter listed, values (defaults
    included), and a run-time set (refused)."""
    from rclpy.parameter import Parameter, parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(peer, node)
    if not client.wait_for_services(timeout_sec=15.0):
        raise RuntimeError(f"parameter services of {node} not available")
    names = list(wait_future(client.list_parameters(), 10, "list_parameters").result.names)
    got = wait_future(client.get_parameters(names), 10, "get_parameters")
    values = {n: parameter_value_to_python(v) for n, v in zip(names, got.values)}
    values = {n: (list(v) if not isinstance(v, (str, bool, int, float)) and v is not None else v) for n, v in values.items()}
    res = wait_future(client.set_parameters([Parameter("control_rate_hz", value=50.0)]), 10, "set_parameters")
    return {
        "names": names,
        "values": values,
        "set": [{"successful": r.successful, "reason": r.reason} for r in res.results],
    }


def first_command(peer: Peer):
    wait_until(lambda: peer.n_commands() > 0, DISCOVERY_TIMEOUT_S, "the first command from policy_node")


def scenario_rate_offline(peer: Peer, cfg: dict) -> dict:
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    wait_until(lambda: peer.n_commands() >= 20, 10, "20 commands")
    sleep(0.3)
    window = float(cfg.get("window_s", 3.0))
    t0 = time.monotonic()
    sleep(window)
    t1 = time.monotonic()
    with peer.lock:
        in_window = sum(1 for at, _ in peer.commands if t0 <= at < t1)
        first = [c for _, c in peer.commands[:20]]
    wait_until(lambda: len(peer.diagnostics) > 0 and peer.diagnostics[-1]["t"] > t1, 5, "a /diagnostics message")
    with peer.lock:
        diag = peer.diagnostics[-1]
        # The node's counters over the window and a little around it, with the node's stamps.
        counted = [d for d in peer.diagnostics if "commands_total" in d["values"] and d["t"] >= t0 - 1.5]
    params = parameter_services(peer, cfg.get("node_name", "policy_node"))
    return {
        "parameters": params,
        "all_diagnostics": counted,
        "window_s": t1 - t0,
        "window_count": in_window,
        "first_commands": first,
        "diagnostics": diag,
        **observation_json(peer),
    }


def scenario_reset_enable(peer: Peer, cfg: dict) -> dict:
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    wait_until(lambda: peer.n_commands() >= 20, 10, "20 commands")
    with peer.lock:
        a3 = peer.commands[3][1]
    # Reset mid-chunk: right after the 4th action of a chunk went out.
    n = peer.n_commands()
    wait_until(lambda: peer.n_commands() > n and peer.commands[-1][1] == a3, 5, "action 3 of a chunk")
    reset = peer.call(peer.reset_client, Trigger.Request())
    wait_until(lambda: peer.n_commands() >= reset["answered_at_index"] + 12, 5, "commands after the reset")

    off = peer.call(peer.enable_client, SetBool.Request(data=False))
    off_answered_ns = time.time_ns()
    sleep(0.3)  # commands already on the wire
    mark_off = peer.n_commands()
    sleep(2.3)  # at least two /diagnostics (1 Hz) while disabled
    after_off = peer.n_commands()
    enable_sent_ns = time.time_ns()
    on = peer.call(peer.enable_client, SetBool.Request(data=True))
    resumed_at = on["answered_at_index"]
    wait_until(lambda: peer.n_commands() >= max(resumed_at, after_off) + 10, 5, "commands after enable=true")
    with peer.lock:
        commands = [c for _, c in peer.commands]
    return {
        "commands": commands,
        "reset": reset,
        "disable": off,
        "disabled_window": [mark_off, after_off],
        # The node's /diagnostics stamped (its clock: system time here) after the disable was
        # answered and before the enable was sent.
        "diagnostics_disabled": [d for d in peer.diagnostics
                                 if "commands_total" in d["values"] and off_answered_ns < d["stamp_ns"] < enable_sent_ns],
        "enable": on,
        "enabled_from_index": after_off,
        **observation_json(peer),
    }


def scenario_silent_camera(peer: Peer, cfg: dict) -> dict:
    peer.obs_mode = "demo"
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    sleep(1.0)
    before = peer.n_commands()
    peer.images_mode = None
    silent_at = time.monotonic()
    sleep(float(cfg.get("settle_s", 0.6)))
    mark = peer.n_commands()
    sleep(1.0)
    during = peer.n_commands() - mark
    with peer.lock:
        diags = [d for d in peer.diagnostics if d["t"] >= silent_at]
    peer.images_mode = "good"
    back_at = time.monotonic()
    wait_until(lambda: peer.commands_since(back_at) >= 10, 10, "commands after the camera returned")
    with peer.lock:
        resume_delay = next(at for at, _ in peer.commands if at >= back_at) - back_at
    return {
        "commands_before_silence": before,
        "commands_while_silent": during,
        "diagnostics_while_silent": diags,
        "resume_delay_s": resume_delay,
        "commands_after_return": peer.commands_since(back_at),
    }


def scenario_bad_messages(peer: Peer, cfg: dict) -> dict:
    """Each phase sends one kind of bad data and good data of the other kind, never good
    data of the bad kind: so no command may follow. Between the joint and the image phases
    the camera pauses for `gap_s` (> max_observation_age_ms), so the images of the joint
    phases are stale when the joints turn good."""
    dur = float(cfg.get("phase_s", 1.0))
    gap = float(cfg.get("gap_s", 0.8))
    # The node must be up and subscribed before bad data counts as "sent".
    wait_until(lambda: peer.count_subscribers(peer.joint_pub.topic_name) > 0, DISCOVERY_TIMEOUT_S, "policy_node's subscriptions")
    wait_until(lambda: all(peer.count_subscribers(p.topic_name) > 0 for p in peer.image_pubs), DISCOVERY_TIMEOUT_S, "camera subscriptions")
    result = {"phases": {}}

    def phase(name, joints, images, seconds, services=False):
        peer.joints_mode, peer.images_mode = joints, images
        n0 = peer.n_commands()
        sent0 = (peer.sent_joint_msgs, peer.sent_image_msgs)
        answers = {}
        if services:
            # Neither a reset nor enabling the output makes bad data usable.
            sleep(seconds / 2)
            answers["reset"] = peer.call(peer.reset_client, Trigger.Request())["success"]
            answers["enable"] = peer.call(peer.enable_client, SetBool.Request(data=True))["success"]
            sleep(seconds / 2)
        else:
            sleep(seconds)
        result["phases"][name] = {
            "commands": peer.n_commands() - n0,
            "joint_msgs": peer.sent_joint_msgs - sent0[0],
            "image_msgs": peer.sent_image_msgs - sent0[1],
            **answers,
        }

    phase("unknown_names", "unknown_names", "good", dur)
    phase("wrong_length", "wrong_length", "good", dur, services=True)
    phase("nan_position", "nan_position", "good", dur)
    phase("duplicate_name", "duplicate_name", "good", dur)
    phase("camera_pause", "wrong_length", None, gap)
    phase("bad_encoding", "good", "bad_encoding", dur)
    phase("truncated", "good", "truncated", dur, services=True)
    phase("zero_size", "good", "zero_size", dur)
    phase("step_too_small", "good", "step_too_small", dur)
    peer.joints_mode, peer.images_mode = "good", "good"
    good_at = time.monotonic()
    wait_until(lambda: peer.commands_since(good_at) >= 5, 10, "commands once the data is good")
    result["good_commands"] = peer.commands_since(good_at)
    with peer.lock:
        result["last_command"] = peer.commands[-1][1]
    wait_until(lambda: any(d["t"] > good_at for d in peer.diagnostics), 5, "/diagnostics")
    with peer.lock:
        result["diagnostics"] = [d for d in peer.diagnostics if d["t"] > good_at][-1]
    return result


def scenario_multicam(peer: Peer, cfg: dict) -> dict:
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    wait_until(lambda: peer.n_commands() >= 12, 10, "12 commands")
    with peer.lock:
        first = [c for _, c in peer.commands[:12]]
    return {"first_commands": first, **observation_json(peer)}


def scenario_stream(peer: Peer, cfg: dict) -> dict:
    peer.obs_mode = "demo"
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    print("STREAMING", flush=True)
    deadline = time.monotonic() + float(cfg.get("duration_s", 60.0))
    while time.monotonic() < deadline:
        sleep(0.05)
    return {"commands": peer.n_commands()}


def scenario_quiet(peer: Peer, cfg: dict) -> dict:
    """Good data for --config duration_s seconds without waiting for a command (a node that
    should refuse to start); the number of commands received."""
    peer.joints_mode, peer.images_mode = "good", "good"
    print("PUBLISHING", flush=True)
    sleep(float(cfg.get("duration_s", 5.0)))
    return {"commands": peer.n_commands()}


def scenario_outage(peer: Peer, cfg: dict) -> dict:
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    print("STREAMING", flush=True)
    stop_file = cfg["stop_file"]
    deadline = time.monotonic() + float(cfg.get("max_duration_s", 120.0))
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        sleep(0.05)
    with peer.lock:
        times = [at for at, _ in peer.commands]
        commands = [c for _, c in peer.commands]
        diags = list(peer.diagnostics)
    t0 = times[0]
    gaps = np.diff(np.array(times)) if len(times) > 1 else np.zeros(1)
    k = int(np.argmax(gaps))
    return {
        "commands": commands,
        "times": [t - t0 for t in times],
        "longest_gap_s": float(gaps[k]),
        "commands_before_gap": k + 1,
        "diagnostics": [{**d, "t": d["t"] - t0} for d in diags],
        **observation_json(peer),
    }


def scenario_demo(peer: Peer, cfg: dict) -> dict:
    """The main job's robot: plays the demo for `duration_s` and reports what came back."""
    peer.obs_mode = "demo"
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    t0 = time.monotonic()
    sleep(float(cfg.get("duration_s", 10.0)))
    t1 = time.monotonic()
    with peer.lock:
        cmds = [(at, c) for at, c in peer.commands if t0 <= at < t1]
        diag = peer.diagnostics[-1] if peer.diagnostics else None
    return {
        "duration_s": t1 - t0,
        "commands": len(cmds),
        "rate_hz": (len(cmds) - 1) / (cmds[-1][0] - cmds[0][0]) if len(cmds) > 1 else 0.0,
        "joint_msgs_sent": peer.sent_joint_msgs,
        "image_msgs_sent": peer.sent_image_msgs,
        "diagnostics": diag,
    }


def scenario_bench(peer: Peer, cfg: dict) -> dict:
    """tools/bench_node.sh's robot: `joints` joint states and each camera's raw images at its
    h x w, at 30 Hz, for `duration_s` after the first command. The frames are rendered once
    (`frames` of them, cycled) so that the peer spends little CPU next to the node."""
    n = int(cfg.get("joints", 14))
    peer.names = [f"joint{i + 1}" for i in range(n)]
    phases = np.linspace(0.0, np.pi, n)
    peer.bench_state = lambda t: 0.5 * np.sin(2.0 * np.pi * 0.25 * t + phases)
    frames = int(cfg.get("frames", 8))
    peer.bench_frames = [
        [demo.render_image(k / RATE_HZ, c["h"], c["w"], c["camera"]) for c in peer.cameras] for k in range(frames)
    ]
    peer.obs_mode = "bench"
    goal = None
    if cfg.get("record"):
        # One recorded episode for the whole window (episode_mode goal), sent before the
        # robot's data flows (the goal's first tick waits for the recording to have it).
        client, RunPolicy = run_policy_client(peer, cfg)
        g = RunPolicy.Goal()
        g.record = True
        goal = wait_future(client.send_goal_async(g), 15, "the goal response")
        if not goal.accepted:
            raise RuntimeError("the recorded goal was refused")
    peer.joints_mode, peer.images_mode = "good", "good"
    joint_hz = float(cfg.get("joint_hz", 0) or 0)
    if joint_hz > 0:
        # Joint states on their own timer (a robot's 200 Hz driver), not with each frame.
        peer.joints_mode = None

        def joints():
            js = JointState()
            js.header.stamp = peer.get_clock().now().to_msg()
            js.name = list(peer.names)
            js.position = [float(v) for v in peer.bench_state(time.monotonic() - peer.t_start)]
            peer.joint_pub.publish(js)
            peer.sent_joint_msgs += 1

        peer.create_timer(1.0 / joint_hz, joints)
    first_command(peer)
    t0 = time.monotonic()
    sent0 = (peer.sent_joint_msgs, peer.sent_image_msgs)
    every = float(cfg.get("live_param_every_s", 0.0))
    sets = 0
    if every > 0:
        # Tuning while running: a live parameter set through rcl_interfaces every `every` s.
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(peer, cfg.get("node_name", "policy_node"))
        client.wait_for_services(timeout_sec=15.0)
        end = t0 + float(cfg.get("duration_s", 20.0))
        while time.monotonic() + every < end:
            sleep(every)
            value = 500.0 + (sets % 2)
            wait_future(client.set_parameters([Parameter("max_observation_age_ms", value=value)]), 10, "set")
            sets += 1
        sleep(max(0.0, end - time.monotonic()))
    else:
        sleep(float(cfg.get("duration_s", 20.0)))
    t1 = time.monotonic()
    with peer.lock:
        at = [a for a, _ in peer.commands if t0 <= a < t1]
        diag = peer.diagnostics[-1] if peer.diagnostics else None
    gaps = np.diff(np.array(at)) * 1e3 if len(at) > 1 else np.zeros(1)
    recording = None
    if goal is not None:
        import yaml

        wait_future(goal.cancel_goal_async(), 15, "the cancel response")
        res = wait_future(goal.get_result_async(), 120, "the goal result")
        with open(f"{res.result.recording}/metadata.yaml") as f:
            info = yaml.safe_load(f)["rosbag2_bagfile_information"]
        recording = {
            "dir": res.result.recording,
            "reason": res.result.reason,
            "messages": info["message_count"],
            "counts": {t["topic_metadata"]["name"]: t["message_count"] for t in info["topics_with_message_count"]},
            "dropped": int((info.get("custom_data") or {}).get("policy_node.dropped", -1)),
            "mb": sum(p.stat().st_size for p in __import__("pathlib").Path(res.result.recording).glob("*.mcap")) / 1e6,
        }
    return {
        "recording": recording,
        "duration_s": t1 - t0,
        "commands": len(at),
        "rate_hz": (len(at) - 1) / (at[-1] - at[0]) if len(at) > 1 else 0.0,
        "interarrival_ms": {
            "p50": float(np.percentile(gaps, 50)),
            "p99": float(np.percentile(gaps, 99)),
            "max": float(gaps.max()),
        },
        "joint_msgs_sent": peer.sent_joint_msgs - sent0[0],
        "image_msgs_sent": peer.sent_image_msgs - sent0[1],
        "parameter_sets": sets,
        "plans_received": len(peer.plans),
        "diagnostics": diag,
    }


def transition_list(descriptions) -> list:
    return [[t.transition.id, t.transition.label, t.start_state.label, t.goal_state.label] for t in descriptions]


def call_reset_enable(peer: Peer) -> dict:
    return {
        "reset": peer.call(peer.reset_client, Trigger.Request()),
        "enable": peer.call(peer.enable_client, SetBool.Request(data=True)),
    }


def scenario_lifecycle_walk(peer: Peer, cfg: dict) -> dict:
    peer.joints_mode, peer.images_mode = "good", "good"
    r = {"steps": []}
    wait_until(lambda: peer.lc["get_state"].service_is_ready(), DISCOVERY_TIMEOUT_S, "~/get_state")
    # `ros2 lifecycle nodes` lists the nodes that serve lifecycle_msgs/srv/GetState.
    types = dict(peer.get_service_names_and_types())
    r["service_types"] = {k: v for k, v in types.items() if k.startswith(peer.node_name + "/")}
    r["initial_state"] = peer.lc_state()
    r["states"] = [[s.id, s.label] for s in peer.lc_call("get_available_states", GetAvailableStates.Request()).available_states]
    r["graph"] = transition_list(peer.lc_call("get_transition_graph", GetAvailableTransitions.Request()).available_transitions)
    r["unconfigured_commands"] = peer.commands_in(1.0)
    r["unconfigured_services"] = call_reset_enable(peer)
    # A transition from the wrong state: unknown to the CLI, refused by ~/change_state by id.
    r["activate_from_unconfigured"] = peer.lc_set("activate")
    req = ChangeState.Request()
    req.transition.id = 3
    r["activate_by_id"] = {"success": bool(peer.lc_call("change_state", req).success), "state": peer.lc_state()}

    step = peer.lc_set("configure")
    r["steps"].append(step)
    r["inactive_commands"] = peer.commands_in(1.0)
    r["inactive_services"] = call_reset_enable(peer)
    r["steps"].append(peer.lc_set("activate"))
    wait_until(lambda: peer.n_commands() >= 15, 20, "15 commands once active")
    r["active_services"] = call_reset_enable(peer)
    r["steps"].append(peer.lc_set("deactivate"))
    sleep(0.3)  # commands already on the wire
    r["deactivated_commands"] = peer.commands_in(1.0)
    r["deactivated_services"] = call_reset_enable(peer)
    step = peer.lc_set("activate")
    r["steps"].append(step)
    wait_until(lambda: peer.n_commands() >= step["answered_at_index"] + 12, 20, "commands after the second activate")
    with peer.lock:
        r["reactivated_commands"] = [c for _, c in peer.commands[step["answered_at_index"] : step["answered_at_index"] + 12]]
    r["steps"].append(peer.lc_set("deactivate"))
    r["steps"].append(peer.lc_set("cleanup"))
    sleep(0.3)
    r["cleaned_up_commands"] = peer.commands_in(1.0)
    r["steps"].append(peer.lc_set("shutdown", query_state=False))
    sleep(0.3)
    with peer.lock:
        r["events"] = list(peer.transition_events)
    return {**r, **observation_json(peer)}


def scenario_failed_configure(peer: Peer, cfg: dict) -> dict:
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    peer.joints_mode, peer.images_mode = "good", "good"
    r = {}
    r["configure_bad"] = peer.lc_set("configure")
    wait_until(lambda: any(d["level"] == 2 for d in peer.diagnostics), 10, "an ERROR on /diagnostics")
    with peer.lock:
        r["diagnostics"] = next(d for d in peer.diagnostics if d["level"] == 2)
    client = AsyncParameterClient(peer, cfg.get("node_name", "policy_node"))
    client.wait_for_services(timeout_sec=15.0)
    res = wait_future(client.set_parameters([Parameter("export_dir", value=cfg["good_export"])]), 10, "set export_dir")
    r["set_export_dir"] = [{"successful": x.successful, "reason": x.reason} for x in res.results]
    r["configure_good"] = peer.lc_set("configure")
    r["activate"] = peer.lc_set("activate")
    wait_until(lambda: peer.n_commands() >= 12, 20, "12 commands")
    with peer.lock:
        r["first_commands"] = [c for _, c in peer.commands[:12]]
        r["events"] = list(peer.transition_events)
    return {**r, **observation_json(peer)}


def refill_threads(pid: int) -> int:
    n = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                n += f.read().strip() == "policy-refill"
        except OSError:
            pass
    return n


def scenario_policy_swap(peer: Peer, cfg: dict) -> dict:
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    pid = int(cfg["node_pid"])
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    wait_until(lambda: peer.n_commands() >= 12, 20, "12 commands")
    r = {"threads": {"active_1": refill_threads(pid)}}
    with peer.lock:
        r["commands_1"] = [c for _, c in peer.commands[:12]]
    client = AsyncParameterClient(peer, cfg.get("node_name", "policy_node"))
    client.wait_for_services(timeout_sec=15.0)
    swap = [
        Parameter("export_dir", value=cfg["export_2"]),
        Parameter("camera_topics", value=["top/image_raw", "wrist/image_raw"]),
        Parameter("camera_inputs", value=["images.top", "images.wrist"]),
    ]
    res = wait_future(client.set_parameters(swap), 10, "set_parameters while active")
    r["set_while_active"] = [{"successful": x.successful, "reason": x.reason} for x in res.results]
    r["deactivate"] = peer.lc_set("deactivate")
    r["cleanup"] = peer.lc_set("cleanup")
    r["threads"]["unconfigured"] = refill_threads(pid)
    res = wait_future(client.set_parameters(swap), 10, "set_parameters unconfigured")
    r["set_unconfigured"] = [{"successful": x.successful, "reason": x.reason} for x in res.results]
    r["configure"] = peer.lc_set("configure")
    r["threads"]["configured_2"] = refill_threads(pid)
    step = peer.lc_set("activate")
    r["activate"] = step
    wait_until(lambda: peer.n_commands() >= step["answered_at_index"] + 12, 20, "commands from the second policy")
    with peer.lock:
        r["commands_2"] = [c for _, c in peer.commands[step["answered_at_index"] : step["answered_at_index"] + 12]]
    return {**r, **observation_json(peer)}


def scenario_live_params(peer: Peer, cfg: dict) -> dict:
    from rclpy.parameter import Parameter, parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    node = cfg.get("node_name", "policy_node")
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    client = AsyncParameterClient(peer, node)
    if not client.wait_for_services(timeout_sec=15.0):
        raise RuntimeError("parameter services not available")
    r = {}

    def get(names):
        got = wait_future(client.get_parameters(names), 10, "get_parameters")
        out = {}
        for n, v in zip(names, got.values):
            v = parameter_value_to_python(v)
            out[n] = list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v
        return out

    def set_(params, what):
        res = wait_future(client.set_parameters(params), 10, what)
        return [{"successful": x.successful, "reason": x.reason} for x in res.results]

    r["names"] = list(wait_future(client.list_parameters(), 10, "list_parameters").result.names)
    described = wait_future(
        client.describe_parameters(["control_rate_hz", "max_observation_age_ms", "threads", "export_dir", "joint_names"]),
        10,
        "describe_parameters",
    )
    r["descriptors"] = {
        d.name: {
            "type": d.type,
            "description": d.description,
            "additional_constraints": d.additional_constraints,
            "read_only": d.read_only,
            # (JSON has no infinity: an open end as the string "inf".)
            "floating_point_range": [
                [v if abs(v) != float("inf") else str(v) for v in (x.from_value, x.to_value)] for x in d.floating_point_range
            ],
            "integer_range": [[x.from_value, x.to_value] for x in d.integer_range],
        }
        for d in described.descriptors
    }
    types = wait_future(client.get_parameter_types(["n_action_steps", "joint_names", "nope"]), 10, "types")
    r["types"] = list(types.types)

    # A live change: the rate limit, from the next tick.
    r["set_delta"] = set_([Parameter("max_joint_delta", value=[0.002])], "set max_joint_delta")
    mark = peer.n_commands()
    wait_until(lambda: peer.n_commands() >= mark + 40, 10, "40 commands after the change")
    with peer.lock:
        r["after_delta"] = [c for _, c in peer.commands[mark + 2 : mark + 40]]
    r["get_delta"] = get(["max_joint_delta"])
    # Invalid values: refused with the reason, the old value stays, commands keep flowing.
    r["invalid"] = {
        "range": set_([Parameter("max_observation_age_ms", value=-5.0)], "negative age"),
        "validation": set_([Parameter("max_joint_delta", value=[0.1, 0.2])], "two deltas for six joints"),
        "type": set_([Parameter("n_action_steps", value="four")], "a string for an integer"),
        "export": set_([Parameter("n_action_steps", value=20)], "more than the chunk"),
        "unknown": set_([Parameter("max_joint_delt", value=[0.1])], "a typo"),
    }
    r["after_invalid"] = get(["max_observation_age_ms", "max_joint_delta", "n_action_steps"])
    r["commands_after_invalid"] = peer.commands_in(1.0)
    # A read-only parameter while active.
    r["read_only"] = set_([Parameter("control_rate_hz", value=50.0)], "control_rate_hz")
    r["rate_after_read_only"] = get(["control_rate_hz"])
    t0 = time.monotonic()
    n = peer.commands_in(2.0)
    r["rate_hz"] = n / (time.monotonic() - t0)
    # n_action_steps (live): chunks of 4 from the next tick, seen on ~/action_chunk.
    r["set_steps"] = set_([Parameter("max_joint_delta", value=[]), Parameter("n_action_steps", value=4)], "steps")
    at = time.monotonic()
    wait_until(lambda: sum(1 for t, _ in peer.plans if t > at) >= 4, 10, "plans after n_action_steps 4")
    with peer.lock:
        r["plan_lengths_after_steps"] = [len(p["points"]) for t, p in peer.plans if t > at + 0.2]
    # Both limits at once, atomically (one alone would be refused: they go together).
    lo, hi = [-0.2] * 6, [0.2] * 6
    req = [Parameter("joint_lower_limits", value=lo), Parameter("joint_upper_limits", value=hi)]
    res = wait_future(client.set_parameters_atomically(req), 10, "set_parameters_atomically")
    r["atomic"] = {"successful": res.result.successful, "reason": res.result.reason}
    r["one_limit_alone"] = set_([Parameter("joint_lower_limits", value=[-0.1] * 5)], "lower limits of 5")
    mark = peer.n_commands()
    wait_until(lambda: peer.n_commands() >= mark + 20, 10, "commands after the limits")
    with peer.lock:
        r["after_limits"] = [c for _, c in peer.commands[mark + 2 : mark + 20]]
        r["parameter_events"] = list(peer.parameter_events)
    r.update(observation_json(peer))
    return r


def scenario_action_chunk(peer: Peer, cfg: dict) -> dict:
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    n = int(cfg.get("commands", 60))
    wait_until(lambda: len(peer.plans) >= 4, 20, "4 plans on ~/action_chunk")
    wait_until(lambda: peer.n_commands() >= n, 20, f"{n} commands")
    sleep(0.2)
    with peer.lock:
        return {"commands": [c for _, c in peer.commands], "plans": [p for _, p in peer.plans], **observation_json(peer)}


def scenario_task_topic(peer: Peer, cfg: dict) -> dict:
    """A VLA policy on the node: commands under the task it started with, then a new task
    published on ``~/task`` (the ``task`` parameter follows it, on ``/parameter_events``),
    then an empty task (refused: the parameter and the commands stay)."""
    from rclpy.parameter import parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    node = cfg.get("node_name", "policy_node")
    task_pub = peer.create_publisher(String, f"/{node}/task", 10)
    client = AsyncParameterClient(peer, node)
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    wait_until(lambda: peer.n_commands() >= 30, 20, "30 commands under the first task")
    wait_until(lambda: task_pub.get_subscription_count() > 0, 15, "the node's ~/task subscription")
    with peer.lock:
        n_events = len(peer.parameter_events)
        at_publish = len(peer.commands)
    task_pub.publish(String(data=cfg["new_task"]))

    def task_event():
        with peer.lock:
            return any("task" in e["changed"] for e in peer.parameter_events[n_events:])

    wait_until(task_event, 10, "`task` on /parameter_events")
    with peer.lock:
        at_event = len(peer.commands)
    wait_until(lambda: peer.n_commands() >= at_event + 40, 20, "40 commands after the new task")
    if not client.wait_for_services(timeout_sec=15.0):
        raise RuntimeError("parameter services not available")

    def get_task():
        got = wait_future(client.get_parameters(["task"]), 10, "get_parameters task")
        return parameter_value_to_python(got.values[0])

    task_after_topic = get_task()
    # An empty task: this policy needs one, so it is refused and nothing changes.
    with peer.lock:
        n_events = len(peer.parameter_events)
    task_pub.publish(String(data=""))
    sleep(0.5)
    with peer.lock:
        at_empty = len(peer.commands)
    wait_until(lambda: peer.n_commands() >= at_empty + 20, 10, "20 commands after the empty task")
    task_after_empty = get_task()
    wait_until(lambda: len(peer.diagnostics) > 0, 5, "a /diagnostics message")
    with peer.lock:
        return {
            "commands": [c for _, c in peer.commands],
            "at_publish": at_publish,
            "at_event": at_event,
            "at_empty": at_empty,
            "task_after_topic": task_after_topic,
            "task_after_empty": task_after_empty,
            "events_after_empty": peer.parameter_events[n_events:],
            "diagnostics": peer.diagnostics[-1],
            **observation_json(peer),
        }


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def scenario_lifecycle_bench(peer: Peer, cfg: dict) -> dict:
    """configure -> active, timed from here (the service calls), `rounds` times, with the
    node's resident memory after each step: what loading costs and what cleanup gives back."""
    pid = int(cfg["node_pid"])
    n = int(cfg.get("joints", 14))
    peer.names = [f"joint{i + 1}" for i in range(n)]
    phases = np.linspace(0.0, np.pi, n)
    peer.bench_state = lambda t: 0.5 * np.sin(2.0 * np.pi * 0.25 * t + phases)
    peer.bench_frames = [[demo.render_image(0.0, c["h"], c["w"], c["camera"]) for c in peer.cameras]]
    peer.obs_mode = "bench"
    peer.joints_mode, peer.images_mode = "good", "good"
    wait_until(lambda: peer.lc["change_state"].service_is_ready(), DISCOVERY_TIMEOUT_S, "~/change_state")
    rounds = []
    for _ in range(int(cfg.get("rounds", 3))):
        r = {"rss_unconfigured_mb": rss_mb(pid)}
        t0 = time.monotonic()
        step = peer.lc_set("configure")
        r["configure_s"] = time.monotonic() - t0
        r["rss_configured_mb"] = rss_mb(pid)
        t1 = time.monotonic()
        step2 = peer.lc_set("activate")
        r["activate_s"] = time.monotonic() - t1
        n0 = peer.n_commands()
        wait_until(lambda: peer.n_commands() > n0, 30, "the first command after activate")
        r["to_first_command_s"] = time.monotonic() - t0
        if not (step["success"] and step2["success"]):
            raise RuntimeError(f"transition failed: {step} {step2}")
        sleep(1.0)
        peer.lc_set("deactivate")
        t2 = time.monotonic()
        peer.lc_set("cleanup")
        r["cleanup_s"] = time.monotonic() - t2
        sleep(0.5)
        r["rss_cleaned_up_mb"] = rss_mb(pid)
        rounds.append(r)
    return {"rounds": rounds}


def diag_after(peer: Peer, t: float) -> dict:
    """The first /diagnostics message received after `t` (monotonic)."""
    wait_until(lambda: any(d["t"] > t for d in peer.diagnostics), 5, "a /diagnostics message")
    with peer.lock:
        return next(d for d in peer.diagnostics if d["t"] > t)


def run_policy_client(peer: Peer, cfg: dict):
    """rclpy's action client on the node's ~/run_policy (as `ros2 action send_goal` uses it),
    with the RunPolicy type."""
    from rclpy.action import ActionClient

    from policy_node_interfaces.action import RunPolicy

    node = cfg.get("node_name", "policy_node")
    client = ActionClient(peer, RunPolicy, f"/{node}/run_policy")
    if not client.wait_for_server(timeout_sec=DISCOVERY_TIMEOUT_S):
        raise RuntimeError(f"/{node}/run_policy: no action server")
    return client, RunPolicy


def scenario_safety(peer: Peer, cfg: dict) -> dict:
    """The node runs with heartbeat_timeout_ms (cfg `timeout_ms`). Phases, each with the
    commands counted in a window that starts `settle_s` after the event (commands already on
    the wire before it are not the node's fault):
    no heartbeat yet (none expected); heartbeats (commands); ~/estop true (none); ~/estop
    false (still none); ~/reset (commands); heartbeats stop (none); heartbeats back (still
    none); ~/reset (commands); ~/intervention true (none); false (commands, no reset)."""
    peer.joints_mode, peer.images_mode = "good", "good"
    settle = float(cfg.get("settle_s", 0.5))
    hold = float(cfg.get("hold_s", 1.0))
    out = {}

    def window(label):
        sleep(settle)
        t0 = time.monotonic()
        sleep(hold)
        out[label] = peer.commands_since(t0)

    sleep(1.5)  # the node is up and has the observation; no heartbeat yet
    window("no_heartbeat_yet")
    peer.heartbeats = True
    first_command(peer)
    window("heartbeats")
    t = time.monotonic()
    peer.estop_pub.publish(Bool(data=True))
    window("estop")
    out["diag_estop"] = diag_after(peer, t + settle)
    peer.estop_pub.publish(Bool(data=False))
    window("estop_false")
    out["reset_estop"] = peer.call(peer.reset_client, Trigger.Request())
    window("after_reset")
    t = time.monotonic()
    peer.heartbeats = False
    window("heartbeat_lost")
    out["diag_watchdog"] = diag_after(peer, t + settle)
    peer.heartbeats = True
    window("heartbeat_back")
    out["reset_watchdog"] = peer.call(peer.reset_client, Trigger.Request())
    window("after_second_reset")
    out["diag_end"] = diag_after(peer, time.monotonic())
    t = time.monotonic()
    peer.intervention_pub.publish(Bool(data=True))
    window("intervention")
    out["diag_intervention"] = diag_after(peer, t + settle)
    peer.intervention_pub.publish(Bool(data=False))
    window("after_intervention")
    return out


def scenario_episodes(peer: Peer, cfg: dict) -> dict:
    """`episode_mode: goal`, with rclpy's action client on ~/run_policy (as `ros2 action
    send_goal` uses it). Each phase records the goal's acceptance, result, feedback and the
    commands the peer received while it ran; see node_integration.rs for what is asserted."""
    node = cfg.get("node_name", "policy_node")
    client, RunPolicy = run_policy_client(peer, cfg)
    end_pub = peer.create_publisher(Bool, f"/{node}/end_episode", 10)
    peer.joints_mode, peer.images_mode = "good", "good"
    peer.heartbeats = True
    settle = float(cfg.get("settle_s", 0.5))
    out = {}

    def send(**fields):
        goal = RunPolicy.Goal()
        for k, v in fields.items():
            setattr(goal, k, v)
        feedback = []

        def on_feedback(msg):
            f = msg.feedback
            feedback.append(
                {"t": time.monotonic(), "status": f.status, "steps": f.steps, "elapsed_s": f.elapsed_s,
                 "chunks": f.chunks, "inference_p99_ms": f.inference_p99_ms}
            )

        t0 = time.monotonic()
        n0 = peer.n_commands()
        handle = wait_future(client.send_goal_async(goal, feedback_callback=on_feedback), 15, "the goal response")
        return {"handle": handle, "feedback": feedback, "t0": t0, "n0": n0}

    def finish(g, timeout=30.0):
        if not g["handle"].accepted:
            return {"accepted": False}
        res = wait_future(g["handle"].get_result_async(), timeout, "the goal result")
        sleep(settle)  # the on_stop message and anything in flight
        with peer.lock:
            cmds = [c for at, c in peer.commands[g["n0"]:]]
        fb = g["feedback"]
        return {
            "accepted": True,
            "status": int(res.status),
            "success": bool(res.result.success),
            "reason": res.result.reason,
            "steps": int(res.result.steps),
            "recording": res.result.recording,
            "commands": len(cmds),
            "last_two_equal": len(cmds) >= 2 and cmds[-1] == cmds[-2],
            "feedback_n": len(fb),
            "feedback_span_s": (fb[-1]["t"] - fb[0]["t"]) if len(fb) >= 2 else 0.0,
            "feedback_statuses": sorted({f["status"] for f in fb}),
            "feedback_last": fb[-1] if fb else None,
        }

    def quiet(label, seconds=1.0):
        t0 = time.monotonic()
        sleep(seconds)
        out[label] = peer.commands_since(t0)

    sleep(1.0)
    quiet("no_goal")
    out["diag_idle"] = diag_after(peer, time.monotonic())
    # 1. A time limit.
    out["duration"] = finish(send(task="", max_duration_s=1.5))
    quiet("after_duration")
    # 2. A second goal while one runs; ~/end_episode's verdict.
    g = send(max_duration_s=0.0)
    sleep(0.5)
    out["diag_running"] = diag_after(peer, time.monotonic())
    out["second"] = finish(send(max_duration_s=1.0))
    end_pub.publish(Bool(data=True))
    out["ended"] = finish(g)
    # 3. Cancel.
    g = send(max_duration_s=0.0)
    sleep(0.7)
    wait_future(g["handle"].cancel_goal_async(), 10, "the cancel response")
    out["cancelled"] = finish(g)
    # 4. Goals with bad fields.
    out["negative"] = finish(send(max_duration_s=-1.0))
    out["long_task"] = finish(send(task="x" * 3000, max_duration_s=1.0))
    out["unknown_policy"] = finish(send(policy="nope", max_duration_s=1.0))
    out["record"] = finish(send(record=True, max_duration_s=1.0))
    # 5. E-stop: aborts; refused while latched; ~/reset clears it.
    g = send(max_duration_s=0.0)
    sleep(0.7)
    peer.estop_pub.publish(Bool(data=True))
    out["estop"] = finish(g)
    out["while_latched"] = finish(send(max_duration_s=1.0))
    out["reset"] = peer.call(peer.reset_client, Trigger.Request())
    g = send(max_duration_s=0.0)
    sleep(0.5)
    end_pub.publish(Bool(data=False))
    out["after_reset"] = finish(g)
    # 6. Takeover: the episode goes on, nothing commanded meanwhile.
    g = send(max_duration_s=0.0)
    sleep(0.7)
    peer.intervention_pub.publish(Bool(data=True))
    sleep(settle)
    t0 = time.monotonic()
    sleep(1.0)
    out["during_intervention"] = peer.commands_since(t0)
    with peer.lock:
        out["intervention_status"] = g["feedback"][-1]["status"] if g["feedback"] else None
    peer.intervention_pub.publish(Bool(data=False))
    sleep(settle)
    t0 = time.monotonic()
    sleep(1.0)
    out["after_intervention"] = peer.commands_since(t0)
    end_pub.publish(Bool(data=True))
    out["intervention"] = finish(g)
    # 7. Stale inputs (the joints stop): aborted after episode_stale_timeout_s.
    g = send(max_duration_s=0.0)
    sleep(0.7)
    peer.joints_mode = None
    t_stale = time.monotonic()
    out["stale"] = finish(g)
    out["stale_after_s"] = time.monotonic() - t_stale
    peer.joints_mode = "good"
    sleep(0.5)
    # 8. Watchdog: heartbeats stop -> aborted; refused until they are back.
    g = send(max_duration_s=0.0)
    sleep(0.7)
    peer.heartbeats = False
    out["watchdog"] = finish(g)
    out["no_heartbeat"] = finish(send(max_duration_s=1.0))
    peer.heartbeats = True
    sleep(0.5)
    out["heartbeat_back"] = finish(send(max_duration_s=1.0))
    out["diag_end"] = diag_after(peer, time.monotonic())
    return out


def scenario_policy_switch(peer: Peer, cfg: dict) -> dict:
    """`policies` with two policies and `episode_mode: goal`: goals pick `a`, `b`, "" (the
    active one: `b`), `a` again; each goal's commands, the time from its acceptance to its
    first command, and /diagnostics while `b` runs."""
    node = cfg.get("node_name", "policy_node")
    client, RunPolicy = run_policy_client(peer, cfg)
    peer.joints_mode, peer.images_mode = "good", "good"
    sleep(1.0)
    out = {"goals": []}
    for policy in cfg.get("order", ["a", "b", "", "a"]):
        goal = RunPolicy.Goal()
        goal.policy = policy
        goal.max_duration_s = float(cfg.get("duration_s", 1.0))
        n0 = peer.n_commands()
        handle = wait_future(client.send_goal_async(goal), 15, "the goal response")
        accepted_at = time.monotonic()
        if not handle.accepted:
            out["goals"].append({"policy": policy, "accepted": False})
            continue
        wait_until(lambda: peer.n_commands() > n0, 10, "the goal's first command")
        with peer.lock:
            first_at = peer.commands[n0][0]
        diag = None
        if policy == "b":
            t = time.monotonic()
            wait_until(lambda: any(d["t"] > t for d in peer.diagnostics), 5, "a /diagnostics message")
            with peer.lock:
                diag = next(d for d in peer.diagnostics if d["t"] > t)
        res = wait_future(handle.get_result_async(), 30, "the goal result")
        sleep(0.3)
        with peer.lock:
            cmds = [c for _, c in peer.commands[n0:]]
        out["goals"].append({
            "policy": policy,
            "accepted": True,
            "reason": res.result.reason,
            "steps": int(res.result.steps),
            "commands": cmds,
            "first_command_s": first_at - accepted_at,
            "diagnostics": diag,
        })
    out.update(observation_json(peer))
    return out


def scenario_home_moves(peer: Peer, cfg: dict) -> dict:
    """`home_before_episode` and `home_after_episode`: one goal of `duration_s`; every command
    from the goal on, until `after_s` after its result; a goal sent right after the result
    (refused while the robot moves home)."""
    node = cfg.get("node_name", "policy_node")
    client, RunPolicy = run_policy_client(peer, cfg)
    peer.joints_mode, peer.images_mode = "good", "good"
    sleep(1.0)
    goal = RunPolicy.Goal()
    goal.max_duration_s = float(cfg.get("duration_s", 2.0))
    statuses = []
    n0 = peer.n_commands()
    handle = wait_future(
        client.send_goal_async(goal, feedback_callback=lambda m: statuses.append(m.feedback.status)),
        15, "the goal response")
    if not handle.accepted:
        raise RuntimeError("the goal was refused")
    res = wait_future(handle.get_result_async(), 60, "the goal result")
    n_at_result = peer.n_commands()
    again = wait_future(client.send_goal_async(goal), 15, "the second goal's response")
    sleep(float(cfg.get("after_s", 3.0)))
    with peer.lock:
        cmds = [c for _, c in peer.commands[n0:]]
    return {
        "reason": res.result.reason,
        "steps": int(res.result.steps),
        "commands": cmds,
        "commands_at_result": n_at_result - n0,
        "statuses": sorted(set(statuses)),
        "second_accepted": bool(again.accepted),
        **observation_json(peer),
    }


def scenario_record(peer: Peer, cfg: dict) -> dict:
    """A recorded episode (`record: true`) on the moving demo observation, with a takeover in
    the middle; the recording read back with `rosbags` (topics, counts, custom data, the
    commands, the first tick record); then a goal with record_dir set (live) to a path that
    cannot be created (refused)."""
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    node = cfg.get("node_name", "policy_node")
    client, RunPolicy = run_policy_client(peer, cfg)
    peer.obs_mode = "demo"
    peer.joints_mode, peer.images_mode = "good", "good"
    sleep(1.0)
    goal = RunPolicy.Goal()
    goal.task = cfg.get("task", "")
    goal.max_duration_s = float(cfg.get("duration_s", 3.0))
    goal.record = True
    n0 = peer.n_commands()
    handle = wait_future(client.send_goal_async(goal), 15, "the goal response")
    if not handle.accepted:
        raise RuntimeError("the recorded goal was refused")
    sleep(1.2)
    peer.intervention_pub.publish(Bool(data=True))
    sleep(0.5)
    peer.intervention_pub.publish(Bool(data=False))
    res = wait_future(handle.get_result_async(), 60, "the goal result")
    sleep(0.3)
    with peer.lock:
        received = [c for _, c in peer.commands[n0:]]
    out = {
        "reason": res.result.reason,
        "steps": int(res.result.steps),
        "recording": res.result.recording,
        "received": received,
    }
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    counts, commands, first_tick, types, statuses = {}, [], None, {}, {}
    with Reader(res.result.recording) as reader:
        for c in reader.connections:
            counts[c.topic] = c.msgcount
            types[c.topic] = c.msgtype
        for conn, stamp, raw in reader.messages():
            if conn.topic == cfg.get("command_topic", "/joint_commands"):
                msg = typestore.deserialize_cdr(raw, conn.msgtype)
                commands.append([float(v) for v in msg.data])
            elif conn.topic.endswith("/episode_ticks"):
                tick = json.loads(typestore.deserialize_cdr(raw, conn.msgtype).data)
                first_tick = first_tick or tick
                statuses[tick["status"]] = statuses.get(tick["status"], 0) + 1
    out.update({"counts": counts, "types": types, "commands": commands, "first_tick": first_tick,
                "tick_statuses": statuses})
    import yaml

    with open(f"{res.result.recording}/metadata.yaml") as f:
        out["custom_data"] = yaml.safe_load(f)["rosbag2_bagfile_information"].get("custom_data") or {}
    # An unwritable record_dir: the goal is refused, nothing starts.
    params = AsyncParameterClient(peer, node)
    params.wait_for_services(timeout_sec=10.0)
    set_res = wait_future(
        params.set_parameters([Parameter("record_dir", value=cfg["bad_record_dir"])]), 10, "set record_dir")
    out["set_bad_dir"] = bool(set_res.results[0].successful)
    n1 = peer.n_commands()
    bad = wait_future(client.send_goal_async(goal), 15, "the goal response")
    out["bad_dir_accepted"] = bool(bad.accepted)
    sleep(0.5)
    out["bad_dir_commands"] = peer.n_commands() - n1
    return out


SCENARIOS = {
    "rate_offline": scenario_rate_offline,
    "reset_enable": scenario_reset_enable,
    "silent_camera": scenario_silent_camera,
    "bad_messages": scenario_bad_messages,
    "multicam": scenario_multicam,
    "stream": scenario_stream,
    "quiet": scenario_quiet,
    "outage": scenario_outage,
    "demo": scenario_demo,
    "bench": scenario_bench,
    "lifecycle_walk": scenario_lifecycle_walk,
    "failed_configure": scenario_failed_configure,
    "policy_swap": scenario_policy_swap,
    "live_params": scenario_live_params,
    "action_chunk": scenario_action_chunk,
    "task_topic": scenario_task_topic,
    "lifecycle_bench": scenario_lifecycle_bench,
    "safety": scenario_safety,
    "episodes": scenario_episodes,
    "policy_switch": scenario_policy_switch,
    "home_moves": scenario_home_moves,
    "record": scenario_record,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--config", default="{}", help="JSON object: topics, cameras, command_type, ...")
    args = ap.parse_args()
    cfg = json.loads(args.config)
    rclpy.init()
    peer = Peer(cfg)
    executor = SingleThreadedExecutor()
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        result = SCENARIOS[args.scenario](peer, cfg)
        result["ok"] = True
    except Exception as e:  # reported to the Rust test, which prints it
        result = {"ok": False, "error": f"{type(e).__name__}: {e}", "commands_received": peer.n_commands()}
    print("RESULT " + json.dumps(result), flush=True)
    # Stop spinning and join the thread before tearing down, or the C++ side aborts at exit.
    executor.shutdown(timeout_sec=2.0)
    spinner.join(timeout=5.0)
    peer.destroy_node()
    rclpy.try_shutdown()
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
