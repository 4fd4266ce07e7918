"""Vision towers (SigLIP / DINOv2 from transformers), channel-wise fusion and the Prismatic projector.

Each tower reads images in [0, 1], standardizes them with its own mean/std, and returns the patch
features of `num_levels` evenly spaced layers (the last one being the projector's layer). Layers after
the projector's layer are never run: the tower is built truncated.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from pixelvla_ros.model.config import DINOV2, SIGLIP, PixelVLAConfig, VisionTowerConfig


def _hf_classes(kind: str):
    from transformers import Dinov2Config, Dinov2Model, SiglipVisionConfig, SiglipVisionModel

    return (SiglipVisionConfig, SiglipVisionModel) if kind == SIGLIP else (Dinov2Config, Dinov2Model)


def resolve_pretrained_tower(cfg: VisionTowerConfig) -> None:
    """Replace cfg.hf_config by the config found in cfg.pretrained_path (so checkpoints rebuild it)."""
    if cfg.pretrained_path is None:
        return
    path = Path(cfg.pretrained_path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{cfg.kind} tower folder {str(path)!r} does not exist (expected a local "
            "Hugging Face model folder: config.json + weights; nothing is downloaded)"
        )
    config_cls, _ = _hf_classes(cfg.kind)
    hf = config_cls.from_pretrained(str(path), local_files_only=True).to_dict()
    keep = {k: v for k, v in hf.items() if not k.startswith("_") and k not in ("transformers_version",)}
    if cfg.kind == SIGLIP:
        keep["vision_use_head"] = False
    cfg.hf_config = keep


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionTowerConfig, num_levels: int, load_pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.levels = cfg.level_indices(num_levels)  # hidden_states indices, e.g. [1, 2, 3, 4]
        n_run = self.levels[-1]  # layers actually needed
        config_cls, model_cls = _hf_classes(cfg.kind)
        hf = dict(cfg.hf_config, num_hidden_layers=n_run)
        if cfg.kind == SIGLIP:
            hf["vision_use_head"] = False
        if load_pretrained and cfg.pretrained_path is not None:
            if not Path(cfg.pretrained_path).is_dir():
                raise FileNotFoundError(f"{cfg.kind} tower folder {cfg.pretrained_path!r} does not exist")
            self.model = model_cls.from_pretrained(
                cfg.pretrained_path,
                config=config_cls(**hf),
                local_files_only=True,
                attn_implementation="sdpa",
            )
        else:
            self.model = model_cls(config_cls(**hf, attn_implementation="sdpa"))
        # Drop what the hidden states never pass through (final norms, DINOv2's masked-patch token).
        root = getattr(self.model, "vision_model", self.model)  # older transformers wrap SigLIP once more
        for name in ("post_layernorm", "layernorm"):
            if isinstance(getattr(root, name, None), nn.Module):
                setattr(root, name, nn.Identity())
        if getattr(root.embeddings, "mask_token", None) is not None:
            root.embeddings.mask_token = None
        self.num_prefix = 1 if cfg.kind == DINOV2 else 0  # DINOv2's CLS token
        self.register_buffer("mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)

    @property
    def width(self) -> int:
        return self.cfg.width

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        # images: (B, 3, H, W) in [0, 1] -> num_levels x (B, N, C) patch features
        x = ((images - self.mean) / self.std).to(self.model.dtype)
        out = self.model(pixel_values=x, output_hidden_states=True)
        hs = out.hidden_states  # (n_run + 1) x (B, prefix + N, C)
        return [hs[i][:, self.num_prefix :] for i in self.levels]


class VisionBackbone(nn.Module):
    """One or two towers; per level, features concatenated channel-wise (Prismatic / OpenVLA fusion)."""

    def __init__(self, cfg: PixelVLAConfig, load_pretrained: bool = True):
        super().__init__()
        self.towers = nn.ModuleList(VisionTower(v, cfg.pixel.num_levels, load_pretrained) for v in cfg.vision)
        self.width = sum(t.width for t in self.towers)  # fused channels C_f

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        # images: (B, 3, H, W) -> num_levels x (B, N, C_f); the last level feeds the projector
        per_tower = [t(images) for t in self.towers]
        return [torch.cat(feats, dim=-1) for feats in zip(*per_tower, strict=True)]


class Projector(nn.Module):
    """Prismatic's fused GELU MLP: C_f -> mult*C_f -> D -> D (3 linear layers)."""

    def __init__(self, vision_dim: int, llm_dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(vision_dim, mult * vision_dim),
            nn.GELU(),
            nn.Linear(mult * vision_dim, llm_dim),
            nn.GELU(),
            nn.Linear(llm_dim, llm_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, N, C_f) -> (B, N, D)
