"""Visual prompt types shared by the model, the annotation pipeline and the ROS nodes.

Plain types: numpy in, tensors out. Coordinates are float pixel coordinates of the image the prompt was
drawn on, x = column, y = row, in the convention of OpenCV and sensor_msgs/CameraInfo: integer
coordinates are pixel centres, so the image of width W spans -0.5 <= x <= W - 0.5.

A prompt is one of:
  point  points (N, 2), labels (N,)   N separate clicks; each point is one slot (a "set" of points)
  line   points (N, 2), labels (1,)   a polyline / scribble (N >= 2), resampled to K evenly spaced points
  box    points (2, 2), labels (1,)   two opposite corners (any order; stored as top-left, bottom-right)
  mask   mask (H, W) bool, labels (1,)
Labels: 1 = positive (the object), 0 = negative (not the object), as in SAM.

`collate_prompts` turns a list (over the batch) of lists of prompts into fixed-slot tensors with a
validity mask, coordinates normalized to [0, 1] by the image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

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


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool -> (h, w) float coverage in [0, 1] (area average: a small object never vanishes)."""
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]  # (1, 1, H, W)
    if tuple(m.shape[-2:]) == tuple(size):
        return m[0, 0]
    if size[0] <= m.shape[-2] and size[1] <= m.shape[-1]:
        out = F.adaptive_avg_pool2d(m, size)  # exact pixel coverage of each output cell
    else:
        out = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return out[0, 0].clamp_(0.0, 1.0)


@dataclass
class PromptSlots:
    """How many slots each prompt kind gets in the model (fixed; the rest is padding)."""

    max_points: int = 4
    max_lines: int = 1
    line_points: int = 4  # K
    max_boxes: int = 1
    max_masks: int = 1


@dataclass
class PromptTensors:
    """Fixed-slot prompt tensors for a batch of B examples. Coordinates normalized to [0, 1] (x, y)."""

    point_xy: torch.Tensor  # (B, P, 2) float
    point_label: torch.Tensor  # (B, P) long
    point_valid: torch.Tensor  # (B, P) bool
    line_xy: torch.Tensor  # (B, L, K, 2)
    line_label: torch.Tensor  # (B, L)
    line_valid: torch.Tensor  # (B, L)
    box_xy: torch.Tensor  # (B, Bx, 2, 2)  [top-left, bottom-right]
    box_label: torch.Tensor  # (B, Bx)
    box_valid: torch.Tensor  # (B, Bx)
    mask: torch.Tensor  # (B, M, H, W) float in [0, 1], at the model's image size
    mask_label: torch.Tensor  # (B, M)
    mask_valid: torch.Tensor  # (B, M)

    def to(self, device: torch.device | str) -> PromptTensors:
        return PromptTensors(**{k: v.to(device) for k, v in self.__dict__.items()})

    @property
    def batch_size(self) -> int:
        return self.point_xy.shape[0]

    @staticmethod
    def empty(batch: int, slots: PromptSlots, image_hw: tuple[int, int]) -> PromptTensors:
        return collate_prompts([[] for _ in range(batch)], [image_hw] * batch, slots, image_hw)


def collate_prompts(
    prompts: Sequence[Sequence[VisualPrompt]],
    source_hw: Sequence[tuple[int, int]],
    slots: PromptSlots,
    model_hw: tuple[int, int],
) -> PromptTensors:
    """Batch prompts into fixed slots.

    prompts[b] are the prompts of example b, drawn on an image of size source_hw[b] = (H, W); masks are
    resized to model_hw. Too many prompts of a kind, or a prompt outside its image, raises
    PixelVLAInputError.
    """
    bsz = len(prompts)
    if len(source_hw) != bsz:
        raise PixelVLAInputError(f"{bsz} prompt lists but {len(source_hw)} image sizes")
    P, L, K, NB, M = slots.max_points, slots.max_lines, slots.line_points, slots.max_boxes, slots.max_masks
    point_xy, point_label = torch.zeros(bsz, P, 2), torch.zeros(bsz, P, dtype=torch.long)
    line_xy, line_label = torch.zeros(bsz, L, K, 2), torch.zeros(bsz, L, dtype=torch.long)
    box_xy, box_label = torch.zeros(bsz, NB, 2, 2), torch.zeros(bsz, NB, dtype=torch.long)
    mask, mask_label = torch.zeros(bsz, M, *model_hw), torch.zeros(bsz, M, dtype=torch.long)
    point_valid = torch.zeros(bsz, P, dtype=torch.bool)
    line_valid = torch.zeros(bsz, L, dtype=torch.bool)
    box_valid = torch.zeros(bsz, NB, dtype=torch.bool)
    mask_valid = torch.zeros(bsz, M, dtype=torch.bool)
    for b, (plist, (h, w)) in enumerate(zip(prompts, source_hw, strict=True)):
        scale = np.asarray([w, h], dtype=np.float64)
        n_pt = n_ln = n_bx = n_mk = 0
        for p in plist:
            if not isinstance(p, VisualPrompt):
                raise PixelVLAInputError(f"expected VisualPrompt, got {type(p).__name__}")
            p.check_inside(h, w)
            if p.kind == POINT:
                n = p.points.shape[0]
                if n_pt + n > P:
                    raise PixelVLAInputError(f"at most {P} points per example, got {n_pt + n}")
                point_xy[b, n_pt : n_pt + n] = torch.from_numpy(to_unit_square(p.points, scale)).float()
                point_label[b, n_pt : n_pt + n] = torch.from_numpy(p.labels)
                point_valid[b, n_pt : n_pt + n] = True
                n_pt += n
            elif p.kind == LINE:
                if n_ln >= L:
                    raise PixelVLAInputError(f"at most {L} line prompts per example, got more")
                line_xy[b, n_ln] = torch.from_numpy(
                    to_unit_square(resample_polyline(p.points, K), scale)
                ).float()
                line_label[b, n_ln], line_valid[b, n_ln] = int(p.labels[0]), True
                n_ln += 1
            elif p.kind == BOX:
                if n_bx >= NB:
                    raise PixelVLAInputError(f"at most {NB} box prompts per example, got more")
                box_xy[b, n_bx] = torch.from_numpy(to_unit_square(p.points, scale)).float()
                box_label[b, n_bx], box_valid[b, n_bx] = int(p.labels[0]), True
                n_bx += 1
            else:
                if n_mk >= M:
                    raise PixelVLAInputError(f"at most {M} mask prompts per example, got more")
                mask[b, n_mk] = resize_mask(p.mask, model_hw)
                mask_label[b, n_mk], mask_valid[b, n_mk] = int(p.labels[0]), True
                n_mk += 1
    return PromptTensors(
        point_xy,
        point_label,
        point_valid,
        line_xy,
        line_label,
        line_valid,
        box_xy,
        box_label,
        box_valid,
        mask,
        mask_label,
        mask_valid,
    )


def describe_prompts(prompts: Sequence[VisualPrompt]) -> list[str]:
    """Short phrases naming the prompts present, for the text template ("the points", "the box", ...)."""
    names = {POINT: "the points", LINE: "the line", BOX: "the box", MASK: "the mask"}
    return [names[k] for k in PROMPT_KINDS if any(p.kind == k for p in prompts)]
