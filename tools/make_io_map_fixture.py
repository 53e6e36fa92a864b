#!/usr/bin/env python3
"""Write the I/O map test policy: a tiny ONNX model with a state and an environment state.

    .venv/bin/python tools/make_io_map_fixture.py OUT_DIR

The model (``onnx.helper``, opset 17, no training) has

- inputs  ``state``             float32 [1, 4]  (joint positions)
          ``environment_state`` float32 [1, 3]  (an object's position)
- output  ``action``            float32 [1, 5, 4]:
          ``action[0, t, j] = 0.01 * (t + 1) * (j + 1) + 0.1 * sum(environment_state)``

so a chunk depends on the environment state (a map that feeds it wrongly is visible), and
is a small delta per step (the relative-actions test adds the state to it). Written with a
getiaction-style ``metadata.yaml`` (``chunk_size: 5``). Checked with ONNX Runtime before
the script returns. Deterministic: the same bytes on every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHUNK = 5
JOINTS = 4
ENV = 3


def expected(env: np.ndarray) -> np.ndarray:
    """The model's output for ``environment_state`` ``env`` (shape [3])."""
    t = np.arange(1, CHUNK + 1, dtype=np.float32)[:, None]
    j = np.arange(1, JOINTS + 1, dtype=np.float32)[None, :]
    return (np.float32(0.01) * t * j + np.float32(0.1) * np.float32(env.sum())).astype(np.float32)[None]


def build() -> onnx.ModelProto:
    t = np.arange(1, CHUNK + 1, dtype=np.float32)[:, None]
    j = np.arange(1, JOINTS + 1, dtype=np.float32)[None, :]
    base = (np.float32(0.01) * t * j).astype(np.float32)[None]  # [1, 5, 4]
    nodes = [
        helper.make_node("ReduceSum", ["environment_state"], ["env_sum"], keepdims=1),  # [1, 1]
        helper.make_node("Mul", ["env_sum", "tenth"], ["env_term"]),  # [1, 1]
        helper.make_node("Unsqueeze", ["env_term", "axis2"], ["env_term3"]),  # [1, 1, 1]
        helper.make_node("Add", ["base", "env_term3"], ["action_env"]),
        # The state is an input of the policy (it must be fed) without changing the action:
        # 0 * sum(state) keeps it in the graph.
        helper.make_node("ReduceSum", ["state"], ["state_sum"], keepdims=1),
        helper.make_node("Mul", ["state_sum", "zero"], ["state_zero"]),
        helper.make_node("Unsqueeze", ["state_zero", "axis2"], ["state_zero3"]),
        helper.make_node("Add", ["action_env", "state_zero3"], ["action"]),
    ]
    graph = helper.make_graph(
        nodes,
        "io_map_policy",
        [
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, JOINTS]),
            helper.make_tensor_value_info("environment_state", TensorProto.FLOAT, [1, ENV]),
        ],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, CHUNK, JOINTS])],
        initializer=[
            numpy_helper.from_array(base, "base"),
            numpy_helper.from_array(np.array(0.1, dtype=np.float32), "tenth"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="policy_node")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


METADATA = f"""\
# I/O map test policy (tools/make_io_map_fixture.py): state [1, {JOINTS}] and
# environment_state [1, {ENV}] in, action chunk [1, {CHUNK}, {JOINTS}] out.
backend: onnx
policy_class: io_map_test
chunk_size: {CHUNK}
use_action_queue: true
joint_names: [joint1, joint2, joint3, joint4]
input_shapes:
  state: [1, {JOINTS}]
  environment_state: [1, {ENV}]
output_shapes:
  action: [1, {CHUNK}, {JOINTS}]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = build()
    onnx.save(model, args.out / "model.onnx")
    (args.out / "metadata.yaml").write_text(METADATA)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(args.out / "model.onnx"), providers=["CPUExecutionProvider"])
    env = np.array([[0.5, -0.25, 1.0]], dtype=np.float32)
    (got,) = sess.run(["action"], {"state": np.ones((1, JOINTS), np.float32), "environment_state": env})
    assert np.allclose(got, expected(env[0]), atol=1e-6), (got, expected(env[0]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
