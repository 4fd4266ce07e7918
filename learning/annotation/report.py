"""Run report (JSON: accepted / rejected with reasons, filtered fraction, stage times), contact sheet."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .format import atomic_write_bytes, atomic_write_json, decode_rle, iter_samples
from .pipeline import STAGES, read_journals
from .sampling import prompts_from_json

PAPER_FILTERED_FRACTION = 0.192


def stage_stats(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for st in STAGES:
        v = np.array([r["timings"][st] for r in records if st in r.get("timings", {})])
        if len(v):
            out[st] = {
                "median_ms": float(np.median(v) * 1e3),
                "p99_ms": float(np.percentile(v, 99) * 1e3),
                "total_s": float(v.sum()),
                "n": int(len(v)),
            }
    return out


def build_report(out: str | Path) -> dict[str, Any]:
    out = Path(out)
    recs = list(read_journals(out).values())
    acc = [r for r in recs if r["accepted"]]
    rej = [r for r in recs if not r["accepted"]]
    total_time = sum(sum(r.get("timings", {}).values()) for r in recs)
    frames = sum(r.get("num_steps", 0) for r in acc)
    report = {
        "episodes": len(recs),
        "accepted": len(acc),
        "rejected": len(rej),
        "filtered_fraction": len(rej) / len(recs) if recs else 0.0,
        "paper_filtered_fraction": PAPER_FILTERED_FRACTION,
        "reasons": dict(Counter(r["reason"] for r in rej).most_common()),
        "rejected_episodes": [{"key": r["key"], "reason": r["reason"], "detail": r["detail"]} for r in rej],
        "annotated_frames": frames,
        "stage_times": stage_stats(recs),
        "episodes_per_min": 60 * len(recs) / total_time if total_time else None,
        "annotated_frames_per_s": frames / total_time if total_time else None,
    }
    atomic_write_json(out / "report.json", report)
    return report


def draw_annotation(frame: np.ndarray, ann: dict[str, Any], mask: np.ndarray, scale: int = 2) -> np.ndarray:
    """RGB tile: mask overlay, region (yellow), box (cyan), points (green +, red -), line (magenta)."""
    img = frame.astype(np.float32).copy()
    img[mask] = 0.5 * img[mask] + 0.5 * np.array([255, 0, 255])
    img = cv2.resize(img.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    img = np.ascontiguousarray(img)

    def P(x: float, y: float) -> tuple[int, int]:  # pixel-centre coords -> scaled pixel
        return int(round((x + 0.5) * scale - 0.5)), int(round((y + 0.5) * scale - 0.5))

    r = ann["region_box"]
    cv2.rectangle(img, P(r[0], r[1]), P(r[2], r[3]), (255, 220, 0), 1)
    for p in prompts_from_json(ann["prompts"]):
        if p.kind == "box":
            cv2.rectangle(img, P(*p.points[0]), P(*p.points[1]), (0, 255, 255), 1)
        elif p.kind == "line":
            cv2.polylines(img, [np.array([P(*q) for q in p.points], np.int32)], False, (255, 0, 200), 2)
        elif p.kind == "point":
            for q, lab in zip(p.points, p.labels, strict=True):
                cv2.circle(img, P(*q), 3, (0, 255, 0) if lab else (255, 0, 0), -1)
    if ann.get("tcp_uv"):
        cv2.drawMarker(img, P(*ann["tcp_uv"]), (255, 255, 255), cv2.MARKER_CROSS, 8, 1)
    band = np.zeros((28, img.shape[1], 3), np.uint8)
    cv2.putText(band, ann["phrase"][:40], (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
    cv2.putText(band, ann["key"][-28:], (3, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (180, 180, 180), 1)
    return np.concatenate([img, band], 0)


def write_contact_sheet(out: str | Path, max_n: int = 16, cols: int = 4) -> Path | None:
    out = Path(out)
    tiles = []
    for s in iter_samples(out, decode=True):
        ann = s["annotation"]
        tiles.append(
            draw_annotation(
                s["images"][0], ann, decode_rle(ann["mask"]), scale=max(1, 256 // s["images"].shape[2])
            )
        )
        if len(tiles) >= max_n:
            break
    if not tiles:
        return None
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, w - t.shape[1]), (0, 0))) for t in tiles]
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[k : k + cols], 1) for k in range(0, len(tiles), cols)]
    sheet = np.concatenate(rows, 0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    path = out / "contact_sheet.png"
    atomic_write_bytes(path, png.tobytes())
    return path


def print_report(report: dict[str, Any]) -> None:
    print(
        f"episodes {report['episodes']}: accepted {report['accepted']}, rejected {report['rejected']} "
        f"(filtered {report['filtered_fraction']:.1%}; the paper filtered {PAPER_FILTERED_FRACTION:.1%})"
    )
    for k, v in report["reasons"].items():
        print(f"  {k}: {v}")
    for st, v in report["stage_times"].items():
        print(f"  {st:8s} median {v['median_ms']:8.2f} ms  p99 {v['p99_ms']:8.2f} ms")
    if report.get("episodes_per_min"):
        print(
            f"  {report['episodes_per_min']:.1f} episodes/min, "
            f"{report['annotated_frames_per_s']:.1f} annotated frames/s"
        )
    print(json.dumps({"reasons": report["reasons"]}))
