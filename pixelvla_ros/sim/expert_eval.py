"""Measure the scripted experts' success rate per task family over seeded episodes.

    python -m pixelvla_ros.sim.expert_eval --episodes 100 [--split eval] [--task all]

Episode i of a family uses seed episode_seed(split, i). Prints per-family rates and the failures' reasons;
exits non-zero if a family is below --min-rate (default 0.98).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

from tqdm import tqdm  # noqa: E402

from pixelvla_ros.sim.env import TabletopEnv  # noqa: E402
from pixelvla_ros.sim.expert import run_episode  # noqa: E402
from pixelvla_ros.sim.seeds import SPLITS, episode_seed  # noqa: E402
from pixelvla_ros.sim.tasks import FAMILIES, TaskConfig  # noqa: E402


def evaluate(family: str, episodes: int, split: str = "eval", start: int = 0, image_size: int = 64) -> dict:
    env = TabletopEnv(
        TaskConfig(family=family, image_sizes=(image_size,)), seed=episode_seed(split, start), split=split
    )
    ok, steps, failures = 0, 0, []
    for i in tqdm(range(start, start + episodes), desc=family, unit="ep", leave=False):
        seed = episode_seed(split, i)
        success, n, why = run_episode(env, seed)
        ok += success
        steps += n
        if not success:
            failures.append((seed, why, env.task.instruction))
    env.close()
    return {
        "family": family,
        "episodes": episodes,
        "successes": ok,
        "rate": ok / episodes,
        "mean_steps": steps / episodes,
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=100, help="episodes per family")
    ap.add_argument("--split", choices=SPLITS, default="eval")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--task", choices=(*FAMILIES, "all"), default="all")
    ap.add_argument("--min-rate", type=float, default=0.98)
    args = ap.parse_args(argv)
    fams = FAMILIES if args.task == "all" else (args.task,)
    worst = 1.0
    for fam in fams:
        t0 = time.time()
        r = evaluate(fam, args.episodes, args.split, args.start)
        worst = min(worst, r["rate"])
        print(
            f"{fam:16s} {r['successes']}/{r['episodes']} = {100 * r['rate']:.1f}%  "
            f"mean steps {r['mean_steps']:.1f}  ({time.time() - t0:.0f} s, {args.split} seeds)"
        )
        for seed, why, instr in r["failures"]:
            print(f"    FAIL seed {seed}: {why} ('{instr}')")
    return 0 if worst >= args.min_rate else 1


if __name__ == "__main__":
    raise SystemExit(main())
