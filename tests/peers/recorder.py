#!/usr/bin/env python3
"""Record what policy_node commands (rclpy): the receiving half of tests/replay_live.rs.

Subscribes to the command topic (``std_msgs/Float64MultiArray``) and to ``/clock``, and
prints one JSON line per command as it arrives:
``CMD {"recv_unix": time.time(), "clock_ns": newest /clock seen, "data": [...]}``.
Prints ``READY`` once the node's command publisher is matched. Runs until SIGINT/SIGTERM.

Usage: recorder.py [--topic /joint_commands] [--discovery-timeout S]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Float64MultiArray


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", default="/joint_commands")
    parser.add_argument("--discovery-timeout", type=float, default=40.0)
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("command_recorder")
    state = {"clock_ns": None}

    def on_clock(msg: Clock) -> None:
        state["clock_ns"] = msg.clock.sec * 1_000_000_000 + msg.clock.nanosec

    def on_command(msg: Float64MultiArray) -> None:
        line = {"recv_unix": time.time(), "clock_ns": state["clock_ns"], "data": list(msg.data)}
        print("CMD " + json.dumps(line), flush=True)

    node.create_subscription(Clock, "/clock", on_clock, QoSProfile(depth=50))
    node.create_subscription(Float64MultiArray, args.topic, on_command, QoSProfile(depth=200))

    deadline = time.monotonic() + args.discovery_timeout
    while node.count_publishers(args.topic) < 1:
        if time.monotonic() > deadline:
            print(f"ERROR no publisher on {args.topic} after {args.discovery_timeout} s", flush=True)
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
