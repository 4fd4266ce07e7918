"""pip install of the Python side of pixelvla_ros (the ROS-free core, the nodes and learning/).

A ROS 2 workspace builds the package with CMakeLists.txt instead (it also generates msg/); both
install the same modules and the same executables, listed once in setup.cfg.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="pixelvla_ros",
    version="0.1.0",
    description="PixelVLA on robot arms: pixel-prompted vision-language-action policies for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["pixelvla_ros", "pixelvla_ros.*"])
    + ["pixelvla_ros.learning"]
    + [f"pixelvla_ros.learning.{p}" for p in find_packages(where="learning")],
    package_dir={"pixelvla_ros.learning": "learning"},
    install_requires=requirements("requirements.txt"),
    extras_require={"ros": requirements("requirements-ros.txt"), "dev": requirements("requirements-dev.txt")},
)
