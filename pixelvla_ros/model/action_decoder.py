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
    """linear -> N_r residual blocks (LayerNorm, Linear, skip) -> MLP -> (B, N_c, action_dim): one action
    slot per step of the chunk."""

    def __init__(self, llm_dim: int, hidden: int, num_blocks: int, action_dim: int):
        super().__init__()
        self.inp = nn.Linear(llm_dim, hidden)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden) for _ in range(num_blocks)])
        self.head = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, action_dim)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: (B, N_c, D) hidden states of the action slots
        return self.head(self.blocks(self.inp(h)))  # (B, N_c, 7)
