"""The safety filter every arm driver applies before it moves the arm.

Two layers, both fail-safe (any doubt means no motion):
  1. `check_chunk` on each policy action chunk as it arrives: NaN/inf, a wrong shape, or a step beyond
     the per-step translation/rotation limits or outside [0, 1] for the gripper rejects the whole chunk.
     A policy that emits such numbers is not trusted for its other steps either.
  2. `SafetyFilter.step` on every driver cycle: turns the wanted TCP target of that cycle into a
     commanded target within the workspace box and the velocity, acceleration and gripper-rate limits
     (braking before a wall in time rather than stopping at it), and halts (commands the current target,
     zero velocity) when fresh commands stop arriving for `stale_cycles` cycles or the input is not
     finite. A halt is a stop, exempt from the acceleration limit: the robot's own servo decelerates.
Units: metres, radians, seconds; poses in the robot base frame; gripper 0 = open, 1 = closed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from pixelvla_ros.action_space import ACTION_DIM, GRIPPER, ROTATION, TRANSLATION


@dataclass(frozen=True)
class SafetyLimits:
    workspace_min: tuple[float, float, float] = (0.20, -0.55, 0.02)  # TCP position box, base frame, m
    workspace_max: tuple[float, float, float] = (0.80, 0.55, 0.60)
    max_translation_per_step: float = 0.05  # m per policy step (0.5 m/s at 10 Hz)
    max_rotation_per_step: float = 0.35  # rad per policy step
    max_linear_speed: float = 0.25  # m/s
    max_linear_acceleration: float = 1.5  # m/s^2
    max_angular_speed: float = 1.0  # rad/s
    max_angular_acceleration: float = 6.0  # rad/s^2
    max_gripper_rate: float = 2.5  # gripper units per s (fully open -> closed in 0.4 s)
    stale_cycles: int = 2  # halt when no fresh command arrived for this many driver cycles

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min), np.asarray(self.workspace_max)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo)) or not np.all(lo < hi):
            raise ValueError(f"workspace box must have min < max on x, y, z, got {lo} and {hi}")
        for name, value in asdict(self).items():
            if name.startswith("workspace"):
                continue
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")


# A per-cycle delta this large is garbage, not a fast motion: halt rather than scale it (this also keeps
# the arithmetic below far from overflow).
IMPLAUSIBLE_CYCLE_DELTA = 1.0


class UnsafeChunkError(ValueError):
    """A policy chunk the robot must not execute; the message says which step and why."""


def check_chunk(actions: np.ndarray, limits: SafetyLimits) -> np.ndarray:
    """Validate a (N, 7) chunk in the project's action convention; returns it as float64."""
    try:
        chunk = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise UnsafeChunkError(f"chunk is not numeric: {error}") from None
    if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.shape[1] != ACTION_DIM:
        raise UnsafeChunkError(f"chunk must have shape (N >= 1, {ACTION_DIM}), got {chunk.shape}")
    bad = ~np.isfinite(chunk).all(axis=1)
    if bad.any():
        raise UnsafeChunkError(f"step {int(np.argmax(bad))} contains NaN or inf")
    translation = np.linalg.norm(chunk[:, TRANSLATION], axis=1)
    rotation = np.linalg.norm(chunk[:, ROTATION], axis=1)
    gripper = chunk[:, GRIPPER]
    for k in range(chunk.shape[0]):
        if translation[k] > limits.max_translation_per_step:
            raise UnsafeChunkError(
                f"step {k} translates {translation[k]:.4f} m, limit {limits.max_translation_per_step} m"
            )
        if rotation[k] > limits.max_rotation_per_step:
            raise UnsafeChunkError(
                f"step {k} rotates {rotation[k]:.4f} rad, limit {limits.max_rotation_per_step}"
            )
        if not 0.0 <= gripper[k] <= 1.0:
            raise UnsafeChunkError(f"step {k} gripper command {gripper[k]} is outside [0, 1]")
    return chunk


@dataclass(frozen=True)
class FilteredCommand:
    """What the driver sends this cycle: an absolute TCP target, its velocity, a gripper command."""

    position: np.ndarray  # (3,) m, base frame
    rotation_delta: np.ndarray  # (3,) rotation vector applied to the previous target this cycle, rad
    linear_velocity: np.ndarray  # (3,) m/s
    angular_velocity: np.ndarray  # (3,) rad/s
    gripper: float
    halted: bool
    reasons: tuple[str, ...]


Vec3 = tuple[float, float, float]

# Per-axis deceleration the wall braking plans with, as a fraction of max_linear_acceleration: with three
# axes braking at b and a fallback step of a/2 (see SafetyFilter.step), the total velocity change per
# cycle is at most sqrt((a/2)^2 + 3 b^2) = a / sqrt(2) < a.
_WALL_BRAKING_FRACTION = 1.0 / (2.0 * math.sqrt(3.0))


class SafetyFilter:
    """Per-cycle limits for one driver running at `cycle_dt` seconds per cycle."""

    def __init__(self, limits: SafetyLimits, cycle_dt: float) -> None:
        if not (math.isfinite(cycle_dt) and cycle_dt > 0):
            raise ValueError(f"cycle_dt must be > 0, got {cycle_dt}")
        self.limits = limits
        self.cycle_dt = float(cycle_dt)
        # Plain floats, not numpy: a 3-vector in numpy costs microseconds per operation, and the filter
        # runs at 500 Hz (and a million times in the reliability fuzz).
        self._position: Vec3 | None = None
        self._velocity: Vec3 = (0.0, 0.0, 0.0)
        self._angular_velocity: Vec3 = (0.0, 0.0, 0.0)
        self._gripper = 0.0
        self._cycles_since_fresh = 0

    def reset(self, position: np.ndarray, gripper: float) -> None:
        """Start from the robot's measured state (after connecting, re-arming or a halt); a position
        outside the workspace box is clipped into it, a gripper outside [0, 1] likewise (NaN: 0)."""
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f"reset position must be 3 finite numbers, got {position}")
        self._position = tuple(
            np.clip(position, self.limits.workspace_min, self.limits.workspace_max).tolist()
        )
        self._velocity = (0.0, 0.0, 0.0)
        self._angular_velocity = (0.0, 0.0, 0.0)
        self._gripper = float(np.clip(gripper, 0.0, 1.0)) if math.isfinite(gripper) else 0.0
        self._cycles_since_fresh = 0

    def halt(self, reason: str) -> FilteredCommand:
        """Stop now (the driver's commands went stale): the current target, zero velocity."""
        if self._position is None:
            raise RuntimeError("SafetyFilter.reset() must be called with the robot's state first")
        return self._halt(reason)

    def _halt(self, reason: str) -> FilteredCommand:
        """Stop: command the current target with zero velocity (see `step`)."""
        self._velocity = (0.0, 0.0, 0.0)
        self._angular_velocity = (0.0, 0.0, 0.0)
        return FilteredCommand(
            np.array(self._position), np.zeros(3), np.zeros(3), np.zeros(3), self._gripper, True, (reason,)
        )

    def step(
        self,
        translation_delta: np.ndarray | None,
        rotation_delta: np.ndarray | None = None,
        gripper: float | None = None,
    ) -> FilteredCommand:
        """Filter the motion wanted during this cycle (None: no fresh command this cycle).

        A non-halted command keeps the position inside the workspace box, |v| <= max_linear_speed and
        |v - v_previous| <= max_linear_acceleration * cycle_dt (v_previous: the previous command's
        velocity, zero after reset() or a halt), the same for the angular velocity, and the gripper in
        [0, 1] within max_gripper_rate. Near a wall each axis brakes in time at a fraction of the
        acceleration limit, so the box never has to stop the arm abruptly.

        A halt (stale input, NaN/inf, wrong shape, an implausibly large delta) is an immediate stop: the
        current target with zero velocity. It is exempt from the acceleration limit by design; the robot's
        own servo (servoStop on the UR) decelerates the arm.
        """
        if self._position is None:
            raise RuntimeError("SafetyFilter.reset() must be called with the robot's state first")
        dt, lim = self.cycle_dt, self.limits
        if translation_delta is None:
            self._cycles_since_fresh += 1
            if self._cycles_since_fresh >= lim.stale_cycles:
                return self._halt(f"no fresh command for {self._cycles_since_fresh} cycles")
            translation_delta = [v * dt for v in self._velocity]
            rotation_delta = [w * dt for w in self._angular_velocity]
            gripper = None
        else:
            self._cycles_since_fresh = 0
        wanted_array = np.asarray(translation_delta, dtype=np.float64).reshape(-1)
        wanted_rot_array = (
            np.zeros(3) if rotation_delta is None else np.asarray(rotation_delta, np.float64).reshape(-1)
        )
        wanted_gripper = self._gripper if gripper is None else float(gripper)
        if wanted_array.shape != (3,) or wanted_rot_array.shape != (3,):
            return self._halt(
                f"command shapes {wanted_array.shape}, {wanted_rot_array.shape}, expected (3,), (3,)"
            )
        wanted, wanted_rot = wanted_array.tolist(), wanted_rot_array.tolist()
        if not (
            all(map(math.isfinite, wanted))
            and all(map(math.isfinite, wanted_rot))
            and math.isfinite(wanted_gripper)
        ):
            return self._halt("command contains NaN or inf")
        if (
            max(map(abs, wanted)) > IMPLAUSIBLE_CYCLE_DELTA
            or max(map(abs, wanted_rot)) > IMPLAUSIBLE_CYCLE_DELTA
        ):
            return self._halt(f"command moves more than {IMPLAUSIBLE_CYCLE_DELTA} m or rad in one cycle")

        reasons: list[str] = []
        position, previous = self._position, self._velocity
        max_change = lim.max_linear_acceleration * dt
        target = _limit_speed((wanted[0] / dt, wanted[1] / dt, wanted[2] / dt), lim.max_linear_speed)
        # Largest velocity towards each wall from which braking at `brake` per axis still stops inside
        # the box (the invariant is in `_wall_caps`); [-low, high] always contains a velocity within
        # brake * dt of `previous` per axis.
        brake = lim.max_linear_acceleration * _WALL_BRAKING_FRACTION
        low, high = _wall_caps(position, lim.workspace_min, lim.workspace_max, brake, dt)
        bounded = _clamp(target, low, high)
        velocity = _clip_change(bounded, previous, max_change)
        if _clamp(velocity, low, high) != velocity:
            # Half the budget towards the target, then the per-axis clamp: the clamp changes each axis
            # by at most max(that axis's share, brake * dt), so |change|^2 <= (a dt / 2)^2 + 3 (b dt)^2.
            velocity = _clamp(_clip_change(bounded, previous, 0.5 * max_change), low, high)
            rate_limited = _clip_change(target, previous, max_change)
        else:
            rate_limited = velocity if bounded == target else _clip_change(target, previous, max_change)
        angular = _clip_change(
            _limit_speed((wanted_rot[0] / dt, wanted_rot[1] / dt, wanted_rot[2] / dt), lim.max_angular_speed),
            self._angular_velocity,
            lim.max_angular_acceleration * dt,
        )
        if not (
            _all_close([v * dt for v in rate_limited], wanted)
            and _all_close([w * dt for w in angular], wanted_rot)
        ):
            reasons.append("speed or acceleration limited")
        # The clip is a floating-point safety net only: the braking above keeps the target in the box.
        lower, upper = lim.workspace_min, lim.workspace_max
        new_position = (
            min(max(position[0] + velocity[0] * dt, lower[0]), upper[0]),
            min(max(position[1] + velocity[1] * dt, lower[1]), upper[1]),
            min(max(position[2] + velocity[2] * dt, lower[2]), upper[2]),
        )
        if velocity != rate_limited:
            reasons.append("workspace boundary")
        step = lim.max_gripper_rate * dt
        new_gripper = min(max(min(max(wanted_gripper, 0.0), 1.0), self._gripper - step), self._gripper + step)
        if new_gripper != wanted_gripper:
            reasons.append("gripper rate or range limited")

        self._position, self._velocity, self._angular_velocity, self._gripper = (
            new_position,
            velocity,
            angular,
            new_gripper,
        )
        return FilteredCommand(
            np.array(new_position),
            np.array([w * dt for w in angular]),
            np.array(velocity),
            np.array(angular),
            new_gripper,
            False,
            tuple(reasons),
        )


def _limit_speed(velocity: Vec3, max_speed: float) -> Vec3:
    """`velocity` scaled down to norm `max_speed` if it is faster."""
    speed = math.sqrt(velocity[0] * velocity[0] + velocity[1] * velocity[1] + velocity[2] * velocity[2])
    if speed > max_speed:
        scale = max_speed / speed
        return (velocity[0] * scale, velocity[1] * scale, velocity[2] * scale)
    return velocity


def _clip_change(wanted: Vec3, previous: Vec3, max_change: float) -> Vec3:
    """The point on the segment previous -> wanted nearest `wanted` within `max_change` of `previous`."""
    cx, cy, cz = wanted[0] - previous[0], wanted[1] - previous[1], wanted[2] - previous[2]
    norm = math.sqrt(cx * cx + cy * cy + cz * cz)
    if norm > max_change:
        scale = max_change / norm
        return (previous[0] + cx * scale, previous[1] + cy * scale, previous[2] + cz * scale)
    return wanted


def _wall_caps(position: Vec3, lower: Vec3, upper: Vec3, brake: float, dt: float) -> tuple[Vec3, Vec3]:
    """Per axis, the largest speed towards the lower and the upper wall from which the discrete braking
    sequence v, v - brake dt, v - 2 brake dt, ... (one position step of v dt per cycle) stops without
    crossing the wall: cap(d) = max(0, sqrt(2 brake d) - brake dt / 2) for the distance d to the wall.

    Invariant: 0 < v <= cap(d) implies d' = d - v dt >= (v - brake dt / 2)^2 / (2 brake) >= 0 and hence
    v - brake dt <= cap(d'): from a velocity within the caps, the caps at the next position still admit a
    velocity within brake * dt of it on every axis (and 0 always lies within them).
    """
    two_brake, half_step, sqrt = 2.0 * brake, 0.5 * brake * dt, math.sqrt
    x, y, z = position
    # max(d, 0): a position one rounding error outside the box counts as on the wall.
    low = (
        max(0.0, sqrt(two_brake * max(x - lower[0], 0.0)) - half_step),
        max(0.0, sqrt(two_brake * max(y - lower[1], 0.0)) - half_step),
        max(0.0, sqrt(two_brake * max(z - lower[2], 0.0)) - half_step),
    )
    high = (
        max(0.0, sqrt(two_brake * max(upper[0] - x, 0.0)) - half_step),
        max(0.0, sqrt(two_brake * max(upper[1] - y, 0.0)) - half_step),
        max(0.0, sqrt(two_brake * max(upper[2] - z, 0.0)) - half_step),
    )
    return low, high


def _clamp(velocity: Vec3, low: Vec3, high: Vec3) -> Vec3:
    """`velocity` clamped per axis into [-low, high]."""
    return (
        min(max(velocity[0], -low[0]), high[0]),
        min(max(velocity[1], -low[1]), high[1]),
        min(max(velocity[2], -low[2]), high[2]),
    )


def _all_close(values: list[float], reference: list[float]) -> bool:
    """np.allclose(values, reference) for short lists of finite floats, without numpy's overhead."""
    return all(abs(v - r) <= 1e-8 + 1e-5 * abs(r) for v, r in zip(values, reference, strict=True))
