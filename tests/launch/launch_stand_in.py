"""A stand-in for the few `launch` / `launch_ros` APIs that launch/policy_node.launch.py uses.

ROS 2's launch packages are not on PyPI, so a machine set up by tools/setup.sh alone has
none; check_launch_args.py then evaluates the launch file with this stand-in. It follows the
real packages' rules where the checks depend on them:
  - IncludeLaunchDescription's launch_arguments set launch configurations before the included
    description runs; DeclareLaunchArgument sets its default only where no value was given,
    and one without a default that was not given is an error;
  - Node finds its executable as <package prefix>/lib/<package>/<executable> through the ament
    index, and builds `--ros-args` from ros_arguments, the node name and namespace, then each
    `parameters` entry in order (a path: `--params-file PATH`, skipped with a warning if it is
    not a file; a dict: a temporary YAML file keyed by the node's full name), then the
    remappings (`-r FROM:=TO`);
  - substitutions (LaunchConfiguration, ParameterValue with a value_type) in Node's arguments
    are performed when the node is executed; a bool takes YAML's true / false, 1 or 0;
  - LaunchService.run returns 0, or 1 after an exception while evaluating the description.
`install()` puts the stand-in into sys.modules under the real names.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import types

import yaml
from ament_index_python.packages import get_package_prefix


class LaunchContext:
    def __init__(self):
        self.launch_configurations = {}


class LaunchDescription:
    def __init__(self, entities=()):
        self.entities = list(entities)

    def visit(self, context):
        for entity in self.entities:
            entity.visit(context)


class DeclareLaunchArgument:
    def __init__(self, name, default_value=None, description=""):
        self.name = name
        self.default_value = default_value
        self.description = description

    def visit(self, context):
        if self.name in context.launch_configurations:
            return
        if self.default_value is None:
            raise RuntimeError(f"Included launch description missing required argument '{self.name}'")
        context.launch_configurations[self.name] = self.default_value


class OpaqueFunction:
    def __init__(self, function, args=None, kwargs=None):
        self.function = function
        self.args = args or []
        self.kwargs = kwargs or {}

    def visit(self, context):
        for entity in self.function(context, *self.args, **self.kwargs) or []:
            entity.visit(context)


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


class ParameterValue:
    def __init__(self, value, value_type=None):
        self.value = value
        self.value_type = value_type

    def perform(self, context):
        text = perform(context, self.value)
        if self.value_type in (None, str):
            return text
        if self.value_type is bool:
            value = yaml.safe_load({"1": "true", "0": "false"}.get(text, text))
            if isinstance(value, bool):
                return value
            raise ValueError(f"Cannot convert value '{text}' to '{bool}'")
        return self.value_type(text)


def perform(context, value):
    """The value with every substitution in it performed (lists, tuples and dicts too)."""
    if hasattr(value, "perform"):
        return value.perform(context)
    if isinstance(value, (list, tuple)):
        return type(value)(perform(context, v) for v in value)
    if isinstance(value, dict):
        return {k: perform(context, v) for k, v in value.items()}
    return value


class PythonLaunchDescriptionSource:
    def __init__(self, path):
        self.path = path

    def description(self):
        spec = importlib.util.spec_from_file_location("launch_file", self.path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.generate_launch_description()


class IncludeLaunchDescription:
    def __init__(self, source, launch_arguments=()):
        self.source = source
        self.launch_arguments = list(launch_arguments)

    def visit(self, context):
        context.launch_configurations.update(self.launch_arguments)
        self.source.description().visit(context)


class Node:
    def __init__(
        self,
        package,
        executable,
        name,
        namespace="",
        parameters=(),
        remappings=(),
        ros_arguments=(),
        output="log",
        emulate_tty=False,
    ):
        self.package = package
        self.executable = executable
        self.name = name
        self.namespace = namespace
        self.parameters = list(parameters)
        self.remappings = list(remappings)
        self.ros_arguments = list(ros_arguments)

    def visit(self, context):
        exe = os.path.join(get_package_prefix(self.package), "lib", self.package, self.executable)
        if not os.access(exe, os.X_OK):
            raise RuntimeError(f"executable '{self.executable}' not found in package '{self.package}'")
        namespace = "/" + perform(context, self.namespace).strip("/")
        full_name = namespace.rstrip("/") + "/" + self.name
        cmd = [
            exe,
            "--ros-args",
            *perform(context, self.ros_arguments),
            "-r",
            f"__node:={self.name}",
            "-r",
            f"__ns:={namespace}",
        ]
        for entry in perform(context, self.parameters):
            if isinstance(entry, dict):
                with tempfile.NamedTemporaryFile("w", prefix="launch_params_", delete=False) as f:
                    yaml.dump({full_name: {"ros__parameters": entry}}, f, default_flow_style=False)
                cmd += ["--params-file", f.name]
            elif os.path.isfile(entry):
                cmd += ["--params-file", entry]
            else:
                print(f"[WARNING] Parameter file path is not a file: {entry}", file=sys.stderr)
        for source, target in perform(context, self.remappings):
            cmd += ["-r", f"{source}:={target}"]
        subprocess.run(cmd, check=False)


class LaunchService:
    def __init__(self):
        self.includes = []

    def include_launch_description(self, include):
        self.includes.append(include)

    def run(self):
        context = LaunchContext()
        try:
            for include in self.includes:
                include.visit(context)
        except Exception as err:  # launch logs the exception and returns 1
            print(f"[ERROR] [launch]: Caught exception in launch: {err}", file=sys.stderr)
            return 1
        return 0


def install():
    """Registers the stand-in as `launch`, `launch.actions`, ..., `launch_ros.actions`."""
    contents = {
        "launch": {
            "LaunchDescription": LaunchDescription,
            "LaunchService": LaunchService,
            "LaunchContext": LaunchContext,
        },
        "launch.actions": {
            "DeclareLaunchArgument": DeclareLaunchArgument,
            "OpaqueFunction": OpaqueFunction,
            "IncludeLaunchDescription": IncludeLaunchDescription,
        },
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch.launch_description_sources": {"PythonLaunchDescriptionSource": PythonLaunchDescriptionSource},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
        "launch_ros.parameter_descriptions": {"ParameterValue": ParameterValue},
    }
    for name, attributes in contents.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
