"""Parameter declaration with descriptors (type, range, description), as `ros2 param describe` shows them.

    declare(node, "max_image_age", 0.5, "refuse frames older than this, s", floating=(0.01, 10.0))
Defaults live in config/*.yaml; the values here are what a node falls back to without a parameter file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    floating: tuple[float, float] | None = None,
    integer: tuple[int, int] | None = None,
    read_only: bool = False,
) -> Any:
    """Declare one parameter and return its value (range-checked by rclpy at declaration and on set)."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if floating is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(floating[0]), to_value=float(floating[1]))
        ]
    if integer is not None:
        descriptor.integer_range = [
            IntegerRange(from_value=int(integer[0]), to_value=int(integer[1]), step=1)
        ]
    return node.declare_parameter(name, default, descriptor).value


def package_share() -> Path:
    """share/pixelvla_ros of the installed package: from the ament index on a sourced ROS install, else the
    running interpreter's prefix (`make setup` installs the package into the venv prefix, which no
    setup.bash sources, so AMENT_PREFIX_PATH is unset there)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory("pixelvla_ros"))
        except (PackageNotFoundError, OSError):
            pass
    except ImportError:
        pass
    return Path(sys.prefix) / "share" / "pixelvla_ros"
