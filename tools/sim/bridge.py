"""The simulated ALOHA robot on ROS 2: gym-aloha's transfer-cube task behind the topics a
real bimanual robot has, for policy_node and its I/O map (``config/io_map_sim_aloha.yaml``).

Publishes (every step, stamped with the step's time):
- ``/joint_states`` (``sensor_msgs/JointState``): the 14 joints, ``left_waist`` ...
  ``left_gripper``, ``right_waist`` ... ``right_gripper`` (grippers normalised 0..1, open 1);
- ``/cube/pose`` (``geometry_msgs/PoseStamped``, frame ``world``): the cube's pose;
- ``/clock`` (``rosgraph_msgs/Clock``), in ``lockstep`` mode only;
- ``/cameras/top/image_raw`` (``sensor_msgs/Image``, rgb8) when ``camera`` is given.

Applies four controller channels, as ALOHA's controllers take them:
``/left_arm_controller/joint_trajectory`` and ``/right_arm_controller/joint_trajectory``
(``trajectory_msgs/JointTrajectory``, 6 named joints; the first point is the command) and
``/left_gripper_controller/commands`` and ``/right_gripper_controller/commands``
(``std_msgs/Float64MultiArray``, one value 0..1).

A command of the wrong width, with unknown joint names, without points or with a non-finite
value is refused whole, counted by channel and reason (``refused``), logged, and never
applied. A node that stops publishing leaves the last command applied (held); each step
without a fresh command is counted and the longest gap reported (``gaps``).

Modes:
- ``lockstep``: sim time. Each step publishes the state stamped ``t``, then ``/clock = t``;
  the node (``use_sim_time``, ``sim_input_wait_ms``) ticks on it, and the bridge steps the
  physics only once the four commands of that tick are in (one new message on each channel:
  the node publishes one per channel per tick; a channel running ahead is counted as
  ``desync``). The result does not depend on the machine's speed.
- ``realtime``: wall clock. The physics steps at 50 Hz whatever the node does; each step
  applies the newest command received, as a robot's controllers would.

tools/sim/node_eval.py (``tools/sim_eval.sh``) drives episodes through the node's
``~/run_policy``; alone, ``python tools/sim/bridge.py --mode realtime [--seed S] [--camera WxH]``
runs episodes back to back for a node in ``episode_mode: continuous``. Callbacks run on
rclpy's single-threaded executor (``Spinner``).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from aloha_sim import DT, JOINT_NAMES, STEPS, EpisodeLog, TransferCube

ARM_JOINTS = {side: [n for n in JOINT_NAMES if n.startswith(side) and not n.endswith("gripper")] for side in ("left", "right")}
CHANNELS = {
    "left_arm": ("/left_arm_controller/joint_trajectory", slice(0, 6)),
    "left_gripper": ("/left_gripper_controller/commands", slice(6, 7)),
    "right_arm": ("/right_arm_controller/joint_trajectory", slice(7, 13)),
    "right_gripper": ("/right_gripper_controller/commands", slice(13, 14)),
}
PERIOD_NS = int(round(DT * 1e9))
# Realtime: a step whose newest command is older than this many periods is a held step.
GAP_PERIODS = 1.5


def to_time(ns: int) -> TimeMsg:
    return TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class Spinner:
    """rclpy's single-threaded executor spinning ``nodes`` on a thread of its own (its
    multi-threaded one delays callbacks by up to seconds here). ``stop()`` shuts the context
    down and joins the thread before the interpreter exits: a spin thread still waiting in
    rcl at exit aborts the process ("terminate called without an active exception")."""

    def __init__(self, *nodes) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor()
        for n in nodes:
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # ExternalShutdownException, or a wait cut short by the shutdown
            if rclpy.ok():
                raise

    def stop(self) -> None:
        rclpy.try_shutdown()
        self.thread.join(timeout=10)
        self.executor.shutdown(timeout_sec=5)


@dataclass
class Received:
    """What came in on the four channels since the episode's start."""

    queues: dict = field(default_factory=lambda: {c: [] for c in CHANNELS})  # values, in order
    used: int = 0  # lockstep: ticks applied
    desync: int = 0  # lockstep: ticks at which a channel had more than one message pending
    newest: dict = field(default_factory=dict)  # channel -> (monotonic s, values)


class SimBridge(Node):
    def __init__(self, mode: str, camera: tuple[int, int] | None = None, name: str = "aloha_sim_bridge"):
        super().__init__(name)
        if mode not in ("lockstep", "realtime"):
            raise ValueError(f"mode must be lockstep or realtime, got {mode!r}")
        self.mode = mode
        self.camera = camera
        self.sim = TransferCube()
        self.cond = threading.Condition()
        self.rx = Received()
        self.refused: dict[str, dict[str, int]] = {c: {} for c in CHANNELS}
        self.accepted = {c: 0 for c in CHANNELS}
        self.sim_ns = 0  # lockstep: the time of the last /clock published
        self.desync_total = 0
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.joint_pub = self.create_publisher(JointState, "/joint_states", reliable)
        self.cube_pub = self.create_publisher(PoseStamped, "/cube/pose", reliable)
        self.clock_pub = self.create_publisher(Clock, "/clock", reliable) if mode == "lockstep" else None
        self.image_pub = self.create_publisher(Image, "/cameras/top/image_raw", 5) if camera else None
        for channel, (topic, _) in CHANNELS.items():
            side = channel.split("_")[0]
            if channel.endswith("arm"):
                cb = (lambda msg, c=channel, s=side: self._on_arm(c, s, msg))
                self.create_subscription(JointTrajectory, topic, cb, reliable)
            else:
                cb = (lambda msg, c=channel, s=side: self._on_gripper(c, s, msg))
                self.create_subscription(Float64MultiArray, topic, cb, reliable)

    # --- commands in ---------------------------------------------------------------------- #

    def _refuse(self, channel: str, reason: str) -> None:
        with self.cond:
            n = self.refused[channel].get(reason, 0) + 1
            self.refused[channel][reason] = n
        if n <= 3 or n % 100 == 0:
            self.get_logger().warning(f"refused a command on {CHANNELS[channel][0]} ({n}x): {reason}; not applied")

    def _on_arm(self, channel: str, side: str, msg: JointTrajectory) -> None:
        expected = ARM_JOINTS[side]
        if list(msg.joint_names) != expected:
            return self._refuse(channel, f"joint_names {list(msg.joint_names)} are not {expected}")
        if not msg.points:
            return self._refuse(channel, "no points")
        pos = np.asarray(msg.points[0].positions, dtype=np.float64)
        if pos.shape != (6,):
            return self._refuse(channel, f"{pos.size} positions; expected 6")
        if not np.all(np.isfinite(pos)):
            return self._refuse(channel, "non-finite position")
        with self.cond:
            self.accepted[channel] += 1
            self.rx.queues[channel].append(pos)
            self.rx.newest[channel] = (time.monotonic(), pos)
            self.cond.notify_all()

    def _on_gripper(self, channel: str, side: str, msg: Float64MultiArray) -> None:
        val = np.asarray(msg.data, dtype=np.float64)
        if val.shape != (1,):
            return self._refuse(channel, f"{val.size} values; expected 1")
        if not np.all(np.isfinite(val)):
            return self._refuse(channel, "non-finite value")
        with self.cond:
            self.accepted[channel] += 1
            self.rx.queues[channel].append(val)
            self.rx.newest[channel] = (time.monotonic(), val)
            self.cond.notify_all()

    def refused_total(self) -> int:
        with self.cond:
            return sum(sum(r.values()) for r in self.refused.values())

    def clear_commands(self) -> None:
        with self.cond:
            self.desync_total += self.rx.desync
            self.rx = Received()

    def _tick_command(self) -> np.ndarray | None:
        """The next tick's command, once each of the four channels has one more message than
        was applied: the node publishes one message per channel per tick, in tick order
        (the arms' trajectories carry no stamp: a zero stamp means "now" to a controller)."""
        pending = [len(self.rx.queues[c]) - self.rx.used for c in CHANNELS]
        if min(pending) < 1:
            return None
        if max(pending) > 1:
            self.rx.desync += 1  # a channel ran ahead: the pairing by order would be off
        action = np.empty(14)
        for c, (_, sl) in CHANNELS.items():
            action[sl] = self.rx.queues[c][self.rx.used]
        self.rx.used += 1
        return action

    def newest_command(self, held: np.ndarray) -> tuple[np.ndarray, float]:
        """Realtime: the newest value of each channel over ``held``; the age (s) of the
        oldest channel's newest message (inf before any)."""
        action = held.copy()
        now = time.monotonic()
        age = 0.0
        with self.cond:
            for channel, (_, sl) in CHANNELS.items():
                got = self.rx.newest.get(channel)
                if got is None:
                    age = math.inf
                    continue
                action[sl] = got[1]
                age = max(age, now - got[0])
        return action, age

    # --- state out ------------------------------------------------------------------------ #

    def publish_state(self, stamp_ns: int) -> None:
        stamp = to_time(stamp_ns)
        js = JointState()
        js.header.stamp = stamp
        js.name = list(JOINT_NAMES)
        js.position = [float(v) for v in self.sim.qpos()]
        self.joint_pub.publish(js)
        pose = self.sim.cube_pose()
        ps = PoseStamped()
        ps.header.stamp = stamp
        ps.header.frame_id = "world"
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(v) for v in pose[:3])
        ps.pose.orientation.w, ps.pose.orientation.x, ps.pose.orientation.y, ps.pose.orientation.z = (float(v) for v in pose[3:7])
        self.cube_pub.publish(ps)
        if self.image_pub is not None:
            w, h = self.camera
            img = self.sim.render_top(w, h)
            msg = Image(height=h, width=w, encoding="rgb8", step=3 * w, is_bigendian=0)
            msg.header.stamp = stamp
            msg.header.frame_id = "top"
            msg.data = img.tobytes()
            self.image_pub.publish(msg)

    def advance_clock(self) -> int:
        """Lockstep: publishes the state stamped with the next tick's time, then that time on
        /clock. Returns the time."""
        self.sim_ns += PERIOD_NS
        self.publish_state(self.sim_ns)
        self.clock_pub.publish(Clock(clock=to_time(self.sim_ns)))
        return self.sim_ns

    def wait_tick_command(self, timeout_s: float) -> np.ndarray | None:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                a = self._tick_command()
                if a is not None:
                    return a
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


def run_lockstep(bridge: SimBridge, log: EpisodeLog, tick_timeout_s: float, first_command_timeout_s: float,
                 video: tuple[int, int] | None = None, max_steps: int = STEPS) -> None:
    """One lockstep episode from the sim's reset state: the clock advances (the physics
    frozen) until the node's first command, then one physics step per tick."""
    held = None
    gap_started = None
    deadline = time.monotonic() + first_command_timeout_s
    while True:
        bridge.advance_clock()
        # The goal is accepted: the node's next tick commands (its first chunk is computed
        # on it); a tick without a command (a goal not started yet) is waited out, then the
        # clock advances again.
        a = bridge.wait_tick_command(tick_timeout_s if held is not None else 1.0)
        if a is None:
            if held is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no command from the node in {first_command_timeout_s} s")
                continue
            # The node missed the tick: the last command is held, the gap counted.
            a = held
            log.gap_steps += 1
            if gap_started is None:
                gap_started = time.monotonic()
                bridge.get_logger().warning(f"no command for {tick_timeout_s} s: holding the last one")
        elif gap_started is not None:
            log.longest_gap_ms = max(log.longest_gap_ms, (time.monotonic() - gap_started) * 1e3)
            gap_started = None
        held = a
        if log.step(bridge.sim, a, video, max_steps):
            return


def run_realtime(bridge: SimBridge, log: EpisodeLog, first_command_timeout_s: float,
                 video: tuple[int, int] | None = None, max_steps: int = STEPS) -> None:
    """One realtime episode: the state published at 50 Hz; from the node's first command on,
    one physics step per period with the newest command (held when none came)."""
    period = DT
    next_t = time.monotonic()
    held = bridge.sim.qpos()  # never applied before a command came
    started = False
    in_gap = False
    deadline = time.monotonic() + first_command_timeout_s
    while True:
        now = time.monotonic()
        if next_t > now:
            time.sleep(next_t - now)
        next_t += period
        action, age = bridge.newest_command(held)
        if not started:
            if math.isinf(age):
                bridge.publish_state(time.time_ns())
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no command from the node in {first_command_timeout_s} s")
                continue
            started = True
        if age > GAP_PERIODS * period:
            if not in_gap:
                bridge.get_logger().warning(f"no command for {age * 1e3:.0f} ms: holding the last one")
            in_gap = True
            log.gap_steps += 1
            log.longest_gap_ms = max(log.longest_gap_ms, age * 1e3)
        elif in_gap:
            in_gap = False
            bridge.get_logger().info(f"commands are back after a gap (longest so far {log.longest_gap_ms:.0f} ms)")
        held = action
        done = log.step(bridge.sim, action, video, max_steps)
        bridge.publish_state(time.time_ns())
        if done:
            return
        if next_t < time.monotonic() - period:
            next_t = time.monotonic()  # fell behind (a slow render): do not try to catch up


def main() -> int:
    """The bridge alone, for a node of your own (``episode_mode: continuous``): episodes back
    to back from cube seed ``--seed`` on, each until success or 400 steps; one line each."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["lockstep", "realtime"], default="realtime")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=0, help="0 = until interrupted")
    ap.add_argument("--camera", help="also publish the top camera, WxH (e.g. 160x120)")
    ap.add_argument("--reset-service", default="/policy_node/reset",
                    help="std_srvs/Trigger called before each episode (the node's queue holds the "
                         "last episode's plan otherwise); '' = none")
    args = ap.parse_args()
    from std_srvs.srv import Trigger

    rclpy.init()
    camera = tuple(int(v) for v in args.camera.split("x")) if args.camera else None
    bridge = SimBridge(args.mode, camera=camera)
    spinner = Spinner(bridge)
    reset = bridge.create_client(Trigger, args.reset_service) if args.reset_service else None
    i = 0
    try:
        while args.episodes == 0 or i < args.episodes:
            bridge.sim.reset(args.seed + i)
            if reset is not None:
                if reset.wait_for_service(timeout_sec=2.0):
                    done = reset.call_async(Trigger.Request())
                    t0 = time.monotonic()
                    while not done.done() and time.monotonic() - t0 < 5.0:
                        time.sleep(0.005)
                else:
                    bridge.get_logger().warning(f"{args.reset_service}: no such service; the episode starts without a reset")
            time.sleep(0.1)  # the commands of the last episode's last tick arrive before the clear
            bridge.clear_commands()
            log = EpisodeLog(seed=args.seed + i)
            if args.mode == "lockstep":
                run_lockstep(bridge, log, tick_timeout_s=5.0, first_command_timeout_s=3600.0)
            else:
                run_realtime(bridge, log, first_command_timeout_s=3600.0)
            bridge.get_logger().info(
                f"episode {i}: {log.summary()}; held steps {log.gap_steps}, refused {bridge.refused_total()}")
            i += 1
    except KeyboardInterrupt:
        pass
    finally:
        spinner.stop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
