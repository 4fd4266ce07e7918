"""Viewer-free visual check: render one expert episode to a GIF and a contact-sheet PNG.

    python -m pixelvla_ros.sim.render --task pick_named --seed 0 --out /tmp/sim_check [--size 224]

The contact sheet shows evenly spaced frames (scene camera, plus the wrist camera if --wrist), with the
target's projected centre (camera.py) and its segmentation box drawn on the first frame.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import cv2  # noqa: E402
import imageio.v2 as imageio  # noqa: E402
import numpy as np  # noqa: E402

from pixelvla_ros.sim.env import TabletopEnv  # noqa: E402
from pixelvla_ros.sim.expert import ScriptedExpert  # noqa: E402
from pixelvla_ros.sim.tasks import FAMILIES, TaskConfig  # noqa: E402


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def render_episode(
    task: str, seed: int, out: Path, size: int = 224, wrist: bool = False, columns: int = 6
) -> dict:
    cams = ("scene", "wrist") if wrist else ("scene",)
    env = TabletopEnv(TaskConfig(family=task, image_sizes=(size,), cameras=cams), seed=seed)
    obs = env.reset()
    expert = ScriptedExpert(env)
    first = obs.images[f"scene_{size}"].copy()
    for name in env.task.prompted or (env.task.target,):
        p = env.prompt(name, "scene", size)
        if p["box"]:
            u0, v0, u1, v1 = p["box"]
            cv2.rectangle(first, (u0, v0), (u1, v1), (0, 255, 0), 1)
        u, v = (int(round(c)) for c in p["point"])
        cv2.circle(first, (u, v), 3, (255, 0, 255), -1)
    frames = [np.concatenate([obs.images[f"{c}_{size}"] for c in cams], axis=1)]
    labels = ["step 0 (prompt drawn)"]
    firsts = [np.concatenate([first] + [obs.images[f"{c}_{size}"] for c in cams[1:]], axis=1)]
    res = None
    for _ in range(env.config.max_steps):
        res = env.step(expert.act(obs))
        obs = res.observation
        frames.append(np.concatenate([obs.images[f"{c}_{size}"] for c in cams], axis=1))
        labels.append(f"step {env.steps} {expert.phase}{' SUCCESS' if res.success else ''}")
        if res.done:
            break
    for _ in range(5):  # hold the last frame in the GIF
        frames.append(frames[-1])
    out.mkdir(parents=True, exist_ok=True)
    gif = out / f"{task}_seed{seed}.gif"
    imageio.mimsave(gif, frames, duration=0.1, loop=0)
    n = len(labels)
    pick = sorted(set(np.linspace(0, n - 1, min(n, 2 * columns)).round().astype(int).tolist()))
    tiles = [_label(firsts[0] if i == 0 else frames[i], labels[i]) for i in pick]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r : r + columns], axis=1) for r in range(0, len(tiles), columns)]
    sheet = np.concatenate(rows, axis=0)
    header = np.full((24, sheet.shape[1], 3), 255, np.uint8)
    text = f"{task} seed {seed}: '{env.task.instruction}' -> {'success' if res and res.success else 'FAIL'}"
    cv2.putText(header, text, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    png = out / f"{task}_seed{seed}.png"
    imageio.imwrite(png, np.concatenate([header, sheet], axis=0))
    env.close()
    return {"gif": str(gif), "png": str(png), "success": bool(res and res.success), "steps": env.steps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=FAMILIES, default="pick_named")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--wrist", action="store_true", help="add the wrist camera beside the scene camera")
    args = ap.parse_args(argv)
    r = render_episode(args.task, args.seed, args.out, args.size, args.wrist)
    print(f"{'success' if r['success'] else 'FAIL'} in {r['steps']} steps; wrote {r['gif']} and {r['png']}")
    return 0 if r["success"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
