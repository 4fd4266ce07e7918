"""PixelVLA model: configs, components, the full model, LoRA / training stages and checkpoints."""

from pixelvla_ros.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from pixelvla_ros.model.config import (
    PRESETS,
    ActionHeadConfig,
    LLMConfig,
    LoraSettings,
    PixelEncoderConfig,
    PixelVLAConfig,
    PromptEncoderConfig,
    TokenizerConfig,
    VisionTowerConfig,
    config_7b,
    preset,
    tiny_config,
)
from pixelvla_ros.model.hf_folder import PretrainedFolderError
from pixelvla_ros.model.inputs import ModelInputs, PixelVLAOutput
from pixelvla_ros.model.lora import STAGES, add_lora, apply_training_stage, has_lora, merge_lora
from pixelvla_ros.model.pixelvla import PixelVLA, autocast_context, build_model, check_dtype, default_device
from pixelvla_ros.model.tokenizer import ByteWordTokenizer, load_tokenizer
from pixelvla_ros.prompts import PixelVLAInputError

__all__ = [
    "PRESETS",
    "ActionHeadConfig",
    "ByteWordTokenizer",
    "LLMConfig",
    "LoraSettings",
    "ModelInputs",
    "PixelEncoderConfig",
    "PixelVLA",
    "PixelVLAConfig",
    "PixelVLAInputError",
    "PixelVLAOutput",
    "PretrainedFolderError",
    "PromptEncoderConfig",
    "TokenizerConfig",
    "VisionTowerConfig",
    "autocast_context",
    "build_model",
    "check_dtype",
    "config_7b",
    "default_device",
    "load_tokenizer",
    "preset",
    "tiny_config",
    "STAGES",
    "add_lora",
    "apply_training_stage",
    "has_lora",
    "merge_lora",
    "CheckpointError",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
]
