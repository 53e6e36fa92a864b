"""Launch policy_node: an exported action-chunking policy as a ROS 2 node.

    ros2 launch policy_node policy_node.launch.py export_dir:=/path/to/export
    ros2 launch policy_node policy_node.launch.py export_dir:=/path/to/export \
        params_file:=/path/to/my_robot.yaml joint_states:=/my_robot/joint_states \
        image_raw:=/camera/color/image_raw joint_commands:=/forward_position_controller/commands
    ros2 service call /policy_node/reset std_srvs/srv/Trigger     # between episodes

Arguments:
    export_dir      export directory of the policy (required; overrides the parameters file)
    params_file     ROS parameters file (default: the package's config/policy_node.yaml)
    joint_states    remap of the joint_states input topic
    image_raw       remap of the image_raw camera topic (the default camera_topics entry)
    joint_commands  remap of the joint_commands output topic
    namespace       node namespace (default: none)
    log_level       ROS log level (default: info)
    use_sim_time    follow /clock (default: false)
    autostart       configure and activate at start (default: true); false leaves the managed
                    node unconfigured for `ros2 lifecycle set` or a lifecycle manager
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("policy_node"), "config", "policy_node.yaml")
    args = [
        DeclareLaunchArgument("export_dir", description="export directory of the policy (model + metadata.yaml)"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="ROS parameters file"),
        DeclareLaunchArgument("joint_states", default_value="joint_states", description="joint state input topic"),
        DeclareLaunchArgument("image_raw", default_value="image_raw", description="camera input topic"),
        DeclareLaunchArgument("joint_commands", default_value="joint_commands", description="command output topic"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock as ROS time"),
        DeclareLaunchArgument(
            "autostart", default_value="true", description="configure and activate the managed node at start"
        ),
    ]
    node = Node(
        package="policy_node",
        executable="policy_node",
        name="policy_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        # Later entries win: the file first, then the explicit arguments.
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "export_dir": ParameterValue(LaunchConfiguration("export_dir"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
        remappings=[
            ("joint_states", LaunchConfiguration("joint_states")),
            ("image_raw", LaunchConfiguration("image_raw")),
            ("joint_commands", LaunchConfiguration("joint_commands")),
        ],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        # policy_node exits cleanly (code 0, with a summary line) on SIGINT, which launch
        # sends first, and on SIGTERM.
    )
    return LaunchDescription(args + [node])
