"""Typed configuration of the annotation pipeline (YAML/JSON file via --config; validated on construction)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .sampling import SamplingConfig


@dataclass
class AnnotationConfig:
    # Stage A
    close_threshold: float = 0.5
    gripper_half_extent_m: float = 0.035  # cube around the TCP projected as the gripper's box
    region_expand: float = 1.6  # gripper box -> region
    min_region_px: float = 24.0
    gripper_query: str = "robot gripper"  # detector query when no camera model
    # Stage B
    llm_path: str | None = None  # local causal LM for the phrase (default: rule-based parser)
    detector_path: str | None = None  # local OWLv2 checkpoint (default: none, the seed point is the grasp)
    sam_path: str | None = None  # local SAM checkpoint (default: colour region growing)
    min_detection_score: float = 0.1
    min_segment_score: float = 0.3
    # Quality filter
    min_mask_px: int = 12
    min_mask_frac: float = 0.0002
    max_mask_frac: float = 0.2  # of the image
    max_region_frac: float = 0.9  # of the region
    # Prompts and output
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    shard_size: int = 64
    seed: int = 0
    input_options: dict[str, Any] = field(default_factory=dict)  # reader config (image_key, topics, ...)

    def __post_init__(self) -> None:
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig(**self.sampling)
        if not 0 < self.close_threshold < 1:
            raise ValueError(f"close_threshold must be in (0, 1), got {self.close_threshold}")
        if self.region_expand < 1:
            raise ValueError(f"region_expand must be >= 1, got {self.region_expand}")
        if not 0 < self.max_mask_frac <= 1 or not 0 <= self.min_mask_frac < self.max_mask_frac:
            raise ValueError("need 0 <= min_mask_frac < max_mask_frac <= 1")
        if self.shard_size < 1:
            raise ValueError("shard_size must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnnotationConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown annotation config keys {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> AnnotationConfig:
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        return cls.from_dict(data)
