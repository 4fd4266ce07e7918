"""The model's input and output containers (tensors only; built by pixelvla_ros.preprocessing)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from pixelvla_ros.prompts import PromptTensors

# The prompt anchor: [(anchor - TCP) (x, y, z) / preprocessing.ANCHOR_SCALE_M, 1], or zeros when absent.
ANCHOR_DIM = 4


@dataclass
class ModelInputs:
    images: torch.Tensor  # (B, 3, H, W) float in [0, 1] at the model size (tower standardization is inside)
    input_ids: torch.Tensor  # (B, T) long, padded to the fixed text length
    text_mask: torch.Tensor  # (B, T) bool, True = real token
    object_mask: torch.Tensor  # (B, M, H, W) float in [0, 1]: pixel-encoder masks (zeros when absent)
    object_mask_valid: torch.Tensor  # (B, M) bool
    prompts: PromptTensors
    proprio: torch.Tensor | None = None  # (B, P) normalized proprio, when the model has a proprio token
    anchor: torch.Tensor | None = None  # (B, ANCHOR_DIM), when the model has config.prompt_anchor

    def to(self, device: torch.device | str) -> ModelInputs:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to(device) if v is not None else None
        return ModelInputs(**out)

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]


@dataclass
class PixelVLAOutput:
    actions: torch.Tensor  # (B, N_c, 7) normalized actions (gripper in [0, 1] units, not binarized)
    loss: torch.Tensor | None = None  # scalar L1 on normalized actions, when targets were given
    # (B, 3) the grasp-offset head's prediction, in GRASP_OFFSET_UNIT_M (None without the head; not used
    # when acting: learning/evaluation/probe.py reads it)
    grasp_offset: torch.Tensor | None = None
