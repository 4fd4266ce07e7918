"""Colour segmentation without weights: the region an object covers around a seed pixel.

`ColourRegionSegmenter.segment(image, region, seed, phrase)` grows a region of colour inside the box
`region` (pixel-edge coordinates), starting from the connected component nearest `seed`. The colour comes
from a colour word in `phrase` (HSV ranges) or, without one, from that component's own hue; pixels of the
table colour (estimated on the region's border ring) are excluded. It returns the (H, W) bool mask, a score
in [0, 1] that falls with the mask's distance from the seed, and details for logs.

Used by the annotation pipeline (learning/annotation) and by prompt_node's click_to_mask.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

COLOUR_WORDS = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "violet",
    "pink",
    "white",
    "black",
    "grey",
    "gray",
    "brown",
    "cyan",
)


def colour_of(phrase: str) -> str | None:
    """The first colour word of the phrase, spelled as in colour_match ("violet" -> "purple"), or None."""
    for w in phrase.split():
        if w in COLOUR_WORDS:
            return {"violet": "purple", "gray": "grey"}.get(w, w)
    return None


# HSV ranges (OpenCV: H in [0, 180), S, V in [0, 255]) of colour words; chromatic colours need S >= 90.
_HUE = {
    "red": [(0, 7), (170, 180)],
    "orange": [(8, 19)],
    "yellow": [(20, 34)],
    "green": [(35, 85)],
    "cyan": [(86, 99)],
    "blue": [(100, 129)],
    "purple": [(130, 165)],
    "pink": [(150, 172)],
    "brown": [(5, 20)],
}


def colour_match(hsv: np.ndarray, colour: str) -> np.ndarray:
    """(H, W) bool: the pixels of an OpenCV HSV image (H, W, 3) that have the named colour."""
    h, s, v = hsv[..., 0], hsv[..., 1].astype(np.int32), hsv[..., 2].astype(np.int32)
    if colour == "white":
        return (s <= 25) & (v >= 40)
    if colour == "black":
        return v < 60
    if colour == "grey":
        return (s <= 30) & (v >= 40) & (v < 200)
    ok = np.zeros(h.shape, bool)
    for lo, hi in _HUE[colour]:
        ok |= (h >= lo) & (h <= hi)
    if colour == "pink":
        return ok & (s >= 40) & (s < 200) & (v >= 120)
    if colour == "brown":
        return ok & (s >= 90) & (v < 150)
    return ok & (s >= 90) & (v >= 30)


def _fill_holes(m: np.ndarray) -> np.ndarray:
    m8 = m.astype(np.uint8)
    ff = np.pad(m8, 1)
    cv2.floodFill(ff, None, (0, 0), 1)
    return m | (ff[1:-1, 1:-1] == 0)


def box_slices(box: np.ndarray, w: int, h: int) -> tuple[slice, slice]:
    """(rows, columns) of the pixels whose centres lie in the pixel-edge box [x0, y0, x1, y1], clipped to a
    w x h image."""
    x0, y0 = int(np.floor(box[0] + 0.5)), int(np.floor(box[1] + 0.5))
    x1, y1 = int(np.ceil(box[2] - 0.5)), int(np.ceil(box[3] - 0.5))
    return slice(max(y0, 0), min(y1 + 1, h)), slice(max(x0, 0), min(x1 + 1, w))


class ColourRegionSegmenter:
    """Embedded default segmenter (no weights): colour region growing seeded by the region and the phrase."""

    name = "colour_region_growing"

    def __init__(self, table_delta: float = 18.0, hue_tolerance: int = 8) -> None:
        self.table_delta, self.hue_tolerance = table_delta, hue_tolerance

    def segment(
        self, image: np.ndarray, region: np.ndarray, seed: tuple[float, float] | None, phrase: str
    ) -> tuple[np.ndarray, float, dict[str, Any]]:
        """(H, W) bool mask of the object at `seed` (pixel x, y; None: the region's centre) inside `region`
        of the RGB image, its score in [0, 1], and details; an empty mask with score 0 when none is found."""
        H, W = image.shape[:2]
        ys, xs = box_slices(np.asarray(region), W, H)
        crop = image[ys, xs]
        h, w = crop.shape[:2]
        hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
        lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
        ring = np.zeros((h, w), bool)
        bw = max(1, min(h, w) // 8)
        ring[:bw], ring[-bw:], ring[:, :bw], ring[:, -bw:] = True, True, True, True
        table = np.median(lab[ring], axis=0)
        spread = np.median(np.linalg.norm(lab[ring] - table, axis=1))
        not_table = np.linalg.norm(lab - table, axis=2) > max(self.table_delta, 2.5 * spread)
        colour = colour_of(phrase)
        cand = not_table & colour_match(hsv, colour) if colour else not_table
        if seed is None:
            sx, sy = (w - 1) / 2, (h - 1) / 2
        else:
            sx, sy = seed[0] - xs.start, seed[1] - ys.start
        info: dict[str, Any] = {"colour": colour, "table_lab": table.round(1).tolist()}
        n, lbl, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=8)
        if n <= 1:
            return np.zeros((H, W), bool), 0.0, info
        yy, xx = np.mgrid[:h, :w]
        dist = np.sqrt((xx - sx) ** 2 + (yy - sy) ** 2)
        best, best_key = 0, None
        min_px = max(4, int(0.002 * h * w))
        for k in range(1, n):
            if stats[k, cv2.CC_STAT_AREA] < min_px:
                continue
            d = float(dist[lbl == k].min())
            key = (round(d / 2), -stats[k, cv2.CC_STAT_AREA])  # nearest to the seed, then largest
            if best_key is None or key < best_key:
                best, best_key = k, key
        if best == 0:
            return np.zeros((H, W), bool), 0.0, info
        comp = lbl == best
        if colour is None:  # grow with the component's own hue (no colour word in the phrase)
            hs = hsv[comp]
            if np.median(hs[:, 1]) >= 90:
                hue = int(np.median(hs[:, 0]))
                dh = np.abs(hsv[..., 0].astype(int) - hue)
                dh = np.minimum(dh, 180 - dh)
                grow = (dh <= self.hue_tolerance) & (hsv[..., 1] >= 90) & not_table
                n2, lbl2 = cv2.connectedComponents(grow.astype(np.uint8), connectivity=8)
                keep = np.unique(lbl2[comp & grow])
                keep = keep[keep > 0]
                if len(keep):
                    comp = np.isin(lbl2, keep)
        comp = cv2.morphologyEx(comp.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(
            bool
        )
        comp = _fill_holes(comp)
        d = float(dist[comp].min()) if comp.any() else 1e9
        score = float(np.exp(-d / max(4.0, 0.15 * max(h, w))))
        info["seed_distance_px"] = round(d, 2)
        mask = np.zeros((H, W), bool)
        mask[ys, xs] = comp
        return mask, score, info
