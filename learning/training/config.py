"""Training configuration: typed, validated on construction, loaded from config/*.yaml.

Every value that can be wrong is checked before any work starts (paths exist, ranges hold, the prompt
modes are known), so a bad config fails in a second, not after an hour of data loading.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pixelvla_ros.action_space import ACTION_DIM
from pixelvla_ros.model import STAGES
from pixelvla_ros.model.config import RETIRED_MODEL_KNOBS, drop_retired
from pixelvla_ros.model.pixelvla import DTYPE_CHOICES

# Inputs a training example can carry. "text" is the instruction, "object_mask" the target's mask for the
# pixel-aware encoder; point/line/box/mask are visual prompts sampled from that mask by the annotation.
MODE_PARTS = ("text", "object_mask", "point", "line", "box", "mask")
# Training knobs removed in issue 18 with their "off" values (pixelvla_ros.model.config.drop_retired).
RETIRED_TRAIN_KNOBS: dict[str, Any] = {
    "grasp_offset_loss_weight": 0.0,
    "model_overrides.grasp_offset_head": False,
    "data.proprio_shift_prob": 0.0,
    "data.proprio_shift_m": 0.0,
    "data.proprio_hidden_dims": [],
}


class TrainConfigError(ValueError):
    """A training configuration that cannot run; the message names the field and the expected value."""


def parse_mode(mode: str) -> frozenset[str]:
    parts = frozenset(p.strip() for p in mode.split("+"))
    unknown = parts - set(MODE_PARTS)
    if unknown or not parts:
        raise TrainConfigError(f"prompt mode {mode!r}: unknown parts {sorted(unknown)}; known {MODE_PARTS}")
    return parts


@dataclass(frozen=True)
class DataConfig:
    # annotated dataset folder (pixelvla_annotated shards), or a list of them whose episodes are mixed
    train: str | list[str]
    image_key: str = "images"  # array of steps.npz holding the camera frames
    shuffle_buffer: int = 2048  # examples
    # Probability of each input mode per example; one checkpoint then serves every mode.
    prompt_modes: dict[str, float] = field(default_factory=lambda: {"text": 1.0})
    augment_shift_px: int = 0  # random translation of image, mask and prompts together (0 = off)
    augment_brightness: float = 0.0  # +- relative brightness/contrast jitter (0 = off)
    drop_idle_steps: bool = False  # leave out steps that neither move nor change the gripper (data.py)
    # Share of the examples given no camera calibration, so a model with the prompt anchor
    # (PixelVLAConfig.prompt_anchor) also acts from pixels alone
    anchor_drop_prob: float = 0.0

    def __post_init__(self) -> None:
        for folder in self.train if isinstance(self.train, list) else [self.train]:
            if not Path(folder).exists():
                raise TrainConfigError(f"data.train: {folder} does not exist")
        if not self.prompt_modes or any(
            not (w >= 0 and math.isfinite(w)) for w in self.prompt_modes.values()
        ):
            raise TrainConfigError(f"data.prompt_modes needs non-negative weights, got {self.prompt_modes}")
        if sum(self.prompt_modes.values()) <= 0:
            raise TrainConfigError("data.prompt_modes weights sum to 0")
        for mode in self.prompt_modes:
            parse_mode(mode)
        if not 0 <= self.anchor_drop_prob <= 1:
            raise TrainConfigError(f"data.anchor_drop_prob must be in [0, 1], got {self.anchor_drop_prob}")
        if self.shuffle_buffer < 1 or self.augment_shift_px < 0 or not 0 <= self.augment_brightness < 1:
            raise TrainConfigError(
                "data: shuffle_buffer >= 1, augment_shift_px >= 0, 0 <= augment_brightness < 1"
            )


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    output_dir: str
    preset: str = "tiny"  # model preset (pixelvla_ros.model.preset)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the preset
    init_checkpoint: str | None = None  # start from these weights (e.g. a stage 1 result)
    # model-config changes applied to init_checkpoint's (dotted keys, e.g. pixel.centroid_encoding: true);
    # parameters they add start from their initialisation
    init_checkpoint_changes: dict[str, Any] = field(default_factory=dict)
    stage: str = "full"  # pixelvla_ros.model.STAGES: stage1, stage2, full
    seed: int = 0
    batch_size: int = 32  # per process
    grad_accum_steps: int = 1
    max_steps: int = 1000  # optimizer steps
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip_norm: float = 1.0
    # Weight of each action dimension in the L1 loss (x y z roll pitch yaw gripper); None: all 1. With L1
    # every dimension pulls equally hard whatever its size, and the scripted expert's roll and pitch steps are
    # residue (|a| < 1 mrad), normalized to unit spread: they drew as much of the model as the motion.
    action_loss_weights: list[float] | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    time_budget_min: float | None = None  # stop (with a checkpoint) after this many minutes
    # Under torchrun: "ddp" replicates the model on every rank; "fsdp" shards parameters, gradients and
    # optimizer state between the ranks (FSDP2; for models that do not fit one device, e.g. the 7b preset).
    distributed: str = "ddp"
    # dtype of the frozen weights (trainable ones, LoRA included, stay float32 for AdamW): "auto" is bfloat16
    # on a GPU, float32 on the CPU and under FSDP (whose mixed precision casts the float32 master weights)
    dtype: str = "auto"
    # recompute each transformer block's activations in the backward pass instead of keeping them
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.batch_size <= 4096, "batch_size must be in [1, 4096]"),
            (1 <= self.grad_accum_steps <= 1024, "grad_accum_steps must be in [1, 1024]"),
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (1e-7 <= self.learning_rate <= 1e-1, "learning_rate must be in [1e-7, 0.1]"),
            (0 <= self.weight_decay < 1, "weight_decay must be in [0, 1)"),
            (0 <= self.warmup_steps < self.max_steps, "warmup_steps must be in [0, max_steps)"),
            (self.grad_clip_norm > 0, "grad_clip_norm must be > 0"),
            (
                self.checkpoint_every >= 1 and self.keep_checkpoints >= 1,
                "checkpoint_every, keep_checkpoints >= 1",
            ),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.stage in STAGES, f"stage must be one of {STAGES}"),
            (self.distributed in ("ddp", "fsdp"), "distributed must be ddp or fsdp"),
            (self.dtype in DTYPE_CHOICES, f"dtype must be one of {DTYPE_CHOICES}"),
            (
                self.distributed != "fsdp" or self.dtype in ("auto", "float32"),
                "distributed: fsdp keeps float32 master weights (its mixed precision computes in bf16): "
                "dtype must be auto or float32",
            ),
            (self.time_budget_min is None or self.time_budget_min > 0, "time_budget_min must be > 0"),
            (
                self.action_loss_weights is None
                or (
                    len(self.action_loss_weights) == ACTION_DIM
                    and all(0 <= w < math.inf for w in self.action_loss_weights)
                    and sum(self.action_loss_weights) > 0
                ),
                f"action_loss_weights must be {ACTION_DIM} finite weights >= 0, not all 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(f"{message} (config: {self.short()})")
        if self.init_checkpoint is not None and not Path(self.init_checkpoint).is_dir():
            raise TrainConfigError(f"init_checkpoint: {self.init_checkpoint} is not a folder")
        if self.init_checkpoint_changes and self.init_checkpoint is None:
            raise TrainConfigError("init_checkpoint_changes needs init_checkpoint")
        for key, value in self.model_overrides.items():  # the 7b preset's pretrained component folders
            if key.endswith("_path") and value is not None and not Path(value).is_dir():
                raise TrainConfigError(
                    f"model_overrides.{key}: {value} is not a folder (a local Hugging Face model folder, "
                    f"config.json + weights; nothing is downloaded): set it in the config or with "
                    f"--set model_overrides.{key}=DIR"
                )

    def short(self) -> str:
        return (
            f"batch_size={self.batch_size}, learning_rate={self.learning_rate}, "
            f"max_steps={self.max_steps}, warmup_steps={self.warmup_steps}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from its mapping (a YAML file, or a checkpoint's train_config.json); a retired knob at
        its old "off" value is dropped, at any other value refused."""
        try:
            data = drop_retired(data, RETIRED_TRAIN_KNOBS, "config")
            if isinstance(data.get("init_checkpoint_changes"), dict):
                changes = drop_retired(data["init_checkpoint_changes"], RETIRED_MODEL_KNOBS, "config")
                data["init_checkpoint_changes"] = changes
        except ValueError as error:
            raise TrainConfigError(str(error)) from None
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TrainConfigError(f"unknown config keys {sorted(unknown)}; known {sorted(known)}")
        if "data" not in data or "output_dir" not in data:
            raise TrainConfigError("config needs `data` (with `train`) and `output_dir`")
        data_fields = {f.name for f in fields(DataConfig)}
        unknown = set(data["data"]) - data_fields
        if unknown:
            raise TrainConfigError(f"unknown data keys {sorted(unknown)}; known {sorted(data_fields)}")
        data["data"] = DataConfig(**data["data"])
        return cls(**data)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """YAML file -> TrainConfig; relative data/output paths are taken from the current directory."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    for key, value in (overrides or {}).items():
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return TrainConfig.from_dict(data)
