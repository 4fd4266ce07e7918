"""UR5e controller state: power/brakes, safety (protective stop, e-stop), program runtime, IO registers and
motion generators (servo tracking, speed modes with acceleration limits, trapezoidal moveL/moveJ, stops).

Kinematics come from :mod:`pixelvla_ros.ur5e` (DH FK, Jacobian, DLS IK, joint limits). Everything here is
driven by :meth:`RobotState.step` once per controller tick (2 ms on e-Series, 8 ms on CB3) under the
emulator's lock; nothing in this module does I/O.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from pixelvla_ros import ur5e
from pixelvla_ros.ur_modes import (
    ROBOT_MODE_POWER_OFF,
    ROBOT_MODE_RUNNING,
    RUNTIME_PLAYING,
    RUNTIME_STOPPED,
    SAFETY_NORMAL,
    SAFETY_PROTECTIVE_STOP,
    SAFETY_ROBOT_EMERGENCY_STOP,
    SAFETY_SYSTEM_EMERGENCY_STOP,
)

log = logging.getLogger("pixelvla_ros.ur_emulator")


def pose_to_matrix(pose) -> np.ndarray:
    pose = np.asarray(pose, dtype=float)
    return ur5e.make_pose(ur5e.rotvec_to_matrix(pose[3:6]), pose[:3])


def matrix_to_pose(T: np.ndarray) -> np.ndarray:
    return np.concatenate([T[:3, 3], ur5e.matrix_to_rotvec(T[:3, :3])])


@dataclass
class Trapezoid:
    """Time-optimal trapezoidal (or triangular) profile over distance ``dist`` with speed/accel caps."""

    dist: float
    vmax: float
    amax: float

    def __post_init__(self) -> None:
        self.vmax = max(abs(self.vmax), 1e-6)
        self.amax = max(abs(self.amax), 1e-6)
        d = abs(self.dist)
        t_acc = self.vmax / self.amax
        if self.amax * t_acc**2 >= d:  # triangular
            t_acc = math.sqrt(d / self.amax)
            self.vpeak = self.amax * t_acc
            self.t_flat = 0.0
        else:
            self.vpeak = self.vmax
            self.t_flat = (d - self.amax * t_acc**2) / self.vmax
        self.t_acc = t_acc
        self.duration = 2 * t_acc + self.t_flat

    def s(self, t: float) -> float:
        """Distance travelled at time t (0..dist)."""
        d = abs(self.dist)
        if t <= 0:
            return 0.0
        if t >= self.duration:
            return d
        if t < self.t_acc:
            return 0.5 * self.amax * t * t
        s_acc = 0.5 * self.amax * self.t_acc**2
        if t < self.t_acc + self.t_flat:
            return s_acc + self.vpeak * (t - self.t_acc)
        td = self.duration - t
        return d - 0.5 * self.amax * td * td


class Motion:
    """Base class of a motion generator: ``update(state, dt) -> qd`` (joint velocity for this tick)."""

    name = "idle"
    done = False

    def update(self, st: RobotState, dt: float) -> np.ndarray:  # pragma: no cover - interface
        return np.zeros(6)


class Idle(Motion):
    done = True

    def update(self, st, dt):
        return np.zeros(6)


def servo_time_constant(lookahead: float) -> float:
    """Time constant of the emulated servo tracking (s): the lookahead time within servoj's range."""
    return float(np.clip(lookahead, 0.03, 0.2))


class ServoJ(Motion):
    """servoj: first-order tracking of a joint target (time constant ~ lookahead), velocity-clipped."""

    name = "servo"

    def __init__(self, q_target, lookahead: float = 0.1):
        self.q_target = np.clip(np.asarray(q_target, dtype=float), ur5e.Q_MIN, ur5e.Q_MAX)
        self.tau = servo_time_constant(lookahead)

    def set_target(self, q_target, lookahead: float) -> None:
        self.q_target = np.clip(np.asarray(q_target, dtype=float), ur5e.Q_MIN, ur5e.Q_MAX)
        self.tau = servo_time_constant(lookahead)

    def update(self, st, dt):
        qd = (self.q_target - st.q) / max(self.tau, dt)
        # Do not overshoot within one tick.
        lim = np.abs(self.q_target - st.q) / max(dt, 1e-6)
        return np.clip(qd, -lim, lim)


class SpeedJ(Motion):
    name = "speedj"

    def __init__(self, qd_target, acc: float, qd_now):
        self.qd_target = np.asarray(qd_target, dtype=float)
        self.acc = max(float(acc), 1e-3)
        self.qd_cmd = np.array(qd_now, dtype=float)

    def update(self, st, dt):
        delta = self.qd_target * st.speed_fraction - self.qd_cmd
        m = float(np.max(np.abs(delta)))
        step = self.acc * dt
        self.qd_cmd = self.qd_cmd + (delta if m <= step else delta * (step / m))
        return self.qd_cmd


class SpeedL(Motion):
    """speedl: base-frame TCP twist with an acceleration limit, mapped to joints with a damped inverse."""

    name = "speedl"

    def __init__(self, xd_target, acc: float, xd_now):
        self.xd_target = np.asarray(xd_target, dtype=float)
        self.acc = max(float(acc), 1e-3)
        self.xd_cmd = np.array(xd_now, dtype=float)

    def update(self, st, dt):
        delta = self.xd_target * st.speed_fraction - self.xd_cmd
        m = float(np.linalg.norm(delta[:3]) + np.linalg.norm(delta[3:]))
        step = self.acc * dt
        self.xd_cmd = self.xd_cmd + (delta if m <= step else delta * (step / m))
        return st.twist_to_qd(self.xd_cmd)


class MoveJ(Motion):
    """movej: joint-space trapezoid, all joints synchronised on the one that travels farthest."""

    name = "movej"

    def __init__(self, q0, q1, v: float, a: float):
        self.q0 = np.asarray(q0, dtype=float)
        self.q1 = np.clip(np.asarray(q1, dtype=float), ur5e.Q_MIN, ur5e.Q_MAX)
        d = self.q1 - self.q0
        self.dist = float(np.max(np.abs(d)))
        self.dir = d / self.dist if self.dist > 0 else np.zeros(6)
        self.prof = Trapezoid(self.dist, min(v, float(ur5e.QD_MAX[0])), a)
        self.t = 0.0

    def progress(self) -> float:
        return 1.0 if self.prof.duration <= 0 else min(1.0, self.t / self.prof.duration)

    def update(self, st, dt):
        self.t += dt * st.speed_fraction
        q_next = self.q0 + self.dir * self.prof.s(self.t)
        if self.t >= self.prof.duration:
            q_next = self.q1
            self.done = True
        return (q_next - st.q) / dt


class MoveL(Motion):
    """movel: straight-line TCP trapezoid (rotation slerped along the same path parameter), IK per tick."""

    name = "movel"

    def __init__(self, st: RobotState, pose1, v: float, a: float):
        self.T0 = st.tcp_matrix()
        self.T1 = pose_to_matrix(pose1)
        self.dp = self.T1[:3, 3] - self.T0[:3, 3]
        self.drv = ur5e.matrix_to_rotvec(self.T1[:3, :3] @ self.T0[:3, :3].T)
        lin, ang = float(np.linalg.norm(self.dp)), float(np.linalg.norm(self.drv))
        # Path parameter: metres if the move translates, else radians of rotation (v, a then in rad/s).
        self.length = lin if lin > 1e-6 else ang
        self.prof = Trapezoid(self.length, v, a)
        self.t = 0.0
        self.failed = ""

    def progress(self) -> float:
        return 1.0 if self.prof.duration <= 0 else min(1.0, self.t / self.prof.duration)

    def update(self, st, dt):
        self.t += dt * st.speed_fraction
        u = 1.0 if self.length <= 1e-9 else self.prof.s(self.t) / self.length
        if self.t >= self.prof.duration:
            u = 1.0
            self.done = True
        T = ur5e.make_pose(
            ur5e.rotvec_to_matrix(self.drv * u) @ self.T0[:3, :3], self.T0[:3, 3] + self.dp * u
        )
        res = ur5e.ik(T, st.q, st.T_flange_tcp, max_iter=30)
        if not res.success:
            self.failed = res.reason
            self.done = True
            return np.zeros(6)
        return (res.q - st.q) / dt


class Stop(Motion):
    """stopj / stopl: decelerate the current joint velocity to zero (l: TCP deceleration in m/s^2)."""

    name = "stop"

    def __init__(self, qd_now, decel: float, linear: bool):
        self.qd = np.array(qd_now, dtype=float)
        self.decel = max(float(decel), 1e-3)
        self.linear = linear
        self.done = bool(np.max(np.abs(self.qd)) < 1e-6)

    def update(self, st, dt):
        if self.done:
            return np.zeros(6)
        if self.linear:
            v = float(np.linalg.norm((st.jacobian() @ self.qd)[:3]))
            if v > 1e-4:
                self.qd *= max(0.0, 1.0 - self.decel * dt / v)
            else:  # rotation-only motion: decelerate in joint space with a matching rate
                m = float(np.max(np.abs(self.qd)))
                self.qd *= max(0.0, 1.0 - self.decel * dt / m)
        else:
            m = float(np.max(np.abs(self.qd)))
            self.qd *= max(0.0, 1.0 - self.decel * dt / m)
        if float(np.max(np.abs(self.qd))) < 1e-4:
            self.qd[:] = 0.0
            self.done = True
        return self.qd


class RobotState:
    """Everything the controller reports over RTDE/dashboard, and the motion integrator."""

    def __init__(self, version: tuple[int, int, int, int], q0=None, powered: bool = True):
        self.version = version
        self.period = 0.002 if version[0] > 3 else 0.008
        self.q = np.array(ur5e.Q_HOME if q0 is None else q0, dtype=float)
        self.qd = np.zeros(6)
        self.qdd = np.zeros(6)
        self.T_flange_tcp = np.eye(4)
        self.tcp_offset = np.zeros(6)
        self.payload = 0.0
        self.payload_cog = np.zeros(3)
        self.motion: Motion = Idle()
        self.speed_fraction = 1.0
        self.robot_mode = ROBOT_MODE_RUNNING if powered else ROBOT_MODE_POWER_OFF
        self.safety_mode = SAFETY_NORMAL
        self.protective_stop_time = 0.0
        self.runtime_state = RUNTIME_STOPPED
        self.program_name = "<unnamed>"
        self.loaded_program = ""
        self.control_time = 0.0  # controller clock (s since start), advances by `period` per tick
        self.ticks = 0
        self.digital_out = 0
        self.in_int = [0] * 48
        self.in_dbl = [0.0] * 48
        self.out_int = [0] * 48
        self.out_dbl = [0.0] * 48
        self.in_bits = 0  # bits 0..127
        self.out_bits = 0
        self.inputs: dict[str, object] = {}  # other input fields by name (IO, external_force_torque, ...)
        self.input_update_time: dict[str, float] = {}  # wall time of the last update of each input field
        self._cache_q = None
        self._cache_T = np.eye(4)
        self._cache_J = None

    # -- kinematics helpers ------------------------------------------------------------------------------
    def tcp_matrix(self, q=None) -> np.ndarray:
        if q is not None:
            return ur5e.fk(q, self.T_flange_tcp)
        if self._cache_q is None or not np.array_equal(self._cache_q, self.q):
            self._cache_q = self.q.copy()
            self._cache_T = ur5e.fk(self.q, self.T_flange_tcp)
            self._cache_J = None
        return self._cache_T

    def jacobian(self) -> np.ndarray:
        self.tcp_matrix()
        if self._cache_J is None:
            self._cache_J = ur5e.jacobian(self.q, self.T_flange_tcp)
        return self._cache_J

    def tcp_pose(self, q=None) -> np.ndarray:
        return matrix_to_pose(self.tcp_matrix(q))

    def tcp_speed(self) -> np.ndarray:
        return self.jacobian() @ self.qd

    def twist_to_qd(self, xd) -> np.ndarray:
        J = self.jacobian()
        return J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), np.asarray(xd, dtype=float))

    def set_tcp_offset(self, pose6) -> None:
        self.tcp_offset = np.asarray(pose6, dtype=float)
        self.T_flange_tcp = pose_to_matrix(self.tcp_offset)
        self._cache_q = None

    def set_joint_positions(self, q) -> None:
        q = np.asarray(q, dtype=float)
        if q.shape != (6,) or not ur5e.within_limits(q):
            raise ValueError(f"joint positions must be 6 values within the UR5e limits, got {q.tolist()}")
        self.q = q.copy()
        self.qd[:] = 0.0
        self.motion = Idle()
        self._cache_q = None

    def set_tcp_pose(self, pose6) -> None:
        res = ur5e.ik(pose_to_matrix(pose6), self.q, self.T_flange_tcp, max_iter=200)
        if not res.success:
            raise ValueError(f"cannot reach TCP pose {list(pose6)}: {res.reason}")
        self.set_joint_positions(res.q)

    # -- status ------------------------------------------------------------------------------------------
    @property
    def powered(self) -> bool:
        return self.robot_mode not in (ROBOT_MODE_POWER_OFF, 0, -1, 1, 2)

    @property
    def protective_stopped(self) -> bool:
        return self.safety_mode == SAFETY_PROTECTIVE_STOP

    @property
    def emergency_stopped(self) -> bool:
        return self.safety_mode in (SAFETY_SYSTEM_EMERGENCY_STOP, SAFETY_ROBOT_EMERGENCY_STOP)

    def can_move(self) -> bool:
        return self.robot_mode == ROBOT_MODE_RUNNING and self.safety_mode == SAFETY_NORMAL

    def safety_status_bits(self) -> int:
        bits = 0
        if self.safety_mode == SAFETY_NORMAL:
            bits |= 1
        if self.safety_mode == SAFETY_PROTECTIVE_STOP:
            bits |= 1 << 2
        if self.safety_mode == SAFETY_SYSTEM_EMERGENCY_STOP:
            bits |= (1 << 5) | (1 << 7)
        if self.safety_mode == SAFETY_ROBOT_EMERGENCY_STOP:
            bits |= (1 << 6) | (1 << 7)
        if self.safety_mode in (8, 9):
            bits |= 1 << (self.safety_mode)
        return bits

    def robot_status_bits(self) -> int:
        bits = 0
        if self.powered:
            bits |= 1
        if self.runtime_state == RUNTIME_PLAYING:
            bits |= 2
        return bits

    # -- motion ------------------------------------------------------------------------------------------
    def halt(self) -> None:
        """Immediate stop (protective / emergency stop): zero velocity, motion generator cleared."""
        self.qd[:] = 0.0
        self.motion = Idle()

    def soft_stop(self, decel: float = 4.0) -> None:
        """Program stop: decelerate whatever is moving (stop category 2 style)."""
        self.motion = Stop(self.qd, decel, linear=False)

    def step(self, dt: float) -> None:
        """Advance the motion by dt seconds of wall time and the controller clock by one period."""
        self.ticks += 1
        self.control_time += self.period
        if not self.can_move():
            if np.any(self.qd):
                self.halt()
            return
        qd = np.asarray(self.motion.update(self, dt), dtype=float)
        if not np.all(np.isfinite(qd)):
            log.error("motion generator %s produced a non-finite velocity; halting", self.motion.name)
            self.halt()
            return
        # Joint speed limit (3.14 rad/s scaled by the speed slider), direction preserved.
        lim = ur5e.QD_MAX * max(self.speed_fraction, 1e-3)
        ratio = float(np.max(np.abs(qd) / lim))
        if ratio > 1.0:
            qd = qd / ratio
        q_new = self.q + qd * dt
        clipped = (q_new < ur5e.Q_MIN) | (q_new > ur5e.Q_MAX)
        if np.any(clipped):
            q_new = np.clip(q_new, ur5e.Q_MIN, ur5e.Q_MAX)
            qd = np.where(clipped, 0.0, qd)
        self.qdd = (qd - self.qd) / dt
        self.qd = qd
        self.q = q_new
