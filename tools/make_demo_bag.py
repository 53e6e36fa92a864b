#!/usr/bin/env python3
"""Write the demo rosbag2 recording of the synthetic demonstration (``rosbags`` only).

Creates, under ``tests/fixtures/demo_bag/`` (or ``--out``):

- ``mcap/``     rosbag2 bag directory, MCAP storage, zstd-compressed chunks
- ``sqlite3/``  rosbag2 bag directory, sqlite3 storage (``.db3``)
- ``demo.mcap`` a single-file copy of the MCAP bag (no ``metadata.yaml``)
- ``params.yaml`` the node's parameter file used to replay it (``policyctl replay --params``
  and the live replay test)

Topics (both from :mod:`synthetic_demo`, the task the ``act_tiny`` fixture learned):

- ``/joint_states`` ``sensor_msgs/msg/JointState``, ``joint1`` .. ``joint6``, 30 Hz
- ``/image_raw``    ``sensor_msgs/msg/Image``, ``rgb8`` 64x64, 30 Hz

Timing (bag time, integer nanoseconds; header stamps equal log times):

- ``T0_NS`` is a multiple of the 30 Hz control period ``P = 33_333_333`` ns, so a ROS timer
  on sim time (rcl keeps timer phases on multiples of the period) ticks exactly on the
  replay's tick grid ``T0_NS + k * P``.
- The recording opens with one joint state at ``T0_NS`` (so replay's tick 0 falls there),
  then every sample ``i`` (joint state and image) is stamped ``T0_NS + i * P + P // 2``:
  half a period away from every control tick, so which sample is the newest at a tick never
  depends on sub-period jitter (the live replay test relies on this).
- ``DURATION_S`` = 4 s (one period of the demo motion): 120 samples per topic.

Deterministic: running it twice writes byte-identical ``.db3``/``.mcap`` files, except for
the rosbags version string inside the MCAP header.

``--vla DIR`` writes instead, under ``DIR``, the same motion for the VLA fixtures
(``vla_pi05``, ``vla_pi05_rtc``): ``/top/image_raw`` 48x64 and ``/wrist/image_raw`` 40x40 (height x width)
(the sizes their packages declare), MCAP only, and a ``params.yaml`` running
``vla_pi05_rtc`` with real-time chunking (the live replay test generates it).

``--multi DIR`` writes instead, under ``DIR``, the same motion wired as a robot with several
state sources and command channels (the I/O map test): ``/arm/joint_states`` (``joint3``,
``joint1``, ``joint2`` and a joint the policy does not use), ``/wrist/joint_states``
(``joint5``, ``joint4``), ``/gripper/opening_mm`` ``std_msgs/msg/Float64MultiArray`` (``joint6``
in thousandths, no header: stamped with its log time), ``/image_raw``; MCAP only; an
``io_map.yaml`` that reads them and commands four channels (two arm controllers, a wrist
``JointTrajectory``, a ``Float64`` gripper in thousandths), and a ``params.yaml`` using it.

``--large`` writes instead a bag for measuring replay speed with the ACT-size model
(``fixtures-large/act_full``, made by ``tools/make_fixture.py --large``):
``fixtures-large/demo_bag_large/`` (git-ignored) with 14 joints (the demo's 6, repeated),
480x640 ``rgb8`` camera images (what a real camera records; the model takes 224x224), 30 Hz,
10 s, MCAP only, and a ``params.yaml`` without ``joint_names`` (replay takes the export's).

Usage::

    .venv/bin/python tools/make_demo_bag.py            # (re)writes tests/fixtures/demo_bag
    .venv/bin/python tools/make_demo_bag.py --out DIR
    .venv/bin/python tools/make_demo_bag.py --large    # fixtures-large/demo_bag_large
    .venv/bin/python tools/make_demo_bag.py --vla DIR  # the two-camera VLA bag
    .venv/bin/python tools/make_demo_bag.py --multi DIR  # several sources and channels
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic_demo as demo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "demo_bag"

RATE_HZ = 30.0
#: The control period in integer nanoseconds, as the node computes it
#: (`Duration::from_secs_f64(1 / 30)`).
PERIOD_NS = 33_333_333
#: Bag start: a multiple of the period (about 2023-11-14T22:13:03Z).
T0_NS = 51_000_000_000 * PERIOD_NS
DURATION_S = 4.0
N_SAMPLES = int(round(DURATION_S * RATE_HZ))
JOINT_TOPIC = "/joint_states"
IMAGE_TOPIC = "/image_raw"
FRAME_ID = "camera"

PARAMS_YAML = """\
# Node parameters for the demo recording (tools/make_demo_bag.py writes this file).
# `policyctl replay BAG DIR --params tests/fixtures/demo_bag/params.yaml` replaces export_dir
# with DIR; the live replay test passes the same file to the node with use_sim_time.
policy_node:
  ros__parameters:
    export_dir: tests/fixtures/act_tiny/onnx
    control_rate_hz: 30.0
    joint_names: [joint1, joint2, joint3, joint4, joint5, joint6]
    joint_state_topic: /joint_states
    camera_topics: [/image_raw]
    command_topic: /joint_commands
    command_type: float64_multi_array
    max_observation_age_ms: 200.0
    # Chunks of 10: the next chunk is computed from the observation 5 ticks before the queue
    # runs out (~167 ms of slack), so an asynchronous node is always in time and agrees with
    # the synchronous replay.
    refill_ahead_steps: 5
    enable_on_start: true
"""


VLA_CAMERAS = (("/top/image_raw", "top", (48, 64)), ("/wrist/image_raw", "wrist", (40, 40)))

VLA_PARAMS_YAML = """\
# Node parameters for the VLA demo bag (tools/make_demo_bag.py --vla): the vla_pi05_rtc
# package with real-time chunking. Paths are relative to the repository root.
policy_node:
  ros__parameters:
    export_dir: tests/fixtures/vla_pi05_rtc/onnx
    tokenizer_dir: tests/fixtures/vla_hf_home/hub
    task: "pick up the red cube"
    control_rate_hz: 30.0
    joint_names: [joint1, joint2, joint3, joint4, joint5, joint6]
    joint_state_topic: /joint_states
    camera_topics: [/top/image_raw, /wrist/image_raw]
    command_topic: /joint_commands
    command_type: float64_multi_array
    max_observation_age_ms: 200.0
    # Chunks of 16; the next one is requested when fewer than horizon + delay = 10 actions
    # are left, 4 ticks (~133 ms) before it is switched in, guided over 6 steps.
    refill_mode: rtc
    refill_ahead_steps: 4
    rtc_execution_horizon: 6
    threads: 1
    enable_on_start: true
"""


MULTI_IO_MAP_YAML = """\
# I/O map of the multi-source demo bag (tools/make_demo_bag.py --multi): three state
# sources (one in thousandths), four command channels.
inputs:
  observation.state:
    - topic: /arm/joint_states
      type: sensor_msgs/msg/JointState
      select: [position.joint1, position.joint2, position.joint3]
    - topic: /wrist/joint_states
      type: sensor_msgs/msg/JointState
      select: [position.joint4, position.joint5]
    - topic: /gripper/opening_mm
      type: std_msgs/msg/Float64MultiArray
      select: [data.0]
      scale: 0.001
  observation.images:
    topic: /image_raw
outputs:
  - topic: /shoulder_controller/commands
    type: std_msgs/msg/Float64MultiArray
    action: [1, 0]
  - topic: /elbow_controller/commands
    type: std_msgs/msg/Float64MultiArray
    action: [2]
  - topic: /wrist_controller/joint_trajectory
    type: trajectory_msgs/msg/JointTrajectory
    action: [3, 4]
    names: [joint4, joint5]
  - topic: /gripper_controller/command
    type: std_msgs/msg/Float64
    action: [5]
    scale: 1000.0
"""

MULTI_PARAMS_YAML = """\
# Node parameters for the multi-source demo bag (tools/make_demo_bag.py --multi).
policy_node:
  ros__parameters:
    export_dir: tests/fixtures/act_tiny/onnx
    io_map: {io_map}
    control_rate_hz: 30.0
    max_observation_age_ms: 200.0
    refill_ahead_steps: 5
    enable_on_start: true
"""


def multi_messages(typestore):
    """The demo's messages split into the ``--multi`` topics (see the module docs)."""
    Header = typestore.types["std_msgs/msg/Header"]
    JointState = typestore.types["sensor_msgs/msg/JointState"]
    Array = typestore.types["std_msgs/msg/Float64MultiArray"]
    Layout = typestore.types["std_msgs/msg/MultiArrayLayout"]
    out = []
    for ns, topic, msgtype, msg in messages(typestore):
        if topic != JOINT_TOPIC:
            out.append((ns, topic, msgtype, msg))
            continue
        q = np.asarray(msg.position, dtype=np.float64)
        header = Header(stamp=stamp(ns, typestore), frame_id="")
        empty = np.zeros(0, dtype=np.float64)
        arm = JointState(
            header=header,
            name=["joint3", "joint1", "joint2", "unused"],
            position=np.array([q[2], q[0], q[1], 7.0]),
            velocity=empty,
            effort=empty,
        )
        wrist = JointState(
            header=header, name=["joint5", "joint4"], position=np.array([q[4], q[3]]), velocity=empty, effort=empty
        )
        gripper = Array(layout=Layout(dim=[], data_offset=0), data=np.array([q[5] * 1000.0]))
        out.append((ns, "/arm/joint_states", msgtype, arm))
        out.append((ns, "/wrist/joint_states", msgtype, wrist))
        out.append((ns, "/gripper/opening_mm", "std_msgs/msg/Float64MultiArray", gripper))
    return out


def stamp(ns: int, typestore):
    Time = typestore.types["builtin_interfaces/msg/Time"]
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


LARGE_OUT = ROOT / "fixtures-large" / "demo_bag_large"
LARGE_JOINTS = 14
LARGE_IMAGE_SIZE = (480, 640)
LARGE_DURATION_S = 10.0

LARGE_PARAMS_YAML = """\
# Node parameters for the large demo bag (tools/make_demo_bag.py --large): replay speed
# with the ACT-size export. joint_names: the export's.
policy_node:
  ros__parameters:
    export_dir: fixtures-large/act_full/onnx
    control_rate_hz: 30.0
    joint_state_topic: /joint_states
    camera_topics: [/image_raw]
    max_observation_age_ms: 200.0
"""


def messages(
    typestore,
    joints: int = demo.NUM_JOINTS,
    size=demo.DEFAULT_IMAGE_SIZE,
    n_samples: int = N_SAMPLES,
    cameras=None,
):
    """(log time ns, topic, type, message) in log-time order. ``cameras``: (topic, view,
    (h, w)) each; default the one 64x64 ``top`` camera on ``/image_raw``."""
    cameras = cameras or ((IMAGE_TOPIC, "top", size),)
    Header = typestore.types["std_msgs/msg/Header"]
    JointState = typestore.types["sensor_msgs/msg/JointState"]
    Image = typestore.types["sensor_msgs/msg/Image"]
    names = [f"joint{i + 1}" for i in range(joints)]

    def joint_state(ns: int):
        t = (ns - T0_NS) / 1e9
        q = np.resize(demo.state_at(t).astype(np.float64), joints)
        return JointState(
            header=Header(stamp=stamp(ns, typestore), frame_id=""),
            name=list(names),
            position=q,
            velocity=np.zeros(0, dtype=np.float64),
            effort=np.zeros(0, dtype=np.float64),
        )

    out = [(T0_NS, JOINT_TOPIC, "sensor_msgs/msg/JointState", joint_state(T0_NS))]
    for i in range(n_samples):
        ns = T0_NS + i * PERIOD_NS + PERIOD_NS // 2
        out.append((ns, JOINT_TOPIC, "sensor_msgs/msg/JointState", joint_state(ns)))
        for topic, view, (h, w) in cameras:
            pixels = demo.render_image((ns - T0_NS) / 1e9, h, w, view)
            image = Image(
                header=Header(stamp=stamp(ns, typestore), frame_id=FRAME_ID),
                height=h,
                width=w,
                encoding="rgb8",
                is_bigendian=0,
                step=w * 3,
                data=np.ascontiguousarray(pixels).reshape(-1),
            )
            out.append((ns, topic, "sensor_msgs/msg/Image", image))
    return out


def write_bag(path: Path, plugin: StoragePlugin, typestore, msgs) -> None:
    if path.exists():
        shutil.rmtree(path)
    writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
    if plugin == StoragePlugin.MCAP:
        # Storage-side compression = zstd-compressed MCAP chunks (the mcap crate reads them).
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        conns = {}
        for _, topic, msgtype, _ in msgs:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
        for ns, topic, msgtype, msg in msgs:
            writer.write(conns[topic], ns, bytes(typestore.serialize_cdr(msg, msgtype)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--large", action="store_true", help="the ACT-size speed-test bag instead")
    parser.add_argument("--vla", type=Path, default=None, metavar="DIR", help="the two-camera VLA bag, under DIR")
    parser.add_argument("--multi", type=Path, default=None, metavar="DIR", help="the multi-source bag, under DIR")
    args = parser.parse_args()
    typestore = get_typestore(Stores.ROS2_KILTED)
    if args.multi:
        out = args.multi.resolve()
        out.mkdir(parents=True, exist_ok=True)
        msgs = multi_messages(typestore)
        write_bag(out / "mcap", StoragePlugin.MCAP, typestore, msgs)
        (out / "io_map.yaml").write_text(MULTI_IO_MAP_YAML)
        (out / "params.yaml").write_text(MULTI_PARAMS_YAML.format(io_map=out / "io_map.yaml"))
        print(f"wrote {out} ({len(msgs)} messages)")
        return
    if args.vla:
        out = args.vla
        out.mkdir(parents=True, exist_ok=True)
        msgs = messages(typestore, cameras=VLA_CAMERAS)
        write_bag(out / "mcap", StoragePlugin.MCAP, typestore, msgs)
        (out / "params.yaml").write_text(VLA_PARAMS_YAML)
        print(f"wrote {out} ({len(msgs)} messages)")
        return
    if args.large:
        out = args.out or LARGE_OUT
        out.mkdir(parents=True, exist_ok=True)
        n = int(round(LARGE_DURATION_S * RATE_HZ))
        msgs = messages(typestore, LARGE_JOINTS, LARGE_IMAGE_SIZE, n)
        write_bag(out / "mcap", StoragePlugin.MCAP, typestore, msgs)
        (out / "params.yaml").write_text(LARGE_PARAMS_YAML)
        total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"wrote {out} ({len(msgs)} messages, {total / 1e6:.1f} MB)")
        return
    out = args.out or DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    msgs = messages(typestore)
    write_bag(out / "mcap", StoragePlugin.MCAP, typestore, msgs)
    write_bag(out / "sqlite3", StoragePlugin.SQLITE3, typestore, msgs)
    mcaps = sorted((out / "mcap").glob("*.mcap"))
    shutil.copyfile(mcaps[0], out / "demo.mcap")
    (out / "params.yaml").write_text(PARAMS_YAML)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({len(msgs)} messages per bag, {total / 1e6:.2f} MB in all)")


if __name__ == "__main__":
    main()
