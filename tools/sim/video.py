"""A GIF of one simulated episode: the ``top`` camera beside the commanded and the actual
joints (four of them: each arm's shoulder and gripper), with a cursor at the frame's step."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from aloha_sim import DT

PLOTTED = [(1, "L shoulder"), (6, "L gripper"), (8, "R shoulder"), (13, "R gripper")]
COLOURS = [(230, 80, 60), (60, 140, 230), (240, 170, 40), (80, 190, 90)]


def _panel(qpos: np.ndarray, actions: np.ndarray, step: int, w: int, h: int, title: str) -> Image.Image:
    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    n = len(qpos)
    rows = len(PLOTTED)
    top, left = 14, 4
    rh = (h - top) // rows
    d.text((left, 1), title, fill=(0, 0, 0))
    for r, ((j, name), c) in enumerate(zip(PLOTTED, COLOURS)):
        y0 = top + r * rh
        both = np.concatenate([qpos[:, j], actions[:, j]])
        lo, hi = float(both.min()), float(both.max())
        span = max(hi - lo, 1e-3)

        def pts(v):
            xs = left + np.arange(n) * (w - left - 2) / max(n - 1, 1)
            ys = y0 + rh - 3 - (v - lo) / span * (rh - 14)
            return list(zip(xs.tolist(), ys.tolist()))

        faint = tuple(int(0.5 * ch + 127) for ch in c)
        d.line(pts(actions[:, j]), fill=faint, width=1)  # commanded
        d.line(pts(qpos[:, j]), fill=c, width=2)  # actual
        d.text((left + 2, y0 + 1), name, fill=(40, 40, 40))
    x = left + step * (w - left - 2) / max(n - 1, 1)
    d.line([(x, top), (x, h)], fill=(0, 0, 0), width=1)
    return img


def write_gif(path: str, log, every: int = 3) -> None:
    """``log``: an EpisodeLog with ``frames`` (one per step), ``qpos`` and ``actions``."""
    qpos = np.asarray(log.qpos)
    actions = np.asarray(log.actions)
    frames = log.frames
    if not frames:
        raise ValueError("the episode has no frames (rendered only with --video)")
    h, w = frames[0].shape[:2]
    title = f"seed {log.seed}: {'success' if log.success else 'failure'} (reward {log.max_reward:g}); thin: commanded"
    out = []
    for k in range(0, len(frames), every):
        canvas = Image.new("RGB", (2 * w, h), (255, 255, 255))
        canvas.paste(Image.fromarray(frames[k]), (0, 0))
        canvas.paste(_panel(qpos, actions, k, w, h, title if k == 0 else f"step {k + 1}  t {(k + 1) * DT:.2f} s"), (w, 0))
        out.append(canvas.quantize(colors=128, method=Image.Quantize.MEDIANCUT))
    out[0].save(path, save_all=True, append_images=out[1:], duration=int(every * DT * 1000), loop=0, optimize=True)
