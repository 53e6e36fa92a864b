#!/usr/bin/env python3
"""Record what policy_node publishes on several command channels (rclpy): the receiving
half of the I/O map replay test (tests/io_map_ros/replay.rs).

Each ``--channel TOPIC:TYPE`` (TYPE ``Float64MultiArray``, ``Float64``, ``JointTrajectory``
(its first point) or ``Twist``) is subscribed; one JSON line per message is printed as it
arrives: ``CMD {"topic", "clock_ns": newest /clock seen, "data": [...]}``. Prints ``READY``
once every channel's publisher is matched. Runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import rclpy
from geometry_msgs.msg import Twist
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Float64, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

TYPES = {
    "Float64MultiArray": (Float64MultiArray, lambda m: list(m.data)),
    "Float64": (Float64, lambda m: [m.data]),
    "JointTrajectory": (JointTrajectory, lambda m: list(m.points[0].positions) if m.points else []),
    "Twist": (Twist, lambda m: [m.linear.x, m.linear.y, m.linear.z, m.angular.x, m.angular.y, m.angular.z]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channel", action="append", required=True, metavar="TOPIC:TYPE")
    parser.add_argument("--discovery-timeout", type=float, default=40.0)
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("channel_recorder")
    state = {"clock_ns": None}

    def on_clock(msg: Clock) -> None:
        state["clock_ns"] = msg.clock.sec * 1_000_000_000 + msg.clock.nanosec

    node.create_subscription(Clock, "/clock", on_clock, QoSProfile(depth=50))
    topics = []
    for spec in args.channel:
        topic, kind = spec.rsplit(":", 1)
        cls, values = TYPES[kind]

        def on_message(msg, topic=topic, values=values) -> None:
            line = {"topic": topic, "clock_ns": state["clock_ns"], "data": values(msg)}
            print("CMD " + json.dumps(line), flush=True)

        node.create_subscription(cls, topic, on_message, QoSProfile(depth=200))
        topics.append(topic)

    deadline = time.monotonic() + args.discovery_timeout
    while any(node.count_publishers(t) < 1 for t in topics):
        if time.monotonic() > deadline:
            missing = [t for t in topics if node.count_publishers(t) < 1]
            print(f"ERROR no publisher on {missing} after {args.discovery_timeout} s", flush=True)
            return 2
        rclpy.spin_once(node, timeout_sec=0.01)
    print("READY", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
