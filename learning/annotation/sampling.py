"""Prompt sampling from a mask (points, scribble lines, box, mask) and the paper's text template.

Pixel convention: x = column, y = row, integer coordinates are pixel centres (OpenCV /
sensor_msgs/CameraInfo); a point is inside an image of width W when -0.5 <= x <= W - 0.5. Points and line
vertices are pixel centres of mask pixels (positives) or of pixels near but outside the mask (negatives);
the box is the pixel-edge box around the mask's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pixelvla_ros.prompts import VisualPrompt, describe_prompts

from .stages import box_of_mask

TEMPLATE = "What should the robot do to {task}, refer to the {phrase} marked by {prompts}?"


@dataclass
class SamplingConfig:
    n_positive: int = 2
    n_negative: int = 1
    negative_ring_px: int = 6  # negatives are drawn from pixels within this distance outside the mask
    line_vertices: int = 3


def _erode_keep(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask
    e = cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)
    return e if e.sum() >= 3 else mask


def sample_points(mask: np.ndarray, rng: np.random.Generator, cfg: SamplingConfig) -> list[VisualPrompt]:
    inner = _erode_keep(mask, 1)
    ys, xs = np.nonzero(inner)
    pick = rng.choice(len(xs), size=min(cfg.n_positive, len(xs)), replace=False)
    pts = [[float(xs[i]), float(ys[i])] for i in pick]
    labels = [1] * len(pts)
    if cfg.n_negative > 0:
        k = 2 * cfg.negative_ring_px + 1
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool) & ~mask
        ring &= ~cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # not on the edge
        ny, nx = np.nonzero(ring)
        if len(nx):
            for i in rng.choice(len(nx), size=min(cfg.n_negative, len(nx)), replace=False):
                pts.append([float(nx[i]), float(ny[i])])
                labels.append(0)
    return [VisualPrompt.point(pts, labels)]


def sample_line(mask: np.ndarray, rng: np.random.Generator, cfg: SamplingConfig) -> VisualPrompt | None:
    """A scribble inside the mask: vertices at increasing positions along the mask's principal axis."""
    inner = _erode_keep(mask, 1)
    ys, xs = np.nonzero(inner)
    if len(xs) < 2:
        return None
    xy = np.stack([xs, ys], 1).astype(float)
    c = xy.mean(0)
    _, _, vt = np.linalg.svd(xy - c, full_matrices=False)
    t = (xy - c) @ vt[0]
    qs = np.sort(rng.uniform(0.1, 0.9, size=cfg.line_vertices))
    verts = []
    for q in qs:
        target = np.quantile(t, q)
        # the nearest pixels at least: a mask in two parts leaves quantiles in the gap between them
        distance = np.abs(t - target)
        near = np.flatnonzero(distance <= max(1.0, 0.05 * np.ptp(t), distance.min()))
        verts.append(xy[rng.choice(near)])
    verts = np.asarray(verts)
    # keep the scribble inside the mask: drop vertices whose segment leaves it
    kept = [verts[0]]
    for v in verts[1:]:
        seg = np.linspace(kept[-1], v, 16).round().astype(int)
        if np.all(mask[seg[:, 1], seg[:, 0]]) and np.any(v != kept[-1]):
            kept.append(v)
    if len(kept) < 2:
        a, b = xy[np.argmin(t)], xy[np.argmax(t)]
        seg = np.linspace(a, b, 16).round().astype(int)
        if not np.all(mask[seg[:, 1], seg[:, 0]]) or np.all(a == b):
            return None
        kept = [a, b]
    return VisualPrompt.line(np.asarray(kept))


def sample_prompts(
    mask: np.ndarray, rng: np.random.Generator, cfg: SamplingConfig | None = None
) -> list[VisualPrompt]:
    """Points (positive inside, negative just outside), a scribble line, the box and the mask itself."""
    cfg = cfg or SamplingConfig()
    prompts = sample_points(mask, rng, cfg)
    line = sample_line(mask, rng, cfg)
    if line is not None:
        prompts.append(line)
    x0, y0, x1, y1 = box_of_mask(mask)
    prompts.append(VisualPrompt.box(x0, y0, x1, y1))
    prompts.append(VisualPrompt.from_mask(mask))
    return prompts


def build_text(task: str, phrase: str, prompts: list[VisualPrompt]) -> str:
    """The paper's template: "What should the robot do to {task}, refer to {annotations} {visual prompts}"."""
    names = describe_prompts(prompts)
    if not names:
        return f"What should the robot do to {task.strip().rstrip('.')}?"
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return TEMPLATE.format(task=task.strip().rstrip("."), phrase=phrase, prompts=joined)


def prompts_to_json(prompts: list[VisualPrompt]) -> list[dict]:
    return [
        {
            "kind": p.kind,
            "points": None if p.points is None else p.points.tolist(),
            "labels": p.labels.tolist(),
        }
        for p in prompts
    ]


def prompts_from_json(items: list[dict], mask: np.ndarray | None = None) -> list[VisualPrompt]:
    out = []
    for it in items:
        if it["kind"] == "mask":
            if mask is not None:
                out.append(VisualPrompt.from_mask(mask, int(it["labels"][0])))
        else:
            out.append(
                VisualPrompt(it["kind"], points=np.asarray(it["points"]), labels=np.asarray(it["labels"]))
            )
    return out
