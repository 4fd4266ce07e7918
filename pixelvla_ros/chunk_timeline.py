"""The one chunk executor: timestamped action chunks -> the action (or TCP target) to execute at a given time.

The ActionChunk message's contract: step k of a chunk covers [t0 + k * dt, t0 + (k + 1) * dt), where t0 is
the stamp of the image the chunk was computed from. A driver asks for the action covering "now"; steps whose
interval has passed are dropped (never executed late), and the newest chunk (by image stamp) wins where
chunks overlap. A chunk, once started, keeps control for `commit_steps` of its steps before a newer one takes
over (0: at once). The value comes with each chunk (`TimedChunk.commit_steps`: the checkpoint's, filled in by
the policy node) unless the timeline overrides it; the newer chunks still prove that the camera and the policy
are alive (`newest()`).

Evaluation and the DAgger recorder execute chunks with the same object: control step n is time n * dt, a chunk
predicted from the observation of step n has t0 = n * dt, and a new chunk is computed when `due` (none covers
the step, or the one in control has run its committed steps). That executes the same actions as a driver that
receives a chunk every period (test_chunk_timeline.py and test_chunk_execution.py check the two against each
other).

Every driver admits chunks through `ChunkTimeline.add` and so by one rule (`ChunkRules`): the chunk's frame
must be the driver's base frame; its image stamp may lead the driver clock by at most `max_stamp_lead` (a
camera on another clock, or a stamp far in the future that would make every later chunk look "older");
its image must be at most `max_command_age` old; its steps pass `safety.check_chunk` (NaN, per-step limits);
and stamps must not go back. Once the newest chunk held is older than `max_command_age` the driver halts at
once (`stale_reason`): the camera or the policy has stopped. Used by the simulator driver (one action per
control step) and by the UR driver (TCP waypoints interpolated at the robot's rate).

    timeline = ChunkTimeline(limits, rules=ChunkRules(base_frame="base"))  # commit_steps=N: override
    timeline.add(TimedChunk(t0=stamp, dt=0.1, actions=chunk, commit_steps=4), now)  # ValueError: refused
    action = timeline.action_at(now)                            # (7,) or None: no motion
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pixelvla_ros.action_space import ACTION_DIM, GRIPPER, ROTATION, TRANSLATION
from pixelvla_ros.safety import SafetyLimits, check_chunk
from pixelvla_ros.ur5e import matrix_to_rotvec, rotvec_to_matrix

__all__ = ["ChunkRefused", "ChunkRules", "ChunkTimeline", "TimedChunk", "Waypoints", "commit_override"]

# Steps a time may fall short of a step boundary and still count as on it: times computed as n * dt (an
# evaluation's control steps) land a rounding error either side of the chunk's t0 + k * dt.
_BOUNDARY_TOLERANCE = 1e-6


class ChunkRefused(ValueError):
    """A chunk a driver will not execute (wrong frame, stamp, order or driver state); the message says why."""


@dataclass(frozen=True)
class ChunkRules:
    """What every driver checks on an incoming chunk besides its steps' safety limits (module docstring)."""

    base_frame: str = "base"  # frame_id the chunks must carry: the robot base frame
    max_stamp_lead: float = 0.05  # s an image stamp may lead the driver clock before the clocks are doubted
    max_command_age: float = 0.25  # s: older images are refused; the driver halts once the newest is older

    def __post_init__(self) -> None:
        if not self.base_frame:
            raise ValueError("base_frame must name the robot base frame")
        if not (math.isfinite(self.max_stamp_lead) and 0.0 <= self.max_stamp_lead <= 1.0):
            raise ValueError(f"max_stamp_lead must be within [0, 1] s, got {self.max_stamp_lead}")
        if not (math.isfinite(self.max_command_age) and 0.0 < self.max_command_age <= 10.0):
            raise ValueError(f"max_command_age must be within (0, 10] s, got {self.max_command_age}")


@dataclass(frozen=True)
class TimedChunk:
    t0: float  # s, the source image's stamp (any clock, the same one the driver asks in)
    dt: float  # s per step
    actions: np.ndarray  # (N, 7) project action convention, base frame
    frame_id: str = "base"  # the frame of the actions (ActionChunk header.frame_id)
    commit_steps: int = 0  # steps run, once started, before a newer chunk may take over (the checkpoint's)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.t0) and math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"chunk needs a finite stamp and dt > 0, got t0={self.t0}, dt={self.dt}")
        a = np.asarray(self.actions)
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] != ACTION_DIM:
            raise ValueError(f"chunk actions must have shape (N >= 1, {ACTION_DIM}), got {a.shape}")
        if self.commit_steps < 0:
            raise ValueError(f"chunk commit_steps must be >= 0, got {self.commit_steps}")

    @property
    def t_end(self) -> float:
        """End of the last step's interval."""
        return self.t0 + len(self.actions) * self.dt

    def step_at(self, t: float) -> int | None:
        """Index of the step whose interval contains t (a time within rounding of a step's start belongs to
        that step), or None."""
        k = math.floor((t - self.t0) / self.dt + _BOUNDARY_TOLERANCE)
        return k if 0 <= k < len(self.actions) else None

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


def commit_override(override: int | None, chunk: TimedChunk) -> str | None:
    """The line a driver logs when its commit_steps parameter overrides a chunk's own (None: it does not)."""
    if override is None or override == chunk.commit_steps:
        return None
    return (
        f"commit_steps {override} overrides the chunks' own {chunk.commit_steps} (how the checkpoint was "
        f"evaluated): a started chunk keeps control for {override} steps"
    )


class ChunkTimeline:
    """The chunks a driver holds; the chunk in control at a time decides its action (module docstring)."""

    def __init__(
        self,
        limits: SafetyLimits | None = None,
        commit_steps: int | None = None,
        rules: ChunkRules | None = None,
    ) -> None:
        """commit_steps: None executes each chunk by its own `commit_steps`; a number overrides them all."""
        if commit_steps is not None and commit_steps < 0:
            raise ValueError(f"commit_steps must be >= 0 (or None: each chunk's own), got {commit_steps}")
        self.limits = limits or SafetyLimits()
        self.rules = rules or ChunkRules()
        self.commit_steps = None if commit_steps is None else int(commit_steps)
        self._chunks: list[TimedChunk] = []  # oldest image stamp first
        self._current: TimedChunk | None = None  # the chunk in control
        self._release_step = 0  # the step of the current chunk from which a newer chunk may take over

    def clear(self) -> None:
        self._chunks = []
        self._current, self._release_step = None, 0

    def check(self, chunk: TimedChunk, now: float) -> TimedChunk:
        """The chunk as it would be held if it arrived at driver time `now`; raises ChunkRefused (frame,
        stamp, order) or UnsafeChunkError (NaN, out-of-limit steps), both ValueErrors. Holds nothing."""
        rules = self.rules
        if chunk.frame_id != rules.base_frame:
            raise ChunkRefused(
                f"chunk frame {chunk.frame_id!r} is not the driver's base frame {rules.base_frame!r}"
            )
        if chunk.t0 > now + rules.max_stamp_lead:
            raise ChunkRefused(
                f"image stamp {chunk.t0:.3f} is {chunk.t0 - now:.3f} s ahead of the driver clock (max "
                f"{rules.max_stamp_lead:g} s; do the camera and the driver use the same clock?)"
            )
        if now - chunk.t0 > rules.max_command_age:
            raise ChunkRefused(
                f"chunk from an image {now - chunk.t0:.3f} s old "
                f"(max_command_age {rules.max_command_age:g} s)"
            )
        actions = check_chunk(chunk.actions, self.limits)
        if self._chunks and chunk.t0 < self._chunks[-1].t0:
            raise ChunkRefused(
                f"chunk from image stamp {chunk.t0:.3f} is older than {self._chunks[-1].t0:.3f}"
            )
        return replace(chunk, actions=actions)

    def add(self, chunk: TimedChunk, now: float) -> TimedChunk:
        """Admit a chunk arriving at driver time `now` (`check`) and return the copy held."""
        held = self.check(chunk, now)
        self._chunks.append(held)
        return held

    def stale_reason(self, t: float) -> str | None:
        """Why the driver must halt at once at t: the newest chunk held comes from an image older than
        `max_command_age` (None: not stale, or no chunk held)."""
        newest = self.newest()
        if newest is None or t - newest.t0 <= self.rules.max_command_age:
            return None
        age = t - newest.t0
        return f"newest chunk's image is {age:.3f} s old (max_command_age {self.rules.max_command_age:g} s)"

    def newest(self) -> TimedChunk | None:
        return self._chunks[-1] if self._chunks else None

    def chunk_at(self, t: float) -> TimedChunk | None:
        """The chunk in control at t (None: no motion): the current one while it covers t and has run fewer
        than its committed steps, else the newest chunk covering t. Times must not go back."""
        self._chunks = [c for c in self._chunks if c.t_end > t]  # drop what is entirely in the past
        current = self._current
        if current is not None and (k := current.step_at(t)) is not None and k < self._release_step:
            return current
        for chunk in reversed(self._chunks):
            k = chunk.step_at(t)
            if k is not None:
                if chunk is not current:
                    commit = chunk.commit_steps if self.commit_steps is None else self.commit_steps
                    self._current, self._release_step = chunk, k + commit
                return chunk
        self._current = None
        return None

    def due(self, t: float) -> bool:
        """Whether a newer chunk would take control at t: none covers t, or the one in control has run its
        committed steps. Evaluation computes a new chunk exactly then (module docstring)."""
        current = self.chunk_at(t)
        return current is None or current.step_at(t) >= self._release_step

    def action_at(self, t: float) -> np.ndarray | None:
        """(7,) action of the chunk in control at t, or None (no motion)."""
        chunk = self.chunk_at(t)
        return None if chunk is None else chunk.actions[chunk.step_at(t)].copy()
