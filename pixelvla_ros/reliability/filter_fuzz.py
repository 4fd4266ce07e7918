"""Safety-filter fuzz: a million inputs of every kind through real `SafetyFilter`s, every output checked.

Three filter configurations (the UR driver's defaults at 500 Hz and at 125 Hz, the simulator's limits at
10 Hz) each get an equal share of every input kind. For each output the checker verifies, against the
previous output (or the state reset() documents: the position clipped into the box, zero velocity):

- not halted: every number finite; the position inside the workspace box (1e-9 m tolerance) and equal to
  the previous position plus velocity * dt (1e-12 m: the filter's final clip must never bind);
  |v| <= max_linear_speed and |v - v_previous| <= max_linear_acceleration * dt, the same for the angular
  velocity (1e-9 relative tolerance); rotation_delta = angular velocity * dt; the gripper in [0, 1] and
  within max_gripper_rate * dt of the previous one.
- halted: zero velocities, the position and gripper unchanged. An input that must halt (NaN/inf, a wrong
  shape, more than IMPLAUSIBLE_CYCLE_DELTA per cycle, `stale_cycles` missing commands in a row) that does
  not is an unexpected motion too.

`crashes` counts exceptions other than the documented ones (ValueError from reset() for a position that
is not 3 finite numbers, RuntimeError from step() before the first reset()).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pixelvla_ros.reliability.report import DrillRow
from pixelvla_ros.safety import IMPLAUSIBLE_CYCLE_DELTA, FilteredCommand, SafetyFilter, SafetyLimits

SIM_LIMITS = SafetyLimits(
    max_linear_speed=0.5,
    max_linear_acceleration=10.0,
    max_angular_speed=3.5,
    max_angular_acceleration=40.0,
    max_gripper_rate=20.0,
)
CONFIGS: tuple[tuple[str, SafetyLimits, float], ...] = (
    ("UR 500 Hz", SafetyLimits(), 0.002),
    ("UR 125 Hz", SafetyLimits(), 0.008),
    ("sim 10 Hz", SIM_LIMITS, 0.1),
)
REL_TOL = 1e-9  # relative tolerance on speed, acceleration and gripper-rate limits
BOX_TOL = 1e-9  # m outside the workspace box
TRACK_TOL = 1e-12  # m between the position and previous position + velocity * dt

# Operations of a fuzz stream.
STEP, STALE, RESET, STEP_OBJECT, RESET_OBJECT = range(5)

# The 26 directions into the faces, edges and corners of the box.
_DIRECTIONS = np.array(
    [(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) != (0, 0, 0)],
    dtype=np.float64,
)
_GARBAGE_FLOATS = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e3, -1e3, 1.0 + 1e-12, 2.0, -1e-300])


@dataclass
class _Stream:
    """One kind's inputs for one configuration: `ops[i]` says what row i does with the arrays."""

    ops: np.ndarray  # (N,) int
    translation: np.ndarray  # (N, 3) deltas for STEP; positions for RESET
    rotation: np.ndarray  # (N, 3)
    gripper: np.ndarray  # (N,)
    objects: dict[int, tuple] = field(default_factory=dict)  # STEP_OBJECT / RESET_OBJECT arguments


@dataclass
class _Tally:
    tried: int = 0
    crashes: int = 0
    unexpected: int = 0
    halts: int = 0
    braked: int = 0
    survived: bool = True
    seconds: float = 0.0
    first_problem: str = ""

    def problem(self, text: str) -> None:
        if not self.first_problem:
            self.first_problem = text


class _Checker:
    """Mirrors the filter's previous output and checks each new one against the limits."""

    def __init__(self, limits: SafetyLimits, dt: float) -> None:
        self.dt = dt
        self.lower, self.upper = tuple(limits.workspace_min), tuple(limits.workspace_max)
        grow = 1.0 + REL_TOL
        self.max_speed = limits.max_linear_speed * grow
        self.max_change = limits.max_linear_acceleration * dt * grow
        self.max_angular_speed = limits.max_angular_speed * grow
        self.max_angular_change = limits.max_angular_acceleration * dt * grow
        self.max_gripper_change = limits.max_gripper_rate * dt * grow
        self.stale_cycles = limits.stale_cycles
        self.position: list[float] = [0.0, 0.0, 0.0]
        self.velocity = [0.0, 0.0, 0.0]
        self.angular = [0.0, 0.0, 0.0]
        self.gripper = 0.0
        self.missing = 0

    def reset(self, position: np.ndarray, gripper: float) -> None:
        """The state `SafetyFilter.reset` documents."""
        self.position = [
            min(max(float(p), lo), hi) for p, lo, hi in zip(position, self.lower, self.upper, strict=True)
        ]
        self.velocity, self.angular = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        self.gripper = min(max(float(gripper), 0.0), 1.0) if math.isfinite(gripper) else 0.0
        self.missing = 0

    def check(self, out: FilteredCommand, must_halt: bool) -> str:
        """'' if `out` is within the limits, else what is wrong; advances the mirrored state."""
        position, velocity = out.position.tolist(), out.linear_velocity.tolist()
        angular, rotation = out.angular_velocity.tolist(), out.rotation_delta.tolist()
        gripper = out.gripper
        problem = ""
        if out.halted:
            if position != self.position or any(velocity) or any(angular) or any(rotation):
                problem = "halt moved or kept a velocity"
            elif gripper != self.gripper:
                problem = "halt changed the gripper"
            self.velocity, self.angular = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
            return problem
        if must_halt:
            problem = "input that must halt did not"
        elif not all(map(math.isfinite, position + velocity + angular + rotation + [gripper])):
            problem = "non-finite output"
        else:
            dt, (px, py, pz), (vx, vy, vz), (wx, wy, wz) = self.dt, position, velocity, angular
            (lx, ly, lz), (hx, hy, hz), (qx, qy, qz) = self.lower, self.upper, self.position
            (ux, uy, uz), (ox, oy, oz) = self.velocity, self.angular
            if not (
                lx - BOX_TOL <= px <= hx + BOX_TOL
                and ly - BOX_TOL <= py <= hy + BOX_TOL
                and lz - BOX_TOL <= pz <= hz + BOX_TOL
            ):
                problem = f"position {position} outside the box"
            elif max(abs(qx + vx * dt - px), abs(qy + vy * dt - py), abs(qz + vz * dt - pz)) > TRACK_TOL:
                problem = "position is not previous position + velocity * dt (the final clip bound)"
            elif math.sqrt(vx * vx + vy * vy + vz * vz) > self.max_speed:
                problem = "linear speed above the limit"
            elif math.sqrt((vx - ux) ** 2 + (vy - uy) ** 2 + (vz - uz) ** 2) > self.max_change:
                ratio = math.sqrt((vx - ux) ** 2 + (vy - uy) ** 2 + (vz - uz) ** 2) / self.max_change
                problem = f"linear acceleration {ratio:.3f} x the limit"
            elif math.sqrt(wx * wx + wy * wy + wz * wz) > self.max_angular_speed:
                problem = "angular speed above the limit"
            elif math.sqrt((wx - ox) ** 2 + (wy - oy) ** 2 + (wz - oz) ** 2) > self.max_angular_change:
                problem = "angular acceleration above the limit"
            elif (
                max(abs(wx * dt - rotation[0]), abs(wy * dt - rotation[1]), abs(wz * dt - rotation[2]))
                > 1e-15
            ):
                problem = "rotation_delta is not angular velocity * dt"
            elif not (0.0 <= gripper <= 1.0) or abs(gripper - self.gripper) > self.max_gripper_change:
                problem = "gripper outside [0, 1] or its rate limit"
        self.position, self.velocity, self.angular, self.gripper = position, velocity, angular, gripper
        return problem


def _unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.normal(size=(n, 3))
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-300)


def _plausible(rng: np.random.Generator, n: int, limits: SafetyLimits, dt: float) -> tuple[np.ndarray, ...]:
    """Deltas up to 3x the speed limits in random directions, grippers anywhere in [0, 1]."""
    translation = _unit_rows(rng, n) * rng.uniform(0, 3, (n, 1)) * limits.max_linear_speed * dt
    rotation = _unit_rows(rng, n) * rng.uniform(0, 3, (n, 1)) * limits.max_angular_speed * dt
    return translation, rotation, rng.uniform(0, 1, n)


def _with_resets(rng: np.random.Generator, stream: _Stream, limits: SafetyLimits, every: int) -> _Stream:
    """Turn about one row in `every` into a reset at a random position inside the box."""
    rows = rng.random(len(stream.ops)) < 1.0 / every
    lo, hi = np.asarray(limits.workspace_min), np.asarray(limits.workspace_max)
    stream.ops[rows] = RESET
    stream.translation[rows] = rng.uniform(lo, hi, (int(rows.sum()), 3))
    return stream


def _random_deltas(rng: np.random.Generator, n: int, limits: SafetyLimits, dt: float) -> _Stream:
    """Deltas of every magnitude from 1e-12 to 1e3 per cycle (beyond 1: must halt) and plausible ones."""
    translation, rotation, gripper = _plausible(rng, n, limits, dt)
    wild = rng.random(n) < 0.5
    k = int(wild.sum())
    translation[wild] = _unit_rows(rng, k) * 10.0 ** rng.uniform(-12, 3, (k, 1))
    rotation[wild] = _unit_rows(rng, k) * 10.0 ** rng.uniform(-12, 3, (k, 1))
    gripper[wild] = rng.uniform(-0.5, 1.5, k)
    ops = np.where(rng.random(n) < 0.05, STALE, STEP)
    return _with_resets(rng, _Stream(ops, translation, rotation, gripper), limits, 2000)


def _non_finite(rng: np.random.Generator, n: int, limits: SafetyLimits, dt: float) -> _Stream:
    """Plausible inputs, a third of them with NaN or inf in one of the seven numbers."""
    translation, rotation, gripper = _plausible(rng, n, limits, dt)
    rows = np.flatnonzero(rng.random(n) < 0.33)
    values = rng.choice([np.nan, np.inf, -np.inf], len(rows))
    columns = rng.integers(0, 7, len(rows))
    for target, low, high in ((translation, 0, 3), (rotation, 3, 6)):
        hit = (columns >= low) & (columns < high)
        target[rows[hit], columns[hit] - low] = values[hit]
    gripper[rows[columns == 6]] = values[columns == 6]
    return _with_resets(rng, _Stream(np.full(n, STEP), translation, rotation, gripper), limits, 2000)


_WRONG_SHAPES = ((), (0,), (1,), (2,), (4,), (6,), (7,), (2, 3), (3, 3), (1, 2))


def _wrong_shapes(rng: np.random.Generator, n: int, limits: SafetyLimits, dt: float) -> _Stream:
    """Plausible inputs, 40% of them with a translation or rotation of the wrong size (also lists)."""
    translation, rotation, gripper = _plausible(rng, n, limits, dt)
    stream = _Stream(np.full(n, STEP), translation, rotation, gripper)
    for i in np.flatnonzero(rng.random(n) < 0.4).tolist():
        bad = rng.normal(size=_WRONG_SHAPES[int(rng.integers(len(_WRONG_SHAPES)))]) * 1e-4
        bad = bad.tolist() if rng.random() < 0.3 else bad
        which = int(rng.integers(3))
        stream.ops[i] = STEP_OBJECT
        stream.objects[i] = (
            bad if which != 1 else translation[i],
            bad if which != 0 else rotation[i],
            float(gripper[i]),
        )
    return _with_resets(rng, stream, limits, 2000)


def _stale_runs(rng: np.random.Generator, n: int, limits: SafetyLimits, dt: float) -> _Stream:
    """Runs of fresh commands (1-60) alternating with runs of missing ones (1-6)."""
    runs = rng.integers(1, 61, n // 4 + 2)
    runs[1::2] = rng.integers(1, 7, len(runs[1::2]))
    ops = np.repeat(np.tile([STEP, STALE], len(runs) // 2 + 1)[: len(runs)], runs)[:n]
    translation, rotation, gripper = _plausible(rng, len(ops), limits, dt)
    # Mostly steady motions, so that a missing command continues a real velocity.
    steady = _unit_rows(rng, 1) * limits.max_linear_speed * dt
    translation[rng.random(len(ops)) < 0.7] = steady
    return _with_resets(rng, _Stream(ops, translation, rotation, gripper), limits, 500)


def _wall_pushes(rng: np.random.Generator, n: int, limits: SafetyLimits, dt: float) -> _Stream:
    """From a reset up to 0.35 m before a wall, edge or corner, push into it at 1-3x full speed, hold,
    then sometimes push another way (along or away from the wall), with random rotations and gripper."""
    lo, hi = np.asarray(limits.workspace_min), np.asarray(limits.workspace_max)
    speed = limits.max_linear_speed
    settle = speed / (limits.max_linear_acceleration / (2 * math.sqrt(3))) + 0.3  # s to brake and sit
    parts: list[_Stream] = []
    total = 0
    while total < n:
        direction = _DIRECTIONS[int(rng.integers(len(_DIRECTIONS)))]
        push = direction / np.linalg.norm(direction)
        wall_point = np.where(direction > 0, hi, np.where(direction < 0, lo, rng.uniform(lo, hi)))
        distance = rng.uniform(0, 0.35)
        start = np.clip(wall_point - push * distance, lo, hi)
        cycles = int((distance / speed + settle) / dt) + 1
        later = int(rng.integers(0, cycles)) if rng.random() < 0.5 else 0
        noise = rng.normal(0, rng.choice([0.0, 0.05, 0.3]), 3)
        second = _unit_rows(rng, 1)[0]
        factor = rng.uniform(1, 3)
        translation = np.empty((1 + cycles + later, 3))
        translation[0] = start
        translation[1 : 1 + cycles] = (push + noise) / np.linalg.norm(push + noise) * speed * dt * factor
        translation[1 + cycles :] = second * speed * dt * factor
        rotation = _unit_rows(rng, len(translation)) * rng.uniform(0, 2) * limits.max_angular_speed * dt
        gripper = np.clip(rng.normal(0.5, 0.6, len(translation)), 0, 1)
        ops = np.full(len(translation), STEP)
        ops[0] = RESET
        parts.append(_Stream(ops, translation, rotation, gripper))
        total += len(ops) - 1
    return _concat(parts)


def _resets(rng: np.random.Generator, n: int, limits: SafetyLimits, dt: float) -> _Stream:
    """Resets on walls and corners, just inside and outside them, far outside, NaN or the wrong shape,
    each followed by 1-300 cycles pushing out through the nearest walls at 1-3x full speed."""
    lo, hi = np.asarray(limits.workspace_min), np.asarray(limits.workspace_max)
    parts: list[_Stream] = []
    objects: dict[int, tuple] = {}
    total = rows = 0
    while total < n:
        where = int(rng.integers(6))
        direction = _DIRECTIONS[int(rng.integers(len(_DIRECTIONS)))]
        wall_point = np.where(direction > 0, hi, np.where(direction < 0, lo, rng.uniform(lo, hi)))
        if where == 0:  # exactly on the wall, edge or corner
            start = wall_point
        elif where == 1:  # just inside
            start = wall_point - direction * 10.0 ** rng.uniform(-15, -2)
        elif where == 2:  # just outside
            start = wall_point + direction * 10.0 ** rng.uniform(-15, 0)
        elif where == 3:  # far outside
            start = wall_point + direction * 10.0 ** rng.uniform(0, 300)
        elif where == 4:  # not finite: reset() must refuse it
            start = np.where(rng.random(3) < 0.5, rng.choice([np.nan, np.inf, -np.inf]), wall_point)
        else:
            start = wall_point
        cycles = int(rng.integers(1, 301))
        translation = np.empty((1 + cycles, 3))
        translation[0] = start
        push = direction / np.linalg.norm(direction)
        translation[1:] = push * limits.max_linear_speed * dt * rng.uniform(1, 3)
        rotation = _unit_rows(rng, 1 + cycles) * rng.uniform(0, 2) * limits.max_angular_speed * dt
        gripper = rng.uniform(0, 1, 1 + cycles)
        gripper[0] = rng.choice([0.0, 1.0, 0.5, -3.0, 7.0, np.nan, np.inf])  # reset() clips or zeroes it
        ops = np.full(1 + cycles, STEP)
        ops[0] = RESET
        if where == 5:  # wrong shape: reset() must refuse it
            ops[0] = RESET_OBJECT
            objects[rows] = (rng.normal(size=_WRONG_SHAPES[int(rng.integers(len(_WRONG_SHAPES)))]), 0.0)
        parts.append(_Stream(ops, translation, rotation, gripper))
        total += cycles
        rows += 1 + cycles
    stream = _concat(parts)
    stream.objects = objects
    return stream


def _gripper_garbage(rng: np.random.Generator, n: int, limits: SafetyLimits, dt: float) -> _Stream:
    """Plausible motion with gripper commands anywhere: huge, negative, NaN/inf (must halt), other
    numeric types, or None (hold)."""
    translation, rotation, gripper = _plausible(rng, n, limits, dt)
    kind = rng.integers(0, 4, n)
    gripper[kind == 1] = rng.uniform(-1e3, 1e3, int((kind == 1).sum()))
    gripper[kind == 2] = rng.choice(_GARBAGE_FLOATS, int((kind == 2).sum()))
    stream = _Stream(np.full(n, STEP), translation, rotation, gripper)
    for i in np.flatnonzero(kind == 3).tolist():
        value = gripper[i]
        choice = int(rng.integers(5))
        other = (None, np.float32(value), int(value > 0.5), bool(value > 0.5), np.float64(value))[choice]
        stream.ops[i] = STEP_OBJECT
        stream.objects[i] = (translation[i], rotation[i], other)
    return _with_resets(rng, stream, limits, 2000)


def _concat(parts: list[_Stream]) -> _Stream:
    return _Stream(
        np.concatenate([p.ops for p in parts]),
        np.concatenate([p.translation for p in parts]),
        np.concatenate([p.rotation for p in parts]),
        np.concatenate([p.gripper for p in parts]),
    )


KINDS: tuple[tuple[str, Callable[[np.random.Generator, int, SafetyLimits, float], _Stream]], ...] = (
    ("random deltas 1e-12..1e3 per cycle", _random_deltas),
    ("NaN/inf components", _non_finite),
    ("wrong shapes", _wrong_shapes),
    ("stale (None) runs", _stale_runs),
    ("pushes into walls, edges, corners", _wall_pushes),
    ("resets at/near/outside the box", _resets),
    ("gripper garbage", _gripper_garbage),
)


def _must_halt(translation: object, rotation: object, gripper: object) -> bool:
    """Whether step() must halt on these arguments (the documented rules, independently written)."""
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    r = np.zeros(3) if rotation is None else np.asarray(rotation, dtype=np.float64).reshape(-1)
    if t.shape != (3,) or r.shape != (3,):
        return True
    if gripper is not None and not math.isfinite(float(gripper)):
        return True
    if not (np.isfinite(t).all() and np.isfinite(r).all()):
        return True
    return bool(max(np.abs(t).max(), np.abs(r).max()) > IMPLAUSIBLE_CYCLE_DELTA)


def _truncate(stream: _Stream, steps: int) -> _Stream:
    """The stream up to its `steps`-th step() call."""
    is_step = (stream.ops == STEP) | (stream.ops == STALE) | (stream.ops == STEP_OBJECT)
    end = int(np.searchsorted(np.cumsum(is_step), steps)) + 1
    objects = {i: o for i, o in stream.objects.items() if i < end}
    return _Stream(
        stream.ops[:end], stream.translation[:end], stream.rotation[:end], stream.gripper[:end], objects
    )


def _drive(stream: _Stream, limits: SafetyLimits, dt: float, tally: _Tally) -> None:
    """Feed one stream to a fresh filter, checking every output."""
    safety, checker = SafetyFilter(limits, dt), _Checker(limits, dt)
    tally.tried += 1
    try:  # documented: step() before the first reset() raises RuntimeError
        safety.step(np.zeros(3))
        tally.unexpected += 1
        tally.problem("step() before reset() did not raise")
    except RuntimeError:
        pass
    centre = (np.asarray(limits.workspace_min) + np.asarray(limits.workspace_max)) / 2
    safety.reset(centre, 0.0)
    checker.reset(centre, 0.0)
    translation, rotation, gripper = stream.translation, stream.rotation, stream.gripper
    halt_rows = (
        ~np.isfinite(translation).all(axis=1)
        | ~np.isfinite(rotation).all(axis=1)
        | ~np.isfinite(gripper)
        | (np.abs(translation).max(axis=1) > IMPLAUSIBLE_CYCLE_DELTA)
        | (np.abs(rotation).max(axis=1) > IMPLAUSIBLE_CYCLE_DELTA)
    ).tolist()
    grippers = gripper.tolist()
    stale_cycles = limits.stale_cycles
    for i, op in enumerate(stream.ops.tolist()):
        try:
            if op == STEP:
                tally.tried += 1
                checker.missing = 0
                out = safety.step(translation[i], rotation[i], grippers[i])
                must_halt = halt_rows[i]
            elif op == STALE:
                tally.tried += 1
                checker.missing += 1
                out = safety.step(None)
                must_halt = checker.missing >= stale_cycles
            elif op == STEP_OBJECT:
                tally.tried += 1
                checker.missing = 0
                arguments = stream.objects[i]
                must_halt = _must_halt(*arguments)
                out = safety.step(*arguments)
            else:
                position, reset_gripper = (translation[i], grippers[i]) if op == RESET else stream.objects[i]
                refuse = np.shape(position) != (3,) or not np.isfinite(position).all()
                try:
                    safety.reset(position, reset_gripper)
                except ValueError:
                    if not refuse:
                        raise
                    continue
                if refuse:
                    tally.unexpected += 1
                    tally.problem(f"reset() accepted {position}")
                checker.reset(position, reset_gripper)
                continue
        except Exception as error:  # noqa: BLE001 - any undocumented exception is what this counts
            tally.crashes += 1
            tally.problem(f"row {i}: {type(error).__name__}: {error}")
            safety.reset(centre, 0.0)
            checker.reset(centre, 0.0)
            continue
        tally.halts += out.halted
        tally.braked += "workspace boundary" in out.reasons
        problem = checker.check(out, must_halt)
        if problem:
            tally.unexpected += 1
            tally.problem(f"row {i}: {problem}")
    tally.survived = tally.survived and _still_usable(safety, limits, dt, centre)


def _still_usable(safety: SafetyFilter, limits: SafetyLimits, dt: float, centre: np.ndarray) -> bool:
    """After the stream: a reset and a gentle push along x still move the arm."""
    try:
        safety.reset(centre, 0.0)
        outs = [safety.step(np.array([0.5 * limits.max_linear_speed * dt, 0.0, 0.0])) for _ in range(20)]
    except Exception:  # noqa: BLE001 - not usable is the answer
        return False
    return not any(out.halted for out in outs) and outs[-1].position[0] > centre[0]


def run(inputs: int = 1_000_000, seed: int = 0) -> list[DrillRow]:
    """At least `inputs` step() calls, split evenly over the input kinds and the filter configurations;
    one DrillRow (suite "fuzz") per kind."""
    per_stream = max(1, math.ceil(inputs / (len(KINDS) * len(CONFIGS))))
    rows = []
    for kind_index, (kind, build) in enumerate(KINDS):
        tally = _Tally()
        started = time.perf_counter()
        for config_index, (_, limits, dt) in enumerate(CONFIGS):
            rng = np.random.default_rng([seed, kind_index, config_index])
            # A margin: resets take some rows of a stream, and only step() calls count.
            stream = build(rng, per_stream + per_stream // 50 + 10, limits, dt)
            _drive(_truncate(stream, per_stream), limits, dt, tally)
        tally.seconds = time.perf_counter() - started
        note = f"{tally.halts} halts, {tally.braked} braked at walls, {tally.seconds:.1f} s"
        if tally.first_problem:
            note += f"; first: {tally.first_problem}"
        rows.append(
            DrillRow("fuzz", kind, tally.tried, tally.crashes, tally.unexpected, tally.survived, note)
        )
    return rows
