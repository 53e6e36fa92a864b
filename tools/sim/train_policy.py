#!/usr/bin/env python3
"""Train a small state-based action-chunking MLP on the scripted transfer-cube demos and export
it as a LeRobot-style physicalai policy package (ONNX + OpenVINO in one package directory).

    .venv/bin/python tools/sim/scripted_demos.py .cache/sim          # demos.npz (~35 s)
    .venv/bin/python tools/sim/train_policy.py --cache .cache/sim --out tools/sim/policy

Policy: ``observation.state`` (14: qpos) and ``observation.environment_state`` (3: cube xyz),
both normalised (mean_std) outside the graph, -> MLP -> ``action`` [1, CHUNK, 14] normalised
(mean_std); the package's postprocessors denormalise it and keep the first N_ACTION_STEPS.
Absolute joint-position targets (radians; grippers normalised 0..1).

Deterministic: fixed seeds, ``torch.set_num_threads(THREADS)``, a fixed sample order.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

CHUNK = 20
N_ACTION_STEPS = 10
HIDDEN = 384
LAYERS = 3
THREADS = 2
TAIL = 30  # steps kept after the first reward-4 step of each demo
STATE_NOISE = 0.01  # rad (arm joints) / normalised (grippers), added to the training inputs
CUBE_NOISE = 0.002  # m
POLICY_NAME = "chunk_mlp"
STATE_KEY, ENV_KEY = "observation.state", "observation.environment_state"
SIDES = ("left", "right")
JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
STD_FLOOR = 1e-2


class ChunkMLP(nn.Module):
    def __init__(self, hidden: int = HIDDEN, layers: int = LAYERS) -> None:
        super().__init__()
        dims = [17] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.GELU()]
        mods.append(nn.Linear(hidden, CHUNK * 14))
        self.net = nn.Sequential(*mods)

    def forward(self, state: torch.Tensor, env_state: torch.Tensor) -> torch.Tensor:
        y = self.net(torch.cat([state, env_state], dim=-1))
        return y.reshape(y.shape[0], CHUNK, 14)


def describe(x: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mean": x.mean(0), "std": np.maximum(x.std(0), STD_FLOOR), "min": x.min(0), "max": x.max(0),
        "q01": np.quantile(x, 0.01, axis=0), "q99": np.quantile(x, 0.99, axis=0),
    }


def build_samples(obs: np.ndarray, act: np.ndarray, success_step: np.ndarray):
    """(state [M,14], cube [M,3], chunk [M,CHUNK,14]) for every kept step of every demo."""
    states, cubes, chunks = [], [], []
    T = obs.shape[1]
    for o, a, s in zip(obs, act, success_step):
        end = min(T, int(s) + TAIL)
        padded = np.concatenate([a[:end], np.repeat(a[end - 1 : end], CHUNK, axis=0)])
        idx = np.arange(end)[:, None] + np.arange(CHUNK)[None, :]
        states.append(o[:end, :14])
        cubes.append(o[:end, 14:])
        chunks.append(padded[idx])
    return np.concatenate(states), np.concatenate(cubes), np.concatenate(chunks)


def joint_names(side: str) -> list[str]:
    return [f"{side}_{j}" for j in JOINTS]


def manifest(artifacts: dict[str, str]) -> dict:
    robots = [{
        "name": side, "type": "ViperX 300 6-DoF arm + gripper (gym-aloha sim)",
        "state": {"shape": [7], "dtype": "float32", "order": joint_names(side)},
        "action": {"shape": [7], "dtype": "float32", "order": joint_names(side)},
    } for side in SIDES]
    return {
        "format": "policy_package",
        "version": "1.0",
        "policy": {"name": POLICY_NAME, "source": {"repo_id": "local/aloha_transfer_cube_chunk_mlp",
                                                  "class_path": "tools.sim.train_policy.ChunkMLP"}},
        "model": {
            "n_obs_steps": 1,
            "runner": {"type": "single_pass"},
            "artifacts": artifacts,
            "preprocessors": [
                {"type": "normalize", "mode": "mean_std", "artifact": "stats.safetensors",
                 "features": [STATE_KEY, ENV_KEY]},
            ],
            "postprocessors": [
                {"type": "denormalize", "mode": "mean_std", "artifact": "stats.safetensors", "features": ["action"]},
                {"type": "action_chunk_trimmer", "n_action_steps": N_ACTION_STEPS},
            ],
        },
        "hardware": {"robots": robots},
        "metadata": {"created_at": "2026-01-01T00:00:00Z", "created_by": "tools/sim/train_policy.py"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=".cache/sim", help="directory with demos.npz")
    ap.add_argument("--out", default="tools/sim/policy", help="package directory (replaced)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(THREADS)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()

    d = np.load(Path(args.cache) / "demos.npz")
    obs, act, success_step = d["obs"].astype(np.float64), d["act"].astype(np.float64), d["success_step"]
    states, cubes, chunks = build_samples(obs, act, success_step)
    stats = {STATE_KEY: describe(states), ENV_KEY: describe(cubes), "action": describe(chunks.reshape(-1, 14))}
    print(f"{len(obs)} demos, {len(states)} samples (chunk {CHUNK}, executes {N_ACTION_STEPS})")

    def norm(x, key):
        return (x - stats[key]["mean"]) / stats[key]["std"]

    s_std, c_std = stats[STATE_KEY]["std"], stats[ENV_KEY]["std"]
    xs = torch.from_numpy(norm(states, STATE_KEY)).float()
    xc = torch.from_numpy(norm(cubes, ENV_KEY)).float()
    ya = torch.from_numpy(norm(chunks, "action")).float()
    ns = torch.from_numpy(STATE_NOISE / s_std).float()
    nc = torch.from_numpy(CUBE_NOISE / c_std).float()

    model = ChunkMLP()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    for step in range(args.steps):
        idx = torch.randint(0, len(xs), (args.batch,), generator=gen)
        s = xs[idx] + torch.randn(args.batch, 14, generator=gen) * ns
        c = xc[idx] + torch.randn(args.batch, 3, generator=gen) * nc
        loss = (model(s, c) - ya[idx]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 2000 == 0 or step == args.steps - 1:
            print(f"step {step:6d} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    train_s = time.time() - t0
    model.eval()

    # ---- export -------------------------------------------------------------------------------
    from safetensors.numpy import save_file

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    onnx_path = out / f"{POLICY_NAME}.onnx"
    example = (xs[:1].clone(), xc[:1].clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(onnx_path), dynamo=False, opset_version=17,
                          input_names=[STATE_KEY, ENV_KEY], output_names=["action"], do_constant_folding=True)
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(out / f"{POLICY_NAME}.xml"), compress_to_fp16=False)
    flat = {f"{feat}/{name}": np.ascontiguousarray(v.astype(np.float32)) for feat, st in stats.items()
            for name, v in st.items()}
    save_file(flat, str(out / "stats.safetensors"))
    (out / "manifest.json").write_text(json.dumps(
        manifest({"onnx": f"{POLICY_NAME}.onnx", "openvino": f"{POLICY_NAME}.xml"}), indent=2) + "\n")

    # Self-check: torch vs onnxruntime vs OpenVINO on a few training inputs.
    import onnxruntime as ort

    with torch.no_grad():
        ref = model(xs[:8], xc[:8]).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    # OpenVINO's CPU plugin runs in bf16 by default where the CPU supports it; check in f32,
    # and report the default precision's difference too.
    core = ov.Core()
    compiled = core.compile_model(str(out / f"{POLICY_NAME}.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    compiled_default = core.compile_model(str(out / f"{POLICY_NAME}.xml"), "CPU")
    default_precision = compiled_default.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    d_onnx = d_ov = d_ov_default = 0.0
    for i in range(8):
        feed = {STATE_KEY: xs[i : i + 1].numpy(), ENV_KEY: xc[i : i + 1].numpy()}
        d_onnx = max(d_onnx, float(np.abs(sess.run(None, feed)[0] - ref[i : i + 1]).max()))
        d_ov = max(d_ov, float(np.abs(compiled(feed)[0] - ref[i : i + 1]).max()))
        d_ov_default = max(d_ov_default, float(np.abs(compiled_default(feed)[0] - ref[i : i + 1]).max()))
    size = sum(f.stat().st_size for f in out.iterdir())
    info = {"demos": int(len(obs)), "samples": int(len(states)), "train_seconds": round(train_s, 1),
            "steps": args.steps, "final_loss": round(float(loss.item()), 5),
            "max_abs_diff_onnx": d_onnx, "max_abs_diff_openvino_f32": d_ov,
            f"max_abs_diff_openvino_default_{default_precision}": d_ov_default, "package_bytes": size}
    print(json.dumps(info))
    (Path(args.cache) / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
