"""Command line of the Pixel-160K annotation tooling.

    python -m pixelvla_ros.learning.annotation annotate --input DIR --input-format sim|lerobot|rosbag2 \
        --out DIR
        [--shard i/N] [--config file.yaml] [--limit K] [--no-progress]
    python -m pixelvla_ros.learning.annotation report --out DIR   (rebuild report.json + contact sheet)
    python -m pixelvla_ros.learning.annotation evaluate --demos DIR --annotations DIR   (sim ground truth)

`annotate` is resumable (rerun the same command: finished episodes are kept and skipped) and shardable
(--shard i/N processes the episodes with crc32(id) % N == i; several processes may share one --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _shard(s: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in s.split("/"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"shard must be i/N, got {s!r}") from e
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard must be i/N with 0 <= i < N, got {s!r}")
    return i, n


def main(argv: list[str] | None = None) -> int:
    from ..datasets import INPUT_FORMATS, open_source
    from .config import AnnotationConfig
    from .evaluate import evaluate, print_evaluation
    from .pipeline import run_annotation
    from .report import build_report, print_report, write_contact_sheet

    ap = argparse.ArgumentParser(
        prog="annotate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("annotate", help="annotate episodes into tar shards")
    a.add_argument("--input", type=Path, required=True)
    a.add_argument("--input-format", choices=INPUT_FORMATS, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--shard", type=_shard, default=(0, 1))
    a.add_argument(
        "--config", type=Path, help="YAML/JSON AnnotationConfig (thresholds, model paths, reader options)"
    )
    a.add_argument("--limit", type=int, help="annotate at most this many pending episodes")
    a.add_argument("--no-progress", action="store_true")
    r = sub.add_parser("report", help="rebuild report.json and the contact sheet of an output folder")
    r.add_argument("--out", type=Path, required=True)
    e = sub.add_parser("evaluate", help="IoU / right-object rate against simulator ground truth")
    e.add_argument("--demos", type=Path, required=True)
    e.add_argument("--annotations", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "annotate":
        try:
            cfg = AnnotationConfig.from_file(args.config) if args.config else AnnotationConfig()
            source = open_source(args.input, args.input_format, cfg.input_options)
        except (OSError, ValueError, TypeError) as err:
            print(f"annotate: {err}", file=sys.stderr)
            return 2
        rep = run_annotation(
            source,
            args.out,
            cfg,
            shard=args.shard,
            progress=not args.no_progress,
            limit=args.limit,
            input_path=str(args.input),
            argv=["annotate", *(argv if argv is not None else sys.argv[1:])],
        )
        print_report(rep)
        print(f"wrote {args.out}/report.json, provenance.json, contact_sheet.png, shards/")
        return 0
    if args.cmd == "report":
        rep = build_report(args.out)
        write_contact_sheet(args.out)
        print_report(rep)
        return 0
    res = evaluate(args.demos, args.annotations)
    print_evaluation(res)
    print(json.dumps({k: res[k] for k in ("mean_iou", "right_object_rate", "filtered_fraction")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
