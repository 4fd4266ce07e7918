"""The safety filter every arm driver applies before it moves the arm.

Two layers, both fail-safe (any doubt means no motion):
  1. `check_chunk` on each policy action chunk as it arrives: NaN/inf, a wrong shape, or a step beyond
     the per-step translation/rotation limits or outside [0, 1] for the gripper rejects the whole chunk.
     A policy that emits such numbers is not trusted for its other steps either.
  2. `SafetyFilter.step` on every driver cycle: turns the wanted TCP target of that cycle into a
     commanded target within the workspace box and the velocity, acceleration and gripper-rate limits,
     and halts (commands the current target, zero velocity) when fresh commands stop arriving for
     `stale_cycles` cycles or the input is not finite.
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


class SafetyFilter:
    """Per-cycle limits for one driver running at `cycle_dt` seconds per cycle."""

    def __init__(self, limits: SafetyLimits, cycle_dt: float) -> None:
        if not (math.isfinite(cycle_dt) and cycle_dt > 0):
            raise ValueError(f"cycle_dt must be > 0, got {cycle_dt}")
        self.limits = limits
        self.cycle_dt = float(cycle_dt)
        self._position: np.ndarray | None = None
        self._velocity = np.zeros(3)
        self._angular_velocity = np.zeros(3)
        self._gripper = 0.0
        self._cycles_since_fresh = 0

    def reset(self, position: np.ndarray, gripper: float) -> None:
        """Start from the robot's measured state (after connecting, re-arming or a halt)."""
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f"reset position must be 3 finite numbers, got {position}")
        self._position = np.clip(position, self.limits.workspace_min, self.limits.workspace_max)
        self._velocity = np.zeros(3)
        self._angular_velocity = np.zeros(3)
        self._gripper = float(np.clip(gripper, 0.0, 1.0)) if math.isfinite(gripper) else 0.0
        self._cycles_since_fresh = 0

    def _halt(self, reason: str) -> FilteredCommand:
        self._velocity = np.zeros(3)
        self._angular_velocity = np.zeros(3)
        return FilteredCommand(
            self._position.copy(), np.zeros(3), np.zeros(3), np.zeros(3), self._gripper, True, (reason,)
        )

    def step(
        self,
        translation_delta: np.ndarray | None,
        rotation_delta: np.ndarray | None = None,
        gripper: float | None = None,
    ) -> FilteredCommand:
        """Filter the motion wanted during this cycle (None: no fresh command this cycle)."""
        if self._position is None:
            raise RuntimeError("SafetyFilter.reset() must be called with the robot's state first")
        dt, lim = self.cycle_dt, self.limits
        if translation_delta is None:
            self._cycles_since_fresh += 1
            if self._cycles_since_fresh >= lim.stale_cycles:
                return self._halt(f"no fresh command for {self._cycles_since_fresh} cycles")
            translation_delta, rotation_delta, gripper = (
                self._velocity * dt,
                self._angular_velocity * dt,
                None,
            )
        else:
            self._cycles_since_fresh = 0
        wanted = np.asarray(translation_delta, dtype=np.float64).reshape(-1)
        wanted_rot = (
            np.zeros(3) if rotation_delta is None else np.asarray(rotation_delta, np.float64).reshape(-1)
        )
        wanted_gripper = self._gripper if gripper is None else float(gripper)
        if wanted.shape != (3,) or wanted_rot.shape != (3,):
            return self._halt(f"command shapes {wanted.shape}, {wanted_rot.shape}, expected (3,), (3,)")
        if not (
            np.all(np.isfinite(wanted)) and np.all(np.isfinite(wanted_rot)) and math.isfinite(wanted_gripper)
        ):
            return self._halt("command contains NaN or inf")
        if (
            np.abs(wanted).max() > IMPLAUSIBLE_CYCLE_DELTA
            or np.abs(wanted_rot).max() > IMPLAUSIBLE_CYCLE_DELTA
        ):
            return self._halt(f"command moves more than {IMPLAUSIBLE_CYCLE_DELTA} m or rad in one cycle")

        reasons: list[str] = []
        velocity = _limit_rate(
            wanted / dt, self._velocity, lim.max_linear_speed, lim.max_linear_acceleration, dt
        )
        angular = _limit_rate(
            wanted_rot / dt, self._angular_velocity, lim.max_angular_speed, lim.max_angular_acceleration, dt
        )
        if not np.allclose(velocity * dt, wanted) or not np.allclose(angular * dt, wanted_rot):
            reasons.append("speed or acceleration limited")
        position = self._position + velocity * dt
        clipped = np.clip(position, lim.workspace_min, lim.workspace_max)
        if not np.array_equal(clipped, position):
            reasons.append("workspace boundary")
            velocity = (clipped - self._position) / dt
        step = lim.max_gripper_rate * dt
        new_gripper = float(
            np.clip(np.clip(wanted_gripper, 0.0, 1.0), self._gripper - step, self._gripper + step)
        )
        if new_gripper != wanted_gripper:
            reasons.append("gripper rate or range limited")

        self._position, self._velocity, self._angular_velocity, self._gripper = (
            clipped,
            velocity,
            angular,
            new_gripper,
        )
        return FilteredCommand(
            clipped.copy(), angular * dt, velocity.copy(), angular.copy(), new_gripper, False, tuple(reasons)
        )


def _limit_rate(
    wanted: np.ndarray, previous: np.ndarray, max_speed: float, max_accel: float, dt: float
) -> np.ndarray:
    """Velocity closest to `wanted` within |v| <= max_speed and |v - previous| <= max_accel * dt."""
    speed = np.linalg.norm(wanted)
    if speed > max_speed:
        wanted = wanted * (max_speed / speed)
    change = wanted - previous
    norm = np.linalg.norm(change)
    if norm > max_accel * dt:
        wanted = previous + change * (max_accel * dt / norm)
    return wanted
