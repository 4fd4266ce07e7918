"""Typed, validated, JSON-serialisable configuration of PixelVLA, with the `tiny` and `7b` presets.

Hugging Face sub-configs (vision towers, LLM) are kept as plain dicts of their config kwargs, so a
checkpoint rebuilds the architecture without the pretrained folders it was assembled from.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from pixelvla_ros.action_space import ACTION_DIM
from pixelvla_ros.prompts import PromptSlots

SIGLIP, DINOV2, DINOV2_REG = "siglip", "dinov2", "dinov2_with_registers"
TOWER_KINDS = (SIGLIP, DINOV2, DINOV2_REG)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass
class VisionTowerConfig:
    # "siglip" (SiglipVisionModel), "dinov2" (Dinov2Model) or "dinov2_with_registers"
    # (Dinov2WithRegistersModel); a pretrained folder's model_type sets it (vision.resolve_pretrained_tower)
    kind: str
    # kwargs of the kind's HF config class (the full, untruncated tower)
    hf_config: dict[str, Any]
    pretrained_path: str | None = None  # local folder; loaded with local_files_only=True
    feature_layer: int = -2  # hidden_states index the projector reads (Prismatic: second-to-last)
    image_mean: tuple[float, float, float] = SIGLIP_MEAN
    image_std: tuple[float, float, float] = SIGLIP_STD

    def __post_init__(self) -> None:
        if self.kind not in TOWER_KINDS:
            raise ValueError(f"vision tower kind must be one of {TOWER_KINDS}, got {self.kind!r}")
        if self.kind == DINOV2_REG and "num_register_tokens" not in self.hf_config:
            raise ValueError("a dinov2_with_registers tower's hf_config must give num_register_tokens")
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("image_mean / image_std need 3 values, std > 0")
        n = self.hf_config.get("num_hidden_layers")
        if n is not None and not (-n <= self.feature_layer <= n and self.feature_layer != -n - 1):
            raise ValueError(f"feature_layer {self.feature_layer} out of range for {n} layers")

    @property
    def patch_size(self) -> int:
        return int(self.hf_config["patch_size"])

    @property
    def width(self) -> int:
        return int(self.hf_config["hidden_size"])

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches in the tower's hidden states: DINOv2's CLS token and its register
        tokens (num_register_tokens in the config); SigLIP has none."""
        if self.kind == SIGLIP:
            return 0
        return 1 + (int(self.hf_config["num_register_tokens"]) if self.kind == DINOV2_REG else 0)

    def feature_index(self) -> int:
        """Absolute hidden_states index of the projector's layer (0 = embeddings, n = last layer)."""
        n = int(self.hf_config["num_hidden_layers"])
        return self.feature_layer if self.feature_layer >= 0 else n + 1 + self.feature_layer

    def level_indices(self, num_levels: int) -> list[int]:
        """num_levels evenly spaced hidden_states indices, the last being the projector's layer."""
        f = self.feature_index()
        return [max(1, round(f * k / num_levels)) for k in range(1, num_levels)] + [f]


@dataclass
class LLMConfig:
    hf_config: dict[str, Any]  # kwargs of the HF config class; "model_type" picks it (AutoConfig.for_model)
    pretrained_path: str | None = None
    attn_implementation: str = "sdpa"  # "sdpa" or "eager": both take the custom 4D mask

    def __post_init__(self) -> None:
        if "model_type" not in self.hf_config:
            raise ValueError("llm.hf_config needs a 'model_type' (e.g. 'llama')")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"attn_implementation must be 'sdpa' or 'eager' (custom masks), got "
                f"{self.attn_implementation!r}"
            )

    @property
    def width(self) -> int:
        return int(self.hf_config["hidden_size"])


@dataclass
class TokenizerConfig:
    kind: str = "byte_word"  # "byte_word" (built in, offline, no files) or "hf" (AutoTokenizer, local path)
    path: str | None = None
    max_text_tokens: int = 32  # text is padded / truncated to this many tokens (fixed sequence length)

    def __post_init__(self) -> None:
        if self.kind not in ("byte_word", "hf"):
            raise ValueError(f"tokenizer kind must be 'byte_word' or 'hf', got {self.kind!r}")
        if self.max_text_tokens < 4:
            raise ValueError(f"max_text_tokens must be >= 4, got {self.max_text_tokens}")


@dataclass
class PixelEncoderConfig:
    num_levels: int = 4
    level_dim: int = 128  # per-level linear projection width
    max_object_masks: int = 1  # pixel tokens = num_levels * max_object_masks
    # Add the mask's centroid, Fourier-encoded, to its pixel tokens. Off in checkpoints made before it:
    # a small model trained from scratch did not read the object's position from pooled features alone.
    centroid_encoding: bool = False

    def __post_init__(self) -> None:
        if self.num_levels < 1 or self.level_dim < 1 or self.max_object_masks < 1:
            raise ValueError("pixel encoder sizes must be >= 1")


@dataclass
class PromptEncoderConfig:
    dim: int = 128  # Fourier / type embedding width before the MLP to the LLM width
    slots: PromptSlots = field(default_factory=PromptSlots)
    mask_tokens_side: int = 1  # a mask prompt is pooled to side x side tokens
    mask_channels: int = 16
    fourier_scale: float = 1.0
    # Add a mask prompt's centroid, encoded like a point, to its tokens (see PixelEncoderConfig).
    mask_centroid: bool = False

    def __post_init__(self) -> None:
        s = self.slots
        if self.dim % 2 or self.dim < 2:
            raise ValueError(f"prompt dim must be even, got {self.dim}")
        if min(s.max_points, s.max_lines, s.max_boxes, s.max_masks) < 0 or s.line_points < 2:
            raise ValueError(f"bad prompt slots {s}")
        if self.mask_tokens_side < 1:
            raise ValueError("mask_tokens_side must be >= 1")

    @property
    def num_tokens(self) -> int:
        s = self.slots
        return (
            s.max_points
            + s.max_lines * s.line_points
            + 2 * s.max_boxes
            + s.max_masks * self.mask_tokens_side**2
        )


@dataclass
class ActionHeadConfig:
    chunk_size: int = 8  # N_c
    action_dim: int = ACTION_DIM
    hidden_dim: int = 256
    num_blocks: int = 2  # N_r residual blocks

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.action_dim != ACTION_DIM or self.hidden_dim < 1 or self.num_blocks < 0:
            raise ValueError(f"bad action head config {self}")


@dataclass
class LoraSettings:
    rank: int = 32
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def __post_init__(self) -> None:
        if self.rank < 1 or not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"bad LoRA settings {self}")


@dataclass
class PixelVLAConfig:
    vision: list[VisionTowerConfig]
    llm: LLMConfig
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    image_size: int = 64
    projector_mult: int = 4  # Prismatic fused GELU MLP: fused -> mult*fused -> llm -> llm
    pixel: PixelEncoderConfig = field(default_factory=PixelEncoderConfig)
    prompt: PromptEncoderConfig = field(default_factory=PromptEncoderConfig)
    action: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    proprio_dim: int = 0  # 0 = no proprio token; else the length of the proprio vector
    # The prompt's anchor (preprocessing.prompt_anchor: where the prompt's ray meets the work plane, from
    # the camera calibration, relative to the TCP) added to the proprio token; needs proprio_dim > 0.
    prompt_anchor: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    name: str = "custom"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError if the parts do not fit together (also run once pretrained folders have
        replaced the towers' configs)."""
        if not 1 <= len(self.vision) <= 2:
            raise ValueError(f"1 or 2 vision towers, got {len(self.vision)}")
        grids = set()
        for v in self.vision:
            if self.image_size % v.patch_size:
                raise ValueError(f"image_size {self.image_size} not a multiple of patch {v.patch_size}")
            grids.add(self.image_size // v.patch_size)
            if v.kind == SIGLIP and int(v.hf_config.get("image_size", self.image_size)) != self.image_size:
                raise ValueError(f"SigLIP tower image_size {v.hf_config['image_size']} != {self.image_size}")
        if len(grids) != 1:
            raise ValueError(f"the towers' patch grids differ: {grids}")
        if self.proprio_dim < 0:
            raise ValueError("proprio_dim must be >= 0")
        if self.prompt_anchor and not self.proprio_dim:
            raise ValueError("prompt_anchor is relative to the TCP: it needs proprio_dim > 0")

    @property
    def grid(self) -> int:
        return self.image_size // self.vision[0].patch_size

    @property
    def num_image_tokens(self) -> int:
        return self.grid**2

    def num_tokens(self) -> int:
        """Total LLM sequence length (fixed)."""
        return (
            self.num_image_tokens
            + self.pixel.num_levels * self.pixel.max_object_masks
            + self.prompt.num_tokens
            + (1 if self.proprio_dim else 0)
            + self.tokenizer.max_text_tokens
            + self.action.chunk_size  # one action slot per step of the chunk
        )

    # --- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PixelVLAConfig:
        """Rebuild from to_dict() output; a retired knob at its old "off" value is dropped, at any other
        value refused (drop_retired)."""
        return _from_dict(cls, drop_retired(data, RETIRED_MODEL_KNOBS, "checkpoint"))

    @classmethod
    def from_json(cls, text: str) -> PixelVLAConfig:
        return cls.from_dict(json.loads(text))


# Knobs of experiments that were not kept (docs/experiments.md), removed in issue 18, each with the value
# that meant "off". Files written before then still name them.
RETIRED_IN, LAST_COMMIT_WITH_RETIRED = "issue 18", "cb1d7b1"
RETIRED_MODEL_KNOBS: dict[str, Any] = {"action.grasp_offset_head": False, "action.slot_layout": "per_step"}


def drop_retired(data: dict[str, Any], retired: dict[str, Any], what: str) -> dict[str, Any]:
    """A copy of `data` without the retired knobs it names at their off value; `retired` has dotted keys,
    found in nested mappings or as dotted keys themselves (init_checkpoint_changes). Raises ValueError
    naming the knob if it is set to anything else: `what` (e.g. "checkpoint") was made with code this
    package no longer has."""
    out = copy.deepcopy(data)
    for key, off in retired.items():
        *parents, leaf = key.split(".")
        node = out
        if key in out:
            leaf = key
        else:
            for parent in parents:
                node = node.get(parent) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        if value != off:
            raise ValueError(
                f"{key} was retired ({RETIRED_IN}; docs/experiments.md), and this {what} sets it to "
                f"{value!r} (off: {off!r}): it needs pixelvla_ros at commit {LAST_COMMIT_WITH_RETIRED} or "
                "earlier"
            )
    return out


def _from_dict(cls: type, data: Any) -> Any:
    """Rebuild a (nested) dataclass from asdict() output, refusing unknown or missing keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__}: missing key {f.name!r}")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value)
    if origin is list:
        (arg,) = typing.get_args(tp)
        return [_convert(arg, v) for v in value]
    if origin is tuple:
        return tuple(value)
    return value


# --- presets -------------------------------------------------------------------------------------------
def tiny_config(image_size: int = 64, chunk_size: int = 8, proprio_dim: int = 7) -> PixelVLAConfig:
    """~4-5M parameters: SigLIP-style tower (4 layers, width 192, patch 8) + Llama-style LM (4 layers,
    width 256). Trains on 2 CPU cores in minutes; ~10 ms per forward there."""
    from pixelvla_ros.model.tokenizer import ByteWordTokenizer

    vision = VisionTowerConfig(
        kind=SIGLIP,
        hf_config=dict(
            image_size=image_size,
            patch_size=8,
            hidden_size=192,
            intermediate_size=576,
            num_hidden_layers=4,
            num_attention_heads=3,
            vision_use_head=False,
        ),
        feature_layer=-1,  # only 4 layers: read the last one so the 4 levels are 1, 2, 3, 4
    )
    llm = LLMConfig(
        hf_config=dict(
            model_type="llama",
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=ByteWordTokenizer.VOCAB_SIZE,
            max_position_embeddings=512,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
    )
    return PixelVLAConfig(
        vision=[vision],
        llm=llm,
        tokenizer=TokenizerConfig(kind="byte_word", max_text_tokens=24),
        image_size=image_size,
        pixel=PixelEncoderConfig(num_levels=4, level_dim=128, max_object_masks=1, centroid_encoding=True),
        prompt=PromptEncoderConfig(
            dim=128,
            slots=PromptSlots(max_points=4, max_lines=1, line_points=4, max_boxes=1, max_masks=1),
            mask_centroid=True,
        ),
        action=ActionHeadConfig(chunk_size=chunk_size, hidden_dim=256, num_blocks=2),
        proprio_dim=proprio_dim,
        lora=LoraSettings(rank=8, alpha=16),
        name="tiny",
    )


def config_7b(
    llm_path: str | None = None,
    dinov2_path: str | None = None,
    siglip_path: str | None = None,
    tokenizer_path: str | None = None,
    chunk_size: int = 8,
) -> PixelVLAConfig:
    """Prismatic-7B layout (OpenVLA): DINOv2-L/14 with 4 registers + SigLIP-So400m/14 at 224 px, Llama-2-7B.

    Without paths: random weights of the right shapes (benchmarking). With paths (folders written by
    save_pretrained): each component's config and weights come from its folder when the model is built,
    from_pretrained(path, local_files_only=True); dinov2_path may hold DINOv2 with or without registers,
    siglip_path a SiglipVisionModel or a whole SiglipModel, llm_path any causal LM with its tokenizer.
    """
    dino = VisionTowerConfig(
        kind=DINOV2_REG,
        hf_config=dict(
            image_size=224,
            patch_size=14,
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            mlp_ratio=4,
            layerscale_value=1.0,
            num_register_tokens=4,
        ),
        pretrained_path=dinov2_path,
        feature_layer=-2,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    siglip = VisionTowerConfig(
        kind=SIGLIP,
        hf_config=dict(
            image_size=224,
            patch_size=14,
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            vision_use_head=False,
        ),
        pretrained_path=siglip_path,
        feature_layer=-2,
    )
    llm = LLMConfig(
        hf_config=dict(
            model_type="llama",
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32000,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
        ),
        pretrained_path=llm_path,
    )
    if tokenizer_path is None and llm_path is not None:
        tokenizer_path = llm_path
    tok = (
        TokenizerConfig(kind="hf", path=tokenizer_path, max_text_tokens=48)
        if tokenizer_path
        else TokenizerConfig(kind="byte_word", max_text_tokens=48)
    )
    return PixelVLAConfig(
        vision=[dino, siglip],
        llm=llm,
        tokenizer=tok,
        image_size=224,
        pixel=PixelEncoderConfig(num_levels=4, level_dim=1024, max_object_masks=1, centroid_encoding=True),
        prompt=PromptEncoderConfig(
            dim=256,
            slots=PromptSlots(max_points=8, max_lines=2, line_points=8, max_boxes=1, max_masks=1),
            mask_tokens_side=2,
            mask_channels=32,
            mask_centroid=True,
        ),
        action=ActionHeadConfig(chunk_size=chunk_size, hidden_dim=1024, num_blocks=2),
        proprio_dim=0,
        lora=LoraSettings(rank=32, alpha=16),
        name="7b",
    )


PRESETS = {"tiny": tiny_config, "7b": config_7b}


def preset(name: str, **kwargs: Any) -> PixelVLAConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](**kwargs)
