"""UR5e kinematics: FK against MuJoCo, Jacobian against finite differences, IK round trip, rotations."""

import math
import os

import numpy as np
import pytest

from pixelvla_ros import ur5e

os.environ.setdefault("MUJOCO_GL", "egl")


def _random_q(rng, n):
    q = rng.uniform(-math.pi, math.pi, (n, 6))
    return q


def test_rotvec_round_trip_including_near_pi():
    rng = np.random.default_rng(0)
    for _ in range(200):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        for angle in (1e-8, 0.3, 2.0, math.pi - 1e-6, math.pi):
            R = ur5e.rotvec_to_matrix(axis * angle)
            R2 = ur5e.rotvec_to_matrix(ur5e.matrix_to_rotvec(R))
            np.testing.assert_allclose(R2, R, atol=1e-6)


def test_fk_matches_mujoco_site():
    import mujoco

    from pixelvla_ros.sim import scene as S

    spec = S.SceneSpec(objects=())
    m = mujoco.MjModel.from_xml_string(S.build_mjcf(spec))
    d = mujoco.MjData(m)
    sid, fid = m.site("tcp").id, m.site("flange").id
    adr = [m.joint(n).qposadr[0] for n in ur5e.JOINT_NAMES]
    for q in _random_q(np.random.default_rng(1), 50):
        d.qpos[adr] = q
        mujoco.mj_forward(m, d)
        T = ur5e.fk(q, S.T_FLANGE_TCP)
        np.testing.assert_allclose(d.site_xpos[sid], T[:3, 3], atol=1e-9)
        np.testing.assert_allclose(d.site_xmat[sid].reshape(3, 3), T[:3, :3], atol=1e-9)
        np.testing.assert_allclose(d.site_xpos[fid], ur5e.fk(q)[:3, 3], atol=1e-9)
    # Joint limits in the model are the module's.
    for i, n in enumerate(ur5e.JOINT_NAMES):
        np.testing.assert_allclose(m.joint(n).range, [ur5e.Q_MIN[i], ur5e.Q_MAX[i]])


def test_jacobian_matches_finite_differences():
    tool = np.eye(4)
    tool[2, 3] = 0.13
    for q in _random_q(np.random.default_rng(2), 20):
        J = ur5e.jacobian(q, tool)
        T0 = ur5e.fk(q, tool)
        eps = 1e-6
        for i in range(6):
            dq = np.zeros(6)
            dq[i] = eps
            T1 = ur5e.fk(q + dq, tool)
            np.testing.assert_allclose(ur5e.pose_error(T1, T0) / eps, J[:, i], atol=1e-5)


def test_ik_round_trip_from_nearby_seed():
    rng = np.random.default_rng(3)
    tool = np.eye(4)
    tool[2, 3] = 0.13
    for _ in range(50):
        q = ur5e.Q_HOME + rng.uniform(-0.6, 0.6, 6)
        T = ur5e.fk(q, tool)
        res = ur5e.ik(T, q + rng.uniform(-0.1, 0.1, 6), tool)
        assert res.success, res.reason
        np.testing.assert_allclose(ur5e.fk(res.q, tool), T, atol=1e-3)


def test_ik_reports_unreachable():
    T = ur5e.fk(ur5e.Q_HOME)
    T[:3, 3] = [2.0, 0.0, 0.5]  # beyond the 0.85 m reach
    res = ur5e.ik(T, ur5e.Q_HOME)
    assert not res.success
    assert "unreachable" in res.reason or "limit" in res.reason


def test_limits_shape():
    assert ur5e.Q_MAX[2] == pytest.approx(math.pi)
    assert ur5e.within_limits(ur5e.Q_HOME)
    assert not ur5e.within_limits(np.array([0, 0, 3.5, 0, 0, 0]))
