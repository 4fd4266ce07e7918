"""Action-convention converters: another dataset's actions -> the project's convention.

The project convention (pixelvla_ros.action_space): 7 numbers per step in the robot base frame,
[dx, dy, dz] m, [rx, ry, rz] rotation vector (rad), gripper command in [0, 1] with 0 = open, 1 = closed.

Every converter is named after the convention it READS and is registered in :data:`CONVERTERS`; readers
record the name used in ``Episode.action_convention``. Converters take an (T, D) array (plus, for
absolute poses, the gripper) and return (T, 7) float32.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PIXELVLA = "pixelvla_delta_rotvec_base_g0open"
DELTA_EULER_XYZ_G1OPEN = "delta_euler_xyz_base_g1open"  # Bridge v2 (WidowX): gripper 1 = open
DELTA_EULER_XYZ_G1CLOSED = "delta_euler_xyz_base_g1closed"
FRACTAL_RT1 = "fractal_rt1_delta_rpy_gpm1close"  # RT-1: gripper_closedness in [-1, 1], +1 = close
ABS_POS_ROTVEC_G0OPEN = "absolute_ee_pos_rotvec_base_g0open"
ABS_POS_QUAT_XYZW_G0OPEN = "absolute_ee_pos_quat_xyzw_base_g0open"


def rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors -> (..., 3, 3) matrices (Rodrigues)."""
    rv = np.asarray(rv, dtype=np.float64)
    th = np.linalg.norm(rv, axis=-1, keepdims=True)
    k = np.where(th > 1e-12, rv / np.maximum(th, 1e-12), 0.0)
    K = np.zeros(rv.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    s, c = np.sin(th)[..., None], np.cos(th)[..., None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors (angle in [0, pi])."""
    R = np.asarray(R, dtype=np.float64)
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    th = np.arccos(cos)
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    s = np.sin(th)
    out = np.where((s > 1e-6)[..., None], v * (th / np.maximum(2 * s, 1e-12))[..., None], 0.5 * v)
    flat_R, flat_out, flat_th = R.reshape(-1, 3, 3), out.reshape(-1, 3), th.reshape(-1)
    for i in np.flatnonzero(flat_th > np.pi - 1e-3):  # axis from the symmetric part: R = 2 k k^T - I
        j = int(np.argmax(np.diag(flat_R[i])))
        k = flat_R[i][:, j] + flat_R[i][j, :] + (1 - np.trace(flat_R[i])) * np.eye(3)[j]
        k = k / np.linalg.norm(k)
        if np.dot(k, v.reshape(-1, 3)[i]) < 0:
            k = -k
        flat_out[i] = k * flat_th[i]
    return flat_out.reshape(out.shape)


def euler_xyz_to_matrix(e: np.ndarray) -> np.ndarray:
    """(..., 3) extrinsic roll-pitch-yaw about base x, y, z (R = Rz @ Ry @ Rx) -> (..., 3, 3)."""
    e = np.asarray(e, dtype=np.float64)
    r, p, y = e[..., 0], e[..., 1], e[..., 2]
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    R = np.empty(e.shape[:-1] + (3, 3))
    R[..., 0, 0], R[..., 0, 1], R[..., 0, 2] = cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr
    R[..., 1, 0], R[..., 1, 1], R[..., 1, 2] = sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr
    R[..., 2, 0], R[..., 2, 1], R[..., 2, 2] = -sp, cp * sr, cp * cr
    return R


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    R = np.empty(q.shape[:-1] + (3, 3))
    R[..., 0, 0], R[..., 0, 1], R[..., 0, 2] = (
        1 - 2 * (y * y + z * z),
        2 * (x * y - z * w),
        2 * (x * z + y * w),
    )
    R[..., 1, 0], R[..., 1, 1], R[..., 1, 2] = (
        2 * (x * y + z * w),
        1 - 2 * (x * x + z * z),
        2 * (y * z - x * w),
    )
    R[..., 2, 0], R[..., 2, 1], R[..., 2, 2] = (
        2 * (x * z - y * w),
        2 * (y * z + x * w),
        1 - 2 * (x * x + y * y),
    )
    return R


def _check(a: np.ndarray, dim: int, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(f"{name} expects (T, {dim}) actions, got {a.shape}")
    return a


def from_pixelvla(a: np.ndarray) -> np.ndarray:
    """Reads the project convention itself (checks shape and gripper range)."""
    a = _check(a, 7, PIXELVLA)
    if np.any((a[:, 6] < -1e-6) | (a[:, 6] > 1 + 1e-6)):
        raise ValueError(f"{PIXELVLA}: gripper must be in [0, 1]")
    return a.astype(np.float32)


def _delta_euler(a: np.ndarray, name: str) -> np.ndarray:
    a = _check(a, 7, name)
    out = np.empty_like(a)
    out[:, :3] = a[:, :3]
    out[:, 3:6] = matrix_to_rotvec(euler_xyz_to_matrix(a[:, 3:6]))
    out[:, 6] = a[:, 6]
    return out


def from_delta_euler_xyz_g1open(a: np.ndarray) -> np.ndarray:
    """Reads Bridge-v2-style deltas: [dx dy dz droll dpitch dyaw gripper], gripper 1 = open, 0 = closed."""
    out = _delta_euler(a, DELTA_EULER_XYZ_G1OPEN)
    out[:, 6] = 1.0 - np.clip(out[:, 6], 0.0, 1.0)
    return out.astype(np.float32)


def from_delta_euler_xyz_g1closed(a: np.ndarray) -> np.ndarray:
    """Reads [dx dy dz droll dpitch dyaw gripper] deltas with gripper 1 = closed."""
    out = _delta_euler(a, DELTA_EULER_XYZ_G1CLOSED)
    out[:, 6] = np.clip(out[:, 6], 0.0, 1.0)
    return out.astype(np.float32)


def from_fractal_rt1(a: np.ndarray) -> np.ndarray:
    """Reads RT-1 / Fractal: [world_vector, rotation_delta rpy, gripper_closedness [-1, 1], +1 = close]."""
    out = _delta_euler(a, FRACTAL_RT1)
    out[:, 6] = np.clip((out[:, 6] + 1.0) / 2.0, 0.0, 1.0)
    return out.astype(np.float32)


def _absolute(pos: np.ndarray, R: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Absolute TCP poses (T,) -> deltas: action t moves pose t to pose t+1 (the last one: no motion)."""
    T = len(pos)
    out = np.zeros((T, 7))
    if T > 1:
        out[:-1, :3] = pos[1:] - pos[:-1]
        out[:-1, 3:6] = matrix_to_rotvec(R[1:] @ np.swapaxes(R[:-1], -1, -2))  # base-frame delta
    out[:, 6] = np.clip(g, 0.0, 1.0)
    return out.astype(np.float32)


def from_absolute_ee_pos_rotvec(a: np.ndarray) -> np.ndarray:
    """Reads absolute TCP poses [x y z rx ry rz gripper] (base frame, rotation vector, gripper 0 = open)."""
    a = _check(a, 7, ABS_POS_ROTVEC_G0OPEN)
    return _absolute(a[:, :3], rotvec_to_matrix(a[:, 3:6]), a[:, 6])


def from_absolute_ee_pos_quat_xyzw(a: np.ndarray) -> np.ndarray:
    """Reads absolute TCP poses [x y z qx qy qz qw gripper] (base frame, gripper 0 = open)."""
    a = _check(a, 8, ABS_POS_QUAT_XYZW_G0OPEN)
    return _absolute(a[:, :3], quat_xyzw_to_matrix(a[:, 3:7]), a[:, 7])


CONVERTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    PIXELVLA: from_pixelvla,
    DELTA_EULER_XYZ_G1OPEN: from_delta_euler_xyz_g1open,
    DELTA_EULER_XYZ_G1CLOSED: from_delta_euler_xyz_g1closed,
    FRACTAL_RT1: from_fractal_rt1,
    ABS_POS_ROTVEC_G0OPEN: from_absolute_ee_pos_rotvec,
    ABS_POS_QUAT_XYZW_G0OPEN: from_absolute_ee_pos_quat_xyzw,
}


def convert_actions(actions: np.ndarray, convention: str) -> np.ndarray:
    """(T, D) actions in ``convention`` -> (T, 7) float32 in the project convention."""
    if convention not in CONVERTERS:
        raise ValueError(f"unknown action convention {convention!r}; known: {sorted(CONVERTERS)}")
    return CONVERTERS[convention](actions)
