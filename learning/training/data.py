"""Training examples streamed from the annotated dataset (pixelvla_annotated shards).

One annotated episode gives one example per step t: the frame at t, the proprio at t, the action chunk
a[t : t + N_c], and the episode's mask and prompts, drawn on frame 0 and held for the whole episode
(pixelvla.md). Each example draws an input mode (text only, text + points, prompts without text, ...) so
one checkpoint serves every mode.

Steps past the episode's end are padding, left out of the loss (as ACT and LeRobot do): an episode ends
when the task succeeds, not when the robot should stop, so "hold still" targets there would be wrong. With
`drop_idle_steps`, steps whose action neither moves nor changes the gripper (an expert waiting for its
gripper) are removed from the episode first: their frames look like the next step's, so they would teach
the policy to wait (OpenVLA filters idle actions for the same reason).

With `anchor_drop_prob`, that share of the examples is given no camera calibration, so a model with the
prompt anchor also learns to act from pixels alone.

The stream is a pure function of (seed, epoch, rank): resuming skips the examples already consumed in
the epoch and continues with exactly the batch an uninterrupted run would have seen next.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelvla_ros.action_space import ACTION_DIM, GRIPPER, ROTATION, TRANSLATION
from pixelvla_ros.camera import CameraModel
from pixelvla_ros.preprocessing import PolicyInput, state_proprio
from pixelvla_ros.prompts import VisualPrompt

from ..annotation.format import iter_samples, list_shards
from .config import DataConfig, TrainConfigError, parse_mode


@dataclass
class Example:
    """One training example: what the policy sees, and the chunk it should output."""

    inputs: PolicyInput
    actions: np.ndarray  # (N_c, 7) robot units, project convention
    valid: np.ndarray  # (N_c,) bool: False for padding past the episode's end (no loss there)
    key: str  # "{episode key}@{t}": names the example when a loss goes bad


IDLE_TRANSLATION = 0.002  # m per step: below this (and IDLE_ROTATION) an action does not move the arm
IDLE_ROTATION = 0.01  # rad per step


def count_episodes(root: str | Path | list[str | Path]) -> int:
    """Episodes in the dataset (reads annotations only); 0 means nothing to train on."""
    return sum(1 for _ in iter_samples(list_shards(root), decode=False))


def chunk_targets(actions: np.ndarray, t: int, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, 7) episode actions -> ((chunk_size, 7) targets from step t, (chunk_size,) valid). Steps past the
    end are padded with "hold still, keep the gripper" and marked invalid."""
    chunk = actions[t : t + chunk_size].astype(np.float64)
    valid = np.zeros(chunk_size, dtype=bool)
    valid[: len(chunk)] = True
    if len(chunk) < chunk_size:
        hold = np.zeros((chunk_size - len(chunk), ACTION_DIM))
        hold[:, GRIPPER] = actions[-1, GRIPPER]
        chunk = np.concatenate([chunk, hold])
    return chunk, valid


def idle_steps(actions: np.ndarray) -> np.ndarray:
    """(T,) bool: the step's action neither moves the arm nor changes the gripper command."""
    still = (np.linalg.norm(actions[:, TRANSLATION], axis=1) < IDLE_TRANSLATION) & (
        np.linalg.norm(actions[:, ROTATION], axis=1) < IDLE_ROTATION
    )
    previous_gripper = np.concatenate([actions[:1, GRIPPER], actions[:-1, GRIPPER]])
    return still & (actions[:, GRIPPER] == previous_gripper)


def _prompts(annotation: dict, mask: np.ndarray, kinds: frozenset[str]) -> list[VisualPrompt]:
    out = []
    for record in annotation["prompts"]:
        kind = record["kind"]
        if kind not in kinds:
            continue
        if kind == "mask":
            out.append(VisualPrompt.from_mask(mask, label=int(record["labels"][0])))
        else:
            out.append(
                VisualPrompt(kind, points=np.asarray(record["points"]), labels=np.asarray(record["labels"]))
            )
    return out


def _augment(image: np.ndarray, mask: np.ndarray, prompts: list[VisualPrompt], camera: CameraModel | None,
             cfg: DataConfig, rng: random.Random,
             ) -> tuple[np.ndarray, np.ndarray, list[VisualPrompt], CameraModel | None]:  # fmt: skip
    """Shift image, mask, prompt coordinates and camera together (edge pixels repeat) and jitter
    brightness."""
    if cfg.augment_shift_px:
        dx, dy = (rng.randint(-cfg.augment_shift_px, cfg.augment_shift_px) for _ in range(2))
        camera = None if camera is None else camera.shifted(dx, dy)
        image = _shift(image, dx, dy)
        mask = _shift(mask, dx, dy)
        h, w = mask.shape
        shifted = []
        for p in prompts:
            if p.kind == "mask":
                shifted.append(VisualPrompt.from_mask(mask, label=int(p.labels[0])))
                continue
            points = np.clip(p.points + [dx, dy], -0.5, [w - 0.5, h - 0.5])
            shifted.append(VisualPrompt(p.kind, points=points, labels=p.labels))
        prompts = [p for p in shifted if p.kind != "box" or np.all(np.diff(p.points, axis=0) > 0)]
    if cfg.augment_brightness:
        gain = 1.0 + rng.uniform(-cfg.augment_brightness, cfg.augment_brightness)
        bias = 255.0 * rng.uniform(-cfg.augment_brightness, cfg.augment_brightness) / 2
        image = np.clip(image.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return image, mask, prompts, camera


def _shift(array: np.ndarray, dx: int, dy: int) -> np.ndarray:
    h, w = array.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return array[rows][:, cols]


def example_stream(
    cfg: DataConfig, chunk_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
    augment: bool = True,
) -> Iterator[Example]:  # fmt: skip
    """Shuffled examples of one epoch for one rank (shards are split between ranks)."""
    rng = random.Random(f"{seed}/{epoch}/{rank}")
    modes = [parse_mode(m) for m in cfg.prompt_modes]
    weights = list(cfg.prompt_modes.values())
    shards = list_shards(cfg.train)
    if len(shards) < world_size:
        raise TrainConfigError(f"{len(shards)} shards cannot feed {world_size} ranks: write smaller shards")
    buffer: list[Example] = []
    for sample in iter_samples(shards, rank=rank, world_size=world_size, shuffle_shards=True,
                               seed=seed * 100_003 + epoch):  # fmt: skip
        annotation = sample["annotation"]
        images, actions, mask = sample[cfg.image_key], sample["actions"], sample["mask"]
        info = annotation.get("camera")
        episode_camera = None if info is None else CameraModel.from_camera_info_dict(info)
        proprio = state_proprio(sample["ee_pos"], sample["gripper_state"]) if "ee_pos" in sample else None
        if cfg.drop_idle_steps:
            keep = ~idle_steps(actions)
            if keep.any():
                images, actions = images[keep], actions[keep]
                proprio = None if proprio is None else proprio[keep]
        for t in range(len(actions)):
            mode = rng.choices(modes, weights)[0]
            prompts = _prompts(annotation, mask, mode)
            image, held_mask, camera = images[t], mask, episode_camera
            if augment:
                image, held_mask, prompts, camera = _augment(image, held_mask, prompts, camera, cfg, rng)
                if cfg.anchor_drop_prob and rng.random() < cfg.anchor_drop_prob:
                    camera = None  # also act from pixels alone, where no calibration is given
            chunk, valid = chunk_targets(actions, t, chunk_size)
            inputs = PolicyInput(
                image=image,
                task=annotation["instruction"] if "text" in mode else None,
                object_mask=held_mask if "object_mask" in mode else None,
                prompts=prompts,
                proprio=None if proprio is None else proprio[t],
                camera=camera,
            )
            buffer.append(Example(inputs, chunk, valid, f"{annotation['key']}@{t}"))
            if len(buffer) >= cfg.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer


def batches(
    cfg: DataConfig, chunk_size: int, batch_size: int, seed: int, start_epoch: int = 0, skip: int = 0,
    rank: int = 0, world_size: int = 1,
) -> Iterator[tuple[int, int, list[Example]]]:  # fmt: skip
    """Endless (epoch, examples consumed in the epoch after this batch, batch) from (start_epoch, skip)."""
    epoch = start_epoch
    while True:
        consumed, batch, produced = 0, [], False
        for example in example_stream(cfg, chunk_size, seed, epoch, rank, world_size):
            consumed += 1
            if consumed <= skip:
                continue
            batch.append(example)
            if len(batch) == batch_size:
                produced = True
                yield epoch, consumed, batch
                batch = []
        if not produced and skip == 0:
            raise TrainConfigError(f"the dataset gives fewer than batch_size={batch_size} examples per epoch")
        epoch, skip = epoch + 1, 0
