#!/usr/bin/env python3
"""Scripted demonstrations of the bimanual transfer-cube task, replayed in joint space.

1. In the end-effector (mocap) task a hand-written waypoint plan moves the right gripper over
   the cube (tilted down towards the middle of the table), grasps it, lifts it to a meeting
   point above the middle of the table while turning the gripper level, then the left gripper
   (level, fingers opening vertically) comes in from the left, closes on the part of the cube
   that sticks out of the right fingers, and the right gripper lets go and backs off.
   Everything is a function of the cube's initial position, so a seed gives one demo.
2. The end-effector episode's joint trajectory (the 6 arm joints of each side from ``qpos``,
   and the *commanded* normalised gripper opening) is replayed as actions in the joint-space
   ``TransferCube`` with the same seed; only episodes whose replay reaches reward 4 are kept.

Output: ``<cache>/demos.npz`` with ``obs`` [N, T, 17] (qpos 14 + cube xyz 3, as observed before
each step of the joint-space replay), ``act`` [N, T, 14], ``seeds`` [N], ``success_step`` [N]
(the replay step after which reward 4 was first reached) and ``max_reward`` [N].

    .venv/bin/python tools/sim/scripted_demos.py --episodes 60 --seed 100000 --cache .cache/sim

Training seeds start at 100000 so that they never overlap the evaluation seeds (0..).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aloha_sim import STEPS, EndEffectorTransferCube, TransferCube, sample_box_pose  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Quaternions (w, x, y, z)
# ---------------------------------------------------------------------------------------------


def quat_axis_angle(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    half = np.radians(degrees) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * axis])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ])


def quat_lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Normalised linear interpolation along the shorter arc (good enough for small turns)."""
    if np.dot(a, b) < 0:
        b = -b
    q = (1 - t) * a + t * b
    return q / np.linalg.norm(q)


# The mocap weld holds each gripper_link frame at its mocap frame: x is the pointing direction
# of the gripper, y the direction in which the fingers open. The left arm points +x at the
# identity; the right arm faces it, i.e. turned 180 degrees about z.
LEFT_LEVEL = quat_axis_angle([1, 0, 0], 90.0)  # pointing +x, fingers open along z
RIGHT_BASE = quat_axis_angle([0, 0, 1], 180.0)  # pointing -x, fingers open along y


def right_tilt(degrees: float) -> np.ndarray:
    """Right gripper pointing -x, pitched ``degrees`` downwards."""
    return quat_mul(RIGHT_BASE, quat_axis_angle([0, 1, 0], degrees))


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------

PICK_TILT = 60.0  # degrees below the horizontal while picking
CARRY_TILT = 15.0  # at the meeting point
MEET = np.array([0.0, 0.5, 0.22])  # right grasp point at the hand-over
LEFT_GRASP_X = -0.06  # left grasp point relative to the right one at the hand-over
PICK_DEPTH = 0.01  # right grasp point above the cube's centre when closing


def plan(cube_xyz, left_point, right_point, left_quat, right_quat):
    """Waypoints per arm: list of (step, grasp-point xyz, quat, gripper 0..1 (1 = open))."""
    cube = np.array(cube_xyz, dtype=np.float64)
    cube[2] = 0.02  # resting on the table
    q_pick = right_tilt(PICK_TILT)
    q_carry = right_tilt(CARRY_TILT)
    grasp = cube + [0.0, 0.0, PICK_DEPTH]
    above = grasp + [0.0, 0.0, 0.08]
    left_meet = MEET + [LEFT_GRASP_X, 0.0, 0.0]
    left_stage = left_meet + [-0.08, 0.0, 0.0]
    retreat_right = MEET + [0.10, 0.0, 0.04]
    retreat_left = left_meet + [-0.04, 0.0, 0.03]
    right = [
        (0, right_point, right_quat, 1.0),
        (80, above, q_pick, 1.0),
        (120, grasp, q_pick, 1.0),
        (140, grasp, q_pick, 0.0),
        (150, grasp + [0, 0, 0.02], q_pick, 0.0),
        (220, MEET, q_carry, 0.0),
        (290, MEET, q_carry, 0.0),
        (310, MEET, q_carry, 1.0),
        (350, retreat_right, q_carry, 1.0),
        (STEPS, retreat_right, q_carry, 1.0),
    ]
    left = [
        (0, left_point, left_quat, 1.0),
        (110, left_point, left_quat, 1.0),
        (200, left_stage, LEFT_LEVEL, 1.0),
        (245, left_meet, LEFT_LEVEL, 1.0),
        (270, left_meet, LEFT_LEVEL, 0.0),
        (310, left_meet, LEFT_LEVEL, 0.0),
        (350, retreat_left, LEFT_LEVEL, 0.0),
        (STEPS, retreat_left, LEFT_LEVEL, 0.0),
    ]
    return left, right


def interpolate(waypoints, step: int) -> np.ndarray:
    """8 values: xyz, quat, gripper at ``step`` (piecewise linear between waypoints)."""
    for (s0, p0, q0, g0), (s1, p1, q1, g1) in zip(waypoints[:-1], waypoints[1:]):
        if s0 <= step <= s1:
            t = 0.0 if s1 == s0 else (step - s0) / (s1 - s0)
            p = (1 - t) * np.asarray(p0, float) + t * np.asarray(p1, float)
            q = quat_lerp(np.asarray(q0, float), np.asarray(q1, float), t)
            g = (1 - t) * g0 + t * g1
            return np.concatenate([p, q, [g]])
    s, p, q, g = waypoints[-1]
    return np.concatenate([p, q, [g]])


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------


FINGER_GEOMS = ("10_left_gripper_finger", "10_right_gripper_finger")
INTEGRAL_GAIN = 0.15
INTEGRAL_LIMIT = 0.05


def grasp_point(env: EndEffectorTransferCube, side: int) -> np.ndarray:
    """Midpoint of the two finger geoms of one gripper (world frame)."""
    arm = "vx300s_left" if side == 0 else "vx300s_right"
    xpos = env.physics.named.data.geom_xpos
    return 0.5 * (xpos[f"{arm}/{FINGER_GEOMS[0]}"] + xpos[f"{arm}/{FINGER_GEOMS[1]}"])


class GraspPointTracker:
    """Turns desired grasp-point positions into mocap positions: feed-forward with the current
    gripper_link -> grasp-point offset plus a bounded integral of the tracking error (the welds
    sag under gravity and do not reach the commanded pitch exactly)."""

    def __init__(self) -> None:
        self.integral = np.zeros((2, 3))

    def __call__(self, env: EndEffectorTransferCube, side: int, desired: np.ndarray) -> np.ndarray:
        point = grasp_point(env, side)
        offset = env.gripper_pos(side) - point
        self.integral[side] = np.clip(
            self.integral[side] + INTEGRAL_GAIN * (desired - point), -INTEGRAL_LIMIT, INTEGRAL_LIMIT
        )
        return desired + offset + self.integral[side]


def run_end_effector(env: EndEffectorTransferCube, seed: int, log=None):
    """Run the scripted plan; returns (joint actions [STEPS, 14], max reward)."""
    ts = env.reset(seed)
    left, right = plan(sample_box_pose(seed)[:3], grasp_point(env, 0), grasp_point(env, 1),
                       env.mocap(0)[3:], env.mocap(1)[3:])
    tracker = GraspPointTracker()
    joint_actions = np.zeros((STEPS, 14))
    max_reward = 0.0
    for t in range(STEPS):
        a_left = interpolate(left, t)
        a_right = interpolate(right, t)
        a_left[:3] = tracker(env, 0, a_left[:3])
        a_right[:3] = tracker(env, 1, a_right[:3])
        joint_actions[t, 6] = a_left[7]
        joint_actions[t, 13] = a_right[7]
        ts = env.step(np.concatenate([a_left, a_right]))
        max_reward = max(max_reward, float(ts.reward or 0.0))
        # The joint-space target of step t: where the arm went during the step.
        qpos = np.asarray(ts.observation["qpos"], dtype=np.float64)
        joint_actions[t, :6] = qpos[:6]
        joint_actions[t, 7:13] = qpos[7:13]
        if log is not None:
            log(t, env, float(ts.reward or 0.0))
    return joint_actions, max_reward


def replay_joint(env: TransferCube, seed: int, actions: np.ndarray):
    """Replay in joint space; returns (obs [STEPS, 17], first step with reward 4 or -1)."""
    env.reset(seed)
    obs = np.zeros((len(actions), 17))
    success_step = -1
    for t, a in enumerate(actions):
        obs[t, :14] = env.qpos()
        obs[t, 14:] = env.cube()
        r = env.step(a)
        if r >= 4 and success_step < 0:
            success_step = t
    return obs, success_step, env.max_reward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", nargs="?", default=".cache/sim", help="output directory (default .cache/sim)")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=100000, help="first seed (training seeds: 100000+)")
    args = ap.parse_args()
    if args.seed < 1000:
        sys.exit("training seeds must not overlap evaluation seeds: use --seed >= 1000")

    out = Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    ee, joint = EndEffectorTransferCube(), TransferCube()
    kept_obs, kept_act, kept_seeds, kept_steps, kept_rewards = [], [], [], [], []
    ee_ok = 0
    t0 = time.time()
    for i in range(args.episodes):
        seed = args.seed + i
        actions, ee_reward = run_end_effector(ee, seed)
        ee_ok += ee_reward >= 4
        obs, success_step, replay_reward = replay_joint(joint, seed, actions)
        print(f"seed {seed}: end-effector max reward {ee_reward:.0f}, joint replay max reward "
              f"{replay_reward:.0f} (success step {success_step})", flush=True)
        if ee_reward >= 4 and success_step >= 0:
            kept_obs.append(obs)
            kept_act.append(actions)
            kept_seeds.append(seed)
            kept_steps.append(success_step)
            kept_rewards.append(replay_reward)
    n = args.episodes
    print(f"end-effector successes: {ee_ok}/{n}; joint-space replay successes kept: {len(kept_seeds)}/{n} "
          f"({time.time() - t0:.1f}s)")
    if not kept_seeds:
        sys.exit("no successful demo")
    np.savez_compressed(
        out / "demos.npz",
        obs=np.stack(kept_obs).astype(np.float32),
        act=np.stack(kept_act).astype(np.float32),
        seeds=np.array(kept_seeds),
        success_step=np.array(kept_steps),
        max_reward=np.array(kept_rewards),
    )
    print(f"wrote {out / 'demos.npz'}")


if __name__ == "__main__":
    main()
