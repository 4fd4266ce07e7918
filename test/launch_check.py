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


def _yaml_names(tree: ast.AST) -> list[str]:
    return [
        Path(n.value).name
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.endswith(".yaml")
    ]


def node_config_files(path: Path) -> dict[str, list[str]]:
    """For each Node(package="pixelvla_ros") of a launch file: executable -> the names of the .yaml files
    in its `parameters`, in order (a variable assigned one file's path counts as that file)."""
    tree = ast.parse(path.read_text(), str(path))
    variables = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            files = _yaml_names(node.value)
            if len(files) == 1:
                variables[node.targets[0].id] = files[0]
    found = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Node"):
            continue
        if _keyword(node, "package") != "pixelvla_ros":
            continue
        params = next((k.value for k in node.keywords if k.arg == "parameters"), None)
        files = []
        for item in params.elts if isinstance(params, ast.List) else []:
            if isinstance(item, ast.Name) and item.id in variables:
                files.append(variables[item.id])
            else:
                files += _yaml_names(item)
        found[_keyword(node, "executable")] = files
    return found
