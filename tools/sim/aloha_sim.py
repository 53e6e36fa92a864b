"""ALOHA's bimanual transfer-cube task in MuJoCo, as gym-aloha ships it, for the closed loop.

gym-aloha's physics (``bimanual_viperx_transfer_cube.xml``), task (``TransferCubeTask``:
joint-position actions, gripper normalised 0..1) and reward (0..4 from contacts, 4 = the
left gripper holds the cube off the table) are used as they are. What this module changes is
only what the closed loop needs and the stock environment does badly:

- no camera is rendered unless asked (the stock task renders three 480x640 cameras on every
  step: ~250 ms; nothing: ~0.4 ms); ``render_top(w, h)`` renders the ``top`` camera alone with
  a small shadow map and no multisampling (~26 ms at 640x480 on a software renderer);
- the cube's pose comes from an explicit seed (``sample_box_pose(seed)``), the same for the
  joint-space task and the end-effector (mocap) task used to script demonstrations;
- the end-effector task's weld constraints get their relative pose reset, without which the
  grippers settle ~13 cm from their mocap targets with mujoco 3.8.

Units: ``qpos()`` / actions are ``[left 6 joints (rad), left gripper 0..1, right 6 joints,
right gripper 0..1]``; ``cube()`` is the cube's position (m) in the world frame.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
from dm_control import mujoco  # noqa: E402
from dm_control.rl import control  # noqa: E402
from gym_aloha.constants import ASSETS_DIR, DT, START_ARM_POSE  # noqa: E402
from gym_aloha.tasks import sim as joint_sim  # noqa: E402
from gym_aloha.tasks.sim import TransferCubeTask  # noqa: E402
from gym_aloha.tasks.sim_end_effector import TransferCubeEndEffectorTask  # noqa: E402
from gym_aloha.utils import sample_box_pose  # noqa: E402

JOINT_NAMES = [
    f"{side}_{j}"
    for side in ("left", "right")
    for j in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
]
ACTION_DIM = 14
STEPS = 400  # ACT-length episodes (gym-aloha registers 300)
SUCCESS_REWARD = 4
FPS = int(round(1 / DT))


class _NoImages:
    """Observation without the three rendered cameras (the closed loop renders on request)."""

    def get_observation(self, physics):
        return {
            "qpos": self.get_qpos(physics),
            "qvel": self.get_qvel(physics),
            "env_state": self.get_env_state(physics),
        }


class _JointTask(_NoImages, TransferCubeTask):
    pass


class _SeededEndEffectorTask(_NoImages, TransferCubeEndEffectorTask):
    seed: int | None = None

    def initialize_episode(self, physics):
        self.initialize_robots(physics)
        box = physics.model.name2id("red_box_joint", "joint")
        physics.data.qpos[box : box + 7] = sample_box_pose(self.seed)
        # base.Task.initialize_episode (TransferCubeEndEffectorTask's parent)
        super(TransferCubeEndEffectorTask, self).initialize_episode(physics)

    def get_observation(self, physics):
        obs = super().get_observation(physics)
        obs["gripper_ctrl"] = physics.data.ctrl.copy()
        return obs


def _quiet_render_settings(physics) -> None:
    physics.model.vis.quality.shadowsize = 1024
    physics.model.vis.quality.offsamples = 0


class TransferCube:
    """The joint-space task: ``reset(seed)``, ``step(action)`` -> reward, ``qpos()``,
    ``cube()``, ``render_top()``."""

    def __init__(self) -> None:
        physics = mujoco.Physics.from_xml_path(str(ASSETS_DIR / "bimanual_viperx_transfer_cube.xml"))
        _quiet_render_settings(physics)
        self.env = control.Environment(
            physics, _JointTask(), time_limit=float("inf"), control_timestep=DT,
            n_sub_steps=None, flat_observation=False,
        )
        self.reward = 0.0
        self.max_reward = 0.0
        self.steps = 0

    @property
    def physics(self):
        return self.env.physics

    def reset(self, seed: int) -> None:
        # TransferCubeTask.initialize_episode reads the cube's pose from this module global.
        joint_sim.BOX_POSE[0] = sample_box_pose(seed)
        self.env.reset()
        self.reward = self.max_reward = 0.0
        self.steps = 0

    def step(self, action) -> float:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (ACTION_DIM,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be {ACTION_DIM} finite values, got shape {a.shape}")
        ts = self.env.step(a)
        self.reward = float(ts.reward)
        self.max_reward = max(self.max_reward, self.reward)
        self.steps += 1
        return self.reward

    @property
    def success(self) -> bool:
        return self.max_reward >= SUCCESS_REWARD

    def qpos(self) -> np.ndarray:
        return TransferCubeTask.get_qpos(self.physics)

    def cube(self) -> np.ndarray:
        return TransferCubeTask.get_env_state(self.physics)[:3].copy()

    def cube_pose(self) -> np.ndarray:
        """Position (3) and quaternion (w, x, y, z)."""
        return TransferCubeTask.get_env_state(self.physics)[:7].copy()

    def cube_touched(self) -> bool:
        """Whether the cube touches anything but the table (a finger, usually): the first
        contact, after which small differences between two runs may grow."""
        physics = self.physics
        model, data = physics.model, physics.data
        for i in range(data.ncon):
            c = data.contact[i]
            names = {model.id2name(c.geom1, "geom"), model.id2name(c.geom2, "geom")}
            if "red_box" in names and "table" not in names:
                return True
        return False

    def render_top(self, width: int = 640, height: int = 480) -> np.ndarray:
        return self.physics.render(height=height, width=width, camera_id="top")


class EndEffectorTransferCube:
    """The end-effector (mocap) task used to script demonstrations: actions are
    ``[left xyz, left quat (w x y z), left gripper 0..1, right xyz, right quat, right gripper]``."""

    def __init__(self) -> None:
        physics = mujoco.Physics.from_xml_path(
            str(ASSETS_DIR / "bimanual_viperx_end_effector_transfer_cube.xml")
        )
        physics.model.eq_data[:, 3:10] = [0, 0, 0, 1, 0, 0, 0]
        _quiet_render_settings(physics)
        self.task = _SeededEndEffectorTask()
        self.env = control.Environment(
            physics, self.task, time_limit=float("inf"), control_timestep=DT,
            n_sub_steps=None, flat_observation=False,
        )

    @property
    def physics(self):
        return self.env.physics

    def reset(self, seed: int):
        self.task.seed = seed
        return self.env.reset()

    def step(self, action):
        return self.env.step(np.asarray(action, dtype=np.float64))

    def mocap(self, side: int) -> np.ndarray:
        return np.concatenate([self.physics.data.mocap_pos[side], self.physics.data.mocap_quat[side]])

    def gripper_pos(self, side: int) -> np.ndarray:
        name = "vx300s_left/gripper_link" if side == 0 else "vx300s_right/gripper_link"
        return self.physics.named.data.xpos[name].copy()


@dataclass
class EpisodeLog:
    """One episode, as the evaluations record it (the same in every mode)."""

    seed: int
    success: bool = False
    max_reward: float = 0.0
    steps: int = 0
    first_contact_step: int | None = None  # 1-based: the cube first touched after this step
    qpos: list = field(default_factory=list)  # observed before each step
    actions: list = field(default_factory=list)  # applied at each step
    gap_steps: int = 0  # steps applied with a held command (no fresh one in time)
    longest_gap_ms: float = 0.0
    frames: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"seed": self.seed, "success": self.success, "max_reward": self.max_reward, "steps": self.steps}

    def step(self, sim: "TransferCube", action, video: tuple[int, int] | None = None,
             max_steps: int = STEPS) -> bool:
        """Applies ``action`` to ``sim`` and records the step (the joints observed before it,
        the action, the reward, the first touch of the cube, a frame with ``video``); True
        when the episode is over (success or ``max_steps``)."""
        action = np.asarray(action, dtype=np.float64)
        self.qpos.append(sim.qpos())
        self.actions.append(action.copy())
        reward = sim.step(action)
        self.steps += 1
        self.max_reward = max(self.max_reward, reward)
        if self.first_contact_step is None and sim.cube_touched():
            self.first_contact_step = self.steps
        if video is not None:
            self.frames.append(sim.render_top(*video))
        if reward >= SUCCESS_REWARD:
            self.success = True
            return True
        return self.steps >= max_steps



def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95 % Wilson score interval of a success rate (sound at 0 and n successes too)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


__all__ = [
    "ACTION_DIM", "DT", "EndEffectorTransferCube", "EpisodeLog", "FPS", "JOINT_NAMES", "START_ARM_POSE",
    "STEPS", "SUCCESS_REWARD", "TransferCube", "sample_box_pose", "wilson_interval",
]
