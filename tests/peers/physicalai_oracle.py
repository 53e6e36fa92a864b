#!/usr/bin/env python3
"""Runs physicalai's own runtime (PyPI ``physicalai``) as the oracle for tests/physicalai_oracle.rs.

Usage: physicalai_oracle.py JOBS.json

``JOBS.json`` is a list of jobs; each is an object with

- ``dir``: the export directory; ``backend``: its backend (OpenVINO runs with the f32
  precision hint, as our adapter does: on a bf16-capable CPU its default moves actions by
  ~5e-3);
- ``cwd`` (optional): the working directory to load and run from;
- ``what``: ``chunk`` (``predict_action_chunk`` on ``inputs`` {name: .npy}, written to
  ``out``), ``model_path`` (the model file physicalai picks), ``load`` (construct only) or
  ``resize`` (physicalai's ``ResizePreprocessor(**params)`` on ``{"images": input}``).

Prints one line ``RESULT {json}``: per job ``{"ok": true, ...}`` or ``{"ok": false,
"error": "<type>: <message>"}``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def run_job(job: dict) -> dict:
    from physicalai.inference import InferenceModel

    if job["what"] == "processor":
        from physicalai.inference import preprocessors as pp

        cls = {"pi05": pp.Pi05Preprocessor, "smolvla_resize": pp.ResizeSmolVLA,
               "new_line": pp.NewLinePreprocessor}[job["type"]]
        inputs = {name: np.load(path) for name, path in job["inputs"].items()}
        if job.get("task") is not None:
            inputs["task"] = [job["task"]]
        try:
            out = cls(**job.get("params", {}))(inputs)
        except Exception as e:  # noqa: BLE001
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        result = {"ok": True}
        for key in ("images", "image_masks"):
            if key in out:
                np.save(f"{job['out']}.{key}.npy", np.asarray(out[key], dtype=np.float32))
                result[key] = list(np.shape(out[key]))
        if "task" in out:
            result["task"] = out["task"][0]
        return result
    if job["what"] == "tokenize":
        from physicalai.inference.preprocessors import HFTokenizer

        out = HFTokenizer(**job["params"])({"task": [job["task"]]})
        return {"ok": True, "ids": out["tokenized_prompt"][0].tolist(),
                "mask": [bool(m) for m in out["tokenized_prompt_mask"][0]]}
    if job["what"] == "resize":
        from physicalai.inference.preprocessors import ResizePreprocessor

        out = ResizePreprocessor(**job["params"])({"images": np.load(job["input"])})["images"]
        np.save(job["out"], np.asarray(out, dtype=np.float32))
        return {"ok": True, "shape": list(out.shape)}
    cwd = os.getcwd()
    try:
        if job.get("cwd"):
            os.chdir(job["cwd"])
        kwargs = {"INFERENCE_PRECISION_HINT": "f32"} if job.get("backend") == "openvino" else {}
        model = InferenceModel(job["dir"], **kwargs)
        if job["what"] == "load":
            return {"ok": True}
        if job["what"] == "model_path":
            return {"ok": True, "model_path": str(model._get_model_path())}
        obs = {name: np.load(path) for name, path in job["inputs"].items()}
        chunk = model.predict_action_chunk(obs)
        np.save(job["out"], np.asarray(chunk, dtype=np.float32))
        return {"ok": True, "shape": list(chunk.shape)}
    except Exception as e:  # noqa: BLE001 - every failure is the answer
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        os.chdir(cwd)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        jobs = json.load(f)
    results = [run_job(j) for j in jobs]
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    # loguru's INFO lines go to stderr; keep stdout for the result.
    main()
