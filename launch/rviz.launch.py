"""RViz 2 with pixelvla_ros's display set-up: camera, prompt overlay and the Publish Point tool.

ros2 launch pixelvla_ros rviz.launch.py
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    rviz_config = os.path.join(get_package_share_directory("pixelvla_ros"), "config", "pixelvla.rviz")
    return LaunchDescription([Node(package="rviz2", executable="rviz2", arguments=["-d", rviz_config])])
