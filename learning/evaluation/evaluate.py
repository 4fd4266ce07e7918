"""Closed-loop evaluation of a PixelVLA checkpoint in the simulator, on held-out (eval split) seeds.

    ros2 run pixelvla_ros evaluate --checkpoint runs/ckpt --episodes 50 --out runs/eval/ckpt
    python -m pixelvla_ros.learning.evaluation.evaluate --checkpoint runs/ckpt --families pick_prompted \
        --modes text text_point point --episodes 20
    ... --expert          # the scripted expert through the same loop: a sanity reference (~100%)

For every task family x prompt mode, episodes i = start .. start + N - 1 use seed episode_seed("eval", i)
(the same seeds for every family and mode, so modes are compared on the same scenes). Test-time prompts
come from the simulator's ground truth (evaluation only): the prompted entity's projected centre point,
its pixel-edge box from the segmentation, its mask; the object mask (pixel-aware encoder) is the
target's mask. They are computed on the initial frame and held for the episode (pixelvla.md default).
The prompted entity is the one the task needs marked (`TaskSpec.prompted`: the look-alike target of
pick_prompted, the look-alike tray of place_container) or else the target.

Actions go through Policy.predict_chunk (one preprocessing path, safety check) and the drivers' chunk
executor, chunk_timeline.ChunkTimeline: control step n is time n * dt, each chunk keeps control for
--execute-steps steps (default: the checkpoint's commit_steps, as the robot executes it), then a new one is
computed. A query without a valid chunk leaves the chunk in control running and is repeated next step; a step
that no chunk covers holds the arm (zero motion, gripper unchanged).

Each episode's record also holds its first grasp attempt (the step the gripper was first told to close,
the TCP minus the target there, how far the target had been pushed by then) and how far the target moved
in all: what a failure started with.

Writes into --out: report.json (layout in `build_report`), success.png (bar chart, error bars = 95%
Wilson CI), episodes.gif (a few episodes, prompt drawn, instruction as caption). Prints the table and
the episodes/min figure (the evaluation benchmark).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pixelvla_ros.action_space import ACTION_DIM, GRIPPER  # noqa: E402
from pixelvla_ros.camera import CameraModel  # noqa: E402
from pixelvla_ros.chunk_timeline import ChunkTimeline, TimedChunk  # noqa: E402
from pixelvla_ros.inference.engine import BACKENDS  # noqa: E402
from pixelvla_ros.model.pixelvla import DTYPE_CHOICES  # noqa: E402
from pixelvla_ros.policy import ActionChunkResult, Policy  # noqa: E402
from pixelvla_ros.preprocessing import STATE_PROPRIO_DIM, state_proprio  # noqa: E402
from pixelvla_ros.prompts import VisualPrompt  # noqa: E402
from pixelvla_ros.safety import SafetyLimits, UnsafeChunkError, check_chunk  # noqa: E402
from pixelvla_ros.sim.env import Observation, TabletopEnv  # noqa: E402
from pixelvla_ros.sim.seeds import episode_seed  # noqa: E402
from pixelvla_ros.sim.tasks import FAMILIES, TaskConfig  # noqa: E402

from .report import (  # noqa: E402
    caption,
    config_hash,
    draw_inputs,
    plot_success,
    summarize,
    wilson_interval,
    write_json,
)

SPLIT = "eval"  # evaluation always runs on held-out seeds
REPORT_FORMAT, REPORT_VERSION = "pixelvla_eval_report", 1


class EvaluationError(ValueError):
    """A bad evaluation argument or setting; the message says what was wrong and what is expected."""


@dataclass(frozen=True)
class PromptMode:
    """Which inputs the policy gets besides the image."""

    name: str
    text: bool  # the instruction
    point: bool = False  # the prompted entity's projected centre (VisualPrompt point)
    box: bool = False  # its pixel-edge box (VisualPrompt box)
    mask_prompt: bool = False  # its mask as a visual prompt (prompt encoder)
    object_mask: bool = False  # the target's mask as the object mask (pixel-aware encoder)


MODES: dict[str, PromptMode] = {
    m.name: m
    for m in (
        PromptMode("text", text=True),
        PromptMode("text_point", text=True, point=True),
        PromptMode("text_box", text=True, box=True),
        PromptMode("text_mask", text=True, object_mask=True),
        PromptMode("text_mask_prompt", text=True, mask_prompt=True),
        PromptMode("text_point_mask", text=True, point=True, object_mask=True),
        PromptMode("point", text=False, point=True),
        PromptMode("box", text=False, box=True),
        PromptMode("mask", text=False, object_mask=True),
        PromptMode("all", text=True, point=True, box=True, object_mask=True),
    )
}
DEFAULT_MODES = ("text", "text_point", "text_box", "text_mask", "point")


def proprio_vector(obs: Observation, dim: int) -> np.ndarray | None:
    """The model's proprio input from a simulator observation, in the one layout training uses
    (preprocessing.state_proprio: TCP position + gripper closure); dim 0 -> no proprio."""
    check_proprio_dim(dim)
    return None if dim == 0 else state_proprio(obs.ee_pos, obs.gripper).astype(np.float32)


def check_proprio_dim(dim: int) -> None:
    """Raise EvaluationError unless the model's proprio input is absent or preprocessing.state_proprio."""
    if dim not in (0, STATE_PROPRIO_DIM):
        raise EvaluationError(
            f"the model wants a ({dim},) proprio vector; the runtime builds preprocessing.state_proprio "
            f"({STATE_PROPRIO_DIM},: TCP position + gripper) or none"
        )


# ------------------------------------------------------------------------------------------ inputs
@dataclass
class EpisodeInputs:
    """What the policy is given for one episode (computed on the initial frame, held)."""

    instruction: str | None
    prompts: list[VisualPrompt]
    object_mask: np.ndarray | None  # (H, W) bool
    prompt_entity: str
    target: str
    camera: CameraModel  # the scene camera's calibration (fixed during an episode)


def ground_truth_inputs(env: TabletopEnv, mode: PromptMode, camera: str, size: int) -> EpisodeInputs:
    """Ground-truth prompts of the current (initial) frame for one mode. Raises EvaluationError if the
    entity a mode needs is not visible (the episode is then skipped as an input failure)."""
    task = env.task
    entity = task.prompted[0] if task.prompted else task.target
    seg = env.segmentation(camera, size)  # (S, S) entity index per pixel
    prompts: list[VisualPrompt] = []
    object_mask = None

    def mask_of(name: str) -> np.ndarray:
        m = seg == env.entities.index(name)
        if not m.any():
            raise EvaluationError(f"{name} is not visible in the {camera} camera: no mask / box / point")
        return m

    if mode.point:
        prompts.append(VisualPrompt.point([env.prompt_point(entity, camera, size)]))
    if mode.box:
        ys, xs = np.nonzero(mask_of(entity))
        prompts.append(VisualPrompt.box(xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5))
    if mode.mask_prompt:
        prompts.append(VisualPrompt.from_mask(mask_of(entity)))
    if mode.object_mask:
        object_mask = mask_of(task.target)
    return EpisodeInputs(
        task.instruction if mode.text else None,
        prompts,
        object_mask,
        entity,
        task.target,
        env.camera_info(camera, size),
    )


# ------------------------------------------------------------------------------------------ agents
class PolicyAgent:
    """The learned policy: one chunk per query from the held inputs and the current image."""

    def __init__(self, policy: Policy, calibrated: bool = True) -> None:
        """calibrated: hand the policy the scene camera's calibration (for the prompt anchor)."""
        self.policy, self.calibrated = policy, calibrated
        self.chunk_size = policy.chunk_size

    def reset(self, env: TabletopEnv) -> None:
        pass

    def query(self, obs: Observation, image: np.ndarray, inp: EpisodeInputs) -> ActionChunkResult:
        proprio = proprio_vector(obs, self.policy.proprio_dim)
        return self.policy.predict_chunk(
            image,
            inp.instruction,
            inp.prompts,
            inp.object_mask,
            proprio,
            inp.camera if self.calibrated else None,
        )


class ExpertAgent:
    """The scripted (privileged) expert as a policy of one-step chunks, checked like the model's."""

    chunk_size = 1

    def __init__(self, limits: SafetyLimits | None = None) -> None:
        self.limits = limits or SafetyLimits()

    def reset(self, env: TabletopEnv) -> None:
        from pixelvla_ros.sim.expert import ScriptedExpert

        self.expert = ScriptedExpert(env)

    def query(self, obs: Observation, image: np.ndarray, inp: EpisodeInputs) -> ActionChunkResult:
        t0 = time.perf_counter()
        a = self.expert.act(obs)[None]  # (1, 7)
        lat = time.perf_counter() - t0
        try:
            a = check_chunk(a, self.limits)
        except UnsafeChunkError as e:
            return ActionChunkResult(None, np.zeros(1), lat, lat, False, f"safety: {e}")
        return ActionChunkResult(a, np.zeros(1), lat, lat, True, "")


# ------------------------------------------------------------------------------------------ episodes
def run_episode(
    env: TabletopEnv,
    agent: PolicyAgent | ExpertAgent,
    timeline: ChunkTimeline,
    mode: PromptMode,
    seed: int,
    camera: str,
    size: int,
    frames: list[np.ndarray] | None = None,
    frame_stride: int = 1,
) -> dict[str, Any]:
    """One closed-loop episode; appends captioned frames with the inputs drawn when `frames` is given."""
    obs = env.reset(seed)
    key = f"{camera}_{size}"
    inp = ground_truth_inputs(env, mode, camera, size)
    agent.reset(env)
    timeline.clear()
    dt = env.config.action_space.dt  # control step t is time t * dt
    invalid, first_invalid, latencies, holds = 0, "", [], 0
    scale = max(1, round(288 / size))

    def grab(step: int, tag: str = "") -> None:
        if frames is not None and (step % frame_stride == 0 or tag):
            img = draw_inputs(obs.images[key], inp.prompts, inp.object_mask, scale)
            width = img.shape[1] // 6
            text = inp.instruction or "(no text: visual prompts only)"
            frames.append(
                caption(img, [f"{env.task.family} | {mode.name} | step {step}{tag}"[:width], text[:width]])
            )

    grab(0)
    res = None
    target_start = env.object_pose(inp.target)[:3, 3].copy()
    first_close = None  # where the gripper was first told to close: the grasp attempt a failure starts with
    for t in range(env.config.max_steps):
        now = t * dt
        if timeline.due(now):
            chunk = agent.query(obs, obs.images[key], inp)
            if chunk.valid:
                timeline.add(TimedChunk(now, dt, chunk.actions), now)
                latencies.append(chunk.latency_s)
            else:
                invalid += 1
                first_invalid = first_invalid or chunk.reason
        action = timeline.action_at(now)
        if action is None:  # no valid chunk covers this step: hold still, keep the gripper as it is
            holds += 1
            action = np.zeros(ACTION_DIM)
            action[GRIPPER] = obs.gripper_cmd
        if first_close is None and action[GRIPPER] > 0.5 >= obs.gripper_cmd:
            target = env.object_pose(inp.target)[:3, 3]
            first_close = {
                "step": t,
                "tcp_minus_target_m": np.round(env.tcp_pose()[:3, 3] - target, 4).tolist(),
                "target_moved_m": round(float(np.linalg.norm(target - target_start)), 4),
            }
        res = env.step(action)
        obs = res.observation
        if res.done:
            break
        grab(t + 1)
    success = bool(res is not None and res.success)
    grab(env.steps, " SUCCESS" if success else " FAIL")
    if frames is not None:
        frames.extend([frames[-1]] * 5)  # hold the outcome frame
    why = env.last_success.why
    if not success and res is not None and res.info.get("timeout"):
        why = f"timeout after {env.steps} steps: {why}"
    if invalid:
        why += f"; {invalid} invalid chunk(s), first: {first_invalid}"
    return {
        "family": env.task.family,
        "mode": mode.name,
        "seed": int(seed),
        "instruction": env.task.instruction,
        "text_given": inp.instruction is not None,
        "prompts": [p.kind for p in inp.prompts],
        "object_mask": inp.object_mask is not None,
        "prompt_entity": inp.prompt_entity,
        "target": inp.target,
        "success": success,
        "reason": why,
        "steps": int(env.steps),
        "queries": len(latencies) + invalid,
        "invalid_chunks": invalid,
        "first_invalid_reason": first_invalid,
        "hold_steps": holds,
        "mean_latency_s": float(np.mean(latencies)) if latencies else None,
        "first_close": first_close,  # None: the gripper was never closed
        "target_moved_m": round(float(np.linalg.norm(env.object_pose(inp.target)[:3, 3] - target_start)), 4),
    }


# ------------------------------------------------------------------------------------------ CLI
def _names(
    values: list[str] | None, known: tuple[str, ...], default: tuple[str, ...], what: str
) -> list[str]:
    if not values:
        return list(default)
    names = [v for item in values for v in item.replace(",", " ").split() if v]
    if names == ["all"]:
        return list(known)
    bad = [n for n in names if n not in known]
    if bad:
        raise EvaluationError(f"unknown {what} {bad}; known: {', '.join(known)} (or 'all')")
    if not names:
        raise EvaluationError(f"no {what} given")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", type=Path, help="checkpoint folder (pixelvla_checkpoint.json inside)")
    ap.add_argument(
        "--expert", action="store_true", help="run the scripted expert instead (sanity reference)"
    )
    ap.add_argument("--families", nargs="+", help=f"task families (default all): {', '.join(FAMILIES)}")
    ap.add_argument(
        "--modes", nargs="+", help=f"prompt modes (default {' '.join(DEFAULT_MODES)}): {', '.join(MODES)}"
    )
    ap.add_argument("--episodes", type=int, default=20, help="episodes per family x mode (default 20)")
    ap.add_argument("--start", type=int, default=0, help="first eval-split episode index (default 0)")
    ap.add_argument("--out", type=Path, help="output folder (default runs/eval/<UTC time>)")
    ap.add_argument("--image-size", type=int, default=96, help="rendered camera image size, px (default 96)")
    ap.add_argument("--camera", choices=("scene", "wrist"), default="scene")
    ap.add_argument("--max-steps", type=int, help="control steps per episode (default: the task's, 120)")
    ap.add_argument(
        "--execute-steps",
        type=int,
        help="steps a chunk runs before the next one (default: the checkpoint's commit_steps, as the robot)",
    )
    ap.add_argument(
        "--uncalibrated",
        action="store_true",
        help="give the policy no camera calibration (a checkpoint with the prompt anchor acts from pixels)",
    )
    ap.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    ap.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="auto",
        help="weights' dtype (default auto: bfloat16 on a GPU, float32 on the CPU)",
    )
    ap.add_argument(
        "--backend",
        choices=[b for b in BACKENDS if b != "remote"],
        default="eager",
        help="inference backend (pixelvla_ros/inference/engine.py; default eager)",
    )
    ap.add_argument("--gif-episodes", type=int, default=4, help="episodes shown in episodes.gif (0: none)")
    ap.add_argument("--gif-stride", type=int, default=2, help="keep every n-th frame in the GIF")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def validate(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    if args.expert and args.checkpoint:
        raise EvaluationError("give either --checkpoint or --expert, not both")
    if not args.expert and args.checkpoint is None:
        raise EvaluationError("give --checkpoint DIR (a PixelVLA checkpoint folder) or --expert")
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        raise EvaluationError(f"checkpoint folder {str(args.checkpoint)!r} does not exist")
    families = _names(args.families, FAMILIES, FAMILIES, "task family")
    modes = _names(args.modes, tuple(MODES), DEFAULT_MODES, "prompt mode")
    checks = [
        (args.episodes >= 1, f"--episodes must be >= 1, got {args.episodes}"),
        (args.start >= 0, f"--start must be >= 0, got {args.start}"),
        (16 <= args.image_size <= 1024, f"--image-size must be in [16, 1024], got {args.image_size}"),
        (args.max_steps is None or args.max_steps >= 1, f"--max-steps must be >= 1, got {args.max_steps}"),
        (args.gif_episodes >= 0, f"--gif-episodes must be >= 0, got {args.gif_episodes}"),
        (args.gif_stride >= 1, f"--gif-stride must be >= 1, got {args.gif_stride}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise EvaluationError(msg)
    return families, modes


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the grid; write report.json, success.png and episodes.gif into args.out; return the report."""
    families, modes = validate(args)
    ckpt_info: dict[str, Any] | None = None
    if args.expert:
        agent: PolicyAgent | ExpertAgent = ExpertAgent()
        execute = 1
    else:
        from pixelvla_ros.model.checkpoint import CheckpointError, read_checkpoint_config

        try:
            record = read_checkpoint_config(args.checkpoint)
            policy = Policy.from_checkpoint(
                args.checkpoint, device=args.device, dtype=args.dtype, backend=args.backend
            )
        except (CheckpointError, ValueError) as e:  # ValueError: a dtype or backend that cannot run here
            raise EvaluationError(str(e)) from e
        check_proprio_dim(policy.proprio_dim)
        agent = PolicyAgent(policy, calibrated=not args.uncalibrated)
        execute = args.execute_steps or policy.commit_steps
        if not 1 <= execute <= policy.chunk_size:
            raise EvaluationError(f"--execute-steps must be in [1, {policy.chunk_size}], got {execute}")
        rate = policy.preprocess_config.action_space.control_rate_hz
        sim_rate = TaskConfig().action_space.control_rate_hz
        if rate != sim_rate:  # one chunk step per control step
            raise EvaluationError(f"the checkpoint acts at {rate:g} Hz, the simulator at {sim_rate:g} Hz")
        ckpt_info = {
            "path": str(Path(args.checkpoint).resolve()),
            "config_hash": config_hash(record),
            "name": record["model"].get("name"),
            "weights_sha256": record["files"].get("model.safetensors", {}).get("sha256"),
            "chunk_size": policy.chunk_size,
            "proprio_dim": policy.proprio_dim,
            "device": str(policy.device),
            "extra": record.get("extra", {}),
        }
    timeline = ChunkTimeline(commit_steps=execute)  # executes every chunk as evaluated, whatever it carries
    out = args.out or Path("runs/eval") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvaluationError(f"cannot create the output folder {str(out)!r}: {e}") from e

    indices = list(range(args.start, args.start + args.episodes))
    seeds = [episode_seed(SPLIT, i) for i in indices]
    cells = [(f, m) for f in families for m in modes]
    n_gif = min(args.gif_episodes, len(cells))
    gif_cells = (
        {cells[int(k)] for k in np.unique(np.linspace(0, len(cells) - 1, n_gif).round())} if n_gif else set()
    )
    gif_frames: list[np.ndarray] = []
    episodes: list[dict[str, Any]] = []
    total = len(cells) * len(seeds)
    bar = tqdm(total=total, unit="ep", desc="evaluate", disable=args.quiet, file=sys.stderr)
    t0 = time.perf_counter()
    for family in families:
        cfg = TaskConfig(family=family, image_sizes=(args.image_size,), cameras=(args.camera,))
        if args.max_steps:
            cfg = cfg.with_(max_steps=args.max_steps)
        env = TabletopEnv(cfg, seed=seeds[0], split=SPLIT)
        try:
            for index, seed in zip(indices, seeds, strict=True):
                for mode in modes:
                    frames = gif_frames if (family, mode) in gif_cells and index == args.start else None
                    try:
                        ep = run_episode(
                            env, agent, timeline, MODES[mode], seed, args.camera, args.image_size,
                            frames, args.gif_stride,
                        )  # fmt: skip
                    except EvaluationError as e:  # an input the mode needs is missing in this scene
                        ep = {"family": family, "mode": mode, "seed": seed, "success": False, "steps": 0,
                              "reason": f"input failure: {e}", "invalid_chunks": 0}  # fmt: skip
                    ep["index"] = index
                    episodes.append(ep)
                    bar.update(1)
                    bar.set_postfix(ok=f"{sum(e['success'] for e in episodes)}/{len(episodes)}")
        finally:
            env.close()
    bar.close()
    wall = time.perf_counter() - t0
    report = build_report(args, families, modes, indices, seeds, episodes, wall, ckpt_info, execute)
    who = "scripted expert" if args.expert else Path(args.checkpoint).name
    title = f"{who}: {args.episodes} eval episodes / cell"
    plot_success(report["cells"], out / "success.png", title)
    report["artifacts"]["plot"] = "success.png"
    if gif_frames:
        import imageio.v2 as imageio

        imageio.mimsave(out / "episodes.gif", gif_frames, duration=0.1, loop=0)
        report["artifacts"]["gif"] = "episodes.gif"
    write_json(out / "report.json", report)
    report["out"] = str(out)
    return report


def build_report(
    args: argparse.Namespace,
    families: list[str],
    modes: list[str],
    indices: list[int],
    seeds: list[int],
    episodes: list[dict[str, Any]],
    wall_s: float,
    checkpoint: dict[str, Any] | None,
    execute_steps: int,
) -> dict[str, Any]:
    """report.json layout:
    format, version, created (UTC ISO), agent ("policy" | "expert"),
    checkpoint {path, config_hash, name, weights_sha256, chunk_size, proprio_dim, device, extra} | null,
    settings {families, modes, mode_inputs, episodes_per_cell, split, start, indices, seeds, image_size,
              camera, max_steps, execute_steps, camera_calibration},
    cells [{family, mode, episodes, successes, rate, ci95 [lo, hi], mean_steps, invalid_chunks}],
    overall {episodes, successes, rate, ci95},
    episodes [{family, mode, index, seed, instruction, text_given, prompts [kinds], object_mask,
               prompt_entity, target, success, reason, steps, queries, invalid_chunks,
               first_invalid_reason, hold_steps, mean_latency_s}],
    timing {wall_s, episodes, episodes_per_min, mean_model_latency_s},
    artifacts {plot, gif}."""
    k = sum(bool(e["success"]) for e in episodes)
    lat = [e["mean_latency_s"] for e in episodes if e.get("mean_latency_s") is not None]
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "agent": "expert" if args.expert else "policy",
        "checkpoint": checkpoint,
        "settings": {
            "families": families,
            "modes": modes,
            "mode_inputs": {m: {k2: v for k2, v in MODES[m].__dict__.items() if k2 != "name"} for m in modes},
            "episodes_per_cell": args.episodes,
            "split": SPLIT,
            "start": args.start,
            "indices": indices,
            "seeds": seeds,
            "image_size": args.image_size,
            "camera": args.camera,
            "max_steps": args.max_steps or TaskConfig().max_steps,
            "execute_steps": execute_steps,
            "camera_calibration": not args.uncalibrated,
            "backend": None if args.expert else args.backend,
            "dtype": None if args.expert else args.dtype,
        },
        "cells": summarize(episodes, families, modes),
        "overall": {
            "episodes": len(episodes),
            "successes": k,
            "rate": k / len(episodes) if episodes else None,
            "ci95": list(wilson_interval(k, len(episodes))),
        },
        "episodes": episodes,
        "timing": {
            "wall_s": wall_s,
            "episodes": len(episodes),
            "episodes_per_min": 60.0 * len(episodes) / wall_s if wall_s > 0 else None,
            "mean_model_latency_s": float(np.mean(lat)) if lat else None,
        },
        "artifacts": {},
    }


def print_summary(report: dict[str, Any]) -> None:
    print(f"{'family':16s} {'mode':18s} {'success':>9s}  {'rate':>6s}  95% CI")
    for c in report["cells"]:
        lo, hi = c["ci95"]
        print(
            f"{c['family']:16s} {c['mode']:18s} {c['successes']:4d}/{c['episodes']:<4d}  "
            f"{100 * c['rate']:5.1f}%  [{100 * lo:.1f}, {100 * hi:.1f}]"
        )
    t = report["timing"]
    lat = t["mean_model_latency_s"]
    print(
        f"{t['episodes']} episodes in {t['wall_s']:.1f} s: {t['episodes_per_min']:.1f} episodes/min"
        + (
            f" (mean model latency {1000 * lat:.1f} ms)"
            if lat is not None and report["agent"] == "policy"
            else ""
        )
    )
    print(f"wrote {report['out']}/report.json" + "".join(f", {v}" for v in report["artifacts"].values()))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or an argparse usage error (2, message already printed)
        return int(e.code or 0)
    try:
        report = evaluate(args)
    except EvaluationError as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    print_summary(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
