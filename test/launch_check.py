"""Static checks of launch files, for machines where launch/launch_ros are not installed (PyPI has no
wheels of them). Reads the file's syntax tree: every Node(package="pixelvla_ros", executable=...) must
name an executable of setup.cfg, and every .yaml/.rviz file named must exist in config/ or launch/."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def executables() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return {line.split("=")[0].strip() for line in lines}


def _keyword(call: ast.Call, name: str) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def check_launch_file(path: Path) -> list[str]:
    """Problems found in one launch file; empty when it is consistent with the package."""
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    if not any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body):
        problems.append("no generate_launch_description()")
    known = executables()
    shipped = {p.name for folder in ("config", "launch") for p in (ROOT / folder).glob("*")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Node":
            package, executable = _keyword(node, "package"), _keyword(node, "executable")
            if package == "pixelvla_ros" and executable not in known:
                problems.append(f"Node executable {executable!r} is not an entry point of setup.cfg")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.endswith((".yaml", ".rviz")) and Path(node.value).name not in shipped:
                problems.append(f"names {node.value!r}, which is not in config/ or launch/")
    return problems
