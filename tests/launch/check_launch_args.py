"""Checks how launch/policy_node.launch.py turns launch arguments into the node's parameters.

    python tests/launch/check_launch_args.py [--launch auto|real|stand-in] [--launch-file PATH]

Lays out a throwaway ament prefix in a temporary directory (package `policy_node`: the launch
file, config/policy_node.yaml, and in place of the node an executable that records the
arguments it was started with and the parameter files they name), puts it first on
AMENT_PREFIX_PATH, and runs the launch file through launch's LaunchService as `ros2 launch
policy_node policy_node.launch.py NAME:=VALUE ...` does. From each recorded command line it
works out the parameters the node gets (parameter files and `-p` in order, later wins) and
checks them.

`--launch real` uses ROS 2's launch and launch_ros (a sourced ROS 2 install); `stand-in` uses
launch_stand_in.py next to this script (the launch packages are not on PyPI); `auto` (default)
takes the real ones where they import. Prints one line per check and `N passed, M failed`;
exits 1 if a check failed.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NODE = "policy_node"

# The stand-in node: records its arguments and the contents of the parameter files they name.
RECORDER = """\
import json, os, sys
argv = sys.argv[1:]
files = {}
for flag, value in zip(argv, argv[1:]):
    if flag == "--params-file":
        with open(value) as f:
            files[value] = f.read()
with open(os.environ["POLICY_NODE_LAUNCH_RECORD"], "a") as f:
    f.write(json.dumps({"argv": argv, "params_files": files}) + "\\n")
"""

USER_PARAMS = """\
policy_node:
  ros__parameters:
    export_dir: /from/the/file
    autostart: false
    use_sim_time: true
    joint_names: [a, b]
"""


def load_launch(mode):
    """Imports launch (real or stand-in); returns the name of the one in use."""
    if mode in ("auto", "real"):
        try:
            import launch_ros.actions  # noqa: F401
            from launch import LaunchService  # noqa: F401

            return "real"
        except ImportError as err:
            if mode == "real":
                sys.exit(f"ROS 2's launch / launch_ros do not import: {err}")
    sys.path.insert(0, HERE)
    import launch_stand_in

    launch_stand_in.install()
    return "stand-in"


def make_prefix(tmp, launch_file):
    """A throwaway ament prefix holding package `policy_node` with the recording executable."""
    prefix = os.path.join(tmp, "prefix")
    share = os.path.join(prefix, "share", NODE)
    os.makedirs(os.path.join(share, "launch"))
    os.makedirs(os.path.join(share, "config"))
    os.makedirs(os.path.join(prefix, "lib", NODE))
    os.makedirs(os.path.join(prefix, "share", "ament_index", "resource_index", "packages"))
    open(os.path.join(prefix, "share", "ament_index", "resource_index", "packages", NODE), "w").close()
    shutil.copy(launch_file, os.path.join(share, "launch", "policy_node.launch.py"))
    shutil.copy(os.path.join(ROOT, "config", "policy_node.yaml"), os.path.join(share, "config"))
    recorder = os.path.join(prefix, "lib", NODE, "record_start.py")
    with open(recorder, "w") as f:
        f.write(RECORDER)
    exe = os.path.join(prefix, "lib", NODE, NODE)
    with open(exe, "w") as f:
        f.write(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(recorder)} "$@"\n')
    os.chmod(exe, 0o755)
    return prefix


def launch(arguments, record):
    """`ros2 launch policy_node policy_node.launch.py ARGUMENTS`: (exit code, recorded starts)."""
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    if os.path.exists(record):
        os.remove(record)
    path = os.path.join(get_package_share_directory(NODE), "launch", "policy_node.launch.py")
    pairs = [a.split(":=", 1) for a in arguments]
    service = LaunchService()
    service.include_launch_description(
        IncludeLaunchDescription(PythonLaunchDescriptionSource(path), launch_arguments=pairs)
    )
    code = service.run()
    starts = []
    if os.path.exists(record):
        with open(record) as f:
            starts = [json.loads(line) for line in f]
    return code, starts


def ros_args(argv):
    """The arguments between `--ros-args` and the next `--` (or the end)."""
    if "--ros-args" not in argv:
        return []
    rest = argv[argv.index("--ros-args") + 1 :]
    return rest[: rest.index("--")] if "--" in rest else rest


def flatten(params, prefix=""):
    flat = {}
    for name, value in params.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def parameters(start):
    """{name: (value, where it came from)} as the node sees them: files and -p in order."""
    found = {}
    args = ros_args(start["argv"])
    for flag, value in zip(args, args[1:]):
        if flag == "--params-file":
            content = yaml.safe_load(start["params_files"][value]) or {}
            for key, entry in content.items():
                # `/**` and any key naming the node (plain or with a namespace).
                if key == "/**" or key.rsplit("/", 1)[-1] == NODE:
                    for name, v in flatten(entry.get("ros__parameters", {})).items():
                        found[name] = (v, value)
        elif flag == "-p":
            name, _, text = value.partition(":=")
            found[name] = (yaml.safe_load(text), "-p")
    return found


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, what, ok, got):
        if ok:
            self.passed += 1
            print(f"ok: {what}")
        else:
            self.failed += 1
            print(f"FAILED: {what}\n    got: {got!r}")


def one_start(checks, label, code, starts):
    """The single recorded start of a launch that must succeed, or None."""
    checks.check(
        f"{label}: launch succeeds and starts the node once",
        code == 0 and len(starts) == 1,
        f"exit code {code}, {len(starts)} starts",
    )
    return starts[0] if code == 0 and len(starts) == 1 else None


def run_checks(tmp, record, checks):
    user_file = os.path.join(tmp, "my_robot.yaml")
    with open(user_file, "w") as f:
        f.write(USER_PARAMS)
    user_file_io = os.path.join(tmp, "my_robot_io.yaml")
    with open(user_file_io, "w") as f:
        f.write(USER_PARAMS + "    io_map: /from/the/file/io_map.yaml\n")
    base = ["export_dir:=/exports/act", f"params_file:={user_file}"]

    def values(start):
        return {name: value for name, (value, _) in parameters(start).items()}

    # (1) No launch argument for them: the file's autostart / use_sim_time stand, and no
    # command-line parameter names them.
    label = "params file only"
    start = one_start(checks, label, *launch(base, record))
    if start:
        p = parameters(start)
        checks.check(
            f"{label}: autostart false from the file", p.get("autostart") == (False, user_file), p.get("autostart")
        )
        checks.check(
            f"{label}: use_sim_time true from the file",
            p.get("use_sim_time") == (True, user_file),
            p.get("use_sim_time"),
        )
        checks.check(
            f"{label}: export_dir from the launch argument",
            p.get("export_dir", (None,))[0] == "/exports/act",
            p.get("export_dir"),
        )
        checks.check(f"{label}: no io_map (or the empty one)", p.get("io_map", ("",))[0] == "", p.get("io_map"))
        checks.check(f"{label}: the user's file is passed", user_file in start["params_files"], start["argv"])

    # (2) Given on the command line, they override the file.
    label = "autostart:=true use_sim_time:=false"
    start = one_start(checks, label, *launch(base + ["autostart:=true", "use_sim_time:=false"], record))
    if start:
        v = values(start)
        checks.check(f"{label}: autostart true", v.get("autostart") is True, v.get("autostart"))
        checks.check(f"{label}: use_sim_time false", v.get("use_sim_time") is False, v.get("use_sim_time"))

    # launch's bool spellings: 0 / 1 and YAML's, in any case.
    for text, want in (("0", False), ("1", True), ("False", False), ("TRUE", True)):
        label = f"autostart:={text}"
        start = one_start(checks, label, *launch(base + [f"autostart:={text}"], record))
        if start:
            v = values(start)
            checks.check(f"{label}: autostart {want}", v.get("autostart") is want, v.get("autostart"))

    label = "autostart:=maybe"
    code, starts = launch(base + ["autostart:=maybe"], record)
    checks.check(
        f"{label}: launch fails, the node is not started",
        code != 0 and not starts,
        f"exit code {code}, {len(starts)} starts",
    )

    # (3) io_map: passed when given, the file's value otherwise.
    label = "io_map:=/x.yaml"
    start = one_start(checks, label, *launch(base + ["io_map:=/x.yaml"], record))
    if start:
        v = values(start)
        checks.check(f"{label}: io_map /x.yaml", v.get("io_map") == "/x.yaml", v.get("io_map"))
        checks.check(f"{label}: autostart still the file's", v.get("autostart") is False, v.get("autostart"))

    # With the package's own parameters file, io_map:= drops the flat wiring the map replaces.
    label = "io_map:=/x.yaml, the package's parameters file"
    start = one_start(checks, label, *launch(["export_dir:=/exports/act", "io_map:=/x.yaml"], record))
    if start:
        p = parameters(start)
        checks.check(f"{label}: io_map /x.yaml", p.get("io_map", (None,))[0] == "/x.yaml", p.get("io_map"))
        flat = [n for n in ("joint_names", "joint_state_topic", "camera_topics", "camera_inputs", "command_topic", "command_type") if n in p]
        checks.check(f"{label}: no flat wiring parameter reaches the node", not flat, flat)
        checks.check(f"{label}: the file's other parameters do", "control_rate_hz" in p, sorted(p))

    label = "io_map in the params file"
    start = one_start(checks, label, *launch(["export_dir:=/exports/act", f"params_file:={user_file_io}"], record))
    if start:
        p = parameters(start)
        want = ("/from/the/file/io_map.yaml", user_file_io)
        checks.check(f"{label}: io_map from the file", p.get("io_map") == want, p.get("io_map"))

    label = "io_map in the params file, io_map:=/x.yaml"
    start = one_start(
        checks, label, *launch(["export_dir:=/exports/act", f"params_file:={user_file_io}", "io_map:=/x.yaml"], record)
    )
    if start:
        v = values(start)
        checks.check(f"{label}: io_map /x.yaml", v.get("io_map") == "/x.yaml", v.get("io_map"))

    # An openpi server without an export: no export_dir argument, the map and the server's URL.
    label = "io_map:= remote_url:=ws://... task:=..., no export_dir"
    start = one_start(
        checks,
        label,
        *launch(["io_map:=/maps/openpi_aloha.yaml", "remote_url:=ws://gpu-box:8000", "task:=fold the towel"], record),
    )
    if start:
        p = parameters(start)
        checks.check(f"{label}: export_dir the file's empty one", p.get("export_dir", ("",))[0] == "", p.get("export_dir"))
        checks.check(
            f"{label}: remote_url ws://gpu-box:8000",
            p.get("remote_url", (None,))[0] == "ws://gpu-box:8000",
            p.get("remote_url"),
        )
        checks.check(f"{label}: task", p.get("task", (None,))[0] == "fold the towel", p.get("task"))
        checks.check(
            f"{label}: io_map", p.get("io_map", (None,))[0] == "/maps/openpi_aloha.yaml", p.get("io_map")
        )

    # The package's parameters file by default; remaps, namespace and log level as before.
    label = "defaults"
    start = one_start(checks, label, *launch(["export_dir:=/exports/act"], record))
    if start:
        from ament_index_python.packages import get_package_share_directory

        package_file = os.path.join(get_package_share_directory(NODE), "config", "policy_node.yaml")
        p = parameters(start)
        args = ros_args(start["argv"])
        checks.check(
            f"{label}: the package's config/policy_node.yaml is passed",
            package_file in start["params_files"],
            start["argv"],
        )
        checks.check(
            f"{label}: autostart true from the package's file",
            p.get("autostart") == (True, package_file),
            p.get("autostart"),
        )
        checks.check(
            f"{label}: use_sim_time false from the package's file",
            p.get("use_sim_time") == (False, package_file),
            p.get("use_sim_time"),
        )
        checks.check(
            f"{label}: export_dir from the launch argument",
            p.get("export_dir", (None,))[0] == "/exports/act",
            p.get("export_dir"),
        )
        checks.check(f"{label}: no io_map (or the empty one)", p.get("io_map", ("",))[0] == "", p.get("io_map"))
        checks.check(f"{label}: --log-level info", "--log-level info" in " ".join(args), args)
        checks.check(f"{label}: node name policy_node", "__node:=policy_node" in args, args)

    label = "remaps, namespace, log level"
    arguments = [
        "export_dir:=/exports/act",
        "joint_states:=/arm/joint_states",
        "image_raw:=/camera/color/image_raw",
        "joint_commands:=/forward_position_controller/commands",
        "namespace:=robot1",
        "log_level:=debug",
    ]
    start = one_start(checks, label, *launch(arguments, record))
    if start:
        args = ros_args(start["argv"])
        for remap in (
            "joint_states:=/arm/joint_states",
            "image_raw:=/camera/color/image_raw",
            "joint_commands:=/forward_position_controller/commands",
            "__ns:=/robot1",
        ):
            checks.check(f"{label}: -r {remap}", remap in args, args)
        checks.check(f"{label}: --log-level debug", "--log-level debug" in " ".join(args), args)

    # No export_dir argument: the parameters file's stands (the node checks it at configure).
    label = "no export_dir"
    start = one_start(checks, label, *launch([f"params_file:={user_file}"], record))
    if start:
        v = values(start)
        checks.check(f"{label}: the file's export_dir", v.get("export_dir") == "/from/the/file", v.get("export_dir"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launch", choices=("auto", "real", "stand-in"), default="auto")
    parser.add_argument("--launch-file", default=os.path.join(ROOT, "launch", "policy_node.launch.py"))
    options = parser.parse_args()
    which = load_launch(options.launch)
    print(f"launch file {options.launch_file}, {which} launch packages")
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="policy_node_launch_") as tmp:
        prefix = make_prefix(tmp, options.launch_file)
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(filter(None, [prefix, os.environ.get("AMENT_PREFIX_PATH")]))
        record = os.path.join(tmp, "starts.jsonl")
        os.environ["POLICY_NODE_LAUNCH_RECORD"] = record
        run_checks(tmp, record, checks)
    print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
