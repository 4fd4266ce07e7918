"""Training loss curves from metrics.jsonl files: the train command draws its own run's (OUTPUT/loss.png);
`python -m pixelvla_ros.learning.training.loss_plot --run LABEL=RUN_DIR ... --out loss.png` draws several
(e.g. a fine-tuning stage after its initial run, or a model beside its baseline)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_losses(run_dir: Path) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            steps.append(int(record["step"]))
            losses.append(float(record["loss"]))
    return steps, losses


def plot_loss(
    runs: dict[str, Path], out: Path, title: str = "training loss (L1, normalized actions)"
) -> Path:
    """One curve per run (raw, and a 50-record moving average on top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, run_dir in runs.items():
        steps, losses = read_losses(run_dir)
        if not steps:
            continue
        (line,) = ax.plot(steps, losses, alpha=0.25, linewidth=0.8)
        k = min(50, len(losses))
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color=line.get_color(), label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=RUN_DIR")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    runs = {}
    for item in args.run:
        label, _, path = item.partition("=")
        if not path or not (Path(path) / "metrics.jsonl").is_file():
            parser.error(f"--run {item}: expected LABEL=RUN_DIR with RUN_DIR/metrics.jsonl")
        runs[label] = Path(path)
    print(plot_loss(runs, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
