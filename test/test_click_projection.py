"""Click geometry with the simulator's real camera: 3D clicks land on the clicked object's pixels, refusals
carry their reason (a point off the work surface too), the static camera pose parameter parses and matches
config/camera.yaml."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from pixelvla_ros.action_space import FRAME_BASE  # noqa: E402
from pixelvla_ros.click_projection import (  # noqa: E402
    BEHIND_CAMERA,
    CAMERA_INFO_MISMATCH,
    NO_CAMERA_INFO,
    NO_IMAGE,
    NON_FINITE,
    OUTSIDE_IMAGE,
    OUTSIDE_VOLUME,
    STALE_IMAGE,
    UNKNOWN_FRAME,
    ClickRejected,
    ClickVolume,
    check_camera_matches,
    check_image_age,
    click_region,
    pixel_click,
    point_in_base,
    pose_to_matrix,
    project_click,
    ray_points,
)
from pixelvla_ros.drivers.sim_driver import calibrated_config  # noqa: E402
from pixelvla_ros.safety import SafetyLimits  # noqa: E402
from pixelvla_ros.sim.env import TabletopEnv  # noqa: E402
from pixelvla_ros.sim.tasks import TaskConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "config" / "prompt_node.yaml").read_text())["prompt_node"]["ros__parameters"]
BASE = FRAME_BASE
SIZE = 96  # the simulator driver's image size
VOLUME = ClickVolume(PARAMS["click_volume_min"], PARAMS["click_volume_max"])  # the prompt node's


def sim_config(family: str = "pick_prompted") -> TaskConfig:
    """The simulator with its camera at the nominal pose (no per-episode jitter), as the ROS demo runs it."""
    return calibrated_config(TaskConfig(family=family))


@pytest.fixture(scope="module")
def scene() -> SimpleNamespace:
    env = TabletopEnv(sim_config(), seed=3)
    env.reset()
    out = SimpleNamespace(
        rgb=env.render("scene", SIZE),
        seg=env.segmentation("scene", SIZE),
        camera=env.camera_info("scene", SIZE),
        centres=env.object_positions(),
        entities=list(env.entities),
    )
    env.close()
    return out


def on_object(seg: np.ndarray, uv: np.ndarray, index: int) -> bool:
    return bool(seg[int(round(uv[1])), int(round(uv[0]))] == index)


def test_object_centres_project_onto_their_pixels(scene: SimpleNamespace) -> None:
    assert len(scene.centres) >= 2
    for name, centre in scene.centres.items():
        p = point_in_base(centre, BASE, BASE, {})
        uv = project_click(p, scene.camera, VOLUME)
        assert on_object(scene.seg, uv, scene.entities.index(name)), (name, uv.tolist())


def test_click_in_the_camera_frame_gives_the_same_pixel(scene: SimpleNamespace) -> None:
    cam = scene.camera
    centre = next(iter(scene.centres.values()))
    Tcb = cam.T_camera_base
    in_camera = Tcb[:3, :3] @ centre + Tcb[:3, 3]
    p = point_in_base(in_camera, cam.frame_id, BASE, {cam.frame_id: cam.T_base_camera})
    np.testing.assert_allclose(p, centre, atol=1e-9)
    np.testing.assert_allclose(project_click(p, cam, VOLUME), project_click(centre, cam, VOLUME), atol=1e-9)


def test_refused_clicks_name_their_reason(scene: SimpleNamespace) -> None:
    cam = scene.camera
    origin, forward = cam.T_base_camera[:3, 3], cam.T_base_camera[:3, 2]
    right = cam.T_base_camera[:3, 0]
    cases = {
        BEHIND_CAMERA: lambda: project_click(origin - 0.5 * forward, cam, VOLUME),
        OUTSIDE_IMAGE: lambda: project_click(origin + 0.5 * forward + 2.0 * right, cam, VOLUME),
        NON_FINITE: lambda: point_in_base([0.5, math.nan, 0.0], BASE, BASE, {}),
        UNKNOWN_FRAME: lambda: point_in_base([0.5, 0.0, 0.0], "map", BASE, {cam.frame_id: cam.T_base_camera}),
    }
    for reason, click in cases.items():
        with pytest.raises(ClickRejected) as e:
            click()
        assert e.value.reason == reason, str(e.value)
    with pytest.raises(ClickRejected, match="fixed frame") as e:
        point_in_base([0.5, 0.0, 0.0], "", BASE, {})
    assert e.value.reason == UNKNOWN_FRAME
    # the camera centre itself has no pixel
    with pytest.raises(ClickRejected) as e:
        project_click(origin, cam, VOLUME)
    assert e.value.reason == BEHIND_CAMERA


def test_clicks_off_the_work_surface_are_refused(scene: SimpleNamespace) -> None:
    """A 3D click beyond the object on its viewing ray (RViz's Publish Point hit the floor or a wall: RViz
    shows no table on a robot) projects onto the object's pixel; only its depth says it is not on the table
    (issue 17, defect 6)."""
    cam = scene.camera
    origin = cam.T_base_camera[:3, 3]
    centre = next(iter(scene.centres.values()))
    ray = (centre - origin) / np.linalg.norm(centre - origin)
    behind = centre + 10.0 * ray
    below = origin + (-0.8 - origin[2]) / ray[2] * ray  # where the ray is 0.8 m below the table top (z = 0)
    table = origin - origin[2] / ray[2] * ray  # where it meets the table top
    for p in (behind, below):
        uv, in_front = cam.project(p)
        assert in_front[0] and cam.in_image(uv)[0]  # the image alone accepts it
        with pytest.raises(ClickRejected) as e:
            project_click(p, cam, VOLUME)
        assert e.value.reason == OUTSIDE_VOLUME, str(e.value)
        assert str(p.round(3).tolist()) in e.value.detail  # the point
        assert str(VOLUME.lo.tolist()) in e.value.detail and str(VOLUME.hi.tolist()) in e.value.detail
    assert "z = -0.800" in str(e.value)  # the coordinate out of the box
    # the table top itself is in, a little below it too (depth and calibration error)
    uv = project_click(table, cam, VOLUME)
    np.testing.assert_allclose(uv, project_click(centre, cam, VOLUME), atol=1e-6)
    project_click(table - [0.0, 0.0, 0.02], cam, VOLUME)


def test_click_volume_is_a_box_in_the_robots_reach() -> None:
    """The yaml's default: the drivers' TCP workspace box (SafetyLimits) down to a little below the table."""
    limits = SafetyLimits()
    np.testing.assert_allclose(VOLUME.lo[:2], limits.workspace_min[:2])
    np.testing.assert_allclose(VOLUME.hi, limits.workspace_max)
    assert -0.1 <= VOLUME.lo[2] < 0.0  # the table top is z = 0
    for lo, hi, match in [
        ([0.8, -0.5, 0.0], [0.2, 0.5, 0.5], "min must be below max"),
        ([0.2, -0.5, 0.0], [0.8, -0.5, 0.5], "min must be below max"),
        ([0.2, -0.5], [0.8, 0.5, 0.5], "3 numbers"),
        ([0.2, -0.5, math.nan], [0.8, 0.5, 0.5], "NaN"),
        ([0.2, -0.5, 0.0], [0.8, math.inf, 0.5], "NaN or inf"),
    ]:
        with pytest.raises(ValueError, match=match):
            ClickVolume(lo, hi)


def test_pixel_clicks_inside_the_image_only() -> None:
    np.testing.assert_array_equal(pixel_click(10, 20, 96, 96), [10.0, 20.0])
    np.testing.assert_array_equal(pixel_click(-0.5, -0.5, 96, 96), [-0.5, -0.5])
    np.testing.assert_array_equal(pixel_click(95, 95, 96, 96), [95.0, 95.0])
    for u, v, reason in [(96, 10, OUTSIDE_IMAGE), (10, -1, OUTSIDE_IMAGE), (math.inf, 3, NON_FINITE)]:
        with pytest.raises(ClickRejected) as e:
            pixel_click(u, v, 96, 96)
        assert e.value.reason == reason


def test_image_age_and_camera_size_checks(scene: SimpleNamespace) -> None:
    check_image_age(0.1, 0.5)
    check_camera_matches(scene.camera, SIZE, SIZE)
    for call, reason in [
        (lambda: check_image_age(None, 0.5), NO_IMAGE),
        (lambda: check_image_age(0.6, 0.5), STALE_IMAGE),
        (lambda: check_image_age(-0.6, 0.5), STALE_IMAGE),
        (lambda: check_camera_matches(None, SIZE, SIZE), NO_CAMERA_INFO),
        (lambda: check_camera_matches(scene.camera, 2 * SIZE, SIZE), CAMERA_INFO_MISMATCH),
    ]:
        with pytest.raises(ClickRejected) as e:
            call()
        assert e.value.reason == reason


def test_pose_parameter_parsing() -> None:
    np.testing.assert_allclose(pose_to_matrix([0, 0, 0, 0, 0, 0, 1]), np.eye(4))
    s = math.sqrt(0.5)
    T = pose_to_matrix([1.0, 2.0, 3.0, 0.0, 0.0, s, s])  # 90 degrees about z
    np.testing.assert_allclose(T[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1.0, 2.0, 3.0])
    T = pose_to_matrix([0, 0, 0, 0.0, 0.0, 0.7071, 0.7071])  # 4 decimals: normalised, still a rotation
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
    for bad, match in [
        ([0, 0, 0, 0, 0, 1], "7 numbers"),
        ([0, 0, math.nan, 0, 0, 0, 1], "NaN"),
        ([0, 0, 0, 0, 0, 0, 2], "norm"),
        ([0, 0, 0, 0, 0, 0, 0], "norm"),
    ]:
        with pytest.raises(ValueError, match=match):
            pose_to_matrix(bad)


def test_yaml_camera_pose_is_the_simulators(scene: SimpleNamespace) -> None:
    camera = yaml.safe_load((ROOT / "config" / "camera.yaml").read_text())["/**"]["ros__parameters"]
    np.testing.assert_allclose(
        pose_to_matrix(camera["camera_pose_in_base"]), scene.camera.T_base_camera, atol=1e-6
    )
    assert PARAMS["base_frame"] == FRAME_BASE  # the frame of the actions, the TCP pose and the clicks


def test_click_region_and_viewing_ray(scene: SimpleNamespace) -> None:
    np.testing.assert_allclose(click_region(np.array([50.0, 40.0]), 96, 96, 0.25), [38, 28, 62, 52])
    np.testing.assert_allclose(click_region(np.array([2.0, 94.0]), 96, 96, 0.25), [-0.5, 82, 14, 95.5])
    centre = next(iter(scene.centres.values()))
    uv = project_click(centre, scene.camera, VOLUME)
    start, end = ray_points(uv, scene.camera, 2.0)
    d = (end - start) / 2.0
    np.testing.assert_allclose(np.linalg.norm(np.cross(centre - start, d)), 0.0, atol=1e-9)
    with pytest.raises(ValueError):
        ray_points(uv, scene.camera, 0.0)
