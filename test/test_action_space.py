"""The action-space description refuses conventions other than the project's."""

from __future__ import annotations

import pytest

from pixelvla_ros.action_space import ActionSpace


def test_round_trip_and_timing() -> None:
    space = ActionSpace(control_rate_hz=5.0, chunk_size=4)
    assert ActionSpace.from_dict(space.to_dict()) == space
    assert space.dt == pytest.approx(0.2)


@pytest.mark.parametrize(
    "change",
    [{"rotation": "euler_xyz"}, {"gripper": "0_closed_1_open"}, {"translation_unit": "mm"},
     {"control_rate_hz": 0.0}, {"control_rate_hz": float("nan")}, {"chunk_size": 0}],
)  # fmt: skip
def test_other_conventions_are_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        ActionSpace(**change)


def test_incomplete_or_unknown_description_is_refused() -> None:
    data = ActionSpace().to_dict()
    del data["gripper"]
    with pytest.raises(ValueError, match="lacks"):
        ActionSpace.from_dict(data)
    with pytest.raises(ValueError, match="unknown"):
        ActionSpace.from_dict({**ActionSpace().to_dict(), "extra": 1})
