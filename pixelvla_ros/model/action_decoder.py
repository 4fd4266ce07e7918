"""Continuous action decoder: action-slot hidden states -> chunk of N_c x 7 normalized actions."""

from __future__ import annotations

import torch
import torch.nn as nn


class ResidualBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.fc(self.norm(x)))  # (B, S, h)


class ActionDecoder(nn.Module):
    """linear -> N_r residual blocks (LayerNorm, Linear, skip) -> MLP -> (B, N_c, action_dim)."""

    def __init__(
        self,
        llm_dim: int,
        hidden: int,
        num_blocks: int,
        chunk_size: int,
        action_dim: int,
        per_dim: bool = False,
    ):
        super().__init__()
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.inp = nn.Linear(llm_dim, hidden)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden) for _ in range(num_blocks)])
        out = 1 if per_dim else action_dim  # per_dim: one slot per (step, dim) as in OpenVLA-OFT
        self.head = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: (B, S, D) hidden states of the S action slots (S = N_c or N_c*7)
        y = self.head(self.blocks(self.inp(h)))  # (B, S, 7 or 1)
        return y.reshape(h.shape[0], self.chunk_size, self.action_dim)  # (B, N_c, 7)
