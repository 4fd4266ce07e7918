"""Scripted experts (privileged: they read object poses from the simulator) for every task family.

A phase machine produces actions in the project's convention: the delta that moves the measured TCP pose
toward the phase's goal pose, capped per step (0.04 m, 0.25 rad), plus the gripper command.

pick:  approach above the target (fingers aligned with a cube face) -> descend -> close -> lift.
place: pick phases, then carry above the container -> lower -> open -> retreat.
A grasp that lifts nothing (the fingers pushed the object, or noise injected while recording made them
close beside it) is retried: open while rising, then approach the object where it now lies.
"""

from __future__ import annotations

import math

import numpy as np

from pixelvla_ros import ur5e
from pixelvla_ros.sim.env import Observation, TabletopEnv

MAX_STEP = 0.04  # m per control step
MAX_ROT = 0.25  # rad per control step
R_DOWN = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # TCP z down (home orientation)
APPROACH_HEIGHT = 0.12
LIFT_HEIGHT = 0.16
CARRY_Z = 0.24
MIN_GRASP_Z = 0.026
REGRASP_CHECK_STEPS = 6  # lift steps after which an object that has not risen counts as missed
REGRASP_MIN_RISE = 0.015  # m
MAX_GRASPS = 3


def _yaw_of(R: np.ndarray) -> float:
    return math.atan2(R[1, 0], R[0, 0])


class ScriptedExpert:
    def __init__(self, env: TabletopEnv, target: str | None = None) -> None:
        """``target`` overrides the task's target object (tests use it to pick the wrong object)."""
        self.env = env
        self.target = target
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.phase_steps = 0
        self.grasps = 0
        self._grasp_yaw: float | None = None

    def target_z(self) -> float:
        """Height of the target's centre, m."""
        return float(self.env.object_pose(self.target or self.env.task.target)[2, 3])

    def grasp_z(self) -> float:
        """The TCP height the expert closes the gripper at, m."""
        return max(self.target_z(), MIN_GRASP_Z) + 0.002

    def _set(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0

    def _grasp_goal(self) -> tuple[np.ndarray, float]:
        env = self.env
        name = self.target or env.task.target
        obj = next(o for o in env.scene.objects if o.name == name)
        T = env.object_pose(name)
        p = T[:3, 3]
        if self._grasp_yaw is None:
            if obj.shape == "cube":
                psi = _yaw_of(T[:3, :3])
                k = round(psi / (math.pi / 2))
                self._grasp_yaw = psi - k * math.pi / 2  # in [-pi/4, pi/4]
            else:
                self._grasp_yaw = 0.0
        return np.array([p[0], p[1], self.grasp_z()]), self._grasp_yaw

    def act(self, obs: Observation) -> np.ndarray:
        env = self.env
        self.phase_steps += 1
        grip = 0.0
        g, yaw = (
            self._grasp_goal() if self.phase in ("approach", "descend") else (None, self._grasp_yaw or 0.0)
        )
        pos = obs.ee_pos
        if self.phase == "approach":
            goal = g + [0, 0, APPROACH_HEIGHT]
            if self._close(obs, goal, yaw, 0.01, 0.04) or self.phase_steps > 40:
                self._set("descend")
        elif self.phase == "descend":
            goal = g
            if self._close(obs, goal, yaw, 0.004, 0.04) or self.phase_steps > 25:
                self._set("close")
                self._hold = obs.ee_pos.copy()
                self.grasps += 1
                self._z_at_close = self.target_z()
        if self.phase == "close":
            goal, grip = self._hold, 1.0
            if self.phase_steps >= 4:
                self._set("lift")
                self._lift_from = self._hold.copy()
        elif self.phase == "lift":
            goal, grip = self._lift_from + [0, 0, LIFT_HEIGHT], 1.0
            missed = self.target_z() < self._z_at_close + REGRASP_MIN_RISE
            if self.phase_steps >= REGRASP_CHECK_STEPS and missed and self.grasps < MAX_GRASPS:
                self._set("reopen")
            elif env.task.family == "place_container" and (
                pos[2] > self._lift_from[2] + 0.1 or self.phase_steps > 20
            ):
                self._set("carry")
        if self.phase == "reopen":
            goal, grip = self._lift_from + [0, 0, APPROACH_HEIGHT], 0.0
            if self.phase_steps >= 4:
                self._set("approach")
                self._grasp_yaw = None  # the object may have turned
        if self.phase == "carry":
            c = env.object_pose(env.task.container)[:3, 3]
            goal, grip = np.array([c[0], c[1], CARRY_Z]), 1.0
            if self._close(obs, goal, yaw, 0.015, 0.1) or self.phase_steps > 40:
                self._set("lower")
        elif self.phase == "lower":
            c = env.object_pose(env.task.container)[:3, 3]
            obj_h = next(o for o in env.scene.objects if o.name == (self.target or env.task.target)).half
            goal, grip = np.array([c[0], c[1], 0.006 + 2 * obj_h + 0.03 + max(MIN_GRASP_Z - obj_h, 0)]), 1.0
            if self._close(obs, goal, yaw, 0.008, 0.1) or self.phase_steps > 25:
                self._set("release")
                self._hold = obs.ee_pos.copy()
        if self.phase == "release":
            goal, grip = self._hold, 0.0
            if self.phase_steps >= 4:
                self._set("retreat")
        elif self.phase == "retreat":
            goal, grip = self._hold + [0, 0, 0.1], 0.0
        return self._toward(obs, goal, yaw, grip)

    def _close(self, obs: Observation, goal: np.ndarray, yaw: float, tol: float, rtol: float) -> bool:
        R_goal = ur5e.rot_z(yaw) @ R_DOWN
        rerr = np.linalg.norm(ur5e.matrix_to_rotvec(R_goal @ obs.ee_rotmat.T))
        return bool(np.linalg.norm(goal - obs.ee_pos) < tol and rerr < rtol)

    def _toward(self, obs: Observation, goal: np.ndarray, yaw: float, grip: float) -> np.ndarray:
        dp = np.asarray(goal, float) - obs.ee_pos
        n = np.linalg.norm(dp)
        if n > MAX_STEP:
            dp *= MAX_STEP / n
        R_goal = ur5e.rot_z(yaw) @ R_DOWN
        drv = ur5e.matrix_to_rotvec(R_goal @ obs.ee_rotmat.T)
        n = np.linalg.norm(drv)
        if n > MAX_ROT:
            drv *= MAX_ROT / n
        return np.concatenate([dp, drv, [grip]]).astype(np.float64)


def run_episode(
    env: TabletopEnv, seed: int | None = None, max_steps: int | None = None
) -> tuple[bool, int, str]:
    """Run the expert for one episode: (success, steps, why)."""
    obs = env.reset(seed)
    expert = ScriptedExpert(env)
    limit = max_steps or env.config.max_steps
    res = None
    for _ in range(limit):
        res = env.step(expert.act(obs))
        obs = res.observation
        if res.done:
            break
    assert res is not None
    return res.success, env.steps, res.info["why"]
