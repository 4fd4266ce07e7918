"""PixelVLA on a Universal Robots arm: ur_driver (ur_rtde), prompt_node, policy_node, RViz.

ros2 launch pixelvla_ros robot.launch.py robot_ip:=192.168.1.10 image:=/camera/color/image_raw \
    camera_info:=/camera/color/camera_info [checkpoint:=DIR] [enable_actuation:=false]

DRY RUN BY DEFAULT: the driver computes and reports every command but sends no motion until
enable_actuation:=true. Start a camera driver yourself (e.g. realsense2_camera); its optical frame's pose
in the robot base frame goes into config/camera.yaml (camera_pose_in_base, read by prompt_node, which can
take it from tf2 instead, and by policy_node for the prompt anchor of checkpoints that use it).
Rehearse without a robot: README "UR driver" (ur_emulator + the simulator's camera).
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
    image, camera_info = LaunchConfiguration("image"), LaunchConfiguration("camera_info")
    camera_remaps = [("/camera/image_raw", image), ("/camera/camera_info", camera_info)]
    return LaunchDescription(
        [
            DeclareLaunchArgument("robot_ip", description="UR controller address"),
            DeclareLaunchArgument("enable_actuation", default_value="false", description="false = dry run"),
            DeclareLaunchArgument(
                "image", default_value="/camera/image_raw", description="camera image topic"
            ),
            DeclareLaunchArgument(
                "camera_info", default_value="/camera/camera_info", description="CameraInfo"
            ),
            DeclareLaunchArgument("checkpoint", default_value="", description="empty: the packaged tiny one"),
            DeclareLaunchArgument("rviz", default_value="true", description="start RViz 2"),
            Node(
                package="pixelvla_ros",
                executable="ur_driver",
                parameters=[
                    os.path.join(config, "ur_driver.yaml"),
                    {
                        "robot_ip": LaunchConfiguration("robot_ip"),
                        "enable_actuation": LaunchConfiguration("enable_actuation"),
                    },
                ],
                output="screen",
            ),
            Node(
                package="pixelvla_ros",
                executable="prompt_node",
                parameters=[os.path.join(config, "prompt_node.yaml"), camera],
                remappings=camera_remaps,
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
                remappings=camera_remaps,
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
