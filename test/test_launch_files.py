"""Launch files name only real executables and shipped config files.

Where launch_ros is installed (a ROS 2 install) each file's description is also built with it; PyPI has
no wheels of launch/launch_ros, so elsewhere the static checks of launch_check.py stand alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from launch_check import ROOT, check_launch_file, executables, node_config_files

from pixelvla_ros.demo import config_files

LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def test_checker_catches_a_missing_executable_and_config() -> None:
    problems = check_launch_file(Path(__file__).parent / "fixtures" / "broken.launch.py")
    assert any("no_such_node" in p for p in problems)
    assert any("missing.yaml" in p for p in problems)


def test_every_executable_is_in_the_install_tree() -> None:
    import sysconfig

    prefix = Path(sysconfig.get_paths()["data"])
    for name in executables():
        path = prefix / "lib" / "pixelvla_ros" / name
        assert path.is_file(), f"{path} missing: run `make build`"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=[p.name for p in LAUNCH_FILES])
def test_launch_file(path: Path) -> None:
    assert check_launch_file(path) == []
    if importlib.util.find_spec("launch_ros") is None:
        return
    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), LaunchDescription)


def test_launch_files_pass_the_config_files_demo_passes() -> None:
    """Each node gets the same parameter files, in the same order, from launch and from `demo`
    (demo.start_nodes): its own config/<node>.yaml, then the shared camera.yaml."""
    checked = set()
    for path in LAUNCH_FILES:
        for executable, files in node_config_files(path).items():
            assert files == config_files(executable), f"{path.name}: {executable} gets {files}"
            checked.add(executable)
    assert {"prompt_node", "policy_node", "sim_driver", "ur_driver"} <= checked


def test_the_camera_calibration_is_in_one_config_file() -> None:
    """camera_pose_in_base, which prompt_node and policy_node both read, is set in config/camera.yaml only."""
    setting = [
        path.name
        for path in sorted((ROOT / "config").glob("*.yaml"))
        for section in (yaml.safe_load(path.read_text()) or {}).values()
        if isinstance(section, dict) and "camera_pose_in_base" in section.get("ros__parameters", {})
    ]
    assert setting == ["camera.yaml"]
    assert config_files("prompt_node")[-1] == config_files("policy_node")[-1] == "camera.yaml"
