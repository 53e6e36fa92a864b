"""Launch policy_node: an exported action-chunking policy as a ROS 2 node.

    ros2 launch policy_node policy_node.launch.py export_dir:=/path/to/export
    ros2 launch policy_node policy_node.launch.py export_dir:=/path/to/export \
        params_file:=/path/to/my_robot.yaml joint_states:=/my_robot/joint_states \
        image_raw:=/camera/color/image_raw joint_commands:=/forward_position_controller/commands
    ros2 launch policy_node policy_node.launch.py remote_url:=ws://gpu-box:8000 \
        io_map:=config/io_map_openpi_aloha.yaml task:="fold the towel"   # openpi, no export
    ros2 service call /policy_node/reset std_srvs/srv/Trigger     # between episodes

Arguments:
    export_dir      export directory of the policy (overrides the parameters file; required
                    unless an openpi server and an io_map with an `openpi:` section stand in)
    params_file     ROS parameters file (default: the package's config/policy_node.yaml)
    joint_states    remap of the joint_states input topic
    image_raw       remap of the image_raw camera topic (the default camera_topics entry)
    joint_commands  remap of the joint_commands output topic
    namespace       node namespace (default: none)
    log_level       ROS log level (default: info)
    use_sim_time    follow /clock: true or false (default: the parameters file's value, else
                    false)
    autostart       configure and activate at start: true or false (default: the parameters
                    file's value, else true); false leaves the managed node unconfigured for
                    `ros2 lifecycle set` or a lifecycle manager
    io_map          the I/O map, a YAML file: parameter `io_map` (default: the parameters
                    file's value, else none)
    remote_url      backend remote's server: http(s):// (KServe v2) or ws(s):// (openpi)
    task            the task (language instruction), an openpi server's `prompt`

export_dir, use_sim_time, autostart, io_map, remote_url and task override the parameters file
only when given on the command line: left out, the file's values (or the node's defaults) stand. With io_map:= and
the package's own parameters file, the node gets that file without its flat wiring
(joint_names, joint_state_topic, camera_topics, camera_inputs, command_topic, command_type),
which the map replaces: `ros2 launch policy_node policy_node.launch.py export_dir:=...
io_map:=robot.yaml` works as it is.
"""

import os
import tempfile

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# Launch arguments that set a parameter only when given (default ""), with the parameter's type.
OPTIONAL_PARAMETERS = {
    "export_dir": str,
    "use_sim_time": bool,
    "autostart": bool,
    "io_map": str,
    "remote_url": str,
    "task": str,
}
# The parameters an I/O map replaces (the node refuses a map next to any of them set).
FLAT_WIRING = ("joint_names", "joint_state_topic", "camera_topics", "camera_inputs", "command_topic", "command_type")


def default_params_file():
    return os.path.join(get_package_share_directory("policy_node"), "config", "policy_node.yaml")


def without_flat_wiring(path):
    """A copy of parameters file `path` without the flat wiring parameters (a temporary file)."""
    with open(path) as f:
        content = yaml.safe_load(f) or {}
    for entry in content.values():
        params = (entry or {}).get("ros__parameters", {})
        for name in FLAT_WIRING:
            params.pop(name, None)
    out = tempfile.NamedTemporaryFile("w", prefix="policy_node_params_", suffix=".yaml", delete=False)
    with out:
        yaml.safe_dump(content, out)
    return out.name


def parameter_value(name, text, kind):
    """The parameter value of launch argument `name`, given as `text`.

    A bool takes what launch's typed parameters take: YAML's true / false (any case), 1 or 0.
    """
    if kind is str:
        return text
    value = yaml.safe_load({"1": "true", "0": "false"}.get(text, text))
    if not isinstance(value, bool):
        raise ValueError(f"launch argument {name}:={text} must be true or false")
    return value


def node_action(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    # The file first, then what the command line set: later entries win.
    overrides = {}
    for name, kind in OPTIONAL_PARAMETERS.items():
        text = arg(name)
        if text != "":
            overrides[name] = parameter_value(name, text, kind)
    params_file = arg("params_file")
    if "io_map" in overrides and os.path.realpath(params_file) == os.path.realpath(default_params_file()):
        params_file = without_flat_wiring(params_file)
    node = Node(
        package="policy_node",
        executable="policy_node",
        name="policy_node",
        namespace=arg("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[params_file, overrides],
        remappings=[
            ("joint_states", arg("joint_states")),
            ("image_raw", arg("image_raw")),
            ("joint_commands", arg("joint_commands")),
        ],
        ros_arguments=["--log-level", arg("log_level")],
        # policy_node exits cleanly (code 0, with a summary line) on SIGINT, which launch
        # sends first, and on SIGTERM.
    )
    return [node]


def generate_launch_description():
    default_params = default_params_file()
    args = [
        DeclareLaunchArgument(
            "export_dir",
            default_value="",
            description="export directory of the policy (model + metadata.yaml; default: the parameters "
            "file's; none with an openpi server and an io_map with an `openpi:` section)",
        ),
        DeclareLaunchArgument("params_file", default_value=default_params, description="ROS parameters file"),
        DeclareLaunchArgument("joint_states", default_value="joint_states", description="joint state input topic"),
        DeclareLaunchArgument("image_raw", default_value="image_raw", description="camera input topic"),
        DeclareLaunchArgument("joint_commands", default_value="joint_commands", description="command output topic"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="",
            description="use /clock as ROS time: true or false (default: the parameters file's value)",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value="",
            description="configure and activate the managed node at start: true or false "
            "(default: the parameters file's value)",
        ),
        DeclareLaunchArgument(
            "io_map",
            default_value="",
            description="the I/O map (YAML file; default: the parameters file's value)",
        ),
        DeclareLaunchArgument(
            "remote_url",
            default_value="",
            description="backend remote: the inference server (http://, https://, or ws:// / wss:// for an "
            "openpi policy server; default: the parameters file's value)",
        ),
        DeclareLaunchArgument(
            "task",
            default_value="",
            description="the task (language instruction; an openpi server's prompt; default: the parameters "
            "file's value)",
        ),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=node_action)])
