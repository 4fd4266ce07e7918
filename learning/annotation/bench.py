"""Benchmark of the embedded-default annotation pipeline: per-stage median / p99, episodes/min, frames/s.

    python -m pixelvla_ros.learning.annotation.bench [--demos DIR] [--episodes 12] [--repeat 3] [--threads 2]

Without --demos it records ``--episodes`` simulator demos (96 and 224 px) to a temporary folder first. Each
repeat annotates every episode into a fresh output folder (load, stage A, phrase, segmentation, prompt
sampling and the atomic shard write included), so the figures are those of a real run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", type=Path)
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-key", default=None, help="sim stream, e.g. scene_224 (default: the largest)")
    args = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(args.threads)
    from ..datasets import SimDemoSource
    from .config import AnnotationConfig
    from .pipeline import STAGES, Annotator, read_journals, run_annotation

    with tempfile.TemporaryDirectory(prefix="pixelvla_annot_bench_") as tmp:
        demos = args.demos
        if demos is None:
            from pixelvla_ros.sim import record

            demos = Path(tmp) / "demos"
            record.main(["--out", str(demos), "--episodes", str(args.episodes)])
        src = SimDemoSource(demos, image_key=args.image_key)
        cfg = AnnotationConfig()
        ann = Annotator(cfg)
        recs, wall, n_eps, n_frames = [], 0.0, 0, 0
        for r in range(args.repeat):
            out = Path(tmp) / f"out{r}"
            t = time.perf_counter()
            rep = run_annotation(src, out, cfg, annotator=ann, progress=False, limit=args.episodes)
            wall += time.perf_counter() - t
            recs += list(read_journals(out).values())
            n_eps += rep["episodes"]
            n_frames += rep["annotated_frames"]
    print(
        f"embedded default, {args.threads} OpenCV threads, {n_eps} episode runs "
        f"({len(src.keys())} episodes x {args.repeat}), image stream {src.load(src.keys()[0]).image_key}"
    )
    print(f"{'stage':8s} {'median ms':>10s} {'p99 ms':>10s}")
    total = np.zeros(len(recs))
    for st in STAGES:
        v = np.array([r["timings"].get(st, 0.0) for r in recs])
        total += v
        print(f"{st:8s} {np.median(v) * 1e3:10.2f} {np.percentile(v, 99) * 1e3:10.2f}")
    print(f"{'episode':8s} {np.median(total) * 1e3:10.2f} {np.percentile(total, 99) * 1e3:10.2f}")
    print(
        f"throughput (wall clock, report + contact sheet included): {60 * n_eps / wall:.1f} episodes/min, "
        f"{n_frames / wall:.1f} annotated frames/s"
    )
    print(
        f"throughput (per-episode stages only): {60 * len(total) / total.sum():.1f} episodes/min, "
        f"{n_frames / total.sum():.1f} annotated frames/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
