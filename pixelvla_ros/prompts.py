"""Visual prompt types shared by the model, the annotation pipeline and the ROS nodes.

Plain types: numpy only, no torch, so that processes which do not run the model (the drivers, the prompt
node) can use them. Coordinates are float pixel coordinates of the image the prompt was drawn on,
x = column, y = row, in the convention of OpenCV and sensor_msgs/CameraInfo: integer coordinates are pixel
centres, so the image of width W spans -0.5 <= x <= W - 0.5.

A prompt is one of:
  point  points (N, 2), labels (N,)   N separate clicks; each point is one slot (a "set" of points)
  line   points (N, 2), labels (1,)   a polyline / scribble (N >= 2), resampled to K evenly spaced points
  box    points (2, 2), labels (1,)   two opposite corners (any order; stored as top-left, bottom-right)
  mask   mask (H, W) bool, labels (1,)
Labels: 1 = positive (the object), 0 = negative (not the object), as in SAM.

`PromptSlots` says how many prompts of each kind the model takes; pixelvla_ros.model.inputs.collate_prompts
turns a batch of prompt lists into the model's fixed-slot tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

POINT, LINE, BOX, MASK = "point", "line", "box", "mask"
PROMPT_KINDS = (POINT, LINE, BOX, MASK)


class PixelVLAInputError(ValueError):
    """A model input is malformed: the message says what was wrong and what was expected."""


@dataclass
class VisualPrompt:
    kind: str
    points: np.ndarray | None = None  # (N, 2) float pixel coords (x=col, y=row); None for masks
    labels: np.ndarray = field(default_factory=lambda: np.ones(1, dtype=np.int64))  # 1 pos / 0 neg
    mask: np.ndarray | None = None  # (H, W) bool, masks only

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise PixelVLAInputError(f"prompt kind must be one of {PROMPT_KINDS}, got {self.kind!r}")
        self.labels = np.atleast_1d(np.asarray(self.labels))
        if self.labels.dtype.kind not in "biuf" or not np.all(np.isin(self.labels, (0, 1))):
            raise PixelVLAInputError(f"{self.kind} prompt labels must be 0 or 1, got {self.labels.tolist()}")
        self.labels = self.labels.astype(np.int64)
        if self.kind == MASK:
            if self.mask is None:
                raise PixelVLAInputError("a mask prompt needs `mask`, an (H, W) bool array")
            self.mask = validate_mask(self.mask, "mask prompt")
            if self.labels.shape != (1,):
                raise PixelVLAInputError(f"a mask prompt has one label, got {self.labels.shape[0]}")
            return
        if self.points is None:
            raise PixelVLAInputError(f"a {self.kind} prompt needs `points`, an (N, 2) array of pixel coords")
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
            raise PixelVLAInputError(f"{self.kind} prompt points must have shape (N, 2), got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise PixelVLAInputError(f"{self.kind} prompt points contain NaN or inf: {pts.tolist()}")
        if self.kind == POINT and self.labels.shape == (1,) and pts.shape[0] > 1:
            self.labels = np.repeat(self.labels, pts.shape[0])
        if self.kind == POINT and self.labels.shape != (pts.shape[0],):
            raise PixelVLAInputError(f"point prompt: {pts.shape[0]} points but {self.labels.shape[0]} labels")
        if self.kind in (LINE, BOX) and self.labels.shape != (1,):
            raise PixelVLAInputError(f"a {self.kind} prompt has one label, got {self.labels.shape[0]}")
        if self.kind == LINE and pts.shape[0] < 2:
            raise PixelVLAInputError(f"a line prompt needs >= 2 points, got {pts.shape[0]}")
        if self.kind == BOX:
            if pts.shape[0] != 2:
                raise PixelVLAInputError(f"a box prompt needs exactly 2 corner points, got {pts.shape[0]}")
            pts = np.stack([pts.min(axis=0), pts.max(axis=0)])
            if np.any(pts[1] - pts[0] <= 0):
                raise PixelVLAInputError(
                    f"a box prompt must have positive width and height, got {pts.tolist()}"
                )
        self.points = pts

    # Convenience constructors.
    @classmethod
    def point(cls, xy: Sequence[Sequence[float]], labels: Sequence[int] | int = 1) -> VisualPrompt:
        return cls(POINT, points=np.asarray(xy, dtype=np.float64).reshape(-1, 2), labels=np.asarray(labels))

    @classmethod
    def line(cls, xy: Sequence[Sequence[float]], label: int = 1) -> VisualPrompt:
        return cls(LINE, points=np.asarray(xy, dtype=np.float64), labels=np.asarray([label]))

    @classmethod
    def box(cls, x0: float, y0: float, x1: float, y1: float, label: int = 1) -> VisualPrompt:
        return cls(BOX, points=np.asarray([[x0, y0], [x1, y1]], dtype=np.float64), labels=np.asarray([label]))

    @classmethod
    def from_mask(cls, mask: np.ndarray, label: int = 1) -> VisualPrompt:
        return cls(MASK, mask=mask, labels=np.asarray([label]))

    def check_inside(self, height: int, width: int) -> None:
        """Raise unless the prompt lies inside an image of this size."""
        if self.kind == MASK:
            if self.mask.shape != (height, width):
                raise PixelVLAInputError(
                    f"mask prompt has shape {self.mask.shape}, expected the image size {(height, width)}"
                )
            return
        x, y = self.points[:, 0], self.points[:, 1]
        if np.any(x < -0.5) or np.any(y < -0.5) or np.any(x > width - 0.5) or np.any(y > height - 0.5):
            raise PixelVLAInputError(
                f"{self.kind} prompt coordinates {self.points.tolist()} lie outside the image "
                f"(expected -0.5 <= x <= {width - 0.5}, -0.5 <= y <= {height - 0.5})"
            )


def to_unit_square(points: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Pixel coordinates (pixel-centre convention) -> [0, 1] across the image's full extent."""
    return (points + 0.5) / scale


def validate_mask(mask: np.ndarray, what: str) -> np.ndarray:
    """A non-empty (H, W) boolean (or 0/1) mask → bool array."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise PixelVLAInputError(f"{what} must be an (H, W) array, got shape {m.shape}")
    if m.dtype != np.bool_:
        if m.dtype.kind not in "biuf":
            raise PixelVLAInputError(f"{what} must be bool (or 0/1 numbers), got dtype {m.dtype}")
        if m.dtype.kind == "f" and not np.all(np.isfinite(m)):
            raise PixelVLAInputError(f"{what} contains NaN or inf")
        if not np.all((m == 0) | (m == 1)):
            raise PixelVLAInputError(f"{what} must hold only 0/1 values")
        m = m.astype(bool)
    if not m.any():
        raise PixelVLAInputError(f"{what} is empty (no pixel set); expected at least one pixel of the object")
    return m


def resample_polyline(points: np.ndarray, k: int) -> np.ndarray:
    """(N, 2) polyline → (k, 2) points evenly spaced along its arc length (endpoints kept)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)  # (N-1,)
    s = np.concatenate([[0.0], np.cumsum(seg)])  # (N,)
    if s[-1] <= 0:
        return np.repeat(points[:1], k, axis=0)
    t = np.linspace(0.0, s[-1], k)
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


@dataclass
class PromptSlots:
    """How many slots each prompt kind gets in the model (fixed; the rest is padding)."""

    max_points: int = 4
    max_lines: int = 1
    line_points: int = 4  # K
    max_boxes: int = 1
    max_masks: int = 1


def describe_prompts(prompts: Sequence[VisualPrompt]) -> list[str]:
    """Short phrases naming the prompts present, for the text template ("the points", "the box", ...)."""
    names = {POINT: "the points", LINE: "the line", BOX: "the box", MASK: "the mask"}
    return [names[k] for k in PROMPT_KINDS if any(p.kind == k for p in prompts)]
