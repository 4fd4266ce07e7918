"""A synthetic OpenVLA-7B folder at reduced width, for the converter's tests and benchmark (the real 15 GB
cannot be fetched here): the file set, tensor names, config fields, bfloat16 shards, index and dataset
statistics of openvla/openvla-7b (../shared/notes/openvla-checkpoint.md), with small shapes and random
values. Its Python files raise when imported: a converter that ran them would fail.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from pixelvla_ros.model.openvla import (
    ARCH_SPECIFIER,
    BACKBONE_ID,
    CONFIG,
    INDEX,
    PREPROCESSOR,
    STATISTICS,
    TIMM_TOWERS,
)

DINO_ID, SIGLIP_ID = TIMM_TOWERS  # in OpenVLA's fusion order
DINO, SIGLIP = "vision_backbone.featurizer.", "vision_backbone.fused_featurizer."
DINO_MEAN, DINO_STD = [0.484375, 0.455078125, 0.40625], [0.228515625, 0.2236328125, 0.224609375]
REMOTE_CODE = ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py")
WORDS = ["<unk>", "<s>", "</s>", "in", "what", "action", "should", "the", "robot", "take", "to", "pick", "up"]
# Plausible statistics: bridge_orig leaves its gripper unnormalised (mask), fractal has no mask entry
STATISTICS_BY_DATASET = {
    "bridge_orig": {
        "q01": [-0.029, -0.041, -0.026, -0.081, -0.092, -0.127, 0.0],
        "q99": [0.028, 0.040, 0.040, 0.082, 0.078, 0.133, 1.0],
        "mask": [True] * 6 + [False],
    },
    "fractal20220817_data": {
        "q01": [-0.22, -0.14, -0.23, -0.35, -0.42, -0.43, 0.0],
        "q99": [0.17, 0.15, 0.22, 0.39, 0.36, 0.42, 1.0],
    },
}


@dataclass(frozen=True)
class SyntheticSizes:
    """Both towers keep OpenVLA's 16 heads (the converter takes that number from the model id)."""

    dino_width: int = 64
    dino_depth: int = 3
    siglip_width: int = 80
    siglip_depth: int = 4
    image_size: int = 56  # patch 14: a 4 x 4 grid
    llm_width: int = 32
    llm_layers: int = 2
    llm_heads: int = 2
    llm_mlp: int = 64
    vocab: int = 32064  # Llama-2's 32000 + <PAD>, padded to a multiple of 64, as OpenVLA's


def tower_shapes(sizes: SyntheticSizes) -> dict[str, tuple[int, ...]]:
    """timm's tensor names and shapes of OpenVLA's two towers (LayerScale stored as scale_factor)."""
    grid, out = (sizes.image_size // 14) ** 2, {}
    for prefix, d, depth in (
        (DINO, sizes.dino_width, sizes.dino_depth),
        (SIGLIP, sizes.siglip_width, sizes.siglip_depth),
    ):
        mlp = (
            4 * d if prefix == DINO else int(d * 3.7362)
        )  # SigLIP-So400m's MLP ratio, truncated as timm does
        out |= {f"{prefix}pos_embed": (1, grid, d), f"{prefix}patch_embed.proj.weight": (d, 3, 14, 14)}
        out |= {
            f"{prefix}patch_embed.proj.bias": (d,),
            f"{prefix}norm.weight": (d,),
            f"{prefix}norm.bias": (d,),
        }
        for i in range(depth):
            b = f"{prefix}blocks.{i}."
            out |= {b + n: (d,) for n in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")}
            out |= {b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,)}
            out |= {b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,)}
            out |= {b + "mlp.fc1.weight": (mlp, d), b + "mlp.fc1.bias": (mlp,)}
            out |= {b + "mlp.fc2.weight": (d, mlp), b + "mlp.fc2.bias": (d,)}
            if prefix == DINO:
                out |= {b + "ls1.scale_factor": (d,), b + "ls2.scale_factor": (d,)}
        if prefix == DINO:
            out |= {f"{prefix}cls_token": (1, 1, d), f"{prefix}reg_token": (1, 4, d)}
        else:
            p = f"{prefix}attn_pool."
            out |= {p + "latent": (1, 1, d), p + "q.weight": (d, d), p + "q.bias": (d,)}
            out |= {p + "kv.weight": (2 * d, d), p + "kv.bias": (2 * d,), p + "proj.weight": (d, d)}
            out |= {p + "proj.bias": (d,), p + "norm.weight": (d,), p + "norm.bias": (d,)}
            out |= {p + "mlp.fc1.weight": (mlp, d), p + "mlp.fc1.bias": (mlp,)}
            out |= {p + "mlp.fc2.weight": (d, mlp), p + "mlp.fc2.bias": (d,)}
    return out


def text_config(sizes: SyntheticSizes) -> dict:
    """config.json's text_config: the real file holds only the diff to LlamaConfig's defaults (vocab, pad,
    dtype); here the reduced sizes are part of that diff."""
    return {
        "model_type": "llama",
        "vocab_size": sizes.vocab,
        "pad_token_id": 32000,
        "torch_dtype": "bfloat16",
        "hidden_size": sizes.llm_width,
        "intermediate_size": sizes.llm_mlp,
        "num_hidden_layers": sizes.llm_layers,
        "num_attention_heads": sizes.llm_heads,
    }


def all_shapes(sizes: SyntheticSizes) -> dict[str, tuple[int, ...]]:
    """Every tensor of the folder: towers, projector, then the LLM (Hugging Face's LlamaForCausalLM names)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    fused = sizes.dino_width + sizes.siglip_width
    h = sizes.llm_width
    out = tower_shapes(sizes)
    out |= {"projector.fc1.weight": (4 * fused, fused), "projector.fc1.bias": (4 * fused,)}
    out |= {"projector.fc2.weight": (h, 4 * fused), "projector.fc2.bias": (h,)}
    out |= {"projector.fc3.weight": (h, h), "projector.fc3.bias": (h,)}
    with torch.device("meta"):
        tc = {k: v for k, v in text_config(sizes).items() if k not in ("model_type", "torch_dtype")}
        llm = LlamaForCausalLM(LlamaConfig(**tc))
    return out | {f"language_model.{k}": tuple(v.shape) for k, v in llm.state_dict().items()}


def _random(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if "scale_factor" in name:  # LayerScale: not near 0, so each block changes the features
        return 0.5 + torch.rand(shape, generator=gen)
    if (
        name.endswith("norm.weight")
        or "norm1.weight" in name
        or "norm2.weight" in name
        or "layernorm" in name
    ):
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    return 0.05 * torch.randn(shape, generator=gen)


def write_synthetic_openvla(
    folder: str | Path,
    sizes: SyntheticSizes = SyntheticSizes(),
    tensors: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.bfloat16,
    shards: int = 3,
    seed: int = 0,
) -> Path:
    """Write the folder (created) and return it. `tensors` replace the random values of the tensors they
    name (e.g. towers built by timm), each with the shape OpenVLA's layout gives it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True)
    shapes = all_shapes(sizes)
    gen = torch.Generator().manual_seed(seed)
    given = tensors or {}
    unknown = sorted(set(given) - set(shapes))
    if unknown:
        raise ValueError(f"tensors not in OpenVLA's layout at these sizes: {unknown[:5]}")
    values = {}
    for name, shape in shapes.items():
        t = given[name] if name in given else _random(name, shape, gen)
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)}, the layout needs {shape}")
        values[name] = t.to(dtype).contiguous()
    # shards of about equal size, in the state dict's order (as save_pretrained cuts them)
    names = list(values)
    total = sum(v.numel() * v.element_size() for v in values.values())
    files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map, done = {}, 0
    for name in names:
        weight_map[name] = files[min(shards - 1, math.floor(done * shards / total))]
        done += values[name].numel() * values[name].element_size()
    for file in files:
        save_file(
            {k: values[k] for k in names if weight_map[k] == file}, str(folder / file), {"format": "pt"}
        )
    _write_json(folder / INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})

    statistics = {
        name: {
            "action": {
                **stats,
                "mean": [0.0] * 7,
                "std": [1.0] * 7,
                "min": stats["q01"],
                "max": stats["q99"],
            },
            "proprio": {k: [0.0] * 7 for k in ("mean", "std", "max", "min", "q01", "q99")},
            "num_transitions": 1000,
            "num_trajectories": 10,
        }
        for name, stats in STATISTICS_BY_DATASET.items()
    }
    _write_json(folder / STATISTICS, statistics)
    s = sizes.image_size
    _write_json(
        folder / CONFIG,
        {
            "model_type": "openvla",
            "architectures": ["OpenVLAForActionPrediction"],
            "auto_map": {
                "AutoConfig": "configuration_prismatic.OpenVLAConfig",
                "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
            },
            "vision_backbone_id": BACKBONE_ID,
            "use_fused_vision_backbone": True,
            "timm_model_ids": [DINO_ID, SIGLIP_ID],
            "timm_override_act_layers": [None, None],
            "image_sizes": [s, s],
            "llm_backbone_id": "llama2-7b-pure",
            "hf_llm_id": "meta-llama/Llama-2-7b-hf",
            "arch_specifier": ARCH_SPECIFIER,
            "image_resize_strategy": "resize-naive",
            "llm_max_length": 2048,
            "pad_token_id": 32000,
            "pad_to_multiple_of": 64,
            "output_projector_states": False,
            "n_action_bins": 256,
            "norm_stats": statistics,
            "text_config": text_config(sizes),
            "torch_dtype": "bfloat16",
            "transformers_version": "4.40.1",
        },
    )
    norms = [
        {"mean": DINO_MEAN, "std": DINO_STD, "inplace": False},
        {"mean": [0.5] * 3, "std": [0.5] * 3, "inplace": False},
    ]
    _write_json(
        folder / PREPROCESSOR,
        {
            "image_processor_type": "PrismaticImageProcessor",
            "processor_class": "PrismaticProcessor",
            "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor"},
            "use_fused_vision_backbone": True,
            "image_resize_strategy": "resize-naive",
            "input_sizes": [[3, s, s]] * 2,
            "interpolations": ["bicubic", "bicubic"],
            "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]],
            "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
            "tvf_resize_params": [{"size": [s, s], "interpolation": 3, "max_size": None, "antialias": True}]
            * 2,
            "tvf_crop_params": [{"output_size": [s, s]}] * 2,
            "tvf_normalize_params": norms,
            "tvf_do_letterbox": False,
            "tvf_letterbox_fill": None,
        },
    )
    _write_tokenizer(folder)
    for name in REMOTE_CODE:
        (folder / name).write_text(
            f'raise RuntimeError("{name} of a synthetic OpenVLA folder was executed")\n'
        )
    _write_json(
        folder / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32000}
    )
    return folder


def _write_tokenizer(folder: Path) -> None:
    """A small word-level tokenizer with Llama-2's special tokens and <PAD> (the real one: SentencePiece)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.add_special_tokens({"pad_token": "<PAD>"})
    fast.save_pretrained(str(folder))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 2048
    config["auto_map"] = {"AutoProcessor": "processing_prismatic.PrismaticProcessor"}
    _write_json(folder / "tokenizer_config.json", config)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))
