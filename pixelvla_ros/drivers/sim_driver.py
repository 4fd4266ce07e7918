"""The simulated arm and camera behind the same contract as the UR driver (ROS-free core).

Like a real cell, the simulator runs at its own control rate and does not wait for the policy. Each control
period n starting at t_n:
  1. `capture()`: the camera frame and the arm state of t_n (the node publishes them stamped t_n; the state
     of t_n is final once period n - 1 is stepped, so the node renders it ahead);
  2. the policy answers with a chunk whose step k covers [t_n + k dt, t_n + (k + 1) dt);
  3. `step(t_n)`, called a fixed actuation delay after t_n: the action covering t_n from the chunk in
     control (the newest, or a started one for its first `commit_steps` steps: ChunkTimeline, with the
     chunk's own commit_steps unless the driver overrides them) goes through
     the SafetyFilter and moves the arm for one period. A chunk that arrives after the delay is not used
     for t_n (its step 0 is in the past); older chunks still cover t_n with their later steps.
Chunks are admitted by the same rule as on the UR driver (`ChunkTimeline.add`, `ChunkRules`: frame, stamps in
the past and future, step limits, NaN). Once the newest chunk comes from an image older than
`max_command_age` (the camera or the policy stopped) the arm halts in that period; a period with no chunk
covering it while the newest is still fresh continues one period before halting (SafetyLimits.stale_cycles).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pixelvla_ros.action_space import GRIPPER, ROTATION, TRANSLATION
from pixelvla_ros.camera import CameraModel
from pixelvla_ros.chunk_timeline import ChunkRules, ChunkTimeline, TimedChunk
from pixelvla_ros.safety import SafetyFilter, SafetyLimits
from pixelvla_ros.sim.env import TabletopEnv
from pixelvla_ros.sim.tasks import TaskConfig

__all__ = ["SimArmState", "SimDriver", "SimStepReport", "calibrated_config"]


def calibrated_config(config: TaskConfig) -> TaskConfig:
    """The task distribution with the camera at its nominal pose: a fixed, calibrated camera whose pose
    the prompt node knows from config/sim.yaml (training randomizes it around that pose)."""
    return replace(config, camera_pos_jitter=0.0, camera_lookat_jitter=0.0, camera_fovy_jitter=0.0)


@dataclass(frozen=True)
class SimArmState:
    rgb: np.ndarray  # (size, size, 3) uint8
    camera: CameraModel
    tcp_pose: np.ndarray  # (4, 4) base frame
    joint_positions: np.ndarray  # (6,) rad
    gripper: float  # measured closure, 0 = open, 1 = closed


@dataclass(frozen=True)
class SimStepReport:
    halted: bool
    reasons: tuple[str, ...]  # why the command was limited or the arm halted; the simulator's refusal
    action: np.ndarray  # (7,) what the simulated arm was given
    success: bool
    done: bool


class SimDriver:
    def __init__(
        self,
        config: TaskConfig,
        seed: int,
        split: str | None,
        limits: SafetyLimits,
        image_size: int,
        rules: ChunkRules,
        commit_steps: int | None = None,
    ) -> None:
        """commit_steps: None executes each chunk by its own commit_steps (the checkpoint's); a number
        overrides them."""
        self.env = TabletopEnv(replace(calibrated_config(config), image_sizes=(image_size,)), seed, split)
        self.image_size = int(image_size)
        self.period = self.env.config.action_space.dt
        self.limits = limits
        self.timeline = ChunkTimeline(limits, commit_steps, rules)
        self.filter = SafetyFilter(limits, self.period)
        self.success = False
        self.steps = 0

    def reset(self, seed: int | None = None) -> None:
        self.env.reset(seed)
        self.timeline.clear()
        self.filter.reset(self.env.tcp_pose()[:3, 3], self.env.gripper_state())
        self.success, self.steps = False, 0

    @property
    def task(self):  # noqa: ANN201 - pixelvla_ros.sim.tasks.TaskSpec
        return self.env.task

    def add_chunk(self, chunk: TimedChunk, now: float) -> None:
        """Admit a chunk arriving at simulator time `now`; raises ChunkRefused / UnsafeChunkError
        (ValueErrors: the node logs and counts the refusal)."""
        self.timeline.add(chunk, now)

    def capture(self) -> SimArmState:
        env = self.env
        return SimArmState(
            env.render("scene", self.image_size),
            env.camera_info("scene", self.image_size),
            env.tcp_pose(),
            env.joint_positions(),
            env.gripper_state(),
        )

    def step(self, t: float) -> SimStepReport:
        """Execute the control period that started at t (see the module docstring)."""
        stale = self.timeline.stale_reason(t)
        action = None if stale else self.timeline.action_at(t)
        if stale:
            cmd = self.filter.halt(stale)
        elif action is None:
            cmd = self.filter.step(None)
        else:
            cmd = self.filter.step(action[TRANSLATION], action[ROTATION], float(action[GRIPPER]))
        executed = np.zeros(7)
        if not cmd.halted:
            executed[TRANSLATION] = cmd.linear_velocity * self.period
            executed[ROTATION] = cmd.rotation_delta
        executed[GRIPPER] = cmd.gripper
        result = self.env.step(executed)
        self.steps += 1
        self.success = self.success or result.success
        reasons = cmd.reasons + ((f"simulator: {result.reason}",) if result.reason else ())
        return SimStepReport(cmd.halted, reasons, executed, result.success, result.done)
