"""The whole stack on the simulated robot cell: sim_driver (arm + camera), prompt_node, policy_node, RViz.

ros2 launch pixelvla_ros sim.launch.py [episode:=0] [family:=pick_prompted] [checkpoint:=DIR] [rviz:=true]

Click an object with RViz's "Publish Point" tool, then start the task:
ros2 action send_goal /pixelvla/run_task pixelvla_ros/action/RunTask \
    "{instruction: 'pick up the cube', require_prompt: true}"
(`ros2 run pixelvla_ros demo` does the same with a scripted click, no RViz.)
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    config = os.path.join(get_package_share_directory("pixelvla_ros"), "config")
    # The calibration prompt_node and policy_node both read; after their own file (see config/camera.yaml).
    camera = os.path.join(config, "camera.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument("episode", default_value="0", description="eval-split scene"),
            DeclareLaunchArgument("family", default_value="pick_prompted", description="task family"),
            DeclareLaunchArgument("checkpoint", default_value="", description="empty: the packaged tiny one"),
            DeclareLaunchArgument("rviz", default_value="true", description="start RViz 2"),
            Node(
                package="pixelvla_ros",
                executable="sim_driver",
                parameters=[
                    os.path.join(config, "sim_driver.yaml"),
                    {"episode": LaunchConfiguration("episode"), "family": LaunchConfiguration("family")},
                ],
                output="screen",
            ),
            Node(
                package="pixelvla_ros",
                executable="prompt_node",
                parameters=[os.path.join(config, "prompt_node.yaml"), camera],
                output="screen",
            ),
            Node(
                package="pixelvla_ros",
                executable="policy_node",
                parameters=[
                    os.path.join(config, "policy_node.yaml"),
                    camera,
                    {"checkpoint": LaunchConfiguration("checkpoint")},
                ],
                output="screen",
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(config, "pixelvla.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
