"""The model's input and output containers (tensors; built by pixelvla_ros.preprocessing), and the
collation of visual prompts (pixelvla_ros.prompts, plain numpy types) into the model's fixed prompt slots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from pixelvla_ros.prompts import (
    BOX,
    LINE,
    POINT,
    PixelVLAInputError,
    PromptSlots,
    VisualPrompt,
    resample_polyline,
    to_unit_square,
)

# The prompt anchor: [(anchor - TCP) (x, y, z) / preprocessing.ANCHOR_SCALE_M, 1], or zeros when absent.
ANCHOR_DIM = 4


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool -> (h, w) float coverage in [0, 1] (area average: a small object never vanishes)."""
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]  # (1, 1, H, W)
    if tuple(m.shape[-2:]) == tuple(size):
        return m[0, 0]
    if size[0] <= m.shape[-2] and size[1] <= m.shape[-1]:
        out = F.adaptive_avg_pool2d(m, size)  # exact pixel coverage of each output cell
    else:
        out = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return out[0, 0].clamp_(0.0, 1.0)


@dataclass
class PromptTensors:
    """Fixed-slot prompt tensors for a batch of B examples. Coordinates normalized to [0, 1] (x, y)."""

    point_xy: torch.Tensor  # (B, P, 2) float
    point_label: torch.Tensor  # (B, P) long
    point_valid: torch.Tensor  # (B, P) bool
    line_xy: torch.Tensor  # (B, L, K, 2)
    line_label: torch.Tensor  # (B, L)
    line_valid: torch.Tensor  # (B, L)
    box_xy: torch.Tensor  # (B, Bx, 2, 2)  [top-left, bottom-right]
    box_label: torch.Tensor  # (B, Bx)
    box_valid: torch.Tensor  # (B, Bx)
    mask: torch.Tensor  # (B, M, H, W) float in [0, 1], at the model's image size
    mask_label: torch.Tensor  # (B, M)
    mask_valid: torch.Tensor  # (B, M)

    def to(self, device: torch.device | str) -> PromptTensors:
        return PromptTensors(**{k: v.to(device) for k, v in self.__dict__.items()})

    @property
    def batch_size(self) -> int:
        return self.point_xy.shape[0]

    @staticmethod
    def empty(batch: int, slots: PromptSlots, image_hw: tuple[int, int]) -> PromptTensors:
        return collate_prompts([[] for _ in range(batch)], [image_hw] * batch, slots, image_hw)


def collate_prompts(
    prompts: Sequence[Sequence[VisualPrompt]],
    source_hw: Sequence[tuple[int, int]],
    slots: PromptSlots,
    model_hw: tuple[int, int],
) -> PromptTensors:
    """Batch prompts into fixed slots.

    prompts[b] are the prompts of example b, drawn on an image of size source_hw[b] = (H, W); masks are
    resized to model_hw. Too many prompts of a kind, or a prompt outside its image, raises
    PixelVLAInputError.
    """
    bsz = len(prompts)
    if len(source_hw) != bsz:
        raise PixelVLAInputError(f"{bsz} prompt lists but {len(source_hw)} image sizes")
    P, L, K, NB, M = slots.max_points, slots.max_lines, slots.line_points, slots.max_boxes, slots.max_masks
    point_xy, point_label = torch.zeros(bsz, P, 2), torch.zeros(bsz, P, dtype=torch.long)
    line_xy, line_label = torch.zeros(bsz, L, K, 2), torch.zeros(bsz, L, dtype=torch.long)
    box_xy, box_label = torch.zeros(bsz, NB, 2, 2), torch.zeros(bsz, NB, dtype=torch.long)
    mask, mask_label = torch.zeros(bsz, M, *model_hw), torch.zeros(bsz, M, dtype=torch.long)
    point_valid = torch.zeros(bsz, P, dtype=torch.bool)
    line_valid = torch.zeros(bsz, L, dtype=torch.bool)
    box_valid = torch.zeros(bsz, NB, dtype=torch.bool)
    mask_valid = torch.zeros(bsz, M, dtype=torch.bool)
    for b, (plist, (h, w)) in enumerate(zip(prompts, source_hw, strict=True)):
        scale = np.asarray([w, h], dtype=np.float64)
        n_pt = n_ln = n_bx = n_mk = 0
        for p in plist:
            if not isinstance(p, VisualPrompt):
                raise PixelVLAInputError(f"expected VisualPrompt, got {type(p).__name__}")
            p.check_inside(h, w)
            if p.kind == POINT:
                n = p.points.shape[0]
                if n_pt + n > P:
                    raise PixelVLAInputError(f"at most {P} points per example, got {n_pt + n}")
                point_xy[b, n_pt : n_pt + n] = torch.from_numpy(to_unit_square(p.points, scale)).float()
                point_label[b, n_pt : n_pt + n] = torch.from_numpy(p.labels)
                point_valid[b, n_pt : n_pt + n] = True
                n_pt += n
            elif p.kind == LINE:
                if n_ln >= L:
                    raise PixelVLAInputError(f"at most {L} line prompts per example, got more")
                line_xy[b, n_ln] = torch.from_numpy(
                    to_unit_square(resample_polyline(p.points, K), scale)
                ).float()
                line_label[b, n_ln], line_valid[b, n_ln] = int(p.labels[0]), True
                n_ln += 1
            elif p.kind == BOX:
                if n_bx >= NB:
                    raise PixelVLAInputError(f"at most {NB} box prompts per example, got more")
                box_xy[b, n_bx] = torch.from_numpy(to_unit_square(p.points, scale)).float()
                box_label[b, n_bx], box_valid[b, n_bx] = int(p.labels[0]), True
                n_bx += 1
            else:
                if n_mk >= M:
                    raise PixelVLAInputError(f"at most {M} mask prompts per example, got more")
                mask[b, n_mk] = resize_mask(p.mask, model_hw)
                mask_label[b, n_mk], mask_valid[b, n_mk] = int(p.labels[0]), True
                n_mk += 1
    return PromptTensors(
        point_xy,
        point_label,
        point_valid,
        line_xy,
        line_label,
        line_valid,
        box_xy,
        box_label,
        box_valid,
        mask,
        mask_label,
        mask_valid,
    )


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

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ModelInputs:
        return ModelInputs.from_tensors(
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.tensors().items()}
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor by a flat name (prompt fields as prompt_<field>; absent proprio / anchor left out):
        the inputs of an exported graph, a captured CUDA graph's buffers, a message on the network."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "prompts"}
        out |= {f"prompt_{k}": v for k, v in self.prompts.__dict__.items()}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ModelInputs:
        """The inverse of tensors()."""
        prompts = PromptTensors(**{f.name: tensors[f"prompt_{f.name}"] for f in fields(PromptTensors)})
        plain = {f.name: tensors.get(f.name) for f in fields(cls) if f.name != "prompts"}
        return cls(prompts=prompts, **plain)

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]


@dataclass
class PixelVLAOutput:
    actions: torch.Tensor  # (B, N_c, 7) normalized actions (gripper in [0, 1] units, not binarized)
    loss: torch.Tensor | None = None  # scalar L1 on normalized actions, when targets were given
