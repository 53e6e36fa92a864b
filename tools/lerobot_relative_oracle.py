"""LeRobot 0.6.1's relative actions, computed by LeRobot itself: the reference for policy_node.

    .venv-lerobot/bin/python tools/lerobot_relative_oracle.py < CASES.json > RESULTS.json
    .venv-lerobot/bin/python tools/lerobot_relative_oracle.py --pipeline-config

(tools/setup_lerobot.sh makes .venv-lerobot; LeRobot 0.6.1 needs Python >= 3.12.)

Input: {"cases": [{"state": [S floats], "actions": [[D floats] x H], "action_names": [names]
or null, "exclude_joints": [names], "dtype": "float32" (default) or "float64",
"state_dtype": like dtype (default: dtype)}, ...]}; other keys (e.g. "name") are ignored.
Output: {"lerobot": version, "results": [[[D floats] x H] or null, ...], "masks": [[D bools]
or null, ...], "errors": [null or "ExceptionType: message", ...]}, one entry per case.

Each case runs through LeRobot's own processor steps as a policy's pipelines do at inference:
the preprocessor's RelativeActionsProcessorStep sees the observation (observation.state
batched to [1, S], as AddBatchDimensionProcessorStep leaves it) and caches its state; the
postprocessor's AbsoluteActionsProcessorStep, paired with it, turns the chunk (batched to
[1, H, D]) into absolute actions. Nothing is recomputed here.

What LeRobot 0.6.1 computes (lerobot/processor/relative_action_processor.py)
---------------------------------------------------------------------------
to_relative_actions(actions, state, mask) / to_absolute_actions(actions, state, mask):
  actions [B, T, D] or [B, D] (any shape whose last axis is D), state [B, S] (or [S]),
  mask a sequence of bools. With M = len(mask):
    mask_t = tensor(mask, dtype=actions.dtype); state is cast to actions' dtype and device
    offset = state[..., :M] * mask_t               (unsqueezed to [B, 1, M] for 3-d actions)
    out = actions.clone(); out[..., :M] -= offset  (relative) / += offset (absolute)
  So absolute[b, t, j] = actions[b, t, j] + state[b, j] for mask[j] true, and actions[b, t, j]
  + state[b, j] * 0 (= actions[b, t, j], but NaN if the state is infinite or NaN) for mask[j]
  false; dims from M on are untouched. The sum is done in the actions' dtype, after the state
  is rounded to it. State dims are taken by index: the first M of observation.state. A state
  longer than M is cut; a shorter one (S < M) fails to broadcast (RuntimeError), except
  S == 1, which broadcasts its single value to every masked dim.

RelativeActionsProcessorStep (registry name "relative_actions_processor"; dataclass fields
enabled=False, exclude_joints=[], action_names=None):
  __call__: caches transition[OBSERVATION]["observation.state"] as _last_state whenever it is
  present, enabled or not; if enabled and the transition holds an action, replaces it with
  to_relative_actions(action, state, _build_mask(action.shape[-1])).
  _build_mask(D): all True if exclude_joints is empty or action_names is None; tokens =
  [str(n).lower() for n in exclude_joints if n] (all True if none is left); for each name of
  action_names[:D], excluded when any token is a substring of str(name).lower() (a token
  equal to the name included: case-insensitive substring match, so "gripper" excludes
  "left_gripper" and "Gripper.pos"); mask = not excluded; missing names (action_names shorter
  than D) are True. The mask always has exactly D entries.
  get_config(): {"enabled", "exclude_joints", "action_names"}; no state file.

AbsoluteActionsProcessorStep (registry name "absolute_actions_processor"; fields enabled=False,
relative_step=None):
  __call__: if enabled: RuntimeError without a paired relative_step or without a cached state;
  else transition[ACTION] = to_absolute_actions(action, relative_step._last_state,
  relative_step._build_mask(action.shape[-1])). Its enabled flag alone decides (the relative
  step's may be false); the mask comes from the relative step's exclude_joints/action_names.
  get_config(): {"enabled"} only: relative_step is not serialized.

Where the state comes from (policies/pi0/processor_pi0.py, pi05/processor_pi05.py,
pi0_fast/processor_pi0_fast.py: "raw -> relative -> normalize -> model -> unnormalize ->
absolute"): the preprocessor runs the relative step after AddBatchDimension and before the
normalizer, so the cached state is the raw (unnormalized) observation.state, [1, S], of the
last observation preprocessed; the postprocessor runs the absolute step after the
unnormalizer and before DeviceProcessorStep(cpu), so it adds that raw state to the
unnormalized actions. After loading from disk, policies/factory.py
(_reconnect_relative_absolute_steps) pairs each unpaired absolute step with the first
RelativeActionsProcessorStep of the preprocessor. LeRobot's rollout postprocesses a whole
chunk right after preprocessing its observation (rollout/inference/rtc.py), so a chunk is
made absolute with the state of the observation it was computed from; its per-tick sync
engine refuses relative-action policies (rollout/context.py) because the cached state would
move under a queued chunk (rollout/inference/sync.py). With RTC, the unexecuted tail of the
previous chunk (absolute) is made relative to the new observation's raw state and normalized
before it is passed to the model (policies/rtc/relative.py, reanchor_relative_rtc_prefix).
Configs: use_relative_actions (default False) sets both steps' enabled;
relative_exclude_joints (default ["gripper"] for pi0, pi05, pi0_fast) is exclude_joints;
action_feature_names (the dataset's action names, set by make_policy) is action_names.

Serialized (processor/pipeline.py, PolicyProcessorPipeline.get_config / save_pretrained;
files policy_preprocessor.json and policy_postprocessor.json): {"name": ..., "steps": [{
"registry_name": NAME, "config": {...}, "state_file": FILE (only for steps with tensors,
e.g. the normalizers)}, ...]}. The entries here are
  {"registry_name": "relative_actions_processor",
   "config": {"enabled": bool, "exclude_joints": [str], "action_names": [str] or null}}
in the preprocessor, and
  {"registry_name": "absolute_actions_processor", "config": {"enabled": bool}}
in the postprocessor (between "unnormalizer_processor" and "device_processor").
`--pipeline-config` prints both files as LeRobot writes them for a small pipeline.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from lerobot.processor import (
    AbsoluteActionsProcessorStep,
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    PolicyProcessorPipeline,
    RelativeActionsProcessorStep,
    TransitionKey,
    create_transition,
)
from lerobot.utils.constants import OBS_STATE

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def absolute_chunk(case):
    """(chunk [H, D] as lists, mask) from LeRobot's paired relative / absolute steps."""
    dtype = DTYPES[case.get("dtype", "float32")]
    state_dtype = DTYPES[case.get("state_dtype", case.get("dtype", "float32"))]
    relative = RelativeActionsProcessorStep(
        enabled=True,
        exclude_joints=list(case.get("exclude_joints") or []),
        action_names=case.get("action_names"),
    )
    absolute = AbsoluteActionsProcessorStep(enabled=True, relative_step=relative)
    state = torch.tensor([case["state"]], dtype=state_dtype)  # [1, S]
    relative(create_transition(observation={OBS_STATE: state}))
    chunk = torch.tensor([case["actions"]], dtype=dtype)  # [1, H, D]
    out = absolute(create_transition(action=chunk))[TransitionKey.ACTION]
    return out[0].tolist(), relative._build_mask(chunk.shape[-1])


def pipeline_config():
    """The two JSON files LeRobot saves for pipelines holding the relative / absolute steps."""
    relative = RelativeActionsProcessorStep(
        enabled=True, exclude_joints=["gripper"], action_names=["shoulder.pos", "elbow.pos", "gripper.pos"]
    )
    pre = PolicyProcessorPipeline(steps=[AddBatchDimensionProcessorStep(), relative], name="policy_preprocessor")
    post = PolicyProcessorPipeline(
        steps=[AbsoluteActionsProcessorStep(enabled=True, relative_step=relative), DeviceProcessorStep(device="cpu")],
        name="policy_postprocessor",
    )
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pipeline in (pre, post):
            pipeline.save_pretrained(tmp)
            path = Path(tmp) / f"{pipeline.name}.json"
            files[path.name] = json.loads(path.read_text())
    return files


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline-config", action="store_true", help="print the saved pipeline JSON files")
    options = parser.parse_args()
    import lerobot

    version = getattr(lerobot, "__version__", None)
    if options.pipeline_config:
        json.dump({"lerobot": version, **pipeline_config()}, sys.stdout, indent=2)
        print()
        return
    cases = json.load(sys.stdin)["cases"]
    results, masks, errors = [], [], []
    for case in cases:
        try:
            chunk, mask = absolute_chunk(case)
            results.append(chunk)
            masks.append(mask)
            errors.append(None)
        except Exception as err:  # LeRobot's own error is the expected answer
            results.append(None)
            masks.append(None)
            errors.append(f"{type(err).__name__}: {err}")
    json.dump({"lerobot": version, "results": results, "masks": masks, "errors": errors}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
