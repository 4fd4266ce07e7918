"""package.xml is valid and declares what setup.py's requirements and the code import."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]

# pip requirement name -> rosdep key. Keys marked "rosdistro" were checked in ros/rosdistro's
# rosdep/python.yaml; the others are defined in this repository's rosdep.yaml.
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "opencv-python-headless": "python3-opencv",
    "torch": "python3-torch",
    "transformers": "python3-transformers-pip",
    "peft": "python3-peft-pip",
    "accelerate": "python3-accelerate-pip",
    "safetensors": "python3-safetensors-pip",
    "tokenizers": "python3-tokenizers-pip",
    "onnx": "python3-onnx-pip",
    "onnxscript": "python3-onnxscript-pip",
    "onnxruntime": "python3-onnxruntime-pip",
    "websockets": "python3-websockets-pip",
    "msgpack": "python3-msgpack-pip",
    "mujoco": "python3-mujoco-pip",
    "ur-rtde": "python3-ur-rtde-pip",
    "tqdm": "python3-tqdm",
    "PyYAML": "python3-yaml",
    "imageio": "python3-imageio",
    "matplotlib": "python3-matplotlib",
    "tensorboard": "python3-tensorboard-pip",
    "pycocotools": "python3-pycocotools-pip",
    "rosbags": "python3-rosbags-pip",
    "pyarrow": "python3-pyarrow-pip",
}
ROSDISTRO_KEYS = {
    "python3-numpy", "python3-opencv", "python3-torch", "python3-transformers-pip", "python3-mujoco-pip",
    "python3-tqdm", "python3-yaml", "python3-imageio", "python3-matplotlib", "python3-tensorboard-pip",
    "python3-rosbags-pip", "python3-pytest", "python3-hypothesis", "python3-catkin-pkg",
}  # fmt: skip
# import name -> pip requirement name, where they differ
IMPORT_TO_REQUIREMENT = {
    "cv2": "opencv-python-headless",
    "yaml": "PyYAML",
    "rtde_control": "ur-rtde",
    "rtde_receive": "ur-rtde",
    "dashboard_client": "ur-rtde",
}
# ROS packages imported from Python -> must be an exec/build dependency under the same name.
ROS_IMPORTS = {
    "rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "visualization_msgs", "diagnostic_msgs",
    "builtin_interfaces", "launch", "launch_ros", "rosidl_runtime_py", "ament_index_python",
    "std_srvs", "action_msgs", "rcl_interfaces", "cv_bridge", "tf2_ros",
}  # fmt: skip
# Imports only the tests or optional back-ends use, each checked where it is used.
OPTIONAL_IMPORTS = {"tensorrt", "onnxruntime", "onnx"}


def _requirement_names(filename: str) -> list[str]:
    names = []
    for line in (ROOT / filename).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.split(r"[<>=\[; ]", line, maxsplit=1)[0])
    return names


def _third_party_imports() -> set[str]:
    local = {"pixelvla_ros", "learning"}
    found: set[str] = set()
    for folder in ("pixelvla_ros", "learning", "launch"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in local and top not in sys.stdlib_module_names:
                        found.add(top)
    return found


@pytest.fixture(scope="module")
def package():
    return parse_package(str(ROOT / "package.xml"))


def test_manifest_is_valid_format_3(package) -> None:
    package.validate()
    assert package.package_format == 3
    assert package.name == "pixelvla_ros"
    assert package.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]


def test_every_requirement_has_a_resolvable_rosdep_key(package) -> None:
    declared = {dep.name for dep in package.exec_depends + package.build_export_depends}
    custom_keys = set(yaml.safe_load((ROOT / "rosdep.yaml").read_text()))
    for requirement in _requirement_names("requirements.txt"):
        assert requirement in ROSDEP_KEYS, f"{requirement}: add its rosdep key to ROSDEP_KEYS"
        key = ROSDEP_KEYS[requirement]
        assert key in declared, f"package.xml lacks <exec_depend>{key}</exec_depend> for {requirement}"
        assert key in ROSDISTRO_KEYS or key in custom_keys, (
            f"{key} is defined neither in rosdistro nor rosdep.yaml"
        )
    for key in custom_keys:
        assert key not in ROSDISTRO_KEYS, f"{key} exists upstream: drop it from rosdep.yaml"


def test_every_import_of_the_code_is_declared(package) -> None:
    requirements = set(_requirement_names("requirements.txt"))
    ros_declared = {dep.name for dep in package.build_depends + package.exec_depends}
    for module in sorted(_third_party_imports()):
        if module in OPTIONAL_IMPORTS:
            continue
        if module in ROS_IMPORTS:
            assert module in ros_declared, f"the code imports {module}: declare it in package.xml"
            continue
        requirement = IMPORT_TO_REQUIREMENT.get(module, module)
        assert requirement in requirements, (
            f"the code imports {module}: add {requirement} to requirements.txt"
        )


def test_msg_dependencies_are_build_and_exec_dependencies(package) -> None:
    used = set()
    for msg in (ROOT / "msg").glob("*.msg"):
        used |= set(re.findall(r"^\s*([a-z_]+)/[A-Z]\w*", msg.read_text(), re.MULTILINE))
    depends = {dep.name for dep in package.build_depends} & {dep.name for dep in package.exec_depends}
    assert used, "msg/ files reference no other interface package"
    assert used <= depends, f"msg/ uses {sorted(used - depends)} without <depend>"
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for name in used:
        assert f"find_package({name} REQUIRED)" in cmake
