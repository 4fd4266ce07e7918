"""Record scripted-expert demonstrations in the interim on-disk format (read by the annotation tooling).

    python -m pixelvla_ros.sim.record --out DIR --episodes N --split train [--task all] [--shard i/N]
        [--image-size 96 --image-size 224] [--camera scene] [--keep-failures] [--action-noise 0.015]

Episode ``index`` in [0, N) uses seed ``episode_seed(split, index)`` (pixelvla_ros.sim.seeds) and, with
``--task all``, family ``FAMILIES[index % 3]``. ``--shard i/N`` records the indices with index % N == i,
so several processes can fill one folder. Finished episodes are skipped (re-running resumes). Failed
expert episodes are dropped unless --keep-failures.

``--action-noise SIGMA`` records DART-style demonstrations (Laskey et al., 2017): while the expert
approaches and descends, the executed action is the expert's plus Gaussian translation noise on a share
``--noise-prob`` of the steps, but the recorded ``action`` stays the expert's own. The demonstrations then
visit states off the expert's path (beside or above the object, the object nudged) labelled with the
corrections that lead back, which a policy trained on clean demonstrations never sees and then needs
when its own grasp is off.

``--policy CKPT`` records DAgger-style demonstrations (Ross et al., 2011): a learned policy (text and the
target's projected centre point, as the evaluation's text_point mode, a new chunk every
``--policy-execute-steps``, by default the checkpoint's commit_steps) drives while the expert approaches
and descends, and the recorded ``action`` stays the expert's. At the policy's first close command, an
invalid chunk, or the expert's own close, the expert takes over to the end. The episode then holds the
states the policy itself reaches before a grasp (where its grasp position is off), labelled with the
expert's way from there.

On-disk layout (format "pixelvla_sim_demos", version 1)
-------------------------------------------------------
DIR/
  format.json                         {"format", "version", "action_space", "proprio_layout"}
  {split}_{index:07d}/                one folder per episode, written to a temp folder then renamed
    episode.json                      metadata (below)
    steps.npz                         per-step arrays, T = number of control steps (np.load, no pickle)
    masks.npz                         ground-truth segmentation of the FIRST frame (never a policy input)
    preview.png                       first frame of the first image stream (for humans)

steps.npz (observation t is taken before action t; all in the robot base frame):
  image_{camera}_{size}   (T, size, size, 3) uint8 RGB, e.g. image_scene_96, image_scene_224
  ee_pos                  (T, 3)  float32  TCP position, m
  ee_rotmat               (T, 3, 3) float32 TCP orientation
  ee_rotvec               (T, 3)  float32  TCP orientation as rotation vector (discontinuous near pi)
  gripper                 (T,)    float32  measured closure, 0 = open, 1 = closed
  joint_pos               (T, 6)  float32  rad, ur5e.JOINT_NAMES order
  proprio                 (T, 10) float32  [ee_pos(3), rot6d(ee_rotmat)(6) = first two columns, gripper(1)]
  action                  (T, 7)  float32  project action convention (pixelvla_ros.action_space)
  instruction             (T,)    unicode  the instruction at each step (constant within an episode)
  success                 (T,)    bool     task success after action t
masks.npz:
  seg_{camera}_{size}     (size, size) int16: entity id per pixel (index into "entities"), -1 none
  masks_{camera}_{size}   (E, size, size) bool: one mask per entity, same order

episode.json keys:
  format, version, split, index, seed, family, instruction, success, num_steps, why,
  target {entity_id, name, description}, container {entity_id, name, description} | null,
  prompted [entity names the visual prompt must mark], text_ambiguous (bool),
  entities [{id, name, kind ("object"|"container"), shape, colour, size, description, initial_pose (4x4)}],
  cameras {"{camera}_{size}": CameraInfo fields (width, height, distortion_model, d, k, r, p, header.frame_id)
           + T_base_camera (4x4 pose of the optical frame in the base frame), at the first frame},
  prompts {"{camera}_{size}": {entity name: {point [u, v] (projected centre), box [u0, v0, u1, v1], visible}}}
           for the target and the prompted entities, at the first frame,
  action_space, task_config, control_rate_hz, physics_hz,
  action_noise {sigma_m, prob, early_close_prob, early_close_steps} | null,
  policy_execution {checkpoint, execute_steps, handover_step} | null,
  grasps (the grasp attempts the expert made)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import imageio.v2 as imageio  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pixelvla_ros.chunk_timeline import ChunkTimeline, TimedChunk  # noqa: E402
from pixelvla_ros.sim.env import Observation, TabletopEnv  # noqa: E402
from pixelvla_ros.sim.expert import ScriptedExpert  # noqa: E402
from pixelvla_ros.sim.seeds import SPLITS, episode_seed  # noqa: E402
from pixelvla_ros.sim.tasks import FAMILIES, TaskConfig  # noqa: E402

FORMAT = "pixelvla_sim_demos"
VERSION = 1
PROPRIO_LAYOUT = ["ee_pos_x", "ee_pos_y", "ee_pos_z", "r00", "r10", "r20", "r01", "r11", "r21", "gripper"]


@dataclass(frozen=True)
class ActionNoise:
    """DART-style perturbations of the executed actions (the recorded labels stay the expert's)."""

    sigma_m: float  # translation noise while approaching and descending (z at half of it)
    prob: float = 0.5  # share of those steps perturbed
    early_close_prob: float = 0.0  # share of episodes whose first descent closes the gripper too early
    early_close_steps: int = 4

    def __post_init__(self) -> None:
        if not (self.sigma_m > 0 and 0 < self.prob <= 1 and 0 <= self.early_close_prob <= 1):
            raise ValueError(
                f"action noise needs sigma_m > 0, 0 < prob <= 1, 0 <= early_close_prob <= 1: {self}"
            )


class NoisyExecution:
    """One episode's perturbations under ``ActionNoise``.

    The early close stops the arm and closes the gripper 0.5-3 cm above the height the expert closes at
    (beside the object too when noise has moved the arm), as a policy that misjudges the grasp does; the
    expert's labels there say "open and go on".
    """

    def __init__(self, noise: ActionNoise, rng: np.random.Generator) -> None:
        self.noise, self.rng = noise, rng
        early = rng.random() < noise.early_close_prob
        self.early_close_height = rng.uniform(0.005, 0.03) if early else None
        self.early_closing = 0  # early-close steps left to execute

    def __call__(self, action: np.ndarray, expert: ScriptedExpert, obs: Observation) -> np.ndarray:
        """The action to execute for the expert's ``action`` at ``obs``."""
        n = self.noise
        if self.early_closing:
            self.early_closing -= 1
            out = np.zeros_like(action)
            out[6] = 1.0
            return out
        stop_z = None if self.early_close_height is None else expert.grasp_z() + self.early_close_height
        if (
            stop_z is not None
            and expert.phase == "descend"
            and expert.grasps == 0
            and obs.ee_pos[2] + action[2] < stop_z
        ):  # this step would pass the early-close height: stop there, then close
            self.early_close_height, self.early_closing = None, n.early_close_steps
            out = action.copy()
            out[2] = stop_z - obs.ee_pos[2]
            return out
        if expert.phase not in ("approach", "descend") or self.rng.random() >= n.prob:
            return action
        out = action.copy()
        out[:3] += self.rng.normal(0.0, n.sigma_m, 3) * (1.0, 1.0, 0.5)
        return out


class PolicyExecution:
    """One episode driven by a learned policy until the expert takes over (see the module docstring)."""

    def __init__(self, policy: Any, execute_steps: int, env: TabletopEnv, stream: str) -> None:
        from pixelvla_ros.preprocessing import state_proprio
        from pixelvla_ros.prompts import VisualPrompt

        self.policy, self.stream, self.state_proprio = policy, stream, state_proprio
        self.timeline = ChunkTimeline(commit_steps=execute_steps)  # executed as evaluate does
        self.dt = env.config.action_space.dt  # control step t is time t * dt
        camera, size = stream.rsplit("_", 1)
        self.prompts = [VisualPrompt.point([env.prompt_point(env.task.target, camera, int(size))])]
        self.camera = env.camera_info(camera, int(size))
        self.instruction = env.task.instruction
        self.step = 0
        self.handover_step: int | None = None  # the first step the expert drove

    def __call__(self, action: np.ndarray, expert: ScriptedExpert, obs: Observation) -> np.ndarray:
        """The action to execute at ``obs``: the policy's, or the expert's ``action`` after the handover."""
        t, self.step = self.step, self.step + 1
        if self.handover_step is None and expert.phase in ("approach", "descend"):
            now = t * self.dt
            if self.timeline.due(now):
                proprio = self.state_proprio(obs.ee_pos, obs.gripper) if self.policy.proprio_dim else None
                chunk = self.policy.predict_chunk(
                    obs.images[self.stream], self.instruction, self.prompts, None, proprio, self.camera
                )
                if chunk.valid:
                    self.timeline.add(TimedChunk(now, self.dt, chunk.actions), now)
            policy_action = self.timeline.action_at(now)
            if policy_action is not None and policy_action[6] <= 0.5:
                return policy_action
        if self.handover_step is None:
            self.handover_step = t
        return action


def episode_dirname(split: str, index: int) -> str:
    return f"{split}_{index:07d}"


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def record_episode(
    env: TabletopEnv,
    split: str,
    index: int,
    seed: int,
    out: Path,
    keep_failures: bool,
    noise: ActionNoise | None = None,
    policy: tuple[Any, str, int] | None = None,
) -> dict[str, Any] | None:
    """Run the expert on ``seed``; write the episode folder atomically; its metadata, None if dropped.
    ``policy``: (Policy, its checkpoint path, execute_steps) to drive as PolicyExecution does."""
    obs = env.reset(seed)
    cfg = env.config
    streams = [f"{c}_{s}" for c in cfg.cameras for s in cfg.image_sizes]
    execute: NoisyExecution | PolicyExecution | None = None
    if noise is not None:  # independent of the scene's draws
        execute = NoisyExecution(noise, np.random.default_rng((seed, 0xDA27)))
    elif policy is not None:
        execute = PolicyExecution(policy[0], policy[2], env, streams[0])
    cameras, prompts, masks = {}, {}, {}
    for c in cfg.cameras:
        for s in cfg.image_sizes:
            key = f"{c}_{s}"
            cameras[key] = env.camera_info(c, s).to_camera_info_dict()
            seg = env.segmentation(c, s)
            masks[f"seg_{key}"] = seg.astype(np.int16)
            masks[f"masks_{key}"] = (
                np.stack([seg == k for k in range(len(env.entities))])
                if env.entities
                else np.zeros((0, s, s), bool)
            )
            names = dict.fromkeys((env.task.target, *env.task.prompted))
            prompts[key] = {n: {k: v for k, v in env.prompt(n, c, s).items() if k != "entity"} for n in names}
    entities = []
    for k, name in enumerate(env.entities):
        obj = next((o for o in env.scene.objects if o.name == name), None)
        cont = next((c for c in env.scene.containers if c.name == name), None)
        spec = obj or cont
        entities.append(
            {
                "id": k,
                "name": name,
                "kind": "object" if obj else "container",
                "shape": obj.shape if obj else cont.kind,
                "colour": spec.colour,
                "size": obj.size if obj else "large",
                "description": spec.description,
                "initial_pose": env.object_pose(name).round(6).tolist(),
            }
        )
    expert = ScriptedExpert(env)
    buf: dict[str, list] = {
        k: []
        for k in ("ee_pos", "ee_rotmat", "ee_rotvec", "gripper", "joint_pos", "proprio", "action", "success")
    }
    imgs: dict[str, list] = {k: [] for k in streams}
    res = None
    for _ in range(cfg.max_steps):
        a = expert.act(obs)
        for k in streams:
            imgs[k].append(obs.images[k])
        buf["ee_pos"].append(obs.ee_pos)
        buf["ee_rotmat"].append(obs.ee_rotmat)
        buf["ee_rotvec"].append(obs.ee_rotvec)
        buf["gripper"].append(obs.gripper)
        buf["joint_pos"].append(obs.joint_pos)
        buf["proprio"].append(obs.proprio())
        buf["action"].append(a)
        res = env.step(a if execute is None else execute(a, expert, obs))
        buf["success"].append(res.success)
        obs = res.observation
        if res.done:
            break
    success = bool(res is not None and res.success)
    if not success and not keep_failures:
        return None
    T = len(buf["action"])
    arrays: dict[str, np.ndarray] = {f"image_{k}": np.stack(v).astype(np.uint8) for k, v in imgs.items()}
    for k, v in buf.items():
        arrays[k] = np.asarray(v, dtype=bool if k == "success" else np.float32)
    arrays["instruction"] = np.array([env.task.instruction] * T)
    task = env.task
    ids = {n: k for k, n in enumerate(env.entities)}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "split": split,
        "index": index,
        "seed": seed,
        "family": task.family,
        "instruction": task.instruction,
        "success": success,
        "num_steps": T,
        "why": res.info["why"] if res else "",
        "target": {
            "entity_id": ids[task.target],
            "name": task.target,
            "description": task.target_description,
        },
        "container": None
        if task.container is None
        else {
            "entity_id": ids[task.container],
            "name": task.container,
            "description": task.container_description,
        },
        "prompted": list(task.prompted),
        "text_ambiguous": task.text_ambiguous,
        "entities": entities,
        "cameras": cameras,
        "prompts": prompts,
        "action_space": cfg.action_space.to_dict(),
        "task_config": cfg.to_dict(),
        "control_rate_hz": cfg.action_space.control_rate_hz,
        "physics_hz": cfg.physics_hz,
        "action_noise": None if noise is None else asdict(noise),
        "policy_execution": None
        if policy is None
        else {"checkpoint": policy[1], "execute_steps": policy[2], "handover_step": execute.handover_step},
        "grasps": expert.grasps,
    }
    final = out / episode_dirname(split, index)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".tmp_{final.name}_"))
    os.chmod(tmp, 0o755)
    try:
        np.savez_compressed(tmp / "steps.npz", **arrays)
        np.savez_compressed(tmp / "masks.npz", **masks)
        imageio.imwrite(tmp / "preview.png", arrays[f"image_{streams[0]}"][0])
        (tmp / "episode.json").write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def load_episode(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(episode.json, steps arrays, masks arrays) of one episode folder."""
    path = Path(path)
    meta = json.loads((path / "episode.json").read_text())
    with np.load(path / "steps.npz") as s, np.load(path / "masks.npz") as m:
        return meta, {k: s[k] for k in s.files}, {k: m[k] for k in m.files}


def _parse_shard(s: str) -> tuple[int, int]:
    i, n = (int(x) for x in s.split("/"))
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard must be i/N with 0 <= i < N, got {s}")
    return i, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--episodes", type=int, required=True, help="total number of episode indices (all shards)"
    )
    ap.add_argument("--split", choices=SPLITS, default="train")
    ap.add_argument("--task", choices=(*FAMILIES, "all"), default="all")
    ap.add_argument("--start", type=int, default=0, help="first episode index")
    ap.add_argument(
        "--shard", type=_parse_shard, default=(0, 1), help="i/N: record indices with index %% N == i"
    )
    ap.add_argument(
        "--image-size", type=int, action="append", help="square image size (repeatable); default 96 224"
    )
    ap.add_argument(
        "--camera", action="append", choices=("scene", "wrist"), help="camera (repeatable); default scene"
    )
    ap.add_argument("--keep-failures", action="store_true")
    ap.add_argument(
        "--action-noise",
        type=float,
        metavar="SIGMA_M",
        help="DART-style translation noise (m) while approaching and descending; labels stay the expert's",
    )
    ap.add_argument("--noise-prob", type=float, default=0.5, help="share of those steps perturbed")
    ap.add_argument(
        "--early-close-prob", type=float, default=0.0, help="share of episodes closing too early (with noise)"
    )
    ap.add_argument(
        "--policy", type=Path, metavar="CKPT", help="DAgger: this checkpoint drives, the expert labels"
    )
    ap.add_argument(
        "--policy-execute-steps", type=int, help="a new chunk every N steps (default: the checkpoint's)"
    )
    args = ap.parse_args(argv)
    if args.policy is not None and args.action_noise is not None:
        ap.error("give --policy or --action-noise, not both")
    policy = None
    if args.policy is not None:
        from pixelvla_ros.policy import Policy

        loaded = Policy.from_checkpoint(args.policy)
        execute = args.policy_execute_steps or loaded.commit_steps
        if not 1 <= execute <= loaded.chunk_size:
            ap.error(f"--policy-execute-steps must be in [1, {loaded.chunk_size}]")
        policy = (loaded, str(args.policy), execute)
    noise = (
        None
        if args.action_noise is None
        else ActionNoise(args.action_noise, args.noise_prob, args.early_close_prob)
    )
    sizes = tuple(args.image_size or (96, 224))
    cams = tuple(args.camera or ("scene",))
    args.out.mkdir(parents=True, exist_ok=True)
    base_cfg = TaskConfig(image_sizes=sizes, cameras=cams)
    _atomic_write_text(
        args.out / "format.json",
        json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "action_space": base_cfg.action_space.to_dict(),
                "proprio_layout": PROPRIO_LAYOUT,
            },
            indent=1,
        ),
    )
    shard_i, shard_n = args.shard
    indices = [i for i in range(args.start, args.start + args.episodes) if i % shard_n == shard_i]
    envs = {
        f: TabletopEnv(base_cfg.with_(family=f), split=args.split, seed=episode_seed(args.split, 0))
        for f in FAMILIES
    }
    kept = dropped = skipped = 0
    t0 = time.time()
    bar = tqdm(indices, desc=f"record {args.split} shard {shard_i}/{shard_n}", unit="ep")
    for index in bar:
        if (args.out / episode_dirname(args.split, index) / "episode.json").exists():
            skipped += 1
            continue
        fam = FAMILIES[index % len(FAMILIES)] if args.task == "all" else args.task
        meta = record_episode(
            envs[fam],
            args.split,
            index,
            episode_seed(args.split, index),
            args.out,
            args.keep_failures,
            noise,
            policy,
        )
        if meta is None:
            dropped += 1
        else:
            kept += 1
        bar.set_postfix(kept=kept, dropped=dropped, skipped=skipped)
    for e in envs.values():
        e.close()
    dt = time.time() - t0
    print(
        f"wrote {kept} episodes ({dropped} failed and dropped, {skipped} already present) "
        f"in {dt:.1f} s to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
