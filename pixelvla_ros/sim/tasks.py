"""Task families, their configuration, episode sampling (scene + task from a seed) and success detectors.

Families
--------
``pick_named``      "pick up the red cube": the target's colour + shape is unique in the scene.
``pick_prompted``   "pick up the cube": two or more look-alike objects (same shape, colour, size); only the
                    visual prompt (ground-truth point / box / mask of the target) says which one.
``place_container`` "put the red cube in the blue tray" (container named by text) or "put the red cube in
                    the tray" with look-alike trays, the container marked by a visual prompt.

Success (evaluated from simulator state after every control step)
-----------------------------------------------------------------
pick:  the target is grasped (touched by both fingers) and raised >= ``lift_height`` above its initial
       height, and no other object is raised more than ``other_lift_tolerance``.
place: the target rests inside the named container (centre within the inner walls, below the rim), is not
       touched by the fingers, and no other object is raised.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from pixelvla_ros.action_space import ActionSpace
from pixelvla_ros.sim import scene as S

FAMILIES = ("pick_named", "pick_prompted", "place_container")
WORKSPACE_X = (0.34, 0.64)
WORKSPACE_Y = (-0.27, 0.27)
MIN_OBJECT_SPACING = 0.11  # centre to centre: room for the open fingers beside a neighbour
CONTAINER_CLEARANCE = 0.06  # object centre to container outer edge

PICK_TEMPLATES = ("pick up the {o}", "lift the {o}", "grasp the {o} and lift it")
PLACE_TEMPLATES = ("put the {o} in the {c}", "place the {o} into the {c}")


@dataclass(frozen=True)
class TaskConfig:
    """Everything that defines a task distribution; the seed picks one episode from it."""

    family: str = "pick_named"
    n_objects: tuple[int, int] = (2, 4)  # inclusive range, target included
    n_lookalikes: tuple[int, int] = (2, 3)  # pick_prompted: identical copies of the target (included)
    n_containers: tuple[int, int] = (1, 2)  # place_container
    container_prompt_prob: float = 0.5  # place_container: probability that the container is prompt-marked
    shapes: tuple[str, ...] = S.SHAPES
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple", "white")
    sizes: tuple[str, ...] = tuple(S.SIZES)
    lift_height: float = 0.08
    other_lift_tolerance: float = 0.03
    max_steps: int = 120
    image_sizes: tuple[int, ...] = (96,)  # square images rendered every step, per camera
    cameras: tuple[str, ...] = ("scene",)  # "scene" (fixed third-person) and/or "wrist"
    camera_pos_jitter: float = 0.03  # m, uniform per axis
    camera_lookat_jitter: float = 0.02
    camera_fovy_jitter: float = 2.0  # degrees
    randomize_lighting: bool = True
    randomize_table: bool = True
    shadows: bool = False  # shadows triple CPU render time
    offsamples: int = 0  # multisample anti-aliasing (0 = off, fastest)
    action_space: ActionSpace = field(default_factory=ActionSpace)
    physics_hz: float = 1.0 / S.TIMESTEP

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        for name in ("n_objects", "n_lookalikes", "n_containers"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be an inclusive range 1 <= lo <= hi, got {(lo, hi)}")
        if self.n_objects[1] > 6:
            raise ValueError("n_objects above 6 does not fit the workspace")
        if self.family == "pick_prompted" and self.n_lookalikes[0] < 2:
            raise ValueError("pick_prompted needs at least 2 look-alikes")
        if self.family == "place_container" and self.container_prompt_prob > 0 and self.n_containers[1] < 2:
            raise ValueError("a prompt-marked container needs n_containers up to >= 2")
        if not set(self.shapes) <= set(S.SHAPES) or not self.shapes:
            raise ValueError(f"shapes must be a non-empty subset of {S.SHAPES}")
        if not set(self.colours) <= set(S.COLOURS) or len(self.colours) < 3:
            raise ValueError(f"colours must be >= 3 of {tuple(S.COLOURS)}")
        if not set(self.sizes) <= set(S.SIZES) or not self.sizes:
            raise ValueError(f"sizes must be a non-empty subset of {tuple(S.SIZES)}")
        if not self.image_sizes or any(not 16 <= s <= 1024 for s in self.image_sizes):
            raise ValueError(f"image_sizes must be in [16, 1024], got {self.image_sizes}")
        if not set(self.cameras) <= {"scene", "wrist"} or not self.cameras:
            raise ValueError(f"cameras must be a non-empty subset of ('scene', 'wrist'), got {self.cameras}")
        steps = self.physics_hz / self.action_space.control_rate_hz
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            raise ValueError(f"physics_hz ({self.physics_hz}) must be a multiple of the control rate")
        if self.max_steps < 1 or self.lift_height <= 0:
            raise ValueError("max_steps must be >= 1 and lift_height > 0")

    @property
    def substeps(self) -> int:
        return round(self.physics_hz / self.action_space.control_rate_hz)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["action_space"] = self.action_space.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskConfig:
        d = dict(d)
        if "action_space" in d:
            d["action_space"] = ActionSpace.from_dict(d["action_space"])
        for k, v in d.items():
            if isinstance(v, list):
                d[k] = tuple(v)
        return cls(**d)

    def with_(self, **kw: Any) -> TaskConfig:
        return replace(self, **kw)


@dataclass(frozen=True)
class TaskSpec:
    """Ground truth of one episode's task."""

    family: str
    instruction: str
    target: str  # object name (MuJoCo body)
    target_description: str
    container: str | None = None
    container_description: str | None = None
    prompted: tuple[str, ...] = ()  # entities the visual prompt must mark for the text to be unambiguous
    text_ambiguous: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sample_positions(
    rng: np.random.Generator, n: int, containers: list[S.ContainerSpec], tries: int = 2000
) -> list[tuple[float, float]] | None:
    pts: list[tuple[float, float]] = []
    for _ in range(tries):
        if len(pts) == n:
            break
        x, y = rng.uniform(*WORKSPACE_X), rng.uniform(*WORKSPACE_Y)
        if any(math.hypot(x - px, y - py) < MIN_OBJECT_SPACING for px, py in pts):
            continue
        ok = True
        for c in containers:
            outer = c.inner_half + c.wall_thickness + CONTAINER_CLEARANCE
            if abs(x - c.x) < outer and abs(y - c.y) < outer:
                ok = False
                break
        if ok:
            pts.append((x, y))
    return pts if len(pts) == n else None


def _sample_containers(rng: np.random.Generator, n: int, colours: list[str]) -> list[S.ContainerSpec] | None:
    out: list[S.ContainerSpec] = []
    for _ in range(500):
        if len(out) == n:
            break
        x, y = rng.uniform(WORKSPACE_X[0] + 0.02, WORKSPACE_X[1]), rng.uniform(*WORKSPACE_Y)
        if any(max(abs(x - c.x), abs(y - c.y)) < 2 * c.inner_half + 0.05 for c in out):
            continue
        out.append(S.ContainerSpec(name=f"tray{len(out)}", colour=colours[len(out)], x=x, y=y))
    return out if len(out) == n else None


def _variation(config: TaskConfig, rng: np.random.Generator) -> dict[str, Any]:
    base = S.CameraSpec()
    j, lj = config.camera_pos_jitter, config.camera_lookat_jitter
    cam = S.CameraSpec(
        pos=tuple(float(v) for v in np.array(base.pos) + rng.uniform(-j, j, 3)),
        lookat=tuple(float(v) for v in np.array(base.lookat) + rng.uniform(-lj, lj, 3)),
        fovy=float(base.fovy + rng.uniform(-config.camera_fovy_jitter, config.camera_fovy_jitter)),
    )
    kw: dict[str, Any] = {"camera": cam, "shadows": config.shadows, "wrist_camera": "wrist" in config.cameras}
    if config.randomize_table:
        tone = rng.uniform(0.25, 0.75)
        tint = rng.uniform(-0.12, 0.12, 3)
        c1 = np.clip(tone + tint, 0.05, 0.95)
        c2 = np.clip(c1 * rng.uniform(0.8, 0.95), 0.02, 0.95)
        kw["table_texture"] = str(rng.choice(["checker", "flat", "gradient"]))
        kw["table_rgb1"] = tuple(float(v) for v in c1)
        kw["table_rgb2"] = tuple(float(v) for v in c2)
    if config.randomize_lighting:
        kw["light_pos"] = (
            float(rng.uniform(-0.5, 1.0)),
            float(rng.uniform(-1.0, 1.0)),
            float(rng.uniform(1.2, 2.2)),
        )
        kw["light_diffuse"] = float(rng.uniform(0.45, 0.85))
        kw["ambient"] = float(rng.uniform(0.2, 0.4))
    return kw


def sample_episode(config: TaskConfig, seed: int, max_tries: int = 100) -> tuple[S.SceneSpec, TaskSpec]:
    """Deterministic: the same (config, seed) always gives the same scene and task."""
    rng = np.random.default_rng(int(seed))
    for _ in range(max_tries):
        result = _try_sample(config, rng)
        if result is not None:
            objects, containers, task = result
            return S.SceneSpec(
                objects=tuple(objects), containers=tuple(containers), **_variation(config, rng)
            ), task
    raise RuntimeError(f"could not place the scene for seed {seed} in {max_tries} tries")


def _pick(rng: np.random.Generator, seq: tuple[str, ...] | list[str]) -> str:
    return str(seq[int(rng.integers(len(seq)))])


def _try_sample(
    config: TaskConfig, rng: np.random.Generator
) -> tuple[list[S.ObjectSpec], list[S.ContainerSpec], TaskSpec] | None:
    fam = config.family
    n = int(rng.integers(config.n_objects[0], config.n_objects[1] + 1))
    containers: list[S.ContainerSpec] = []
    container_prompted = False
    if fam == "place_container":
        container_prompted = bool(rng.random() < config.container_prompt_prob)
        lo = max(config.n_containers[0], 2 if container_prompted else 1)
        nc = int(rng.integers(lo, config.n_containers[1] + 1))
        ccol = _pick(rng, config.colours)
        colours = (
            [ccol] * nc
            if container_prompted
            else [str(c) for c in rng.permutation(list(config.colours))[:nc]]
        )
        got = _sample_containers(rng, nc, colours)
        if got is None:
            return None
        containers = got
        n = min(n, 3)  # room left beside the trays
    target_shape, target_colour, target_size = (
        _pick(rng, config.shapes),
        _pick(rng, config.colours),
        _pick(rng, config.sizes),
    )
    kinds: list[tuple[str, str, str]] = [(target_shape, target_colour, target_size)]
    if fam == "pick_prompted":
        k = int(rng.integers(config.n_lookalikes[0], config.n_lookalikes[1] + 1))
        n = max(n, k)
        kinds += [(target_shape, target_colour, target_size)] * (k - 1)
    while len(kinds) < n:
        sh, co, si = _pick(rng, config.shapes), _pick(rng, config.colours), _pick(rng, config.sizes)
        if (sh, co) == (target_shape, target_colour):
            continue  # distractors never share the target's description
        kinds.append((sh, co, si))
    pos = _sample_positions(rng, len(kinds), containers)
    if pos is None:
        return None
    objects = [
        S.ObjectSpec(
            name=f"obj{i}",
            shape=sh,
            colour=co,
            size=si,
            x=float(x),
            y=float(y),
            yaw=float(rng.uniform(-math.pi, math.pi)),
        )
        for i, ((sh, co, si), (x, y)) in enumerate(zip(kinds, pos, strict=True))
    ]
    n_alike = sum(1 for kd in kinds if kd == kinds[0]) if fam == "pick_prompted" else 1
    target_idx = int(rng.integers(n_alike))  # look-alikes are kinds[0:n_alike]
    target = objects[target_idx]
    # Shuffle names so the target is not always obj0.
    order = rng.permutation(len(objects))  # new index i holds old object order[i]
    objects = [replace(objects[j], name=f"obj{i}") for i, j in enumerate(order)]
    target_name = f"obj{int(np.flatnonzero(order == target_idx)[0])}"
    o_desc = target.description
    if fam == "pick_named":
        instr = _pick(rng, PICK_TEMPLATES).format(o=o_desc)
        task = TaskSpec(fam, instr, target_name, o_desc, prompted=(), text_ambiguous=False)
    elif fam == "pick_prompted":
        same_shape = [o for o in objects if o.shape == target.shape]
        text = target.shape if all(o.colour == target.colour for o in same_shape) else o_desc
        instr = _pick(rng, PICK_TEMPLATES).format(o=text)
        task = TaskSpec(fam, instr, target_name, o_desc, prompted=(target_name,), text_ambiguous=True)
    else:
        cont = containers[int(rng.integers(len(containers)))]
        c_text = cont.kind if container_prompted else cont.description
        instr = _pick(rng, PLACE_TEMPLATES).format(o=o_desc, c=c_text)
        task = TaskSpec(
            fam,
            instr,
            target_name,
            o_desc,
            container=cont.name,
            container_description=cont.description,
            prompted=(cont.name,) if container_prompted else (),
            text_ambiguous=container_prompted,
        )
    return objects, containers, task


@dataclass(frozen=True)
class SuccessState:
    success: bool
    why: str
    grasped: bool
    target_lift: float  # m above the initial height


def evaluate_success(
    config: TaskConfig,
    task: TaskSpec,
    *,
    positions: dict[str, np.ndarray],
    initial_positions: dict[str, np.ndarray],
    grasped: dict[str, bool],
    containers: dict[str, S.ContainerSpec],
    half_heights: dict[str, float],
) -> SuccessState:
    """Pure function of the simulator state (object centres, initial centres, finger contacts)."""
    t = task.target
    lift = float(positions[t][2] - initial_positions[t][2])
    others_lifted = [
        n
        for n in positions
        if n != t and positions[n][2] - initial_positions[n][2] > config.other_lift_tolerance
    ]
    if task.family in ("pick_named", "pick_prompted"):
        if others_lifted:
            return SuccessState(False, f"non-target object(s) lifted: {others_lifted}", grasped[t], lift)
        if not grasped[t]:
            return SuccessState(False, "target not grasped", False, lift)
        if lift < config.lift_height:
            return SuccessState(False, f"target lifted {lift:.3f} m < {config.lift_height} m", True, lift)
        return SuccessState(True, "target lifted while grasped", True, lift)
    c = containers[task.container]
    p = positions[t]
    inside = abs(p[0] - c.x) <= c.inner_half and abs(p[1] - c.y) <= c.inner_half
    resting = p[2] <= c.floor_thickness + 2 * half_heights[t] + 0.01
    if others_lifted:
        return SuccessState(False, f"non-target object(s) lifted: {others_lifted}", grasped[t], lift)
    if not inside:
        return SuccessState(False, "target not inside the container", grasped[t], lift)
    if grasped[t] or not resting:
        return SuccessState(False, "target above the container, not released/resting", grasped[t], lift)
    return SuccessState(True, "target resting inside the container", False, lift)
