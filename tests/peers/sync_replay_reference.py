#!/usr/bin/env python3
"""An independent reference for offline replay (tests/replay.rs): the documented tick and
refill rules, written apart from the Rust code, with physicalai 0.3.0's own synchronous
execution loop (``InferenceModel.select_action``: a chunk is computed from the tick's
observation when the action queue is empty, then popped one action per call).

Usage: sync_replay_reference.py BAG EXPORT_DIR PARAMS_YAML

The rules (README, "Offline CLI"; tests/fixtures/demo_bag/README.md):

- ticks every ``1 / control_rate_hz`` seconds of bag time, from the first message's log
  time through the last message's;
- at a tick, the newest message of each topic whose log time is at or before the tick;
- a tick whose joint state or image is missing, or whose header stamp is more than
  ``max_observation_age_ms`` before the tick, commands nothing (stale);
- otherwise the observation is ``state`` (the positions of ``joint_names``, in that order)
  and ``images`` (rgb8, as float32 CHW in [0, 1]); the command is ``select_action``.

Reads the bag with rosbags and runs the export with physicalai (ONNX Runtime). Prints one
line ``RESULT {json}``: ``ticks``, ``stale``, ``inferences``, ``stamps_ns`` and ``actions``
(one per command).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore


def main() -> None:
    bag, export_dir, params_file = sys.argv[1:4]
    with open(params_file, encoding="utf-8") as f:
        params = next(iter(yaml.safe_load(f).values()))["ros__parameters"]
    period_ns = round(1e9 / float(params["control_rate_hz"]))
    max_age_ns = float(params["max_observation_age_ms"]) * 1e6
    joints = list(params["joint_names"])
    joint_topic = params["joint_state_topic"]
    image_topic = params["camera_topics"][0]

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    messages = []  # (log time, topic, message)
    with Reader(bag) as reader:
        for conn, t, raw in reader.messages():
            if conn.topic in (joint_topic, image_topic):
                messages.append((t, conn.topic, typestore.deserialize_cdr(raw, conn.msgtype)))
    messages.sort(key=lambda m: m[0])
    first, last = messages[0][0], messages[-1][0]

    from physicalai.inference import InferenceModel

    model = InferenceModel(export_dir, backend="onnx", device="cpu")
    inferences = 0
    predict = model.predict_action_chunk

    def counted(obs):
        nonlocal inferences
        inferences += 1
        return predict(obs)

    model.predict_action_chunk = counted

    newest = {}
    i = 0
    ticks = stale = 0
    stamps, actions = [], []
    tick = first
    while tick <= last:
        while i < len(messages) and messages[i][0] <= tick:
            newest[messages[i][1]] = messages[i][2]
            i += 1
        ticks += 1
        js, img = newest.get(joint_topic), newest.get(image_topic)

        def age(msg):
            return tick - (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)

        if js is None or img is None or age(js) > max_age_ns or age(img) > max_age_ns:
            stale += 1
        else:
            position = dict(zip(js.name, js.position))
            state = np.array([[position[j] for j in joints]], dtype=np.float32)
            assert img.encoding == "rgb8", img.encoding
            hwc = np.frombuffer(bytes(img.data), dtype=np.uint8).reshape(img.height, img.step)
            hwc = hwc[:, : img.width * 3].reshape(img.height, img.width, 3)
            images = (hwc.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
            action = model.select_action({"state": state, "images": np.ascontiguousarray(images)})
            stamps.append(tick)
            actions.append([float(v) for v in np.asarray(action).reshape(-1)])
        tick += period_ns
    print("RESULT " + json.dumps({"ticks": ticks, "stale": stale, "inferences": inferences,
                                  "stamps_ns": stamps, "actions": actions}), flush=True)


if __name__ == "__main__":
    main()
