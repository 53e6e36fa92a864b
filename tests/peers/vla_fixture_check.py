#!/usr/bin/env python3
"""Checks the VLA package fixtures with physicalai's own runtime, for tests/vla_fixtures.rs.

Usage: vla_fixture_check.py FIXTURES_DIR

For ``vla_pi05`` and ``vla_smolvla`` on ONNX and OpenVINO (f32 precision hint): the reference
observations through ``InferenceModel.predict_action_chunk`` against ``reference/action.npy``;
the graph inputs physicalai builds against ``reference/graph_input.*.npy``; the chunk with the
task changed. For ``vla_pi05_rtc``: the recorded sequence replayed through physicalai's RTC
execution code (``rtc_run`` of tools/make_vla_fixture.py) against ``reference/``.

physicalai 0.3.0 feeds ONNX Runtime float64 (the state / leftover normalised with inline JSON
statistics) and numpy scalars (the RTC inputs), which ONNX Runtime rejects. The check feeds the
graph its declared dtypes instead (as policy_node does) and reports the error physicalai stops
with as ``as_is_error``.

The tokenizer is loaded offline from FIXTURES_DIR/vla_hf_home. Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

ALT_TASK = "open the drawer"


def first_line(e: BaseException) -> str:
    msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    return f"{type(e).__name__}: {(msg.splitlines() or [''])[0][:200]}"


def declared_dtypes(model) -> None:
    """Feed the adapter 0-d arrays for numpy scalars and float32 for float64, recording the feeds."""
    predict = model.adapter.predict
    model.fed = []

    def run(inputs):
        fixed = {k: np.asarray(v, np.float32 if np.asarray(v).dtype == np.float64 else None) for k, v in inputs.items()}
        model.fed.append(fixed)
        return predict(fixed)

    model.adapter.predict = run


def load(pkg: Path, fix: bool):
    from physicalai.inference import InferenceModel

    kwargs = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1} if pkg.name == "openvino" else {}
    model = InferenceModel(pkg, **kwargs)
    if fix:
        declared_dtypes(model)
    return model


def observations(ref: Path) -> list[dict]:
    state = np.load(ref / "state.npy")
    tasks = json.loads((ref / "tasks.json").read_text(encoding="utf-8"))
    images = {cam: np.load(ref / f"images.{cam}.npy") for cam in ("top", "wrist")}
    return [
        {"state": state[i : i + 1], **{f"images.{c}": v[i : i + 1] for c, v in images.items()}, "task": [tasks[i]]}
        for i in range(len(tasks))
    ]


def check_package(root: Path, backend: str) -> dict:
    ref = root / "reference"
    pkg = root / backend
    result: dict = {"package": root.name, "backend": backend}
    try:
        obs = observations(ref)
        load(pkg, fix=False).predict_action_chunk(dict(obs[0], task=list(obs[0]["task"])))
        result["as_is_error"] = None
    except Exception as e:  # noqa: BLE001 - reported
        result["as_is_error"] = first_line(e)
    try:
        model = load(pkg, fix=True)
        obs = observations(ref)
        chunks = np.stack([model.predict_action_chunk(o) for o in observations(ref)])
        expected = np.load(ref / "action.npy")
        result["shape"] = list(chunks.shape)
        result["finite"] = bool(np.all(np.isfinite(chunks)))
        result["max_diff"] = float(np.max(np.abs(chunks - expected)))
        diffs = {}
        for name in model.fed[0]:
            fed = np.stack([f[name] for f in model.fed])
            want = np.load(ref / f"graph_input.{name}.npy")
            same_dtype = fed.dtype == want.dtype
            diffs[name] = float(np.max(np.abs(fed.astype(np.float64) - want.astype(np.float64)))) if same_dtype else -1.0
        result["graph_input_max_diff"] = diffs
        other = model.predict_action_chunk(dict(obs[0], task=[ALT_TASK]))
        result["task_delta_max"] = float(np.max(np.abs(other - expected[0])))
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 - every failure is the answer
        result.update(ok=False, error=first_line(e))
    return result


def check_rtc(root: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import make_vla_fixture as gen  # the lockstep driver over physicalai's RTCExecution / RTCActionQueue

    ref = root / "reference"
    out: dict = {"package": root.name}
    try:
        samples = {f"images.{c}": np.load(ref / f"images.{c}.npy")[None] for c in ("top", "wrist")}
        samples["task"] = [json.loads((ref / "task.json").read_text(encoding="utf-8"))]
        rec = gen.rtc_run(gen.load_physicalai(root / "openvino"), samples, gen.RTC_GUIDANCE, record=True)
        out["state_max_diff"] = float(np.max(np.abs(rec["states"] - np.load(ref / "state.npy"))))
        out["chunk_max_diff"] = float(np.max(np.abs(np.stack(rec["chunk"]) - np.load(ref / "chunk.npy"))))
        out["executed_max_diff"] = float(np.max(np.abs(rec["executed"] - np.load(ref / "executed.npy"))))
        out["noise_max_diff"] = float(np.max(np.abs(np.stack(rec["noise"]) - np.load(ref / "noise.npy"))))
        schedule = json.loads((ref / "schedule.json").read_text(encoding="utf-8"))
        out["schedule_equal"] = rec["request_tick"] == schedule["request_tick"] and rec["merge_tick"] == schedule[
            "merge_tick"] and rec["delay"] == schedule["inference_delay"]
        # The same recorded inferences through ONNX (declared dtypes), one predict each.
        onnx = load(root / "onnx", fix=True)
        chunks = []
        for i, tick in enumerate(schedule["request_tick"]):
            obs = {"state": rec["states"][tick : tick + 1], **{k: v for k, v in samples.items() if k != "task"},
                   "task": [samples["task"][0]], "noise": rec["noise"][i], "prev_chunk_left_over": rec["leftover"][i],
                   "inference_delay": np.int64(rec["delay"][i]), "max_guidance_weight": np.float32(rec["weight"][i]),
                   "execution_horizon": np.int64(rec["horizon"][i])}
            chunks.append(onnx.predict_action_chunk(obs))
        out["onnx_chunk_max_diff"] = float(np.max(np.abs(np.stack(chunks) - np.load(ref / "chunk.npy"))))
        out["ok"] = True
    except Exception as e:  # noqa: BLE001
        out.update(ok=False, error=first_line(e))
    return out


def main() -> None:
    fixtures = Path(sys.argv[1]).resolve()
    os.environ["HF_HOME"] = str(fixtures / "vla_hf_home")
    os.environ.pop("HF_HUB_CACHE", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from loguru import logger

    logger.disable("physicalai")
    results = {
        "packages": [check_package(fixtures / name, backend)
                     for name in ("vla_pi05", "vla_smolvla") for backend in ("onnx", "openvino")],
        "rtc": check_rtc(fixtures / "vla_pi05_rtc"),
    }
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
