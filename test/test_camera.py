"""Pinhole camera model: projection, back-projection, behind-camera flag, CameraInfo round trip, refusal of
non-finite calibrations."""

import math

import numpy as np
import pytest

from pixelvla_ros.camera import CameraModel


def _pose_looking_down_x():
    # Optical frame at (1, 0, 0.5) looking along -x of the base (z_opt = -x_base), x_opt = +y_base.
    T = np.eye(4)
    T[:3, :3] = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    T[:3, 3] = [1.0, 0.0, 0.5]
    return T


def test_centre_projects_to_principal_point_and_axes():
    cam = CameraModel.from_fovy(96, 96, 60.0, _pose_looking_down_x())
    uv, front = cam.project(np.array([0.0, 0.0, 0.5]))
    assert front[0]
    np.testing.assert_allclose(uv[0], [47.5, 47.5])
    uv, _ = cam.project(np.array([0.0, 0.1, 0.5]))  # +y base = +x optical = right
    assert uv[0, 0] > 47.5
    uv, _ = cam.project(np.array([0.0, 0.0, 0.6]))  # up in the world = up in the image
    assert uv[0, 1] < 47.5


def test_behind_camera_flag():
    cam = CameraModel.from_fovy(64, 48, 50.0, _pose_looking_down_x())
    uv, front = cam.project(np.array([[2.0, 0.0, 0.5], [0.0, 0.0, 0.5]]))
    assert not front[0] and front[1]
    assert np.isnan(uv[0]).all()
    assert not cam.in_image(uv)[0]


def test_round_trip_with_distortion():
    rng = np.random.default_rng(0)
    K = np.array([[300.0, 0, 159.3], [0, 305.0, 121.7], [0, 0, 1]])
    cam = CameraModel(
        320, 240, K, D=np.array([-0.1, 0.02, 0.001, -0.0005, 0.0]), T_base_camera=_pose_looking_down_x()
    )
    pts = np.column_stack(
        [rng.uniform(-0.3, 0.3, 100), rng.uniform(-0.2, 0.2, 100), rng.uniform(0.3, 0.7, 100)]
    )
    uv, front = cam.project(pts)
    assert front.all()
    o, d = cam.pixel_to_ray(uv)
    # Each point lies on its pixel's ray.
    v = pts - o
    cross = np.linalg.norm(np.cross(v, d), axis=1) / np.linalg.norm(v, axis=1)
    assert cross.max() < 1e-6
    # Plane intersection recovers a point on a known plane.
    p, ok = cam.pixel_to_plane(uv[:1], plane_point=pts[0], plane_normal=[1.0, 0.0, 0.0])
    assert ok[0]
    np.testing.assert_allclose(p[0], pts[0], atol=1e-6)


def test_camera_info_round_trip_and_scaling():
    cam = CameraModel.from_fovy(224, 224, 45.0, _pose_looking_down_x(), frame_id="scene_optical")
    info = cam.to_camera_info_dict()
    assert set(["width", "height", "k", "d", "r", "p", "distortion_model"]) <= set(info)
    cam2 = CameraModel.from_camera_info_dict(info)
    np.testing.assert_allclose(cam2.K, cam.K)
    np.testing.assert_allclose(cam2.T_base_camera, cam.T_base_camera)
    assert cam2.frame_id == "scene_optical"
    small = cam.scaled(96, 96)
    ref = CameraModel.from_fovy(96, 96, 45.0, _pose_looking_down_x())
    np.testing.assert_allclose(small.K, ref.K, atol=1e-9)
    pt = np.array([0.1, 0.05, 0.45])
    np.testing.assert_allclose(cam.project(pt)[0], cam.project_rectified(pt)[0], atol=1e-9)


def test_non_finite_calibration_is_refused_naming_the_matrix():
    """NaN or inf anywhere in K, D, R, P or the pose: ValueError naming the matrix (issue 17, defect 5).
    fx = NaN passed the focal-length check (NaN <= 0 is false), so every user of the model acted on it."""
    good = CameraModel.from_fovy(64, 48, 50.0, _pose_looking_down_x())
    shapes = {"K": (3, 3), "D": (5,), "R": (3, 3), "P": (3, 4), "T_base_camera": (4, 4)}
    for field_name, shape in shapes.items():
        for bad_value in (math.nan, math.inf):
            value = np.array(getattr(good, field_name), dtype=float).reshape(shape)
            value[(0,) * len(shape)] = bad_value
            kwargs = {
                "K": good.K,
                "D": good.D,
                "R": good.R,
                "P": good.P,
                "T_base_camera": good.T_base_camera,
                field_name: value,
            }
            with pytest.raises(ValueError, match=f"^{field_name} contains NaN or inf"):
                CameraModel(64, 48, **kwargs)
    # the CameraInfo path as the prompt and policy nodes take it: fx = NaN, the case of the issue
    info = good.to_camera_info_dict()
    info["k"][0] = math.nan
    with pytest.raises(ValueError, match="^K contains NaN or inf"):
        CameraModel.from_camera_info_dict(info)
