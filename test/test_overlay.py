"""The overlay draws the prompt and the commanded TCP path where they belong, on a copy of the image."""

from __future__ import annotations

import numpy as np
import pytest

from pixelvla_ros.camera import CameraModel
from pixelvla_ros.overlay import (
    NEGATIVE,
    PATH_CLOSED,
    PATH_OPEN,
    POSITIVE,
    commanded_path,
    render_overlay,
    upscale_factor,
)
from pixelvla_ros.prompts import VisualPrompt

GREY = 100


def grey(h: int = 96, w: int = 96) -> np.ndarray:
    return np.full((h, w, 3), GREY, np.uint8)


def looking_down() -> CameraModel:
    """A camera 1 m above the base origin looking straight down (optical z = -base z, x = base x)."""
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = [0.0, 0.0, 1.0]
    return CameraModel.from_fovy(96, 96, 60.0, T)


def is_colour(px: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.all(np.abs(px.astype(int) - colour) <= 2))


def test_upscale_factor() -> None:
    assert upscale_factor(96, 96, 384) == 4
    assert upscale_factor(100, 90, 384) == 5
    assert upscale_factor(640, 480, 384) == 1


def test_points_drawn_at_their_pixels_with_label_colours() -> None:
    rgb = grey()
    prompt = VisualPrompt.point([[20, 30], [70, 60]], labels=[1, 0])
    out = render_overlay(rgb, prompt, min_size=384)
    assert out.shape == (384, 384, 3)
    assert np.all(rgb == GREY), "the input image was drawn on"
    s = 4
    assert is_colour(out[30 * s + 1, 20 * s + 1], POSITIVE)
    assert is_colour(out[60 * s + 1, 70 * s + 1], NEGATIVE)
    assert np.all(out[200:260, 200:260] == GREY)  # far from both points


def test_mask_tinted_inside_only() -> None:
    mask = np.zeros((96, 96), bool)
    mask[40:60, 10:30] = True
    out = render_overlay(grey(), VisualPrompt.from_mask(mask), min_size=0)
    inside = out[45:55, 15:25].astype(int)
    assert np.all(inside[..., 1] > GREY + 20) and np.all(inside[..., 0] < GREY), "mask not tinted green"
    assert np.all(out[70:90, 50:90] == GREY)


def test_line_and_box_drawn() -> None:
    out = render_overlay(grey(), VisualPrompt.line([[10, 10], [80, 10]]))
    assert np.any(out[10, 30:60] != GREY)
    out = render_overlay(grey(), VisualPrompt.box(20, 20, 60, 50))
    assert np.any(out[20, 30:50] != GREY) and np.all(out[35, 30:50] == GREY)  # outline, hollow


def test_commanded_path_is_tcp_plus_cumulative_translation() -> None:
    actions = np.zeros((3, 7))
    actions[:, 0] = 0.1
    actions[2, 6] = 1.0
    positions, gripper = commanded_path(np.array([0.0, 0.0, 0.2]), actions)
    np.testing.assert_allclose(positions[:, 0], [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(positions[:, 2], 0.2)
    np.testing.assert_allclose(gripper, [0.0, 0.0, 0.0, 1.0])


def test_motion_drawn_along_the_projected_path() -> None:
    cam = looking_down()
    actions = np.zeros((4, 7))
    actions[:, 0] = 0.05  # +x in the base frame = +u in this camera
    actions[3, 6] = 1.0  # the last step closes the gripper
    path = commanded_path(np.array([0.0, 0.0, 0.0]), actions)
    out = render_overlay(grey(), camera=cam, path=path)
    uv, _ = cam.project(path[0])
    u = [int(round(x)) for x in uv[:, 0]]
    v = int(round(uv[0, 1]))
    assert is_colour(out[v, (u[0] + u[1]) // 2], PATH_OPEN)
    assert is_colour(out[v, (u[3] + u[4]) // 2], PATH_CLOSED)
    assert np.all(out[: v - 10] == GREY) and np.all(out[v + 10 :] == GREY)  # nothing off the path


def test_motion_behind_the_camera_is_skipped() -> None:
    actions = np.zeros((2, 7))
    actions[:, 2] = 1.0  # up through the camera at z = 1 m and beyond
    out = render_overlay(
        grey(), camera=looking_down(), path=commanded_path(np.array([0.0, 0.0, 0.5]), actions)
    )
    assert np.any(out != GREY), "the start, in front of the camera, is marked"
    assert not np.any(np.all(np.abs(out.astype(int) - PATH_OPEN) <= 2, axis=2)), "a segment behind was drawn"


def test_status_line_on_a_dark_band() -> None:
    out = render_overlay(grey(480, 640), status="prompt: point (1, 2)")
    band = out[:8]
    assert band.mean() < GREY and np.any(out[:20] > 200)  # darkened, white text
    assert np.all(out[100:] == GREY)


@pytest.mark.parametrize("size", [(48, 64), (480, 640)])
def test_any_size(size: tuple[int, int]) -> None:
    h, w = size
    out = render_overlay(grey(h, w), VisualPrompt.point([[w / 2, h / 2]]), status="x", min_size=384)
    s = upscale_factor(w, h, 384)
    assert out.shape == (h * s, w * s, 3)
    u, v = (round((c / 2 + 0.5) * s - 0.5) for c in (w, h))
    assert is_colour(out[v, u], POSITIVE)
