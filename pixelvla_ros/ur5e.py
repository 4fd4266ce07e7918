"""UR5e kinematics in plain numpy: DH parameters, limits, FK, geometric Jacobian, damped-least-squares IK.

Self-contained (numpy only) so the simulator, the UR controller emulator and the safety filter share it.

Frames
------
``base``: DH frame 0 of the public UR5e parameters, which is the frame the UR controller reports TCP poses
in (ur_rtde ``getActualTCPPose``): z up along the base joint axis. ``flange``: DH frame 6 (tool0), z
pointing out of the tool flange. ``tcp``: ``flange`` composed with a fixed tool offset ``T_flange_tcp``
(identity by default; the simulator's gripper puts the TCP between the finger pads).

Standard (distal) DH: ``T_{i-1,i}(q_i) = Rz(q_i + offset_i) Tz(d_i) Tx(a_i) Rx(alpha_i)``; joint ``i`` turns
about ``z_{i-1}``.

Poses are 4x4 homogeneous matrices (float64). Rotation deltas are rotation vectors (axis * angle, rad).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_JOINTS = 6
JOINT_NAMES = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow",
    "wrist_1",
    "wrist_2",
    "wrist_3",
)

# Public UR5e DH parameters (Universal Robots, "DH parameters for calculations of kinematics and dynamics").
DH_D = np.array([0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996])
DH_A = np.array([0.0, -0.425, -0.3922, 0.0, 0.0, 0.0])
DH_ALPHA = np.array([math.pi / 2, 0.0, 0.0, math.pi / 2, -math.pi / 2, 0.0])
DH_OFFSET = np.zeros(6)

# Joint position limits (rad): +-2*pi, the elbow +-pi (as on a UR5e, where the elbow is mechanically limited).
Q_MIN = np.array([-2 * math.pi, -2 * math.pi, -math.pi, -2 * math.pi, -2 * math.pi, -2 * math.pi])
Q_MAX = -Q_MIN
# Joint speed limits (rad/s): 180 deg/s for every UR5e joint.
QD_MAX = np.full(6, math.pi)
# Joint acceleration used by the controller emulator (rad/s^2); a conservative UR-like value.
QDD_MAX = np.full(6, 8.0)

# A "ready" configuration: TCP above the workspace in front of the robot (+x), flange pointing down.
# Flange at (0.45, 0, 0.42) m, its z axis pointing down, its x axis along -y of the base.
Q_HOME = np.array([2.840858, -1.704905, 1.869037, -1.734928, -math.pi / 2, -0.300735])


# ----------------------------------------------------------------------------------------------------------
# Rotation helpers
# ----------------------------------------------------------------------------------------------------------
def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: rotation vector (axis * angle) -> 3x3 rotation matrix."""
    rv = np.asarray(rv, dtype=float)
    theta = float(np.linalg.norm(rv))
    if theta < 1e-12:
        return np.eye(3) + skew(rv)
    k = skew(rv / theta)
    return np.eye(3) + math.sin(theta) * k + (1.0 - math.cos(theta)) * (k @ k)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> rotation vector with angle in [0, pi]; robust near 0 and pi."""
    R = np.asarray(R, dtype=float)
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])  # 2 sin(theta) k
    s2 = float(np.linalg.norm(w))
    c = (np.trace(R) - 1.0) / 2.0
    theta = math.atan2(s2 / 2.0, c)  # accurate over [0, pi]
    if theta < 1e-6:
        return 0.5 * w
    if theta < math.pi - 1e-3:
        return theta / s2 * w
    # Near pi: (R + R^T)/2 - cos(theta) I = (1 - cos(theta)) k k^T; sign from the antisymmetric part.
    S = (R + R.T) / 2.0 - c * np.eye(3)
    i = int(np.argmax(np.diag(S)))
    axis = S[i] / math.sqrt(max(S[i, i], 1e-300))
    axis /= np.linalg.norm(axis)
    if np.dot(axis, w) < 0:
        axis = -axis
    return theta * axis


def matrix_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """3x3 rotation matrix -> unit quaternion (x, y, z, w), the order of geometry_msgs/Quaternion."""
    rv = matrix_to_rotvec(R)
    theta = float(np.linalg.norm(rv))
    axis = rv / theta if theta > 1e-12 else np.zeros(3)
    x, y, z = axis * math.sin(theta / 2.0)
    return float(x), float(y), float(z), math.cos(theta / 2.0)


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation matrix; raises ValueError unless it is unit length."""
    q = np.array([x, y, z, w], dtype=float)
    n = float(np.linalg.norm(q))
    if not np.all(np.isfinite(q)) or abs(n - 1.0) > 1e-3:
        raise ValueError(f"quaternion (x, y, z, w) = {q.tolist()} is not a finite unit quaternion")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def make_pose(R: np.ndarray, p: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = p
    return T


def pose_error(T_target: np.ndarray, T: np.ndarray) -> np.ndarray:
    """6-vector [dp, drotvec] in the base frame that moves T onto T_target (T_target = exp(drv) R, p + dp)."""
    dp = T_target[:3, 3] - T[:3, 3]
    drv = matrix_to_rotvec(T_target[:3, :3] @ T[:3, :3].T)
    return np.concatenate([dp, drv])


def apply_delta(T: np.ndarray, delta6: np.ndarray) -> np.ndarray:
    """The project's action convention: base-frame translation delta and base-frame rotation vector."""
    out = np.eye(4)
    out[:3, :3] = rotvec_to_matrix(delta6[3:6]) @ T[:3, :3]
    out[:3, 3] = T[:3, 3] + delta6[:3]
    return out


# ----------------------------------------------------------------------------------------------------------
# Kinematics
# ----------------------------------------------------------------------------------------------------------
def dh_transform(i: int, q_i: float) -> np.ndarray:
    """T_{i-1,i}: Rz(q + offset) Tz(d) Tx(a) Rx(alpha) for joint index i in 0..5."""
    th = q_i + DH_OFFSET[i]
    ct, st = math.cos(th), math.sin(th)
    ca, sa = math.cos(DH_ALPHA[i]), math.sin(DH_ALPHA[i])
    a, d = DH_A[i], DH_D[i]
    return np.array(
        [
            [ct, -st * ca, st * sa, a * ct],
            [st, ct * ca, -ct * sa, a * st],
            [0.0, sa, ca, d],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def fk_all(q: np.ndarray, T_flange_tcp: np.ndarray | None = None) -> list[np.ndarray]:
    """Frames 0..6 (base..flange) and, last, the TCP, each as a 4x4 pose in the base frame (8 poses)."""
    q = np.asarray(q, dtype=float)
    frames = [np.eye(4)]
    T = np.eye(4)
    for i in range(N_JOINTS):
        T = T @ dh_transform(i, q[i])
        frames.append(T)
    frames.append(T if T_flange_tcp is None else T @ T_flange_tcp)
    return frames


def fk(q: np.ndarray, T_flange_tcp: np.ndarray | None = None) -> np.ndarray:
    """Pose of the TCP (flange if no tool offset) in the base frame."""
    return fk_all(q, T_flange_tcp)[-1]


def jacobian(q: np.ndarray, T_flange_tcp: np.ndarray | None = None) -> np.ndarray:
    """Geometric Jacobian (6x6) of the TCP in the base frame: [v; w] = J @ qd."""
    frames = fk_all(q, T_flange_tcp)
    p_tcp = frames[-1][:3, 3]
    J = np.zeros((6, N_JOINTS))
    for i in range(N_JOINTS):
        z = frames[i][:3, 2]
        o = frames[i][:3, 3]
        J[:3, i] = np.cross(z, p_tcp - o)
        J[3:, i] = z
    return J


def within_limits(q: np.ndarray, margin: float = 0.0) -> bool:
    q = np.asarray(q, dtype=float)
    return bool(np.all(q >= Q_MIN + margin) and np.all(q <= Q_MAX - margin))


@dataclass(frozen=True)
class IKResult:
    q: np.ndarray
    success: bool
    pos_error: float  # metres
    rot_error: float  # radians
    iterations: int
    reason: str = ""


def ik(
    T_target: np.ndarray,
    q_seed: np.ndarray,
    T_flange_tcp: np.ndarray | None = None,
    *,
    max_iter: int = 100,
    pos_tol: float = 1e-4,
    rot_tol: float = 1e-3,
    damping: float = 0.05,
    max_step: float = 0.3,
    clamp_to_limits: bool = True,
) -> IKResult:
    """Damped-least-squares IK seeded at ``q_seed`` (stays on the seed's branch for small moves).

    dq = J^T (J J^T + lambda^2 I)^-1 e, with the joint step capped at ``max_step`` rad and, if
    ``clamp_to_limits``, the iterate kept inside the joint limits. ``success`` is False when the target is
    not reached within tolerance (unreachable, or blocked by a limit); ``reason`` says which.
    """
    q = np.array(q_seed, dtype=float)
    lam2 = damping**2
    e = pose_error(T_target, fk(q, T_flange_tcp))
    it = 0
    for it in range(1, max_iter + 1):
        if np.linalg.norm(e[:3]) < pos_tol and np.linalg.norm(e[3:]) < rot_tol:
            it -= 1
            break
        J = jacobian(q, T_flange_tcp)
        dq = J.T @ np.linalg.solve(J @ J.T + lam2 * np.eye(6), e)
        n = float(np.max(np.abs(dq)))
        if n > max_step:
            dq *= max_step / n
        q = q + dq
        if clamp_to_limits:
            q = np.clip(q, Q_MIN, Q_MAX)
        e = pose_error(T_target, fk(q, T_flange_tcp))
    pe, re = float(np.linalg.norm(e[:3])), float(np.linalg.norm(e[3:]))
    ok = pe < pos_tol and re < rot_tol
    reason = ""
    if not ok:
        at_limit = np.any(np.isclose(q, Q_MIN) | np.isclose(q, Q_MAX))
        reason = (
            f"joint limit reached (pos err {pe:.4f} m, rot err {re:.4f} rad)"
            if at_limit
            else f"target unreachable (pos err {pe:.4f} m, rot err {re:.4f} rad after {it} iterations)"
        )
    return IKResult(q=q, success=ok, pos_error=pe, rot_error=re, iterations=it, reason=reason)
