"""The safety filter never emits a command outside its limits, for any input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelvla_ros.reliability import filter_fuzz
from pixelvla_ros.safety import SafetyFilter, SafetyLimits, UnsafeChunkError, check_chunk

LIMITS = SafetyLimits()
CYCLE = 0.002  # 500 Hz e-Series driver
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from(
    [0.0, 1e-9, -1e-9, 1e3, -1e3, 1e300, float("nan"), float("inf")]
)
VECTOR = st.lists(ANY_FLOAT, min_size=3, max_size=3)
COMMAND = st.none() | st.tuples(VECTOR, VECTOR, ANY_FLOAT)


def _assert_within_limits(out, before_position, before_velocity, before_angular, before_gripper) -> None:
    lo, hi = np.array(LIMITS.workspace_min), np.array(LIMITS.workspace_max)
    assert np.all(np.isfinite(out.position)) and np.all((out.position >= lo) & (out.position <= hi))
    assert np.all(np.isfinite(out.linear_velocity)) and np.all(np.isfinite(out.angular_velocity))
    assert np.linalg.norm(out.position - before_position) <= LIMITS.max_linear_speed * CYCLE + 1e-12
    assert np.linalg.norm(out.rotation_delta) <= LIMITS.max_angular_speed * CYCLE + 1e-12
    assert 0.0 <= out.gripper <= 1.0
    assert abs(out.gripper - before_gripper) <= LIMITS.max_gripper_rate * CYCLE + 1e-12
    if out.halted:  # a stop, exempt from the acceleration limit
        assert np.array_equal(out.position, before_position) and not out.linear_velocity.any()
    else:  # at the workspace walls too (issue 17, defect 7)
        dv = np.linalg.norm(out.linear_velocity - before_velocity)
        assert dv <= LIMITS.max_linear_acceleration * CYCLE * (1 + 1e-9)
        dw = np.linalg.norm(out.angular_velocity - before_angular)
        assert dw <= LIMITS.max_angular_acceleration * CYCLE * (1 + 1e-9)


@settings(max_examples=300, deadline=None)
@given(commands=st.lists(COMMAND, min_size=1, max_size=40), start=st.tuples(ANY_FLOAT, ANY_FLOAT, ANY_FLOAT))
def test_filter_output_is_always_within_limits(commands, start) -> None:
    safety = SafetyFilter(LIMITS, CYCLE)
    position = np.array(start)
    safety.reset(position if np.all(np.isfinite(position)) else np.array([0.5, 0.0, 0.3]), gripper=0.0)
    previous = safety.step(np.zeros(3), np.zeros(3), 0.0)
    for command in commands:
        out = safety.step(*command) if command is not None else safety.step(None)
        _assert_within_limits(out, previous.position, previous.linear_velocity, previous.angular_velocity,
                              previous.gripper)  # fmt: skip
        previous = out


def test_stale_commands_halt_within_two_cycles() -> None:
    safety = SafetyFilter(LIMITS, CYCLE)
    safety.reset(np.array([0.5, 0.0, 0.3]), gripper=0.0)
    for _ in range(200):  # accelerate to a steady motion along x
        moving = safety.step(np.array([0.2 * CYCLE, 0.0, 0.0]))
    assert not moving.halted and moving.linear_velocity[0] > 0.1
    first_missing = safety.step(None)
    second_missing = safety.step(None)
    assert not first_missing.halted
    assert second_missing.halted and "no fresh command" in second_missing.reasons[0]
    assert np.array_equal(second_missing.position, first_missing.position)
    assert safety.step(None).halted  # and stays halted while nothing fresh arrives


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (np.full((8, 7), np.nan), "NaN"),
        (np.zeros((8, 6)), "shape"),
        (np.zeros((0, 7)), "shape"),
        (np.array([[0.2, 0, 0, 0, 0, 0, 0]]), "translates"),
        (np.array([[0, 0, 0, 0, 0, 1.0, 0]]), "rotates"),
        (np.array([[0, 0, 0, 0, 0, 0, 1.5]]), "gripper"),
        ([["a"] * 7], "not numeric"),
    ],
)
def test_unsafe_chunks_are_rejected(chunk, message) -> None:
    with pytest.raises(UnsafeChunkError, match=message):
        check_chunk(chunk, LIMITS)


def test_a_safe_chunk_passes_unchanged() -> None:
    chunk = np.tile([0.01, -0.01, 0.0, 0.0, 0.0, 0.1, 1.0], (8, 1))
    np.testing.assert_array_equal(check_chunk(chunk, LIMITS), chunk)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="workspace"):
        SafetyLimits(workspace_min=(1.0, 0.0, 0.0), workspace_max=(0.5, 1.0, 1.0))
    with pytest.raises(ValueError, match="max_linear_speed"):
        SafetyLimits(max_linear_speed=float("nan"))


def _push(start: np.ndarray, direction: np.ndarray, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Command full speed along `direction` from `start` at 500 Hz; the positions and velocities."""
    safety = SafetyFilter(LIMITS, CYCLE)
    safety.reset(start, gripper=0.0)
    delta = direction / np.linalg.norm(direction) * LIMITS.max_linear_speed * CYCLE
    outs = [safety.step(delta) for _ in range(round(seconds / CYCLE))]
    assert not any(out.halted for out in outs)
    return np.array([out.position for out in outs]), np.array([out.linear_velocity for out in outs])


def _assert_smooth_and_inside(positions: np.ndarray, velocities: np.ndarray) -> None:
    lo, hi = np.array(LIMITS.workspace_min), np.array(LIMITS.workspace_max)
    assert np.all((positions >= lo) & (positions <= hi))
    assert np.linalg.norm(velocities, axis=1).max() <= LIMITS.max_linear_speed * (1 + 1e-9)
    dv = np.linalg.norm(np.diff(velocities, axis=0, prepend=np.zeros((1, 3))), axis=1)
    assert dv.max() <= LIMITS.max_linear_acceleration * CYCLE * (1 + 1e-9), dv.max() / (
        LIMITS.max_linear_acceleration * CYCLE
    )


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sign", [-1, 1])
def test_full_speed_into_a_wall_brakes_within_the_acceleration_limit(axis, sign) -> None:
    # Issue 17, defect 7: the box clip used to stop the arm from full speed in one cycle at the wall.
    lo, hi = np.array(LIMITS.workspace_min), np.array(LIMITS.workspace_max)
    start = (lo + hi) / 2
    start[axis] = (hi if sign > 0 else lo)[axis] - sign * 0.15
    direction = np.zeros(3)
    direction[axis] = sign
    positions, velocities = _push(start, direction, seconds=1.5)
    _assert_smooth_and_inside(positions, velocities)
    assert (velocities[:, axis] * sign).max() >= LIMITS.max_linear_speed * 0.999  # it did reach full speed
    wall = (hi if sign > 0 else lo)[axis]
    assert abs(positions[-1, axis] - wall) < 1e-3 and abs(velocities[-1, axis]) < 1e-2  # and got there


@pytest.mark.parametrize("signs", [(1, 1, 1), (-1, -1, -1), (1, -1, 1), (-1, 1, -1)])
def test_full_speed_into_a_corner_brakes_within_the_acceleration_limit(signs) -> None:
    lo, hi = np.array(LIMITS.workspace_min), np.array(LIMITS.workspace_max)
    signs = np.array(signs, dtype=np.float64)
    corner = np.where(signs > 0, hi, lo)
    positions, velocities = _push(corner - signs * 0.15, signs, seconds=2.0)
    _assert_smooth_and_inside(positions, velocities)
    assert np.abs(positions[-1] - corner).max() < 1e-3


def _rate_limit_only(wanted, previous, max_speed, max_accel, dt):  # the filter before the wall braking
    speed = np.linalg.norm(wanted)
    if speed > max_speed:
        wanted = wanted * (max_speed / speed)
    change = wanted - previous
    norm = np.linalg.norm(change)
    if norm > max_accel * dt:
        wanted = previous + change * (max_accel * dt / norm)
    return wanted


def test_away_from_the_walls_the_filter_is_the_rate_limit_alone() -> None:
    rng = np.random.default_rng(7)
    safety = SafetyFilter(LIMITS, CYCLE)
    start = (np.array(LIMITS.workspace_min) + np.array(LIMITS.workspace_max)) / 2
    safety.reset(start, gripper=0.0)
    velocity, angular, position = np.zeros(3), np.zeros(3), start
    for _ in range(300):  # at most 0.15 m from the centre: the walls are >= 0.29 m away
        delta = rng.normal(size=3) * rng.choice([1e-5, 3e-4, 1e-3])
        rotation = rng.normal(size=3) * 1e-3
        out = safety.step(delta, rotation, 0.0)
        velocity = _rate_limit_only(delta / CYCLE, velocity, LIMITS.max_linear_speed,
                                    LIMITS.max_linear_acceleration, CYCLE)  # fmt: skip
        angular = _rate_limit_only(rotation / CYCLE, angular, LIMITS.max_angular_speed,
                                   LIMITS.max_angular_acceleration, CYCLE)  # fmt: skip
        position = position + velocity * CYCLE
        np.testing.assert_allclose(out.linear_velocity, velocity, rtol=0, atol=1e-14)
        np.testing.assert_allclose(out.angular_velocity, angular, rtol=0, atol=1e-14)
        np.testing.assert_allclose(out.position, position, rtol=0, atol=1e-14)
        assert "workspace boundary" not in out.reasons


def test_filter_fuzz_finds_no_crash_and_no_motion_outside_the_limits() -> None:
    rows = filter_fuzz.run(inputs=20_000)
    assert len(rows) == len(filter_fuzz.KINDS) and sum(row.tried for row in rows) >= 20_000
    bad = [row for row in rows if not row.ok]
    assert not bad, bad
