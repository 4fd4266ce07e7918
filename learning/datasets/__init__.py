"""Dataset input through one episode interface (:class:`Episode`) with readers for the simulator's demos,
the LeRobotDataset v3 layout and rosbag2 (MCAP / SQLite) recordings, plus action-convention converters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conventions import CONVERTERS, convert_actions
from .episode import CorruptEpisodeError, Episode, EpisodeSource, iter_episodes, safe_id
from .lerobot import LeRobotConfig, LeRobotV3Source, write_lerobot_v3
from .rosbag2 import Rosbag2Config, Rosbag2Source
from .sim import SimDemoSource

INPUT_FORMATS = ("sim", "lerobot", "rosbag2")


def open_source(path: str | Path, input_format: str, options: dict[str, Any] | None = None) -> EpisodeSource:
    """The episode source of ``path`` in ``input_format`` (options: the reader's config fields)."""
    opts = dict(options or {})
    if input_format == "sim":
        return SimDemoSource(path, image_key=opts.get("image_key"))
    if input_format == "lerobot":
        if "ee_pos_slice" in opts and opts["ee_pos_slice"] is not None:
            opts["ee_pos_slice"] = tuple(opts["ee_pos_slice"])
        return LeRobotV3Source(path, LeRobotConfig(**opts))
    if input_format == "rosbag2":
        return Rosbag2Source(path, Rosbag2Config(**opts))
    raise ValueError(f"input format must be one of {INPUT_FORMATS}, got {input_format!r}")


__all__ = [
    "CONVERTERS",
    "INPUT_FORMATS",
    "CorruptEpisodeError",
    "Episode",
    "EpisodeSource",
    "LeRobotConfig",
    "LeRobotV3Source",
    "Rosbag2Config",
    "Rosbag2Source",
    "SimDemoSource",
    "convert_actions",
    "iter_episodes",
    "open_source",
    "safe_id",
    "write_lerobot_v3",
]
