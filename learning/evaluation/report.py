"""Evaluation statistics and artifacts: Wilson intervals, per-cell summaries, the bar chart, prompt overlays.

Kept free of the simulator so it can be reused for results gathered elsewhere (e.g. on a real robot).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pixelvla_ros.prompts import BOX, LINE, MASK, POINT, VisualPrompt

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (0, 1) for n = 0."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    if successes == 0:
        lo = 0.0
    if successes == n:
        hi = 1.0
    return lo, hi


def config_hash(record: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's model + preprocessing config (canonical JSON): same hash, same contract."""
    blob = json.dumps(
        {"model": record.get("model"), "preprocessing": record.get("preprocessing")},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def summarize(
    episodes: Sequence[dict[str, Any]], families: Sequence[str], modes: Sequence[str]
) -> list[dict]:
    """Per family x mode: episodes, successes, rate, 95% Wilson interval, mean steps, invalid chunks."""
    cells = []
    for fam in families:
        for mode in modes:
            eps = [e for e in episodes if e["family"] == fam and e["mode"] == mode]
            n, k = len(eps), sum(bool(e["success"]) for e in eps)
            lo, hi = wilson_interval(k, n)
            cells.append(
                {
                    "family": fam,
                    "mode": mode,
                    "episodes": n,
                    "successes": k,
                    "rate": k / n if n else None,
                    "ci95": [lo, hi],
                    "mean_steps": float(np.mean([e["steps"] for e in eps])) if eps else None,
                    "invalid_chunks": int(sum(e["invalid_chunks"] for e in eps)),
                }
            )
    return cells


def plot_success(cells: Sequence[dict], path: Path, title: str) -> Path:
    """Grouped bar chart: one group per family, one bar per mode, error bars = 95% Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(c["family"] for c in cells))
    modes = list(dict.fromkeys(c["mode"] for c in cells))
    width = 0.8 / max(len(modes), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(families) * max(1, len(modes)) ** 0.5 + 2), 3.6))
    x = np.arange(len(families))
    for j, mode in enumerate(modes):
        rows = [next(c for c in cells if c["family"] == f and c["mode"] == mode) for f in families]
        rate = np.array([c["rate"] or 0.0 for c in rows])
        lo = np.array([c["ci95"][0] for c in rows])
        hi = np.array([c["ci95"][1] for c in rows])
        err = np.stack([np.clip(rate - lo, 0, None), np.clip(hi - rate, 0, None)])
        ax.bar(x + (j - (len(modes) - 1) / 2) * width, rate, width, yerr=err, capsize=3, label=mode)
    ax.set_xticks(x, families)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="mode", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- overlays
_PROMPT_RGB = {POINT: (255, 0, 255), LINE: (255, 255, 0), BOX: (0, 255, 0), MASK: (0, 200, 255)}
OBJECT_MASK_RGB = (0, 255, 255)


def draw_inputs(
    image: np.ndarray,
    prompts: Sequence[VisualPrompt],
    object_mask: np.ndarray | None,
    scale: int = 1,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H*scale, W*scale, 3) with the prompts and the object mask drawn.

    Colours (RGB): point magenta (negative: red cross), line yellow, box green, mask prompt light-blue
    fill, object mask (pixel-aware encoder input) cyan contour.
    Pixel-centre coordinates scale as (p + .5) * s - .5.
    """
    img = np.ascontiguousarray(image)
    if scale != 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    img = img.copy()

    def px(p: np.ndarray) -> tuple[int, int]:
        q = (np.asarray(p, dtype=np.float64) + 0.5) * scale - 0.5
        return int(round(q[0])), int(round(q[1]))

    def up(mask: np.ndarray) -> np.ndarray:
        m = mask.astype(np.uint8)
        return cv2.resize(m, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale != 1 else m

    if object_mask is not None:
        contours, _ = cv2.findContours(up(object_mask), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, OBJECT_MASK_RGB, 1)
    for p in prompts:
        colour = _PROMPT_RGB[p.kind]
        if p.kind == MASK:
            m = up(p.mask).astype(bool)
            img[m] = (0.55 * img[m] + 0.45 * np.asarray(colour)).astype(np.uint8)
        elif p.kind == BOX:
            cv2.rectangle(img, px(p.points[0]), px(p.points[1]), colour, 1)
        elif p.kind == LINE:
            pts = np.array([px(q) for q in p.points], dtype=np.int32)
            cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
        else:
            for q, lab in zip(p.points, p.labels, strict=True):
                if lab:
                    cv2.circle(img, px(q), max(2, scale + 1), colour, -1, cv2.LINE_AA)
                else:
                    cv2.drawMarker(img, px(q), (255, 0, 0), cv2.MARKER_TILTED_CROSS, 3 * scale, 1)
    return img


def caption(frame: np.ndarray, lines: Sequence[str], height: int = 30) -> np.ndarray:
    """Frame with a white caption band below it (up to two lines of text)."""
    band = np.full((height, frame.shape[1], 3), 255, np.uint8)
    for k, text in enumerate(lines[:2]):
        cv2.putText(band, text, (3, 12 + 13 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.34, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([frame, band], axis=0)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return path
