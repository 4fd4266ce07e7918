"""Small configs and synthetic observations for tests (of this package and of its users)."""

from __future__ import annotations

import numpy as np

from pixelvla_ros.camera import CameraModel
from pixelvla_ros.model.config import (
    SIGLIP,
    ActionHeadConfig,
    LLMConfig,
    LoraSettings,
    PixelEncoderConfig,
    PixelVLAConfig,
    PromptEncoderConfig,
    TokenizerConfig,
    VisionTowerConfig,
)
from pixelvla_ros.model.tokenizer import ByteWordTokenizer
from pixelvla_ros.preprocessing import NormStats, PolicyInput, PreprocessConfig, Preprocessor
from pixelvla_ros.prompts import PromptSlots, VisualPrompt

MODES = ("text", "text_mask", "text_prompts", "prompts_only", "all")


def micro_config(proprio_dim: int = 7, attn: str = "sdpa") -> PixelVLAConfig:
    """A ~0.5M-parameter model (32 px images, 2-layer tower and LM) for fast tests."""
    return PixelVLAConfig(
        vision=[
            VisionTowerConfig(
                kind=SIGLIP,
                hf_config=dict(
                    image_size=32, patch_size=8, hidden_size=48, intermediate_size=96,
                    num_hidden_layers=2, num_attention_heads=2, vision_use_head=False,
                ),
                feature_layer=-1,
            )
        ],
        llm=LLMConfig(
            hf_config=dict(
                model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=ByteWordTokenizer.VOCAB_SIZE,
                max_position_embeddings=256, tie_word_embeddings=False,
            ),
            attn_implementation=attn,
        ),
        tokenizer=TokenizerConfig(max_text_tokens=24),
        image_size=32,
        pixel=PixelEncoderConfig(num_levels=2, level_dim=32, max_object_masks=1),
        prompt=PromptEncoderConfig(
            dim=32, slots=PromptSlots(max_points=3, max_lines=1, line_points=4, max_boxes=1, max_masks=1),
            mask_channels=8,
        ),
        action=ActionHeadConfig(chunk_size=4, hidden_dim=64, num_blocks=2),
        proprio_dim=proprio_dim,
        lora=LoraSettings(rank=4, alpha=8),
        name="micro",
    )  # fmt: skip


def default_stats() -> NormStats:
    return NormStats(q01=[-0.02] * 3 + [-0.1] * 3 + [0.0], q99=[0.02] * 3 + [0.1] * 3 + [1.0])


def make_preprocessor(cfg: PixelVLAConfig, stats: NormStats | None = None) -> Preprocessor:
    proprio = NormStats([-1.0] * cfg.proprio_dim, [1.0] * cfg.proprio_dim) if cfg.proprio_dim else None
    return Preprocessor(PreprocessConfig.for_model(cfg, stats or default_stats(), proprio_stats=proprio))


def sample_input(
    mode: str, seed: int = 0, hw: tuple[int, int] = (48, 64), proprio_dim: int = 7
) -> PolicyInput:
    """A synthetic observation for one input mode (see MODES)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=bool)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    mask[y0 : y0 + h // 3, x0 : x0 + w // 3] = True
    prompts = [
        VisualPrompt.point([[x0 + 2.5, y0 + 3.0], [x0 + 5.0, y0 + 1.5], [1.0, 2.0]], labels=[1, 1, 0]),
        VisualPrompt.line([[x0, y0], [x0 + w / 4, y0 + h / 5], [x0 + w / 3, y0 + 2.0]]),
        VisualPrompt.box(x0, y0, x0 + w / 3, y0 + h / 3),
        VisualPrompt.from_mask(mask),
    ]
    proprio = rng.uniform(-1, 1, size=proprio_dim) if proprio_dim else None
    task = "pick up the red block"
    if mode == "text":
        return PolicyInput(image, task, proprio=proprio)
    if mode == "text_mask":
        return PolicyInput(image, task, object_mask=mask, proprio=proprio)
    if mode == "text_prompts":
        return PolicyInput(image, task, prompts=prompts, proprio=proprio)
    if mode == "prompts_only":
        return PolicyInput(image, None, prompts=prompts[:2], proprio=proprio)
    if mode == "all":
        return PolicyInput(image, task, object_mask=mask, prompts=prompts, proprio=proprio)
    raise ValueError(f"unknown mode {mode!r}; known: {MODES}")


def oblique_camera(width: int, height: int, fovy_deg: float = 45.0) -> CameraModel:
    """A camera placed like the simulator's scene camera: at (1.05, 0.42, 0.4) m looking down at
    (0.45, 0, 0.07), about 24 degrees below the horizon."""
    pos, lookat = np.array([1.05, 0.42, 0.4]), np.array([0.45, 0.0, 0.07])
    forward = (lookat - pos) / np.linalg.norm(lookat - pos)  # optical z
    right = np.cross(forward, [0.0, 0.0, 1.0])  # optical x
    right /= np.linalg.norm(right)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([right, np.cross(forward, right), forward])  # optical y points down
    T[:3, 3] = pos
    return CameraModel.from_fovy(width, height, fovy_deg, T)
