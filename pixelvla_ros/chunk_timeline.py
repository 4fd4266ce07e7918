"""Timestamped action chunks -> the action (or TCP target) a driver should execute at a given time.

The ActionChunk message's contract: step k of a chunk covers [t0 + k * dt, t0 + (k + 1) * dt), where t0 is
the stamp of the image the chunk was computed from. A driver asks for the action covering "now"; steps whose
interval has passed are dropped (never executed late), and the newest chunk (by image stamp) wins where
chunks overlap. With `commit_steps` > 0 a chunk, once started, keeps control for that many of its steps
before a newer one takes over: the open-loop execution the policy was evaluated with (`evaluate
--execute-steps`), while the newer chunks still prove that the camera and the policy are alive (`newest()`).
Used by the simulator driver (one action per control step) and by the UR driver (TCP waypoints interpolated
at the robot's rate).

    timeline = ChunkTimeline(limits, commit_steps=4)
    timeline.add(TimedChunk(t0=stamp, dt=0.1, actions=chunk))   # check_chunk'ed on the way in
    action = timeline.action_at(now)                            # (7,) or None: no motion
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pixelvla_ros.action_space import ACTION_DIM, GRIPPER, ROTATION, TRANSLATION
from pixelvla_ros.safety import SafetyLimits, check_chunk
from pixelvla_ros.ur5e import matrix_to_rotvec, rotvec_to_matrix

__all__ = ["ChunkTimeline", "TimedChunk", "Waypoints"]


@dataclass(frozen=True)
class TimedChunk:
    t0: float  # s, the source image's stamp (any clock, the same one the driver asks in)
    dt: float  # s per step
    actions: np.ndarray  # (N, 7) project action convention, base frame

    def __post_init__(self) -> None:
        if not (math.isfinite(self.t0) and math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"chunk needs a finite stamp and dt > 0, got t0={self.t0}, dt={self.dt}")
        a = np.asarray(self.actions)
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] != ACTION_DIM:
            raise ValueError(f"chunk actions must have shape (N >= 1, {ACTION_DIM}), got {a.shape}")

    @property
    def t_end(self) -> float:
        """End of the last step's interval."""
        return self.t0 + len(self.actions) * self.dt

    def step_at(self, t: float) -> int | None:
        """Index of the step whose interval contains t, or None."""
        if not self.t0 <= t < self.t_end:
            return None
        return min(int((t - self.t0) / self.dt), len(self.actions) - 1)

    def waypoints(
        self, start_position: np.ndarray, start_rotation: np.ndarray, start_gripper: float
    ) -> Waypoints:
        """Absolute targets of this chunk, integrated from the TCP pose at its image stamp."""
        a = self.actions
        n = len(a)
        positions = np.asarray(start_position, dtype=np.float64) + np.vstack(
            [np.zeros(3), np.cumsum(a[:, TRANSLATION], axis=0)]
        )
        rotations = [np.asarray(start_rotation, dtype=np.float64)]
        for k in range(n):  # R_{k+1} = exp([r_k]x) R_k: rotation deltas are in the base frame
            rotations.append(rotvec_to_matrix(a[k, ROTATION]) @ rotations[-1])
        gripper = np.concatenate([[float(start_gripper)], a[:, GRIPPER]])
        times = self.t0 + self.dt * np.arange(n + 1)
        return Waypoints(times, positions, np.stack(rotations), gripper)


@dataclass(frozen=True)
class Waypoints:
    """Absolute TCP targets of one chunk: target k is reached at times[k] = t0 + (k + 1) * dt."""

    times: np.ndarray  # (N + 1,) s; times[0] = t0 holds the start pose
    positions: np.ndarray  # (N + 1, 3) m, base frame
    rotations: np.ndarray  # (N + 1, 3, 3) orientations, base frame
    gripper: np.ndarray  # (N + 1,) command in [0, 1]; gripper[k + 1] is step k's command

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray, float] | None:
        """Linear interpolation in position, slerp in orientation; None outside [times[0], times[-1]]."""
        if not self.times[0] <= t <= self.times[-1]:
            return None
        k = min(int(np.searchsorted(self.times, t, side="right")) - 1, len(self.times) - 2)
        s = (t - self.times[k]) / (self.times[k + 1] - self.times[k])
        position = (1 - s) * self.positions[k] + s * self.positions[k + 1]
        r0, r1 = self.rotations[k], self.rotations[k + 1]
        rotation = rotvec_to_matrix(s * matrix_to_rotvec(r1 @ r0.T)) @ r0  # slerp, base-frame increment
        return position, rotation, float(self.gripper[k + 1])


class ChunkTimeline:
    """The chunks a driver holds; the chunk in control at a time decides its action (module docstring)."""

    def __init__(self, limits: SafetyLimits | None = None, commit_steps: int = 0) -> None:
        if commit_steps < 0:
            raise ValueError(f"commit_steps must be >= 0, got {commit_steps}")
        self.limits = limits or SafetyLimits()
        self.commit_steps = int(commit_steps)
        self._chunks: list[TimedChunk] = []  # oldest image stamp first
        self._current: TimedChunk | None = None  # the chunk in control
        self._release_at = -math.inf  # when a newer chunk may take over from it

    def clear(self) -> None:
        self._chunks = []
        self._current, self._release_at = None, -math.inf

    def add(self, chunk: TimedChunk) -> TimedChunk:
        """Add a chunk and return the copy held (raises UnsafeChunkError for NaN or out-of-limit steps,
        ValueError for a chunk older than the newest one held: chunks must arrive in image-stamp order)."""
        actions = check_chunk(chunk.actions, self.limits)
        if self._chunks and chunk.t0 < self._chunks[-1].t0:
            raise ValueError(f"chunk from image stamp {chunk.t0:.3f} is older than {self._chunks[-1].t0:.3f}")
        held = TimedChunk(chunk.t0, chunk.dt, actions)
        self._chunks.append(held)
        return held

    def newest(self) -> TimedChunk | None:
        return self._chunks[-1] if self._chunks else None

    def chunk_at(self, t: float) -> TimedChunk | None:
        """The chunk in control at t (None: no motion): the current one while it covers t and has run fewer
        than `commit_steps` steps, else the newest chunk covering t. Times must not go back."""
        self._chunks = [c for c in self._chunks if c.t_end > t]  # drop what is entirely in the past
        current = self._current
        if current is not None and t < self._release_at and current.step_at(t) is not None:
            return current
        for chunk in reversed(self._chunks):
            k = chunk.step_at(t)
            if k is not None:
                if chunk is not current:
                    self._current = chunk
                    self._release_at = chunk.t0 + (k + self.commit_steps) * chunk.dt
                return chunk
        self._current = None
        return None

    def action_at(self, t: float) -> np.ndarray | None:
        """(7,) action of the chunk in control at t, or None (no motion)."""
        chunk = self.chunk_at(t)
        return None if chunk is None else chunk.actions[chunk.step_at(t)].copy()
