"""The one episode interface every dataset reader produces and the annotation pipeline consumes.

An :class:`Episode` is one demonstration, already in the project's conventions:
  images        (T, H, W, 3) uint8 RGB, one camera stream; observation t is taken before action t
  actions       (T, 7) float32 in the project's action convention (pixelvla_ros.action_space): base-frame
                EE delta, rotation vector, gripper 0 = open / 1 = closed
  action_convention  the name of the converter that produced ``actions`` (conventions.CONVERTERS)
  instruction   the language instruction
  ee_pos, ee_rotmat  TCP position (T, 3) m / orientation (T, 3, 3) in the base frame, when known
  gripper_state (T,) measured closure 0 = open, 1 = closed, when known
  camera        pixelvla_ros.camera.CameraModel of ``images`` (intrinsics + base->camera), when known
  episode_id    unique, filesystem-safe id within a run; source: where it came from (reader + path)

Readers are lazy: ``EpisodeSource.keys()`` lists ids cheaply, ``load(key)`` reads one episode; a bad episode
raises :class:`CorruptEpisodeError` with what was wrong, so a run can skip it with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pixelvla_ros.action_space import ACTION_DIM
from pixelvla_ros.camera import CameraModel


class CorruptEpisodeError(ValueError):
    """An episode cannot be read or is inconsistent (truncated file, shape mismatch, NaN actions...)."""


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_id(text: str) -> str:
    """A filesystem- and tar-safe episode id (no '/', no '.' runs that WebDataset would split on)."""
    return _SAFE.sub("_", text).replace(".", "_").strip("_") or "episode"


@dataclass
class Episode:
    episode_id: str
    source: str
    images: np.ndarray  # (T, H, W, 3) uint8 RGB
    actions: np.ndarray  # (T, 7) float32, project convention
    instruction: str
    action_convention: str
    ee_pos: np.ndarray | None = None  # (T, 3) float, base frame, m
    ee_rotmat: np.ndarray | None = None  # (T, 3, 3)
    gripper_state: np.ndarray | None = None  # (T,) 0 = open, 1 = closed
    proprio: np.ndarray | None = None  # (T, D) raw proprioception as recorded
    camera: CameraModel | None = None
    image_key: str = ""
    fps: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # reader-specific metadata (JSON-able)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_steps(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_hw(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def gripper_command(self) -> np.ndarray:
        """(T,) gripper command of the actions, 0 = open, 1 = closed."""
        return self.actions[:, 6]

    def validate(self) -> None:
        img = self.images
        if not isinstance(img, np.ndarray) or img.ndim != 4 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise CorruptEpisodeError(
                f"{self.episode_id}: images must be (T, H, W, 3) uint8, got "
                f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', None)}"
            )
        T = img.shape[0]
        if T < 1:
            raise CorruptEpisodeError(f"{self.episode_id}: episode has no steps")
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.actions.shape != (T, ACTION_DIM):
            raise CorruptEpisodeError(
                f"{self.episode_id}: actions must be ({T}, {ACTION_DIM}) (one per image), "
                f"got {self.actions.shape}"
            )
        if not np.all(np.isfinite(self.actions)):
            raise CorruptEpisodeError(f"{self.episode_id}: actions contain NaN or inf")
        for name, shape in (("ee_pos", (T, 3)), ("ee_rotmat", (T, 3, 3)), ("gripper_state", (T,))):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=np.float64)
                if v.shape != shape:
                    raise CorruptEpisodeError(f"{self.episode_id}: {name} must be {shape}, got {v.shape}")
                setattr(self, name, v)
        if self.proprio is not None and len(self.proprio) != T:
            raise CorruptEpisodeError(
                f"{self.episode_id}: proprio has {len(self.proprio)} rows, expected {T}"
            )
        if self.camera is not None and (self.camera.width, self.camera.height) != (
            img.shape[2],
            img.shape[1],
        ):
            raise CorruptEpisodeError(
                f"{self.episode_id}: camera model is {self.camera.width}x{self.camera.height} but images are "
                f"{img.shape[2]}x{img.shape[1]}"
            )
        if not isinstance(self.instruction, str):
            raise CorruptEpisodeError(f"{self.episode_id}: instruction must be a string")


class EpisodeSource(Protocol):
    """A lazily read collection of episodes (one input folder of one format)."""

    name: str  # input format name: "sim", "lerobot", "rosbag2"

    def keys(self) -> list[str]: ...

    def load(self, key: str) -> Episode: ...


def iter_episodes(source: EpisodeSource) -> Iterator[Episode]:
    for k in source.keys():
        yield source.load(k)
