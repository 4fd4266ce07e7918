"""The project's end-effector action convention, shared by the model, simulator, dataset tools and drivers.

One action is 7 numbers per control step, in the robot base frame (REP 103):
  [0:3] dx, dy, dz        translation delta, metres
  [3:6] rx, ry, rz        rotation delta as a rotation vector (axis * angle), radians, base frame
  [6]   gripper           command in [0, 1]: 0 = open, 1 = closed
A checkpoint stores an ActionSpace and loading refuses a mismatch (see pixelvla.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

ACTION_DIM = 7
TRANSLATION = slice(0, 3)
ROTATION = slice(3, 6)
GRIPPER = 6

FRAME_BASE = "base"
ROTATION_VECTOR = "rotation_vector"
GRIPPER_0_OPEN_1_CLOSED = "0_open_1_closed"


@dataclass(frozen=True)
class ActionSpace:
    """What an action means: frame, units, conventions and timing of a chunk."""

    frame: str = FRAME_BASE
    translation_unit: str = "m"
    rotation: str = ROTATION_VECTOR
    rotation_unit: str = "rad"
    gripper: str = GRIPPER_0_OPEN_1_CLOSED
    control_rate_hz: float = 10.0
    chunk_size: int = 8

    def __post_init__(self) -> None:
        if self.rotation != ROTATION_VECTOR:
            raise ValueError(f"rotation must be {ROTATION_VECTOR!r}, got {self.rotation!r}")
        if self.gripper != GRIPPER_0_OPEN_1_CLOSED:
            raise ValueError(f"gripper must be {GRIPPER_0_OPEN_1_CLOSED!r}, got {self.gripper!r}")
        if self.translation_unit != "m" or self.rotation_unit != "rad":
            raise ValueError("translation must be in metres and rotation in radians")
        if not (math.isfinite(self.control_rate_hz) and self.control_rate_hz > 0):
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")

    @property
    def dt(self) -> float:
        """Seconds between two consecutive actions of a chunk."""
        return 1.0 / self.control_rate_hz

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionSpace:
        known = {f.name for f in fields(cls)}
        missing = known - set(data)
        if missing:
            raise ValueError(f"action space description lacks {sorted(missing)}")
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"action space description has unknown keys {sorted(unknown)}")
        return cls(**data)
