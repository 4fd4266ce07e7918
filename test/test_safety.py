"""The safety filter never emits a command outside its limits, for any input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    if out.halted:
        assert np.array_equal(out.position, before_position) and not out.linear_velocity.any()
    elif "workspace boundary" not in out.reasons:
        dv = np.linalg.norm(out.linear_velocity - before_velocity)
        assert dv <= LIMITS.max_linear_acceleration * CYCLE + 1e-9
        dw = np.linalg.norm(out.angular_velocity - before_angular)
        assert dw <= LIMITS.max_angular_acceleration * CYCLE + 1e-9


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
