"""End-effector delta control of the simulated arm, in the project's action convention.

Like a UR under servoL: each action moves a commanded TCP pose, damped-least-squares IK (seeded at the
current joint command) turns it into a joint target, and the joint setpoint ramps linearly to that target
over one control period (velocity feed-forward included), fed to position-servoed joint actuators.

Safety: a non-finite or wrongly shaped action, an unreachable target or a target beyond the joint limits
rejects the step: the joint command is held (the arm does not move) and the reason is reported. Per-step
translation/rotation deltas are clamped (reported, not rejected), joint speed is capped at the UR5e limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixelvla_ros import ur5e
from pixelvla_ros.action_space import ACTION_DIM, GRIPPER, ROTATION, TRANSLATION
from pixelvla_ros.sim.scene import ARM_KP, ARM_KV, FINGER_TRAVEL, T_FLANGE_TCP

MAX_TRANSLATION_STEP = 0.05  # m per control step (0.5 m/s at 10 Hz)
MAX_ROTATION_STEP = 0.35  # rad per control step
RESYNC_DISTANCE = 0.03  # m: if the arm is blocked this far from its command, restart from the measured pose
LIMIT_MARGIN = 1e-3  # rad


@dataclass(frozen=True)
class Plan:
    """The outcome of one action: joint targets for the period, or a rejection with its reason."""

    accepted: bool
    q_start: np.ndarray
    q_goal: np.ndarray
    finger_goal: float  # finger joint position target (m); FINGER_TRAVEL = open
    reason: str = ""
    notes: tuple[str, ...] = ()


def gripper_command_to_finger(g: float) -> float:
    return float(FINGER_TRAVEL * (1.0 - np.clip(g, 0.0, 1.0)))


def finger_to_gripper_state(finger_q: float) -> float:
    return float(np.clip(1.0 - finger_q / FINGER_TRAVEL, 0.0, 1.0))


class CartesianServo:
    def __init__(self, control_dt: float) -> None:
        self.control_dt = float(control_dt)
        self.q_cmd = ur5e.Q_HOME.copy()
        self.gripper_cmd = 0.0
        self._kv_over_kp = np.array(ARM_KV) / np.array(ARM_KP)

    def reset(self, q: np.ndarray, gripper: float = 0.0) -> None:
        self.q_cmd = np.array(q, dtype=float)
        self.gripper_cmd = float(gripper)

    def commanded_pose(self) -> np.ndarray:
        return ur5e.fk(self.q_cmd, T_FLANGE_TCP)

    def plan(self, action: object, q_measured: np.ndarray) -> Plan:
        hold = self.q_cmd.copy()
        finger_hold = gripper_command_to_finger(self.gripper_cmd)
        try:
            a = np.asarray(action, dtype=float)
        except (TypeError, ValueError):
            return Plan(False, hold, hold, finger_hold, "action is not numeric")
        if a.shape != (ACTION_DIM,):
            return Plan(False, hold, hold, finger_hold, f"action shape {a.shape}, expected ({ACTION_DIM},)")
        if not np.all(np.isfinite(a)):
            return Plan(False, hold, hold, finger_hold, "action contains NaN or inf")
        notes: list[str] = []
        dp, drv, g = a[TRANSLATION].copy(), a[ROTATION].copy(), float(a[GRIPPER])
        n = float(np.linalg.norm(dp))
        if n > MAX_TRANSLATION_STEP:
            dp *= MAX_TRANSLATION_STEP / n
            notes.append(f"translation {n:.3f} m clamped to {MAX_TRANSLATION_STEP} m")
        n = float(np.linalg.norm(drv))
        if n > MAX_ROTATION_STEP:
            drv *= MAX_ROTATION_STEP / n
            notes.append(f"rotation {n:.3f} rad clamped to {MAX_ROTATION_STEP} rad")
        if not 0.0 <= g <= 1.0:
            notes.append(f"gripper {g:.3f} clipped to [0, 1]")
            g = float(np.clip(g, 0.0, 1.0))
        # Blocked arm (e.g. pressing on the table): restart from where it is, so no wind-up.
        base_q = self.q_cmd
        T_cmd = ur5e.fk(base_q, T_FLANGE_TCP)
        T_meas = ur5e.fk(q_measured, T_FLANGE_TCP)
        if np.linalg.norm(T_cmd[:3, 3] - T_meas[:3, 3]) > RESYNC_DISTANCE:
            base_q = np.array(q_measured, dtype=float)
            T_cmd = T_meas
            notes.append("command re-synchronised to the measured pose")
        T_target = ur5e.apply_delta(T_cmd, np.concatenate([dp, drv]))
        res = ur5e.ik(
            T_target, base_q, T_FLANGE_TCP, max_iter=30, pos_tol=5e-4, rot_tol=5e-3, clamp_to_limits=False
        )
        if not res.success:
            return Plan(False, hold, hold, finger_hold, f"target unreachable: {res.reason}")
        if not ur5e.within_limits(res.q, LIMIT_MARGIN):
            bad = [
                ur5e.JOINT_NAMES[i]
                for i in np.flatnonzero(
                    (res.q < ur5e.Q_MIN + LIMIT_MARGIN) | (res.q > ur5e.Q_MAX - LIMIT_MARGIN)
                )
            ]
            return Plan(False, hold, hold, finger_hold, f"target beyond joint limits: {bad}")
        dq = res.q - base_q
        cap = ur5e.QD_MAX * self.control_dt
        ratio = float(np.max(np.abs(dq) / cap))
        if ratio > 1.0:
            dq /= ratio
            notes.append(f"joint speed capped (x{1 / ratio:.2f})")
        q_goal = base_q + dq
        self.q_cmd = q_goal
        self.gripper_cmd = g
        return Plan(True, base_q.copy(), q_goal.copy(), gripper_command_to_finger(g), "", tuple(notes))

    def setpoint(self, plan: Plan, alpha: float) -> np.ndarray:
        """Actuator command at fraction ``alpha`` of the period: ramp + velocity feed-forward."""
        qd = (plan.q_goal - plan.q_start) / self.control_dt
        return plan.q_start + alpha * (plan.q_goal - plan.q_start) + self._kv_over_kp * qd
