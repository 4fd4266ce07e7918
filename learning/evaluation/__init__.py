"""Closed-loop evaluation of PixelVLA checkpoints in the simulator (held-out seeds, per family x mode)."""

from .report import config_hash, wilson_interval

__all__ = ["config_hash", "wilson_interval"]
