"""Vision towers (SigLIP / DINOv2 from transformers), channel-wise fusion and the Prismatic projector.

Each tower reads images in [0, 1], standardizes them with its own mean/std, and returns the patch
features of `num_levels` evenly spaced layers (the last one being the projector's layer). Layers after
the projector's layer are never run: the tower is built truncated.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from pixelvla_ros.model.config import DINOV2, DINOV2_REG, SIGLIP, PixelVLAConfig, VisionTowerConfig
from pixelvla_ros.model.hf_folder import (
    CONFIG_FILE,
    PretrainedFolderError,
    check_loading_info,
    check_weights,
    config_kwargs,
    read_folder_config,
)

# A folder's config.json model_type -> tower kind ("siglip" is a whole SiglipModel: its vision part is read)
FOLDER_KINDS = {
    "dinov2": DINOV2,
    "dinov2_with_registers": DINOV2_REG,
    "siglip_vision_model": SIGLIP,
    "siglip": SIGLIP,
}
# Backbone fields derived from the depth: they name stages of the full tower, which truncation removes.
DEPTH_FIELDS = ("out_features", "out_indices", "stage_names")


def _hf_classes(kind: str):
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    return {
        SIGLIP: (SiglipVisionConfig, SiglipVisionModel),
        DINOV2: (Dinov2Config, Dinov2Model),
        DINOV2_REG: (Dinov2WithRegistersConfig, Dinov2WithRegistersModel),
    }[kind]


def _family(kind: str) -> str:
    return SIGLIP if kind == SIGLIP else DINOV2


def resolve_pretrained_tower(cfg: VisionTowerConfig) -> VisionTowerConfig:
    """The tower config with kind and hf_config read from cfg.pretrained_path (so checkpoints rebuild it);
    cfg itself if it has no path. The folder's model_type picks the kind within the tower's family (DINOv2
    with or without registers); a folder of the other family, or of no vision tower, is refused."""
    if cfg.pretrained_path is None:
        return cfg
    family = _family(cfg.kind)
    what = f"{family} tower"
    raw = read_folder_config(cfg.pretrained_path, what)
    kind = FOLDER_KINDS.get(raw["model_type"])
    config_file = f"{cfg.pretrained_path}/{CONFIG_FILE}"
    if kind is None or _family(kind) != family:
        wanted = sorted(t for t, k in FOLDER_KINDS.items() if _family(k) == family)
        raise PretrainedFolderError(
            f"{config_file}: model_type {raw['model_type']!r} is not a {family} tower "
            f"(expected one of {wanted})"
        )
    check_weights(cfg.pretrained_path, what)
    config_cls, _ = _hf_classes(kind)
    try:
        if raw["model_type"] == "siglip":
            from transformers import SiglipConfig

            hf = SiglipConfig.from_pretrained(cfg.pretrained_path, local_files_only=True).vision_config
        else:
            hf = config_cls.from_pretrained(cfg.pretrained_path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise PretrainedFolderError(f"{config_file} is not a valid {kind} config: {e}") from e
    keep = config_kwargs(hf.to_dict())
    if kind == SIGLIP:
        keep["vision_use_head"] = False
    return dataclasses.replace(cfg, kind=kind, hf_config=keep)


def truncated_hf_config(cfg: VisionTowerConfig, num_layers: int) -> dict:
    """The tower's HF config kwargs cut to its first num_layers layers, without the fields that name
    layers of the full depth (so the cut config stays valid)."""
    hf = {k: v for k, v in cfg.hf_config.items() if k not in DEPTH_FIELDS}
    hf["num_hidden_layers"] = num_layers
    if cfg.kind == SIGLIP:
        hf["vision_use_head"] = False
    return hf


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionTowerConfig, num_levels: int, load_pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.levels = cfg.level_indices(num_levels)  # hidden_states indices, e.g. [1, 2, 3, 4]
        self.num_layers = self.levels[-1]  # layers actually run; the tower is built cut after them
        config_cls, model_cls = _hf_classes(cfg.kind)
        hf_config = config_cls(**truncated_hf_config(cfg, self.num_layers), attn_implementation="sdpa")
        if load_pretrained and cfg.pretrained_path is not None:
            what = f"{cfg.kind} tower"  # the folder was checked by resolve_pretrained_tower
            try:
                self.model, info = model_cls.from_pretrained(
                    cfg.pretrained_path,
                    config=hf_config,
                    local_files_only=True,
                    dtype=torch.get_default_dtype(),
                    output_loading_info=True,
                )
            except (OSError, ValueError, RuntimeError) as e:
                raise PretrainedFolderError(
                    f"{what} folder {cfg.pretrained_path!r} cannot be loaded: {e}"
                ) from e
            check_loading_info(info, cfg.pretrained_path, what)
        else:
            self.model = model_cls(hf_config)
        # Drop what the hidden states never pass through (final norms, DINOv2's masked-patch token).
        root = getattr(self.model, "vision_model", self.model)  # older transformers wrap SigLIP once more
        for name in ("post_layernorm", "layernorm"):
            if isinstance(getattr(root, name, None), nn.Module):
                setattr(root, name, nn.Identity())
        if getattr(root.embeddings, "mask_token", None) is not None:
            root.embeddings.mask_token = None
        self.num_prefix = cfg.num_prefix_tokens  # CLS + registers, dropped from the features
        self.register_buffer("mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)

    @property
    def width(self) -> int:
        return self.cfg.width

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        # images: (B, 3, H, W) in [0, 1] -> num_levels x (B, N, C) patch features
        x = ((images - self.mean) / self.std).to(self.model.dtype)
        out = self.model(pixel_values=x, output_hidden_states=True)
        hs = out.hidden_states  # (num_layers + 1) x (B, prefix + N, C)
        n_patches = (images.shape[-2] // self.cfg.patch_size) * (images.shape[-1] // self.cfg.patch_size)
        if hs[0].shape[1] != self.num_prefix + n_patches:  # a wrong prefix count would shift every patch
            raise RuntimeError(
                f"{self.cfg.kind} tower: {hs[0].shape[1]} tokens, expected {self.num_prefix} prefix + "
                f"{n_patches} patches"
            )
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
