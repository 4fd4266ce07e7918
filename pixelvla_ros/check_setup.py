"""`ros2 run pixelvla_ros check_setup`: reports whether this machine can run pixelvla_ros.

Checks each component a user needs and says what is missing and how to get it, instead of letting the
first node fail deep inside an import. Exit status 0 when everything required works.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

REQUIRED = "required"
OPTIONAL = "optional"


def _check_messages() -> str:
    from pixelvla_ros.msg import ActionChunk, VisualPrompt

    return f"{ActionChunk.__name__}, {VisualPrompt.__name__}"


def _check_rclpy() -> str:
    from rclpy.utilities import get_rmw_implementation_identifier

    return get_rmw_implementation_identifier()


def _check_torch() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"torch {torch.__version__}, {device}"


def _check_mujoco_render() -> str:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
    with mujoco.Renderer(model, 32, 32) as renderer:
        renderer.update_scene(mujoco.MjData(model))
        renderer.render()
    return f"mujoco {mujoco.__version__}, MUJOCO_GL={os.environ['MUJOCO_GL']}"


def _check_import(name: str) -> Callable[[], str]:
    def check() -> str:
        module = importlib.import_module(name)
        return f"{name} {getattr(module, '__version__', '')}".strip()

    return check


CHECKS: list[tuple[str, str, Callable[[], str], str]] = [
    ("messages", REQUIRED, _check_messages, "build msg/: `make build` (no ROS) or `colcon build`"),
    ("rclpy", REQUIRED, _check_rclpy, "source ROS 2, or `make setup` for the PyPI wheels"),
    ("torch", REQUIRED, _check_torch, "pip install torch"),
    ("transformers", REQUIRED, _check_import("transformers"), "pip install transformers"),
    ("peft", REQUIRED, _check_import("peft"), "pip install peft"),
    ("mujoco rendering", REQUIRED, _check_mujoco_render, "pip install mujoco; MUJOCO_GL=egl needs libEGL"),
    ("opencv", REQUIRED, _check_import("cv2"), "pip install opencv-python-headless"),
    ("ur_rtde", OPTIONAL, _check_import("rtde_control"), "pip install ur-rtde==1.6.5 (real UR only)"),
    ("tensorrt", OPTIONAL, _check_import("tensorrt"), "NVIDIA's TensorRT (optional GPU backend)"),
]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    missing_required = 0
    for name, level, check, remedy in CHECKS:
        try:
            detail = check()
            print(f"[ ok ] {name}: {detail}")
        except Exception as error:  # report every failure the same way: what, why, how to fix
            missing_required += level == REQUIRED
            print(f"[{'FAIL' if level == REQUIRED else 'skip'}] {name}: {type(error).__name__}: {error}")
            print(f"       -> {remedy}")
    return 1 if missing_required else 0


if __name__ == "__main__":
    sys.exit(main())
