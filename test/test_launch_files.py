"""Launch files name only real executables and shipped config files.

Where launch_ros is installed (a ROS 2 install) each file's description is also built with it; PyPI has
no wheels of launch/launch_ros, so elsewhere the static checks of launch_check.py stand alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from launch_check import ROOT, check_launch_file, executables

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
