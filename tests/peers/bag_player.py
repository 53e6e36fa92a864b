#!/usr/bin/env python3
"""Play a rosbag2 recording in real time with /clock (rclpy + rosbags): the live half of
the replay tests (tests/replay_live.rs).

Every message is published as the raw CDR bytes stored in the bag (rclpy's serialized
publish), on its recorded topic and type. Sim time follows the bag: ``/clock`` is published
at each message's log time (just before the message) and at every multiple of the control
period between the first and the last message, so a ROS timer on sim time (rcl keeps timer
phases on multiples of the period) fires exactly on the replay's tick grid, and the node's
clock reads the tick's time while it ticks.

Usage: bag_player.py BAG [--rate HZ] [--speed X] [--clock-subscribers N] [--settle S]
                      [--discovery-timeout S] [--duration S [--loop-gap S]]

``--speed X``: sim time runs at X times real time (default 1). Below 1, a subscriber that
ticks on its own clock instead of ``/clock`` ticks more often than the bag's tick grid.

Looping (``--duration S``, tools/run_demo.sh): the bag is played again and again, each
repetition shifted forward in time by the bag's span plus ``--loop-gap`` (default 0.5 s,
longer than the demo's ``max_observation_age_ms``, so that the node sees stale data between
repetitions and starts each one from a fresh chunk, as an offline replay starts), rounded up
to a whole number of control periods (so the tick grid and the samples' phase on it stay as
in the bag), until ``S`` seconds of bag time have been played; the last repetition may be cut
short. The repetitions after the first are republished with their ``header.stamp`` shifted
by the same amount (deserialized by rclpy and published as messages); the first is the bag's
raw bytes. Without ``--duration`` the bag is played once, as recorded.

Real time: events are played at their bag time offsets from the first message. Where this
process falls behind (a loaded machine), sim time pauses rather than catching up in a burst,
so ``/clock`` never advances by several periods at once.

Prints ``READY {json}`` once every subscriber is matched (one on each of the bag's topics,
``--clock-subscribers`` on /clock), then ``DONE {json}`` with the timing of the playback: ``sim0_ns`` (first
message), ``wall0_unix`` (``time.time()`` when it was played), ``tick_walls`` (``[tick time
ns, time.time()]`` just before each control tick's ``/clock`` was published), ``max_late_ms`` / ``slip_ms`` (the
largest lateness, and the total pause sim time took to absorb it), message and clock
counts, and ``loops`` (one ``{"offset_ns", "start_ns", "end_ns", "messages"}`` per repetition:
its time shift, and the sim time of its first and last message).
Exit status 2 when subscribers do not show up in time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import rclpy
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock


def msg_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy class ``sensor_msgs.msg.Image``."""
    pkg, sub, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


def repeat(messages, types, period_ns, duration_s, gap_s):
    """The playback: ``messages`` once (``duration_s`` None), or repeated and time-shifted to
    fill ``duration_s`` (see the module docs). Returns (messages, loops)."""
    first, last = messages[0][0], messages[-1][0]
    if duration_s is None:
        return messages, [{"offset_ns": 0, "start_ns": first, "end_ns": last, "messages": len(messages)}]
    if not duration_s > 0 or gap_s < 0:
        raise SystemExit("bag_player.py: --duration must be > 0 and --loop-gap >= 0")
    shift = -(-(last - first + int(gap_s * 1e9)) // period_ns) * period_ns
    end = first + int(duration_s * 1e9)
    out, loops = [], []
    k = 0
    while first + k * shift < end:
        offset = k * shift
        played = [m for m in messages if m[0] + offset < end]
        for ts, topic, raw in played:
            payload = raw
            if offset:
                msg = deserialize_message(raw, msg_class(types[topic]))
                if hasattr(msg, "header"):
                    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec + offset
                    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                # Published as a message: rclpy serializes it exactly (`serialize_message`
                # output has trailing bytes).
                payload = msg
            out.append((ts + offset, topic, payload))
        loops.append(
            {"offset_ns": offset, "start_ns": first + offset, "end_ns": played[-1][0] + offset, "messages": len(played)}
        )
        k += 1
    return out, loops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path)
    parser.add_argument("--rate", type=float, default=30.0, help="the node's control_rate_hz")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds to wait after matching")
    parser.add_argument("--discovery-timeout", type=float, default=40.0)
    parser.add_argument(
        "--clock-subscribers", type=int, default=1, help="subscribers of /clock to wait for (node, recorder, ...)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="loop the bag until this many seconds of bag time are played"
    )
    parser.add_argument(
        "--loop-gap", type=float, default=0.5, help="seconds of /clock without messages between repetitions"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="sim seconds per real second")
    args = parser.parse_args()
    if not args.speed > 0:
        parser.error("--speed must be > 0")
    # The node's period: Duration::from_secs_f64(1 / rate) in whole nanoseconds.
    if not args.rate > 0:
        parser.error("--rate must be > 0")
    period_ns = int(1e9 / args.rate)

    with Reader(args.bag) as reader:
        conns = {c.id: c for c in reader.connections}
        messages = [(ts, conns[c.id].topic, bytes(raw)) for c, ts, raw in reader.messages()]
        types = {c.topic: c.msgtype for c in reader.connections}
    messages.sort(key=lambda m: m[0])
    messages, loops = repeat(messages, types, period_ns, args.duration, args.loop_gap)
    first, last = messages[0][0], messages[-1][0]

    rclpy.init()
    node = rclpy.create_node("bag_player")
    qos = QoSProfile(depth=50)
    pubs = {topic: node.create_publisher(msg_class(t), topic, qos) for topic, t in types.items()}
    clock_pub = node.create_publisher(Clock, "/clock", qos)

    deadline = time.monotonic() + args.discovery_timeout
    waiting = [(t, p, 1) for t, p in pubs.items()] + [("/clock", clock_pub, args.clock_subscribers)]
    while any(p.get_subscription_count() < n for _, p, n in waiting):
        if time.monotonic() > deadline:
            missing = [t for t, p, n in waiting if p.get_subscription_count() < n]
            print(f"ERROR no subscriber on {missing} after {args.discovery_timeout} s", flush=True)
            return 2
        time.sleep(0.01)
    time.sleep(args.settle)
    print("READY " + json.dumps({"topics": sorted(pubs), "messages": len(messages)}), flush=True)

    # Events: (time, clock?, message index or None), clock before messages at equal times.
    ticks = range(-(-first // period_ns) * period_ns, last + 1, period_ns)
    times = sorted(set(ticks) | {m[0] for m in messages})
    by_time: dict[int, list[int]] = {}
    for i, m in enumerate(messages):
        by_time.setdefault(m[0], []).append(i)

    tick_set = set(ticks)
    wall0_mono = time.monotonic()
    wall0_unix = time.time()
    # When this process falls behind (a loaded machine), sim time pauses instead of catching
    # up in a burst: bursts would advance /clock by several periods at once and make a
    # subscriber's timer skip ticks. `slip` is the pause accumulated so far.
    slip = 0.0
    max_late = 0.0
    tick_walls = []
    for t in times:
        target = wall0_mono + slip + (t - first) / 1e9 / args.speed
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)
        elif now - target > 0.002:
            max_late = max(max_late, now - target)
            slip += now - target
        clock = Clock()
        clock.clock.sec, clock.clock.nanosec = divmod(t, 1_000_000_000)
        if t in tick_set:
            # Taken before publishing: nothing caused by this /clock can come earlier.
            tick_walls.append([t, time.time()])
        clock_pub.publish(clock)
        for i in by_time.get(t, ()):
            _, topic, payload = messages[i]
            pubs[topic].publish(payload)
    # Let the last messages leave before the publishers go away.
    time.sleep(0.3)
    print(
        "DONE "
        + json.dumps(
            {
                "sim0_ns": first,
                "wall0_unix": wall0_unix,
                "period_ns": period_ns,
                "messages": len(messages),
                "clock_ticks": len(times),
                "max_late_ms": max_late * 1e3,
                "slip_ms": slip * 1e3,
                "tick_walls": tick_walls,
                "loops": loops,
            }
        ),
        flush=True,
    )
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
