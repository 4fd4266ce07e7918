"""Multiscale pixel-aware encoder: object mask(s) + several vision levels -> one pixel token per level.

With `centroid_encoding`, each token also gets the mask's centroid (random-Fourier encoded, through a
linear layer that starts at zero so a checkpoint trained without it keeps its outputs when it is enabled).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelvla_ros.model.prompt_encoder import FourierPositionEncoding, mask_centroid


class PixelEncoder(nn.Module):
    def __init__(
        self,
        vision_dim: int,
        level_dim: int,
        llm_dim: int,
        num_levels: int,
        grid: int,
        centroid_encoding: bool = False,
    ):
        super().__init__()
        self.grid = grid
        self.level_proj = nn.ModuleList(nn.Linear(vision_dim, level_dim) for _ in range(num_levels))
        self.mlp = nn.Sequential(nn.Linear(level_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))
        self.centroid_pe = FourierPositionEncoding(level_dim) if centroid_encoding else None
        self.centroid_proj = nn.Linear(level_dim, level_dim) if centroid_encoding else None
        if self.centroid_proj is not None:
            nn.init.zeros_(self.centroid_proj.weight)
            nn.init.zeros_(self.centroid_proj.bias)

    def forward(self, levels: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
        # levels: num_levels x (B, N, C_f) with N = grid^2; masks: (B, M, H, W) in [0, 1]
        B, M = masks.shape[:2]
        w = F.adaptive_avg_pool2d(masks.float(), (self.grid, self.grid)).flatten(2)  # (B, M, N) coverage
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-6)  # mask-weighted average (absent masks -> 0)
        w = w.to(levels[0].dtype)
        tokens = [
            proj(w @ feats) for proj, feats in zip(self.level_proj, levels, strict=True)
        ]  # Lv x (B, M, d)
        tokens = torch.stack(tokens, dim=2)  # (B, M, Lv, d)
        if self.centroid_proj is not None:
            xy, present = mask_centroid(masks)  # (B, M, 2), (B, M)
            pe = (self.centroid_pe(xy) * present[..., None]).to(tokens.dtype)  # fp32 sin/cos -> model dtype
            where = self.centroid_proj(pe)  # (B, M, d)
            tokens = tokens + where.to(tokens.dtype)[:, :, None]
        tokens = tokens.reshape(B, M * len(levels), -1)  # (B, M*Lv, d), mask-major
        return self.mlp(tokens)  # (B, M*Lv, D)
