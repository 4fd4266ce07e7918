"""The prompt overlay: the camera image with the visual prompt, the commanded motion and a status line.

ROS-free (OpenCV). Drawing happens on an upscaled copy (nearest neighbour, an integer factor) so that a
small simulator image (96 px) still shows legible marks and text; pixel (u, v) of the source image maps
to ((u + 0.5) * s - 0.5, (v + 0.5) * s - 0.5) in the overlay. Colours are RGB.

    out = render_overlay(rgb, prompt, camera, commanded_path(tcp_xyz, actions), "status", min_size=384)
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pixelvla_ros.action_space import GRIPPER, TRANSLATION
from pixelvla_ros.camera import CameraModel
from pixelvla_ros.prompts import BOX, LINE, MASK, POINT, VisualPrompt

POSITIVE = (40, 220, 60)  # green: "this"
NEGATIVE = (230, 40, 40)  # red: "not this"
LINE_COLOUR = (250, 220, 30)
PATH_OPEN = (40, 200, 250)  # commanded TCP path while the gripper is commanded open
PATH_CLOSED = (240, 60, 240)  # ... and closed
OUTLINE = (255, 255, 255)
MASK_ALPHA = 0.45
GRIPPER_CLOSED = 0.5  # commands at or above this are drawn as "closed" (the model binarizes at 0.5)


def upscale_factor(width: int, height: int, min_size: int) -> int:
    """The integer factor that makes the image's smaller side at least ``min_size`` pixels (>= 1)."""
    return max(1, math.ceil(min_size / min(width, height)))


def commanded_path(tcp_position: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TCP positions under a chunk of actions: ((N + 1, 3) base frame, start first; (N + 1,) gripper
    command in force on arrival at each position, the first one that of step 0)."""
    a = np.asarray(actions, dtype=float)
    start = np.asarray(tcp_position, dtype=float).reshape(1, 3)
    positions = np.concatenate([start, start + np.cumsum(a[:, TRANSLATION], axis=0)])
    gripper = np.concatenate([a[:1, GRIPPER], a[:, GRIPPER]])
    return positions, gripper


def _to_overlay(uv: np.ndarray, s: int) -> np.ndarray:
    """Source pixels (N, 2) -> integer overlay pixels (N, 2)."""
    return np.round((np.asarray(uv, dtype=float) + 0.5) * s - 0.5).astype(np.int32)


def draw_prompt(img: np.ndarray, prompt: VisualPrompt, s: int) -> None:
    """Draw a prompt in place on an overlay upscaled ``s`` times from the prompt's image."""
    r = max(3, 2 * s)
    thickness = max(1, s // 2)
    if prompt.kind == MASK:
        mask = np.repeat(np.repeat(prompt.mask, s, axis=0), s, axis=1)
        colour = np.array(POSITIVE if prompt.labels[0] else NEGATIVE, dtype=np.float32)
        img[mask] = ((1 - MASK_ALPHA) * img[mask] + MASK_ALPHA * colour).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, OUTLINE, thickness)
        return
    pts = _to_overlay(prompt.points, s)
    if prompt.kind == POINT:
        for (x, y), label in zip(pts, prompt.labels, strict=True):
            colour = POSITIVE if label else NEGATIVE
            cv2.circle(img, (int(x), int(y)), r, colour, -1, cv2.LINE_AA)
            cv2.circle(img, (int(x), int(y)), r, OUTLINE, thickness, cv2.LINE_AA)
            sign = "+" if label else "-"
            cv2.putText(img, sign, (int(x) + r + 2, int(y) - r), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
    elif prompt.kind == LINE:
        colour = LINE_COLOUR if prompt.labels[0] else NEGATIVE
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, colour, max(2, thickness), cv2.LINE_AA)
    elif prompt.kind == BOX:
        colour = POSITIVE if prompt.labels[0] else NEGATIVE
        (x0, y0), (x1, y1) = pts
        cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), colour, max(2, thickness))


def draw_motion(
    img: np.ndarray, camera: CameraModel, positions: np.ndarray, gripper: np.ndarray, s: int
) -> None:
    """Draw the commanded TCP path (base-frame positions projected through ``camera``) in place.

    Segments with an end behind the camera are skipped; the rest are clipped by OpenCV at the border.
    """
    uv, in_front = camera.project(positions)
    pts = _to_overlay(np.where(in_front[:, None], uv, 0.0), s)
    thickness = max(2, s // 2)
    for k in range(len(pts) - 1):
        if in_front[k] and in_front[k + 1]:
            colour = PATH_CLOSED if gripper[k + 1] >= GRIPPER_CLOSED else PATH_OPEN
            cv2.line(
                img, tuple(map(int, pts[k])), tuple(map(int, pts[k + 1])), colour, thickness, cv2.LINE_AA
            )
    for k in range(1, len(pts)):
        if in_front[k]:
            colour = PATH_CLOSED if gripper[k] >= GRIPPER_CLOSED else PATH_OPEN
            cv2.circle(img, tuple(map(int, pts[k])), thickness + 1, colour, -1, cv2.LINE_AA)
    if in_front[0]:
        cv2.circle(img, tuple(map(int, pts[0])), 2 * thickness + 2, OUTLINE, thickness, cv2.LINE_AA)


def draw_status(img: np.ndarray, text: str) -> None:
    """One line of text on a dark band across the top of the overlay, in place."""
    scale = max(0.4, img.shape[1] / 900)
    (_, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = th + baseline + 6
    img[:band] = (img[:band] * 0.35).astype(np.uint8)
    cv2.putText(img, text, (4, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, OUTLINE, 1, cv2.LINE_AA)


def render_overlay(
    rgb: np.ndarray,
    prompt: VisualPrompt | None = None,
    camera: CameraModel | None = None,
    path: tuple[np.ndarray, np.ndarray] | None = None,
    status: str = "",
    min_size: int = 0,
) -> np.ndarray:
    """A new (H*s, W*s, 3) uint8 image: ``rgb`` upscaled to ``min_size`` with the prompt, the commanded
    path (:func:`commanded_path`, needs ``camera``) and the status line drawn on it. ``rgb`` is unchanged."""
    h, w = rgb.shape[:2]
    s = upscale_factor(w, h, min_size) if min_size else 1
    img = cv2.resize(rgb, (w * s, h * s), interpolation=cv2.INTER_NEAREST) if s > 1 else rgb.copy()
    if prompt is not None:
        draw_prompt(img, prompt, s)
    if path is not None and camera is not None:
        draw_motion(img, camera, path[0], path[1], s)
    if status:
        draw_status(img, status)
    return img
