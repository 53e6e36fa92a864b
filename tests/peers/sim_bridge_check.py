#!/usr/bin/env python3
"""The simulated ALOHA bridge's own bad-input handling (tools/sim/bridge.py), for
tests/sim_aloha.rs: a peer publishes one good command on the four controller channels, then
bad ones (wrong width, non-finite values, unknown joint names, no points), then stops, as a
node that stopped publishing would. The bridge then steps 25 periods in realtime mode.

Prints ``RESULT {json}``: ``accepted`` and ``refused`` (by channel and reason) as the bridge
counted them, ``good`` (the good command), ``applied`` (each step's action), ``held_steps``
and ``longest_gap_ms``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "sim"))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from bridge import ARM_JOINTS, CHANNELS, EpisodeLog, SimBridge, Spinner, run_realtime  # noqa: E402


def main() -> int:
    rclpy.init()
    bridge = SimBridge("realtime")
    peer = rclpy.create_node("sim_bridge_check_peer")
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {
        c: peer.create_publisher(JointTrajectory if c.endswith("arm") else Float64MultiArray, topic, qos)
        for c, (topic, _) in CHANNELS.items()
    }
    spinner = Spinner(bridge, peer)

    def wait(pred, what, timeout=20.0):
        t0 = time.monotonic()
        while not pred():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{what}: accepted {bridge.accepted}, refused {bridge.refused}")
            time.sleep(0.01)

    def arm(side, positions, names=None, points=True):
        m = JointTrajectory()
        m.joint_names = list(ARM_JOINTS[side] if names is None else names)
        if points:
            m.points = [JointTrajectoryPoint(positions=[float(v) for v in positions])]
        return m

    def grip(values):
        return Float64MultiArray(data=[float(v) for v in values])

    wait(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), "discovery")
    bridge.sim.reset(0)
    good = np.array(bridge.sim.qpos())
    good[[1, 8]] -= 0.1  # a visible command: both shoulders lifted
    good[[6, 13]] = 0.7
    pubs["left_arm"].publish(arm("left", good[0:6]))
    pubs["left_gripper"].publish(grip(good[6:7]))
    pubs["right_arm"].publish(arm("right", good[7:13]))
    pubs["right_gripper"].publish(grip(good[13:14]))
    wait(lambda: all(v == 1 for v in bridge.accepted.values()), "the good command")

    bad = [
        ("left_arm", arm("left", good[0:5])),  # 5 positions
        ("left_arm", arm("left", np.r_[good[0:5], np.nan])),  # NaN
        ("left_arm", arm("left", good[0:6], names=ARM_JOINTS["right"])),  # the other arm's joints
        ("right_arm", arm("right", good[7:13], points=False)),  # no points
        ("right_arm", arm("right", np.r_[good[7:12], np.inf])),  # inf
        ("left_gripper", grip([0.5, 0.5])),  # 2 values
        ("right_gripper", grip([])),  # none
        ("right_gripper", grip([float("nan")])),  # NaN
    ]
    for c, m in bad:
        pubs[c].publish(m)
    wait(lambda: bridge.refused_total() == len(bad), "the bad commands")

    # The peer has stopped publishing: 25 realtime steps on what the bridge holds.
    log = EpisodeLog(seed=0)
    run_realtime(bridge, log, first_command_timeout_s=5.0, max_steps=25)
    result = {
        "accepted": bridge.accepted,
        "refused": bridge.refused,
        "good": good.tolist(),
        "applied": np.asarray(log.actions).tolist(),
        "held_steps": log.gap_steps,
        "longest_gap_ms": log.longest_gap_ms,
    }
    print("RESULT " + json.dumps(result), flush=True)
    spinner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
