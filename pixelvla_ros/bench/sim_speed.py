"""Simulator speed benchmark: physics steps/s, rendered control steps/s, demonstrations/minute.

    python -m pixelvla_ros.bench.sim_speed [--steps 300] [--demos 12]

Control steps are full TabletopEnv.step calls driven by the scripted expert (IK + 50 physics substeps +
rendering the scene camera at the given size + success check). Target: >= 30 rendered control steps/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from pixelvla_ros.sim.env import TabletopEnv  # noqa: E402
from pixelvla_ros.sim.expert import ScriptedExpert  # noqa: E402
from pixelvla_ros.sim.record import record_episode  # noqa: E402
from pixelvla_ros.sim.seeds import episode_seed  # noqa: E402
from pixelvla_ros.sim.tasks import FAMILIES, TaskConfig  # noqa: E402


def physics_steps_per_s(n: int = 20000) -> float:
    env = TabletopEnv(TaskConfig(family="pick_named", n_objects=(4, 4)), seed=0)
    env.reset()
    m, d = env.model, env.data
    t = time.perf_counter()
    mujoco.mj_step(m, d, nstep=n)
    rate = n / (time.perf_counter() - t)
    env.close()
    return rate


def control_step_times(size: int, steps: int) -> np.ndarray:
    env = TabletopEnv(TaskConfig(family="pick_named", image_sizes=(size,)), seed=0)
    times: list[float] = []
    seed = 0
    while len(times) < steps:
        obs = env.reset(seed)
        expert = ScriptedExpert(env)
        for _ in range(env.config.max_steps):
            a = expert.act(obs)
            t = time.perf_counter()
            res = env.step(a)
            times.append(time.perf_counter() - t)
            obs = res.observation
            if res.done or len(times) >= steps:
                break
        seed += 1
    env.close()
    return np.array(times)


def demos_per_minute(n: int, sizes: tuple[int, ...]) -> tuple[float, float]:
    envs = {f: TabletopEnv(TaskConfig(family=f, image_sizes=sizes), seed=0) for f in FAMILIES}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        steps = 0
        for i in range(n):
            meta = record_episode(
                envs[FAMILIES[i % 3]], "train", i, episode_seed("train", i), Path(tmp), True
            )
            steps += meta["num_steps"]
        dt = time.perf_counter() - t
    for e in envs.values():
        e.close()
    return 60.0 * n / dt, steps / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="control steps timed per image size")
    ap.add_argument("--demos", type=int, default=12, help="demonstrations recorded for the demos/min figure")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 96])
    args = ap.parse_args(argv)
    print(f"cpu cores visible: {os.cpu_count()}, MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
    print(f"physics: {physics_steps_per_s():,.0f} steps/s (dt 2 ms; 50 substeps per 10 Hz control step)")
    for size in args.sizes:
        t = control_step_times(size, args.steps)
        print(
            f"control step with {size}x{size} render: {1.0 / t.mean():6.1f} steps/s  "
            f"median {1e3 * np.median(t):5.1f} ms  p99 {1e3 * np.percentile(t, 99):5.1f} ms  (n={len(t)})"
        )
    rate, mean_steps = demos_per_minute(args.demos, (96, 224))
    print(
        f"recording (96 + 224 images, compressed npz): {rate:.1f} demonstrations/min, "
        f"{mean_steps:.1f} steps/demo"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
