"""The package builds the ROS way (colcon + ament_cmake + rosidl) without a ROS install, into the
layout `ros2 run` and `ros2 launch` rely on; the set-up script refuses a bad environment clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from launch_check import ROOT, executables


@pytest.mark.slow
def test_colcon_build_gives_the_ros2_run_layout(tmp_path: Path) -> None:
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "pixelvla_ros").symlink_to(ROOT)
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, CMAKE_PREFIX_PATH=sys.prefix)
    build = subprocess.run(
        [str(colcon), "build", "--merge-install", "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}",
         "-DBUILD_TESTING=OFF"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    install = tmp_path / "install"
    for name in executables():
        assert os.access(install / "lib" / "pixelvla_ros" / name, os.X_OK), f"lib/pixelvla_ros/{name}"
    share = install / "share" / "pixelvla_ros"
    assert (share / "package.xml").is_file()
    assert (share / "launch").is_dir() and (share / "config").is_dir()
    assert {p.name for p in (share / "msg").glob("*.msg")} == {p.name for p in (ROOT / "msg").glob("*.msg")}

    # What `ros2 run` does after `source install/setup.sh`, from outside the checkout.
    probe = (
        "import pixelvla_ros, pixelvla_ros.learning; from pixelvla_ros.msg import ActionChunk, VisualPrompt;"
        "print(pixelvla_ros.__file__)"
    )
    run = subprocess.run(
        ["bash", "-c", f". {install}/setup.sh && {sys.executable} -c '{probe}' && "
         f"{install}/lib/pixelvla_ros/check_setup"],
        cwd="/", env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0].startswith(str(install)), "imported another copy than the install"
    assert "[ ok ] messages" in run.stdout


@pytest.mark.parametrize(
    ("python", "message"),
    [("/nonexistent/python3", "not found"), ("python3.13", "Python 3.10-3.12 is required")],
)
def test_setup_stops_with_a_clear_message(python: str, message: str) -> None:
    if python == "python3.13" and shutil.which("python3.13") is None:
        pytest.skip("no python3.13 on this machine to try")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup_env.sh")],
        env=dict(os.environ, PYTHON=python), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr
    assert "setup: ERROR" in result.stderr
