"""Every command line of README.md, docs/*.md and the model cards is checked against what it calls, so the
documentation cannot rot: an executable's or module's own argument parser must accept it (parsed, not run),
a node's `-p name:=value` must name a parameter the node declares (docs/ros.md's reference, itself checked
against the running nodes), a launch argument must be declared by the launch file, a make target must
exist.

Placeholders a command may use: DIR, N, CKPT, HOST, KEY, FILE; `...` stands for values left out. A part in
[brackets] is optional: the command is checked without it and with each of its `|` alternatives.
"""

from __future__ import annotations

import argparse
import configparser
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted(ROOT.glob("checkpoints/*/README.md")),
]
PLACEHOLDERS = {
    "DIR": "/tmp/pixelvla_doc_dir",
    "N": "2",
    "CKPT": "checkpoints/tiny",
    "HOST": "127.0.0.1",
    "KEY": "bridge_orig",
    "FILE": "/tmp/pixelvla_doc_file",
    "i/N": "0/2",
}


def _console_scripts() -> dict[str, str]:
    """setup.cfg's executables: name -> module:function."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.strip() for name, target in (line.split("=", 1) for line in lines)}


CONSOLE_SCRIPTS = _console_scripts()


class Parsed(Exception):  # noqa: N818 - a signal, not an error
    """Raised by the patched ArgumentParser.parse_args once the real parser accepted the arguments."""


def _commands(text: str) -> list[str]:
    """Command lines: lines of fenced code blocks, and inline code spans, that call something of ours."""
    lines: list[str] = []
    in_block = False
    pending = ""
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            line = pending + raw.split("  #", 1)[0].strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            lines.append(line)
        else:  # a one-word inline span names a tool in prose (`annotate`); two words or more are a command
            lines += [span for span in re.findall(r"`([^`]+)`", raw) if len(span.split()) > 1]
    return [line for line in (c.strip() for c in lines) if _kind(line)]


def _kind(line: str) -> str | None:
    words = line.split()
    if not words:
        return None
    if words[0] in CONSOLE_SCRIPTS:
        return "script"
    # the generic forms in prose (`ros2 run pixelvla_ros <name>`, `.venv/lib/pixelvla_ros/X`) name no command
    if words[0].startswith(".venv/lib/pixelvla_ros/") and words[0].rsplit("/", 1)[-1] in CONSOLE_SCRIPTS:
        return "script"
    if words[:3] == ["ros2", "run", "pixelvla_ros"] and len(words) > 3 and words[3] in CONSOLE_SCRIPTS:
        return "script"
    if words[:2] == ["ros2", "launch"] and len(words) > 3 and words[2] == "pixelvla_ros":
        return "launch"
    if words[0] in ("python", "python3", ".venv/bin/python") and len(words) > 2 and words[1] == "-m":
        return "module" if words[2].startswith("pixelvla_ros") else None
    if words[0] == "make" and len(words) > 1:
        return "make"
    return None


def _variants(line: str) -> list[list[str]]:
    """The command without its [optional] parts, and with each alternative of each of them."""
    line = line.replace("\\|", "|")  # a | inside a markdown table cell is escaped
    optional = re.findall(r"\[([^\[\]]+)\]", line)
    base = re.sub(r"\s*\[[^\[\]]+\]", "", line)
    variants = [base] + [f"{base} {alt.strip()}" for group in optional for alt in group.split(" | ")]
    out = []
    for v in variants:
        words = [PLACEHOLDERS.get(w, w) for w in shlex.split(v) if w != "..."]
        words = [w for w in words if not w.endswith(":=...")]
        unknown = [w for w in words if re.fullmatch(r"[A-Z][A-Z_]*", w)]
        assert not unknown, f"{line!r}: unknown placeholder {unknown} (use one of {sorted(PLACEHOLDERS)})"
        out.append(words)
    return out


def _node_parameters() -> dict[str, set[str]]:
    """Parameters per node, from docs/ros.md's generated reference."""
    params: dict[str, set[str]] = {}
    node = None
    for line in (ROOT / "docs" / "ros.md").read_text().splitlines():
        if line.startswith("### "):
            node = line[4:].strip()
            params[node] = set()
        elif node and line.startswith("| `"):
            params[node].add(line.split("`")[1])
    return params


def _parse(monkeypatch: pytest.MonkeyPatch, target: str, argv: list[str]) -> None:
    """Call `module:function` (or a module's main) with argv; passes when its parser accepts argv."""
    module_name, _, function = target.partition(":")
    module = importlib.import_module(module_name)
    real = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):  # noqa: ANN001, ANN202 - argparse's signature
        real(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    with pytest.raises(Parsed):
        getattr(module, function or "main")(argv)


def _check(monkeypatch: pytest.MonkeyPatch, words: list[str]) -> None:
    kind = _kind(" ".join(words))
    if kind == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M)
        assert words[1] in targets, f"make {words[1]}: no such target"
    elif kind == "launch":
        launch = ROOT / "launch" / words[3]
        assert launch.is_file(), f"no launch file {words[3]}"
        declared = set(re.findall(r'DeclareLaunchArgument\(\s*"(\w+)"', launch.read_text()))
        for arg in words[4:]:
            assert arg.split(":=")[0] in declared, f"{words[3]} declares no argument {arg.split(':=')[0]!r}"
    elif kind == "module":
        module = words[2]
        if importlib.util.find_spec(module).submodule_search_locations is not None:  # a package: -m runs it
            module += ".__main__"
        _parse(monkeypatch, f"{module}:main", words[3:])
    else:  # an executable: a node (ROS arguments) or a command-line tool (its argparse parser)
        name = words[3] if words[0] == "ros2" else words[0].rsplit("/", 1)[-1]
        argv = words[4:] if words[0] == "ros2" else words[1:]
        assert name in CONSOLE_SCRIPTS, f"no executable {name!r} in setup.cfg"
        if CONSOLE_SCRIPTS[name].startswith("pixelvla_ros.nodes."):  # a node: its ROS parameters
            declared = _node_parameters().get(name)
            assert declared, f"docs/ros.md has no reference of {name}'s parameters"
            ros = argv[argv.index("--ros-args") + 1 :] if "--ros-args" in argv else []
            names = [ros[i + 1].split(":=")[0] for i, w in enumerate(ros) if w == "-p"]
            for param in names:
                assert param in declared, f"{name} declares no parameter {param!r}"
        else:
            _parse(monkeypatch, CONSOLE_SCRIPTS[name], argv)


COMMANDS = sorted({(doc.relative_to(ROOT).as_posix(), c) for doc in DOCS for c in _commands(doc.read_text())})


def test_the_documents_have_commands_to_check() -> None:
    assert len(COMMANDS) > 20, COMMANDS


@pytest.mark.parametrize("doc, command", COMMANDS)
def test_documented_command_is_accepted(monkeypatch: pytest.MonkeyPatch, doc: str, command: str) -> None:
    for words in _variants(command):
        _check(monkeypatch, words)
