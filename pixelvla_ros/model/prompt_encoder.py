"""SAM-style visual prompt encoder: points, lines, boxes, masks -> fixed prompt slots at the LLM width.

Coordinates (normalized to [0, 1]) get random-Fourier positional encodings; each slot adds a learned
embedding of its type (point, line, box top-left / bottom-right corner, mask) and of its label
(negative / positive); line points also add their index along the line (direction matters). Masks go
through a small conv encoder (with coordinate channels) pooled to side x side tokens. Then an MLP.

Slot order (fixed): [P points][L lines x K][Bx boxes x 2 corners][M masks x side^2].
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelvla_ros.model.config import PromptEncoderConfig
from pixelvla_ros.model.inputs import PromptTensors

T_POINT, T_LINE, T_BOX_TL, T_BOX_BR, T_MASK = range(5)


class FourierPositionEncoding(nn.Module):
    """SAM's PositionEmbeddingRandom: [0, 1]^2 -> (dim,) via a fixed random Gaussian projection."""

    def __init__(self, dim: int, scale: float = 1.0):
        super().__init__()
        self.register_buffer("gaussian", scale * torch.randn(2, dim // 2))  # persistent: saved with weights

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        # xy: (..., 2) in [0, 1] -> (..., dim)
        with torch.autocast(device_type=xy.device.type, enabled=False):  # sin/cos of large args: fp32
            proj = (2 * xy.float() - 1) @ self.gaussian.float() * (2 * math.pi)
            return torch.cat([proj.sin(), proj.cos()], dim=-1)


def mask_centroid(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., H, W) masks in [0, 1] -> ((..., 2) centroid x, y normalized like prompt coordinates (pixel
    centres at (i + 0.5) / size), (...,) True where the mask has pixels)."""
    H, W = mask.shape[-2:]
    m = mask.float()
    area = m.sum((-2, -1))
    xs = (torch.arange(W, device=m.device, dtype=m.dtype) + 0.5) / W
    ys = (torch.arange(H, device=m.device, dtype=m.dtype) + 0.5) / H
    cx = (m.sum(-2) * xs).sum(-1) / area.clamp_min(1e-6)
    cy = (m.sum(-1) * ys).sum(-1) / area.clamp_min(1e-6)
    return torch.stack([cx, cy], dim=-1), area > 0


class MaskEncoder(nn.Module):
    """(B, 1, H, W) mask -> (B, side^2, dim): 3 stride-2 convs on [mask, x, y], then average pooling."""

    def __init__(self, dim: int, channels: int, side: int):
        super().__init__()
        self.side = side
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * c, dim, 3, stride=2, padding=1),
        )

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        B, _, H, W = mask.shape
        ys = (
            torch.linspace(-1, 1, H, device=mask.device, dtype=mask.dtype).view(1, 1, H, 1).expand(B, 1, H, W)
        )
        xs = (
            torch.linspace(-1, 1, W, device=mask.device, dtype=mask.dtype).view(1, 1, 1, W).expand(B, 1, H, W)
        )
        feat = self.net(torch.cat([mask, xs * mask, ys * mask], dim=1))  # (B, dim, H/8, W/8)
        feat = F.adaptive_avg_pool2d(feat, self.side)  # (B, dim, side, side)
        return feat.flatten(2).transpose(1, 2)  # (B, side^2, dim)


class PromptEncoder(nn.Module):
    def __init__(self, cfg: PromptEncoderConfig, llm_dim: int):
        super().__init__()
        self.cfg, s = cfg, cfg.slots
        d = cfg.dim
        self.pe = FourierPositionEncoding(d, cfg.fourier_scale)
        self.type_embed = nn.Embedding(5, d)
        self.label_embed = nn.Embedding(2, d)
        self.line_index_embed = nn.Parameter(torch.zeros(s.line_points, d))
        self.mask_token_embed = nn.Parameter(torch.zeros(cfg.mask_tokens_side**2, d))
        self.mask_encoder = MaskEncoder(d, cfg.mask_channels, cfg.mask_tokens_side)
        self.mlp = nn.Sequential(nn.Linear(d, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))
        nn.init.normal_(self.line_index_embed, std=0.02)
        nn.init.normal_(self.mask_token_embed, std=0.02)

    @property
    def num_tokens(self) -> int:
        return self.cfg.num_tokens

    def point_slot_flags(self, device: torch.device) -> torch.Tensor:
        """(S,) bool: which slots are points (they form an unordered set: shared position, no index)."""
        flags = torch.zeros(self.num_tokens, dtype=torch.bool, device=device)
        flags[: self.cfg.slots.max_points] = True
        return flags

    def forward(self, p: PromptTensors) -> tuple[torch.Tensor, torch.Tensor]:
        # -> tokens (B, S, D), valid (B, S) bool
        B, s, dev = p.batch_size, self.cfg.slots, p.point_xy.device
        K, side2 = s.line_points, self.cfg.mask_tokens_side**2
        typ = self.type_embed.weight  # (5, d)
        parts, valid = [], []
        # points: (B, P, d)
        parts.append(self.pe(p.point_xy) + typ[T_POINT] + self.label_embed(p.point_label))
        valid.append(p.point_valid)
        # lines: (B, L*K, d)
        ln = (
            self.pe(p.line_xy)
            + typ[T_LINE]
            + self.label_embed(p.line_label)[:, :, None]
            + self.line_index_embed
        )
        parts.append(ln.reshape(B, s.max_lines * K, -1))
        valid.append(p.line_valid[:, :, None].expand(B, s.max_lines, K).reshape(B, -1))
        # boxes: (B, Bx*2, d), corner types top-left / bottom-right
        corner = typ[[T_BOX_TL, T_BOX_BR]]  # (2, d)
        bx = self.pe(p.box_xy) + corner + self.label_embed(p.box_label)[:, :, None]
        parts.append(bx.reshape(B, s.max_boxes * 2, -1))
        valid.append(p.box_valid[:, :, None].expand(B, s.max_boxes, 2).reshape(B, -1))
        # masks: (B, M*side^2, d)
        if s.max_masks:
            M, (H, W) = s.max_masks, p.mask.shape[-2:]
            mk = self.mask_encoder(p.mask.reshape(B * M, 1, H, W).to(typ.dtype)).reshape(B, M, side2, -1)
            mk = mk + self.mask_token_embed + typ[T_MASK] + self.label_embed(p.mask_label)[:, :, None]
            if self.cfg.mask_centroid:
                xy, present = mask_centroid(p.mask)  # (B, M, 2), (B, M)
                mk = mk + (self.pe(xy) * present[..., None]).to(mk.dtype)[:, :, None]
            parts.append(mk.reshape(B, M * side2, -1))
            valid.append(p.mask_valid[:, :, None].expand(B, M, side2).reshape(B, -1))
        tokens = torch.cat(parts, dim=1)  # (B, S, d)
        return self.mlp(tokens.to(typ.dtype)), torch.cat(valid, dim=1).to(dev)
