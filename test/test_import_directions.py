"""Dependencies point one way: nodes -> core, tools -> anything, learning -> core; the core never imports the
nodes, the tools or ROS, and nothing the live stack runs reaches learning/.

The parts, by path (learning/ is installed as pixelvla_ros.learning):
  learning   learning/: datasets, annotation, training, evaluation.
  nodes      pixelvla_ros/nodes/: the ROS 2 nodes (and their helpers: conversions, params, run, reference).
  tools      pixelvla_ros/bench/, pixelvla_ros/reliability/, demo.py, check_setup.py: commands that start,
             measure or check the whole stack; nothing imports them but the tests and each other.
  core       the rest of pixelvla_ros/: the ROS-free library (model, preprocessing, policy, prompts, safety,
             drivers' control logic, sim/, the UR emulator) that the nodes, the tools and learning build on.
Rules, checked on the syntax tree of every module (imports inside functions and try blocks count):
  1. The core and the nodes never reach learning, directly or through another module of the package.
     Outside learning/, only the tools of bench/ import it (bench.train_throughput times the trainer).
  2. learning never reaches the nodes.
  3. The core never reaches the nodes or the tools, and never imports rclpy or ROS interfaces: it is
     importable and testable without ROS.
  4. The processes that do not run the model (the drivers, the prompt node, the UR emulator) never import
     torch: checked by importing their modules in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE, LEARNING, NODES = "pixelvla_ros", "pixelvla_ros.learning", "pixelvla_ros.nodes"
TOOLS = ("pixelvla_ros.bench", "pixelvla_ros.reliability", "pixelvla_ros.demo", "pixelvla_ros.check_setup")
LEARNING_IMPORTERS = ("pixelvla_ros.bench",)  # the only modules outside learning/ that may import it
# ROS client libraries and interfaces, by top-level name; packages named *_msgs, *_srvs, *_interfaces too.
ROS = {"rclpy", "rosidl_runtime_py", "builtin_interfaces", "tf2_ros", "cv_bridge", "ament_index_python"}
ROS_INTERFACES = ("pixelvla_ros.msg", "pixelvla_ros.action")
# The modules of the processes that do not run the model: none may import torch.
TORCH_FREE = (
    "pixelvla_ros.prompts",
    "pixelvla_ros.segmentation",
    "pixelvla_ros.drivers.ur_controller",
    "pixelvla_ros.drivers.ur_process",
    "pixelvla_ros.drivers.sim_driver",
    "pixelvla_ros.ur_emulator",
    "pixelvla_ros.nodes.conversions",
    "pixelvla_ros.nodes.ur_driver_node",
    "pixelvla_ros.nodes.sim_driver_node",
    "pixelvla_ros.nodes.prompt_node",
)


def within(module: str, *parents: str) -> bool:
    """True when `module` is one of `parents` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in parents)


def part(module: str) -> str:
    """learning, nodes, tools or core (see the module docstring)."""
    if within(module, LEARNING):
        return "learning"
    if within(module, NODES):
        return "nodes"
    if within(module, *TOOLS):
        return "tools"
    return "core"


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package in a checkout: dotted name -> file (learning/ as pixelvla_ros.learning)."""
    modules = {}
    for folder, prefix in ((root / "pixelvla_ros", [PACKAGE]), (root / "learning", [PACKAGE, "learning"])):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(prefix + parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """The absolute names a module imports: import statements anywhere in it (relative ones resolved) and
    importlib.import_module / __import__ calls with a literal name. `from a import b` gives a.b."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between the package's modules, every name each module imports). Importing a.b.c runs the
    packages a and a.b too; `from a import b` is an edge to a.b when that is a module, else to a."""
    modules = package_modules(root)
    edges, names = {}, {}
    for module, path in modules.items():
        names[module] = imported_names(module, path)
        targets = set()
        for name in names[module]:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules:
                    targets.add(prefix)
        edges[module] = targets - {module}
    return edges, names


def path_to(edges: dict[str, set[str]], start: str, goal) -> list[str] | None:  # noqa: ANN001 - predicate
    """The shortest import chain from `start` to a module for which goal(module) holds, or None."""
    previous = {start: None}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        if module != start and goal(module):
            chain = [module]
            while previous[chain[-1]] is not None:
                chain.append(previous[chain[-1]])
            return chain[::-1]
        for nxt in sorted(edges.get(module, ())):
            if nxt not in previous:
                previous[nxt] = module
                queue.append(nxt)
    return None


def is_ros(name: str) -> bool:
    top = name.split(".")[0]
    return top in ROS or top.endswith(("_msgs", "_srvs", "_interfaces")) or within(name, *ROS_INTERFACES)


def direction_violations(root: Path) -> list[str]:
    """Every import that goes the wrong way in the checkout at `root` (rules 1-3), with its import chain."""
    edges, names = import_graph(root)
    problems = []
    for module in sorted(edges):
        where = part(module)
        if where in ("core", "nodes"):
            chain = path_to(edges, module, lambda m: part(m) == "learning")
            if chain:
                problems.append(f"{where} reaches learning/: {' -> '.join(chain)}")
        if where != "learning" and not within(module, *LEARNING_IMPORTERS):
            for name in sorted(n for n in names[module] if within(n, LEARNING)):
                problems.append(f"{module} imports {name} (only {LEARNING_IMPORTERS} may)")
        if where == "learning":
            chain = path_to(edges, module, lambda m: part(m) == "nodes")
            if chain:
                problems.append(f"learning reaches the nodes: {' -> '.join(chain)}")
        if where == "core":
            chain = path_to(edges, module, lambda m: part(m) in ("nodes", "tools"))
            if chain:
                problems.append(f"core reaches {part(chain[-1])}: {' -> '.join(chain)}")
            for name in sorted(n for n in names[module] if is_ros(n)):
                problems.append(f"core module {module} imports ROS: {name}")
    return problems


# Run in a fresh interpreter: records the import stack that first loads torch, then imports each module.
_TORCH_PROBE = """
import importlib, sys, traceback
stack = []
class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not stack:
            frames = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
            stack.extend(f"  {f.filename}:{f.lineno}: {f.line}" for f in frames)
        return None
sys.meta_path.insert(0, Probe())
for module in sys.argv[1:]:
    importlib.import_module(module)
    if "torch" in sys.modules:
        print(f"importing {module} imports torch:", *stack, sep="\\n")
        sys.exit(1)
"""


def torch_violations(root: Path, modules: tuple[str, ...] = TORCH_FREE) -> str:
    """Empty when none of `modules` imports torch (imported from the checkout at `root`), else the
    import stack that brought torch in."""
    done = subprocess.run(
        [sys.executable, "-c", _TORCH_PROBE, *modules], cwd=root, capture_output=True, text=True, timeout=120
    )
    return "" if done.returncode == 0 else done.stdout + done.stderr


def test_the_parts_are_where_the_docstring_says() -> None:
    edges, _ = import_graph(ROOT)
    assert {"pixelvla_ros.prompts", "pixelvla_ros.segmentation", "pixelvla_ros.ur_modes"} <= set(edges)
    assert part("pixelvla_ros.learning.annotation.stages") == "learning"
    assert part("pixelvla_ros.nodes.prompt_node") == "nodes"
    assert part("pixelvla_ros.bench.train_throughput") == "tools"
    assert part("pixelvla_ros.ur_emulator.emulator") == "core"
    # the checker sees relative imports and imports inside functions
    assert "pixelvla_ros.learning.datasets.episode" in edges["pixelvla_ros.learning.annotation.stages"]
    assert "pixelvla_ros.segmentation" in edges["pixelvla_ros.nodes.prompt_node"]


def test_imports_point_one_way() -> None:
    problems = direction_violations(ROOT)
    assert not problems, "imports that go the wrong way:\n" + "\n".join(problems)


def test_processes_that_do_not_run_the_model_do_not_import_torch() -> None:
    problem = torch_violations(ROOT)
    assert not problem, problem
