"""Deterministic synthetic demonstration of a 6-joint arm (numpy only).

This module is the single source of truth for the toy task that the committed
test fixtures are trained on (``tools/make_fixture.py``) and that demo rosbags
are generated from. Everything here is a pure function of time ``t`` (seconds)
and fixed module constants: no randomness, no global state.

The task
--------
Joint ``j`` follows a smooth periodic trajectory::

    q_j(t) = AMPLITUDES[j] * sin(OMEGA * t + PHASES[j]) + OFFSETS[j]

with one shared angular frequency ``OMEGA`` (period ``PERIOD_S``), so the whole
arm state is a function of the phase ``theta = OMEGA * t mod 2 pi``.

A camera image is rendered from the phase alone: a red disc on a circle whose
position is ``(cos theta, sin theta)`` plus a smaller blue square at the
doubled phase, on a plain grey background. The disc position disambiguates the
phase; the square is a second, redundant cue (and makes the image less
trivially symmetric). Two views exist: ``"top"`` (default) and ``"wrist"``
(different colours, background and layout) for multi-camera fixtures.

The demonstration a policy should learn is :func:`expert_chunk`: the *future*
joint positions ``q(t + (k + 1) / rate_hz)`` for ``k = 0 .. chunk - 1`` (ACT
convention: actions are absolute joint position targets, one per control tick).

Conventions
-----------
- States and actions are float64 numpy arrays in radians, shape ``[..., 6]``.
- Images are ``uint8`` RGB, ``[H, W, 3]`` (HWC, what ``sensor_msgs/Image`` with
  encoding ``rgb8`` carries). :func:`to_model_input` converts to the policy's
  float32 CHW layout in ``[0, 1]``.
- The default control / sampling rate is 30 Hz.

Example::

    import synthetic_demo as demo
    ep = demo.episode(duration_s=2.0)          # 60 frames at 30 Hz
    ep.times.shape, ep.states.shape, ep.images.shape
    # ((60,), (60, 6), (60, 64, 64, 3))
    demo.expert_chunk(ep.times[0], chunk=10)   # [10, 6] future joint positions
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "NUM_JOINTS",
    "PERIOD_S",
    "OMEGA",
    "AMPLITUDES",
    "PHASES",
    "OFFSETS",
    "DEFAULT_RATE_HZ",
    "DEFAULT_IMAGE_SIZE",
    "CAMERAS",
    "Episode",
    "joint_names",
    "phase_at",
    "state_at",
    "render_image",
    "to_model_input",
    "episode",
    "expert_chunk",
]

# --------------------------------------------------------------------------- #
# Fixed constants of the task. Changing any of them changes every fixture.    #
# --------------------------------------------------------------------------- #

#: Number of arm joints.
NUM_JOINTS = 6
#: Period of the motion in seconds.
PERIOD_S = 4.0
#: Shared angular frequency in rad/s.
OMEGA = 2.0 * np.pi / PERIOD_S
#: Per-joint amplitude (rad).
AMPLITUDES = np.array([0.80, 0.50, 0.60, 0.40, 0.30, 0.90])
#: Per-joint phase offset (rad).
PHASES = np.array([0.00, 0.90, 1.80, 2.70, 3.60, 4.50])
#: Per-joint centre position (rad).
OFFSETS = np.array([0.00, -0.40, 0.70, 0.10, -0.20, 0.30])

#: Default sampling / control rate in Hz.
DEFAULT_RATE_HZ = 30.0
#: Default image size ``(height, width)``.
DEFAULT_IMAGE_SIZE = (64, 64)

# Per-view rendering style. Colours are RGB in [0, 255]. Positions and sizes are
# fractions of min(H, W) so that any resolution renders the same scene.
_VIEWS = {
    "top": {
        "background": (96, 96, 96),
        "disc_color": (230, 40, 40),
        "marker_color": (40, 90, 230),
        "orbit": 0.32,  # radius of the disc's circle
        "disc_radius": 0.12,
        "marker_orbit": 0.18,
        "marker_half": 0.07,  # half side of the square marker
    },
    "wrist": {
        "background": (200, 190, 150),
        "disc_color": (20, 140, 40),
        "marker_color": (120, 20, 140),
        "orbit": 0.28,
        "disc_radius": 0.15,
        "marker_orbit": 0.30,
        "marker_half": 0.08,
    },
}
#: Names of the available camera views for :func:`render_image`.
CAMERAS = tuple(_VIEWS)


class Episode(NamedTuple):
    """One recorded demonstration (unpacks as ``times, states, images``)."""

    #: Sample times in seconds, float64 ``[N]``, starting at 0.
    times: np.ndarray
    #: Joint positions in radians, float64 ``[N, 6]``.
    states: np.ndarray
    #: RGB images, uint8 ``[N, H, W, 3]``.
    images: np.ndarray


def joint_names() -> list[str]:
    """Names of the arm joints, in state-vector order: ``joint1`` .. ``joint6``."""
    return [f"joint{i + 1}" for i in range(NUM_JOINTS)]


def phase_at(t: float | np.ndarray) -> np.ndarray:
    """Phase ``OMEGA * t`` wrapped to ``[0, 2 pi)``; same shape as ``t``."""
    return np.mod(OMEGA * np.asarray(t, dtype=np.float64), 2.0 * np.pi)


def state_at(t: float | np.ndarray) -> np.ndarray:
    """Joint positions (rad) at time ``t``.

    ``t`` may be a scalar (result ``[6]``) or an array of any shape
    (result ``[*t.shape, 6]``).
    """
    t = np.asarray(t, dtype=np.float64)[..., None]
    return AMPLITUDES * np.sin(OMEGA * t + PHASES) + OFFSETS


def _coverage(dist_outside: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance in pixels.

    Negative inside the shape, positive outside; the edge is a 1-pixel ramp so
    images change smoothly with ``t`` (which helps the tiny policy learn).
    """
    return np.clip(0.5 - dist_outside, 0.0, 1.0)


def render_image(
    t: float,
    h: int = DEFAULT_IMAGE_SIZE[0],
    w: int = DEFAULT_IMAGE_SIZE[1],
    camera: str = "top",
) -> np.ndarray:
    """Render the camera image at time ``t`` as uint8 RGB ``[h, w, 3]``.

    The red (``top``) / green (``wrist``) disc sits at angle ``theta`` on a
    circle around the image centre, i.e. at ``(cos theta, sin theta)`` with the
    image x axis to the right and y axis down; the square marker sits at angle
    ``2 theta`` on a smaller circle. Deterministic and resolution independent.

    Args:
        t: time in seconds.
        h, w: image height and width in pixels (any positive size).
        camera: one of :data:`CAMERAS`.
    """
    if camera not in _VIEWS:
        raise ValueError(f"unknown camera {camera!r}; expected one of {CAMERAS}")
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {h}x{w}")
    view = _VIEWS[camera]
    theta = float(phase_at(t))
    scale = float(min(h, w))
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)

    img = np.empty((h, w, 3), dtype=np.float64)
    img[:] = view["background"]

    # Square marker first, so the disc is drawn on top where they overlap.
    mx = cx + view["marker_orbit"] * scale * np.cos(2.0 * theta)
    my = cy + view["marker_orbit"] * scale * np.sin(2.0 * theta)
    half = view["marker_half"] * scale
    d_square = np.maximum(np.abs(xs - mx), np.abs(ys - my)) - half
    a = _coverage(d_square)[..., None]
    img = img * (1.0 - a) + a * np.asarray(view["marker_color"], dtype=np.float64)

    dx = cx + view["orbit"] * scale * np.cos(theta)
    dy = cy + view["orbit"] * scale * np.sin(theta)
    d_disc = np.hypot(xs - dx, ys - dy) - view["disc_radius"] * scale
    a = _coverage(d_disc)[..., None]
    img = img * (1.0 - a) + a * np.asarray(view["disc_color"], dtype=np.float64)

    return np.round(img).astype(np.uint8)


def to_model_input(image: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB image(s) -> float32 CHW in ``[0, 1]`` (what the policy takes).

    Accepts ``[H, W, 3]`` or a batch ``[N, H, W, 3]``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape[-1] != 3:
        raise ValueError(f"expected uint8 [..., H, W, 3], got {image.dtype} {image.shape}")
    return (np.moveaxis(image, -1, -3).astype(np.float32) / np.float32(255.0)).astype(np.float32)


def episode(
    duration_s: float,
    rate_hz: float = DEFAULT_RATE_HZ,
    h: int = DEFAULT_IMAGE_SIZE[0],
    w: int = DEFAULT_IMAGE_SIZE[1],
    camera: str = "top",
    t0: float = 0.0,
) -> Episode:
    """Sample a demonstration: ``round(duration_s * rate_hz)`` frames.

    Frame ``i`` is at time ``t0 + i / rate_hz``.

    Returns:
        :class:`Episode` ``(times [N], states [N, 6], images [N, h, w, 3] uint8)``.
    """
    if rate_hz <= 0 or duration_s < 0:
        raise ValueError(f"need rate_hz > 0 and duration_s >= 0, got {rate_hz}, {duration_s}")
    n = int(round(duration_s * rate_hz))
    times = t0 + np.arange(n, dtype=np.float64) / rate_hz
    states = state_at(times)
    images = np.empty((n, h, w, 3), dtype=np.uint8)
    for i, t in enumerate(times):
        images[i] = render_image(t, h, w, camera)
    return Episode(times, states, images)


def expert_chunk(t: float, chunk: int, rate_hz: float = DEFAULT_RATE_HZ) -> np.ndarray:
    """The demonstrated action chunk at time ``t``: ``[chunk, 6]`` joint targets.

    Row ``k`` is the joint position one control tick ahead of the previous
    row, starting one tick after ``t``: ``state_at(t + (k + 1) / rate_hz)``.
    """
    if chunk <= 0 or rate_hz <= 0:
        raise ValueError(f"need chunk > 0 and rate_hz > 0, got {chunk}, {rate_hz}")
    return state_at(t + np.arange(1, chunk + 1, dtype=np.float64) / rate_hz)


if __name__ == "__main__":  # pragma: no cover - quick visual smoke test
    import argparse

    parser = argparse.ArgumentParser(description="Print a few samples of the synthetic demo.")
    parser.add_argument("--duration", type=float, default=0.2, help="seconds to sample")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, help="sample rate in Hz")
    args = parser.parse_args()
    ep = episode(args.duration, args.rate)
    np.set_printoptions(precision=3, suppress=True)
    for t, q in zip(ep.times, ep.states):
        print(f"t={t:6.3f}  q={q}")
