"""Quality of annotations against the simulator's ground truth (masks.npz of the first frame).

Figures: mean mask IoU with the target's GT mask (over accepted episodes, and counting rejected ones as 0),
right-object rate (the predicted mask overlaps the target's GT mask more than any other entity's),
filtered fraction, and per-stage time (from the journals).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.sim import load_ground_truth
from .format import atomic_write_json, decode_rle, iter_samples
from .report import build_report


def evaluate(demos: str | Path, annotations: str | Path) -> dict[str, Any]:
    demos, annotations = Path(demos), Path(annotations)
    report = build_report(annotations)
    rows = []
    for members in iter_samples(annotations, decode=False):
        ann = json.loads(members["json"])
        ep_dir = demos / ann["episode_id"]
        if not (ep_dir / "masks.npz").exists():
            continue
        meta, gt = load_ground_truth(ep_dir, ann["image_key"])
        pred = decode_rle(ann["mask"])
        tid = meta["target"]["entity_id"]
        inter = (gt & pred[None]).reshape(len(gt), -1).sum(1)
        union = (gt[tid] | pred).sum()
        iou = float(inter[tid] / union) if union else 0.0
        right = bool(inter[tid] > 0 and inter[tid] == inter.max() and (inter == inter.max()).sum() == 1)
        rows.append(
            {
                "key": ann["key"],
                "family": meta["family"],
                "iou": iou,
                "right_object": right,
                "phrase": ann["phrase"],
                "instruction": ann["instruction"],
            }
        )
    n_total = report["episodes"]
    ious = np.array([r["iou"] for r in rows])
    fam: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        fam[r["family"]].append(r)
    result = {
        "episodes": n_total,
        "evaluated": len(rows),
        "mean_iou": float(ious.mean()) if len(rows) else None,
        "median_iou": float(np.median(ious)) if len(rows) else None,
        "mean_iou_rejected_as_zero": float(ious.sum() / n_total) if n_total else None,
        "right_object_rate": float(np.mean([r["right_object"] for r in rows])) if rows else None,
        "filtered_fraction": report["filtered_fraction"],
        "reasons": report["reasons"],
        "per_family": {
            f: {
                "n": len(v),
                "mean_iou": float(np.mean([r["iou"] for r in v])),
                "right_object_rate": float(np.mean([r["right_object"] for r in v])),
            }
            for f, v in sorted(fam.items())
        },
        "stage_times": report["stage_times"],
        "worst": sorted(rows, key=lambda r: r["iou"])[:5],
    }
    atomic_write_json(annotations / "evaluation.json", result)
    return result


def print_evaluation(r: dict[str, Any]) -> None:
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"evaluated {r['evaluated']} accepted of {r['episodes']} episodes")
    print(
        f"mean IoU {f(r['mean_iou'])} (median {f(r['median_iou'])}; rejected counted as 0: "
        f"{f(r['mean_iou_rejected_as_zero'])})"
    )
    print(
        f"right object {f(r['right_object_rate'])}   filtered fraction {r['filtered_fraction']:.1%}  "
        f"{r['reasons']}"
    )
    for fam, v in r["per_family"].items():
        print(
            f"  {fam:16s} n={v['n']:3d}  IoU {v['mean_iou']:.3f}  right object {v['right_object_rate']:.3f}"
        )
    for st, v in r["stage_times"].items():
        print(f"  {st:8s} median {v['median_ms']:8.2f} ms  p99 {v['p99_ms']:8.2f} ms")
