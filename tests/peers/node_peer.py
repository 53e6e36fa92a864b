#!/usr/bin/env python3
"""rclpy peer for the policy_node integration tests (tests/node_integration.rs).

Plays a robot: publishes joint states and camera images at 30 Hz (the synthetic demo of
tools/synthetic_demo.py, or one constant observation), records what policy_node publishes
(commands, /diagnostics), calls its services, and prints one line ``RESULT {json}`` on
stdout at the end. The Rust test asserts on that JSON (and on the node's log).

Usage: node_peer.py SCENARIO [--config JSON]

Scenarios:
  rate_offline        constant observation; command count over 3 s, first 20 commands,
                      the observation sent (for the offline comparison), /diagnostics
  reset_enable        constant observation; ~/reset mid-chunk, ~/enable false / true
  silent_camera       demo playback; the camera goes silent for 1.6 s, then returns
  bad_messages        wrong encoding, truncated image, unknown joint names, wrong state
                      length (1 s each, no good data of that kind), then good data
  multicam            constant observation on two cameras (one raw, one PNG compressed),
                      first 12 commands (any command type)
  stream              demo playback until killed; prints STREAMING at the first command
  outage              constant observation until --config stop_file exists (the test takes
                      the inference server away and brings it back meanwhile); prints
                      STREAMING at the first command; reports every command with its time,
                      the longest gap between commands and every /diagnostics
  demo                demo playback for --config duration seconds; prints a report
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
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
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
        self.enable_client = self.create_client(SetBool, f"/{node}/enable")
        self.timer = self.create_timer(1.0 / RATE_HZ, self.publish)

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
            }
        with self.lock:
            self.commands.append((time.monotonic(), payload))

    def on_diagnostics(self, msg):
        for st in msg.status:
            if st.name.endswith(": policy"):
                entry = {
                    "t": time.monotonic(),
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
    wait_until(lambda: len(peer.diagnostics) > 0, 5, "a /diagnostics message")
    with peer.lock:
        diag = peer.diagnostics[-1]
    params = parameter_services(peer, cfg.get("node_name", "policy_node"))
    return {
        "parameters": params,
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
    sleep(0.3)  # commands already on the wire
    mark_off = peer.n_commands()
    sleep(1.0)
    after_off = peer.n_commands()
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
    peer.joints_mode, peer.images_mode = "good", "good"
    first_command(peer)
    t0 = time.monotonic()
    sent0 = (peer.sent_joint_msgs, peer.sent_image_msgs)
    sleep(float(cfg.get("duration_s", 20.0)))
    t1 = time.monotonic()
    with peer.lock:
        at = [a for a, _ in peer.commands if t0 <= a < t1]
        diag = peer.diagnostics[-1] if peer.diagnostics else None
    gaps = np.diff(np.array(at)) * 1e3 if len(at) > 1 else np.zeros(1)
    return {
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
        "diagnostics": diag,
    }


SCENARIOS = {
    "rate_offline": scenario_rate_offline,
    "reset_enable": scenario_reset_enable,
    "silent_camera": scenario_silent_camera,
    "bad_messages": scenario_bad_messages,
    "multicam": scenario_multicam,
    "stream": scenario_stream,
    "outage": scenario_outage,
    "demo": scenario_demo,
    "bench": scenario_bench,
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
