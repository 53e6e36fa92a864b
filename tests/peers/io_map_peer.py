#!/usr/bin/env python3
"""rclpy peer for the I/O map node tests (tests/io_map_ros/node.rs): the robot's drivers and
controllers.

Publishes one constant observation (the synthetic demo at t = 0.7 s) split across the
configured source topics at 30 Hz, records every message on the configured command
channels, calls the node's services between phases, and prints ``RESULT {json}``.

Usage: io_map_peer.py run --config JSON

Config:
  sources   [{topic, type, ...}]: ``JointState`` {names, index} (index -1: a joint the
            policy does not use, value 9.0); ``Float64MultiArray`` {index, scale};
            ``Odometry`` {linear_x, angular_z} (state indices); ``PoseStamped`` {xyz};
            ``Image`` / ``CompressedImage`` (the demo camera, 64x64)
  channels  [{topic, type}]: ``Float64MultiArray``, ``Float64``, ``Twist``,
            ``JointTrajectory``
  phases    [{name, s, silent: [topics], call}]: ``call`` one of enable_false, enable_true,
            reset, deactivate, activate, shutdown (prints ``SHUTDOWN_NOW`` for the test to
            send SIGINT to the node, then records for ``s`` seconds)
  node      the node's name (default policy_node)

RESULT: ``{"ok", "state": [6 floats], "channels": {topic: [[phase, t, [values]]...]},
"diagnostics": [{phase, level, message}], "calls": {phase: response},
"phase_starts": {phase: t}, "end_t": t}`` (times in seconds since the peer started)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import synthetic_demo as demo  # noqa: E402

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, qos_profile_sensor_data  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped, Twist  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import Float64, Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

RATE_HZ = 30.0
CONST_T = 0.7


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (zlib only)."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
DISCOVERY_TIMEOUT_S = 40.0
CHANNEL_TYPES = {
    "Float64MultiArray": Float64MultiArray,
    "Float64": Float64,
    "Twist": Twist,
    "JointTrajectory": JointTrajectory,
}


def values_of(msg) -> list:
    if isinstance(msg, Float64MultiArray):
        return list(msg.data)
    if isinstance(msg, Float64):
        return [msg.data]
    if isinstance(msg, Twist):
        return [msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z]
    if isinstance(msg, JointTrajectory):
        return list(msg.points[0].positions) if msg.points else []
    raise TypeError(type(msg))


class Peer(Node):
    def __init__(self, cfg: dict):
        super().__init__("io_map_test_peer")
        self.cfg = cfg
        self.lock = threading.Lock()
        self.phase = "start"
        self.silent: set = set()
        self.q = [float(v) for v in demo.state_at(CONST_T)]
        self.rgb = demo.render_image(CONST_T, 64, 64, "top")
        self.png = png_bytes(self.rgb)
        self.pubs = []
        for src in cfg["sources"]:
            kind = {
                "JointState": JointState,
                "Float64MultiArray": Float64MultiArray,
                "Odometry": Odometry,
                "PoseStamped": PoseStamped,
                "Image": Image,
                "CompressedImage": CompressedImage,
            }[src["type"]]
            qos = qos_profile_sensor_data if src["type"] in ("Image", "CompressedImage") else 10
            self.pubs.append((src, self.create_publisher(kind, src["topic"], qos)))
        self.records = {c["topic"]: [] for c in cfg["channels"]}
        for c in cfg["channels"]:
            self.create_subscription(
                CHANNEL_TYPES[c["type"]], c["topic"], lambda m, t=c["topic"]: self.on_channel(t, m), QoSProfile(depth=500)
            )
        self.diagnostics = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 20)
        node = cfg.get("node", "policy_node")
        self.enable = self.create_client(SetBool, f"/{node}/enable")
        self.reset = self.create_client(Trigger, f"/{node}/reset")
        self.change_state = self.create_client(ChangeState, f"/{node}/change_state")
        self.t0 = time.monotonic()
        self.create_timer(1.0 / RATE_HZ, self.publish)

    def on_channel(self, topic, msg):
        with self.lock:
            self.records[topic].append([self.phase, time.monotonic() - self.t0, values_of(msg)])

    def on_diagnostics(self, msg):
        for st in msg.status:
            if st.name.endswith(": policy"):
                values = {kv.key: kv.value for kv in st.values}
                level = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
                with self.lock:
                    self.diagnostics.append(
                        {
                            "phase": self.phase,
                            "level": level,
                            "message": st.message,
                        }
                    )

    def publish(self):
        stamp = self.get_clock().now().to_msg()
        q = self.q
        for src, pub in self.pubs:
            if src["topic"] in self.silent:
                continue
            kind = src["type"]
            if kind == "JointState":
                msg = JointState()
                msg.header.stamp = stamp
                msg.name = list(src["names"])
                msg.position = [q[i] if i >= 0 else 9.0 for i in src["index"]]
            elif kind == "Float64MultiArray":
                msg = Float64MultiArray()
                msg.data = [q[i] * src.get("scale", 1.0) for i in src["index"]]
            elif kind == "Odometry":
                msg = Odometry()
                msg.header.stamp = stamp
                msg.twist.twist.linear.x = q[src["linear_x"]]
                msg.twist.twist.angular.z = q[src["angular_z"]]
            elif kind == "PoseStamped":
                msg = PoseStamped()
                msg.header.stamp = stamp
                x, y, z = (q[i] for i in src["xyz"])
                msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = x, y, z
                msg.pose.orientation.w = 1.0
            elif kind == "Image":
                msg = Image()
                msg.header.stamp = stamp
                msg.height, msg.width = self.rgb.shape[0], self.rgb.shape[1]
                msg.encoding = "rgb8"
                msg.step = self.rgb.shape[1] * 3
                msg.data = self.rgb.tobytes()
            else:
                msg = CompressedImage()
                msg.header.stamp = stamp
                msg.format = "rgb8; png compressed rgb8"
                msg.data = self.png
            pub.publish(msg)

    def call(self, client, request, timeout=30.0):
        if not client.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT_S):
            raise RuntimeError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{client.srv_name} did not answer in {timeout} s")
            time.sleep(0.002)
        return future.result()

    def do(self, call: str):
        if call in ("enable_false", "enable_true"):
            r = self.call(self.enable, SetBool.Request(data=call == "enable_true"))
            return {"success": bool(r.success), "message": r.message}
        if call == "reset":
            r = self.call(self.reset, Trigger.Request())
            return {"success": bool(r.success), "message": r.message}
        if call in ("deactivate", "activate"):
            req = ChangeState.Request()
            req.transition = Transition(
                id=Transition.TRANSITION_DEACTIVATE if call == "deactivate" else Transition.TRANSITION_ACTIVATE,
                label=call,
            )
            r = self.call(self.change_state, req)
            return {"success": bool(r.success)}
        if call == "shutdown":
            print("SHUTDOWN_NOW", flush=True)
            return {}
        raise ValueError(call)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["run"])
    ap.add_argument("--config", default="{}")
    args = ap.parse_args()
    cfg = json.loads(args.config)
    rclpy.init()
    peer = Peer(cfg)
    ex = SingleThreadedExecutor()
    ex.add_node(peer)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    result = {"ok": True}
    try:
        # The first command on the first channel: the node is up and commanding.
        first = cfg["channels"][0]["topic"]
        deadline = time.monotonic() + 90.0
        while not peer.records[first]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no command on {first} within 90 s")
            time.sleep(0.01)
        calls = {}
        starts = {}
        for phase in cfg["phases"]:
            with peer.lock:
                peer.phase = phase["name"]
                peer.silent = set(phase.get("silent", []))
                starts[phase["name"]] = time.monotonic() - peer.t0
            if phase.get("call"):
                calls[phase["name"]] = peer.do(phase["call"])
            time.sleep(phase["s"])
        with peer.lock:
            result.update(
                {
                    "state": peer.q,
                    "channels": peer.records,
                    "diagnostics": peer.diagnostics,
                    "calls": calls,
                    "phase_starts": starts,
                    "end_t": time.monotonic() - peer.t0,
                }
            )
    except Exception as e:  # noqa: BLE001 - reported to the test
        result = {"ok": False, "error": f"{e}\n{traceback.format_exc()}"}
    print("RESULT " + json.dumps(result), flush=True)
    ex.shutdown()
    peer.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
