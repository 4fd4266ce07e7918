"""Probes of what a checkpoint's policy reads, in the simulator on eval-split seeds (the proprio and servo
responses in docs/experiments.md).

    python -m pixelvla_ros.learning.evaluation.probe --checkpoint checkpoints/tiny --episodes 40 --start 100

Each episode gets text + the target's centre point (the evaluation's text_point inputs), and the scripted
expert drives it through three states: the first frame, 3 steps into the approach, and the start of the
descent (the TCP above the target). At each state:
- proprio response: the sum of the model's next `--execute-steps` translations with the proprio TCP
  position shifted by `--shift` m along x (and along y), the image unchanged, minus the unshifted sum,
  over the shift. A policy that steers by its own position toward the grasp point gives about -1 above
  the target; 0 means the proprio position is not read there.
- servo response: the same difference with the arm itself moved: the state is replayed and one control
  step holds the arm, or moves it by `--shift` m along x (along y), so image and proprio both show the
  new position; the difference of the two chunks' sums over the TCP's measured displacement. About -1
  above the target for a policy that corrects where it is.
Prints the medians per state.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pixelvla_ros.action_space import GRIPPER  # noqa: E402
from pixelvla_ros.model import autocast_context  # noqa: E402
from pixelvla_ros.policy import Policy  # noqa: E402
from pixelvla_ros.sim.env import Observation, TabletopEnv  # noqa: E402
from pixelvla_ros.sim.expert import ScriptedExpert  # noqa: E402
from pixelvla_ros.sim.seeds import episode_seed  # noqa: E402
from pixelvla_ros.sim.tasks import TaskConfig  # noqa: E402

from .evaluate import MODES, EpisodeInputs, ground_truth_inputs, proprio_vector  # noqa: E402

CAMERA, SIZE = "scene", 96
# (name, the expert's phase, steps into it)
STATES = (("first frame", "approach", 0), ("approach", "approach", 3), ("descend", "descend", 0))


def model_chunk(
    policy: Policy, obs: Observation, inp: EpisodeInputs, proprio: np.ndarray | None
) -> np.ndarray:
    """(N_c, 7) chunk in robot units for one observation."""
    x = policy.preprocessor(
        obs.images[f"{CAMERA}_{SIZE}"], inp.instruction, inp.object_mask, inp.prompts, proprio, inp.camera
    )
    with torch.inference_mode(), autocast_context(policy.device):
        out = policy.model(x.to(policy.device))
    return policy.preprocessor.postprocess(out.actions.float().cpu().numpy())[0]


def drive_to(env: TabletopEnv, index: int, phase: str, steps_in: int) -> tuple[Observation, np.ndarray]:
    """Reset to eval episode `index` and let the expert drive until `steps_in` steps into `phase`.
    Returns the observation and the expert's last action."""
    obs = env.reset(episode_seed("eval", index))
    expert = ScriptedExpert(env)
    action = np.zeros(7)
    while expert.phase != phase or expert.phase_steps < steps_in:
        if env.steps >= env.config.max_steps:
            raise RuntimeError(f"episode {index}: the expert never reached {phase}")
        action = expert.act(obs)
        obs = env.step(action).observation
    return obs, action


def translation_sums(policy: Policy, obs: Observation, inp: EpisodeInputs, execute_steps: int) -> np.ndarray:
    """(3,) the translation of the model's next `execute_steps` actions at this observation."""
    chunk = model_chunk(policy, obs, inp, proprio_vector(obs, policy.proprio_dim))
    return chunk[:execute_steps, :3].sum(axis=0)


def probe_state(
    policy: Policy, env: TabletopEnv, index: int, state: tuple[str, str, int], inp: EpisodeInputs,
    shift: float, execute_steps: int,
) -> dict[str, float]:  # fmt: skip
    _, phase, steps_in = state
    obs, last_action = drive_to(env, index, phase, steps_in)
    proprio = proprio_vector(obs, policy.proprio_dim)
    chunk = model_chunk(policy, obs, inp, proprio)
    out: dict[str, float] = {}
    if proprio is not None:
        for axis, name in ((0, "x"), (1, "y")):
            moved = proprio.copy()
            moved[axis] += shift  # state_proprio: the TCP position comes first
            shifted = model_chunk(policy, obs, inp, moved)
            delta = shifted[:execute_steps, axis].sum() - chunk[:execute_steps, axis].sum()
            out[f"proprio_response_{name}"] = float(delta / shift)
    hold = np.zeros(7)
    hold[GRIPPER] = last_action[GRIPPER]
    held = env.step(hold).observation
    held_sums = translation_sums(policy, held, inp, execute_steps)
    for axis, name in ((0, "x"), (1, "y")):
        drive_to(env, index, phase, steps_in)  # the same state again: the simulator is deterministic
        push = hold.copy()
        push[axis] = shift
        pushed = env.step(push).observation
        moved = pushed.ee_pos[axis] - held.ee_pos[axis]
        delta = translation_sums(policy, pushed, inp, execute_steps)[axis] - held_sums[axis]
        out[f"servo_response_{name}"] = float(delta / moved)
    return out


def probe(
    policy: Policy, families: list[str], start: int, episodes: int, shift: float, execute_steps: int
) -> dict[str, dict[str, float]]:
    """Medians per probed state: {state: {measure: median}}."""
    rows: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in STATES}
    for family in families:
        env = TabletopEnv(
            TaskConfig(family=family, image_sizes=(SIZE,), cameras=(CAMERA,)),
            seed=episode_seed("eval", start),
            split="eval",
        )
        try:
            for index in range(start, start + episodes):
                env.reset(episode_seed("eval", index))
                inp = ground_truth_inputs(env, MODES["text_point"], CAMERA, SIZE)
                for state in STATES:
                    rows[state[0]].append(probe_state(policy, env, index, state, inp, shift, execute_steps))
        finally:
            env.close()
    return {
        name: {key: float(np.median([r[key] for r in found])) for key in found[0]}
        for name, found in rows.items()
        if found and found[0]
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--families", nargs="+", default=["pick_named", "pick_prompted"])
    ap.add_argument("--start", type=int, default=100, help="first eval-split episode index")
    ap.add_argument("--episodes", type=int, default=20, help="per family")
    ap.add_argument("--shift", type=float, default=0.03, help="proprio TCP shift and arm move, m")
    ap.add_argument(
        "--execute-steps",
        type=int,
        default=0,
        help="chunk steps summed (default: the checkpoint's commit_steps)",
    )
    args = ap.parse_args(argv)
    if args.episodes < 1 or not 0 < args.shift < 0.5:
        print("probe: --episodes >= 1 and 0 < --shift < 0.5 m", file=sys.stderr)
        return 2
    policy = Policy.from_checkpoint(args.checkpoint)
    execute_steps = args.execute_steps or policy.commit_steps  # as the robot executes its chunks
    medians = probe(policy, args.families, args.start, args.episodes, args.shift, execute_steps)
    print(f"{args.checkpoint}: medians over {args.episodes} episodes x {len(args.families)} families")
    for name, values in medians.items():
        print(f"  {name:<12} " + "  ".join(f"{k} {v:+.3f}" for k, v in values.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
