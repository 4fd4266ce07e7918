"""Pixel-160K annotation pipeline: gripper-aware region proposal (stage A), multimodal object segmentation
(stage B), prompt sampling, quality filter, tar shards (format.py), report, evaluation, CLI (cli.main)."""

from .cli import main
from .config import AnnotationConfig
from .format import ShardWriter, decode_rle, encode_rle, iter_samples, list_shards
from .pipeline import AnnotationResult, Annotator, run_annotation
from .sampling import SamplingConfig, build_text, sample_prompts

__all__ = [
    "AnnotationConfig",
    "AnnotationResult",
    "Annotator",
    "SamplingConfig",
    "ShardWriter",
    "build_text",
    "decode_rle",
    "encode_rle",
    "iter_samples",
    "list_shards",
    "main",
    "run_annotation",
    "sample_prompts",
]
