"""`convert_openvla`: a local OpenVLA-7B folder (openvla/openvla-7b, fetched by hand) -> PixelVLA checkpoint.

    ros2 run pixelvla_ros convert_openvla --input DIR --output DIR [--unnorm-key KEY]

The folder is read with json and safetensors only: its Python files (the checkpoint's remote code) are never
imported or executed, and no Auto* class is pointed at it. Mapped into PixelVLA's layout:
  vision_backbone.featurizer.*        timm DINOv2-L/14 with 4 registers -> Dinov2WithRegistersModel
  vision_backbone.fused_featurizer.*  timm SigLIP-So400m/14              -> SiglipVisionModel
  projector.fc{1,2,3}.*               the fused GELU MLP                 -> PixelVLA.projector
  language_model.model.*              Llama-2-7B                         -> PixelVLA.llm
and the tokenizer. OpenVLA reads each tower's second-to-last block, before the final norm; the towers are
cut after it, so its last block, the final norms, SigLIP's attention-pooling head and the LM head (PixelVLA
decodes actions continuously) are left out, listed in the checkpoint's provenance. The parts OpenVLA lacks
(pixel-aware encoder, prompt encoder, action queries and decoder) start as the model initialises them.

Everything is checked on the files' headers before a byte is written: every source tensor is mapped or
left out by name, every target tensor comes from exactly one source, with the right shape. Tensors then
stream shard by shard, in the source's dtype (bfloat16), into output shards of at most OUTPUT_SHARD_BYTES;
the output folder is written under a temporary name and appears complete or not at all.
Reference: ../shared/notes/openvla-checkpoint.md (key layout, feature layer, preprocessing, statistics).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixelvla_ros.action_space import ACTION_DIM, GRIPPER, ActionSpace
from pixelvla_ros.model.checkpoint import TOKENIZER_DIR, WEIGHTS_INDEX, file_record, write_record
from pixelvla_ros.model.config import DINOV2_REG, SIGLIP, TokenizerConfig, VisionTowerConfig, config_7b
from pixelvla_ros.model.hf_folder import config_kwargs

CONFIG, INDEX, STATISTICS, PREPROCESSOR = (
    "config.json",
    "model.safetensors.index.json",
    "dataset_statistics.json",
    "preprocessor_config.json",
)
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
BACKBONE_ID, ARCH_SPECIFIER = "dinosiglip-vit-so-224px", "no-align+fused-gelu-mlp"
OUTPUT_SHARD_BYTES = (
    2 << 30
)  # peak host memory: about one of these (bench.convert_openvla), whatever the model


@dataclass(frozen=True)
class TowerSpec:
    kind: str
    prefix: str  # of its tensors in the OpenVLA state dict
    num_heads: int  # not in the weights (the widths are; read off them, so a narrower test tower converts)
    position: int  # index in PixelVLA's towers (OpenVLA fuses DINOv2 features first)


# OpenVLA's towers by timm model id (config.json timm_model_ids, in fusion order)
TIMM_TOWERS = {
    "vit_large_patch14_reg4_dinov2.lvd142m": TowerSpec(DINOV2_REG, "vision_backbone.featurizer.", 16, 0),
    "vit_so400m_patch14_siglip_224": TowerSpec(SIGLIP, "vision_backbone.fused_featurizer.", 16, 1),
}
TIMM_LN_EPS = 1e-6  # both towers; timm's exact-erf GELU ("gelu"), not SigLIP's HF default tanh approximation

# OpenVLA's 7-dim end-effector actions (EEF_POS datasets, after its RLDS standardisation): translation
# deltas [m], rotation deltas as roll/pitch/yaw [rad], gripper 1 = open, 0 = closed.
OPENVLA_ACTIONS = "openvla_eef_pos: dx dy dz [m], droll dpitch dyaw [rad], gripper 1 = open 0 = closed"


class OpenVLAFolderError(ValueError):
    """The input folder is not a complete OpenVLA checkpoint; the message names the file and the key."""


# --- reading the folder --------------------------------------------------------------------------------
def _json(folder: Path, name: str) -> Any:
    path = folder / name
    if not path.is_file():
        raise OpenVLAFolderError(f"{folder}: {name} is missing (not an OpenVLA checkpoint folder?)")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OpenVLAFolderError(f"{path} cannot be read as JSON: {e}") from e


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise OpenVLAFolderError(message)


def read_headers(folder: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, torch.dtype], dict[str, str]]:
    """(shapes, dtypes, shard of each tensor) from the index and the shards' headers; each shard is opened,
    which refuses a truncated one."""
    from safetensors import SafetensorError, safe_open

    index = _json(folder, INDEX)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    _need(isinstance(weight_map, dict) and weight_map, f"{folder / INDEX} has no weight_map")
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, torch.dtype] = {}
    for shard in sorted(set(weight_map.values())):
        path = folder / shard
        _need(path.is_file(), f"{folder}: shard {shard} named in {INDEX} is missing")
        try:
            with safe_open(str(path), "pt") as f:
                for key in f.keys():
                    _need(
                        weight_map.get(key) == shard, f"{path}: tensor {key} is not in {INDEX}'s weight_map"
                    )
                    t = f.get_slice(key)
                    shapes[key], dtypes[key] = tuple(t.get_shape()), _DTYPES.get(t.get_dtype())
        except (SafetensorError, OSError) as e:
            raise OpenVLAFolderError(f"{path} cannot be read (truncated or not safetensors): {e}") from e
    absent = sorted(set(weight_map) - set(shapes))
    _need(not absent, f"{folder / INDEX} names tensors no shard holds: {absent[:5]}")
    odd = sorted(k for k, d in dtypes.items() if d is None)
    _need(not odd, f"{folder}: tensors of a dtype other than float32/bfloat16/float16: {odd[:5]}")
    return shapes, dtypes, weight_map


_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


# --- the mapping ---------------------------------------------------------------------------------------
Transform = Callable[[torch.Tensor], list[torch.Tensor]]


def _same(t: torch.Tensor) -> list[torch.Tensor]:
    return [t]


def _thirds(t: torch.Tensor) -> list[torch.Tensor]:
    """timm's fused qkv (rows q | k | v) -> q, k, v."""
    return list(t.chunk(3, dim=0))


def _cls_slot(t: torch.Tensor) -> list[torch.Tensor]:
    """timm's DINOv2 positions (1, N, D), patches only (its class position is folded into cls_token) ->
    HF's (1, 1 + N, D): a zero row in the class slot."""
    return [torch.cat([t.new_zeros(t.shape[0], 1, t.shape[2]), t], dim=1)]


def _squeeze(t: torch.Tensor) -> list[torch.Tensor]:
    return [t[0]]  # SigLIP positions (1, N, D) -> (N, D)


def _qkv(template: str) -> tuple[str, ...]:
    return tuple(template.replace("PROJ", p) for p in ("q_proj", "k_proj", "v_proj"))


# (source pattern relative to the tower prefix, target names relative to the HF tower, transform)
DINO_RULES: list[tuple[str, tuple[str, ...], Transform]] = [
    (r"cls_token", ("embeddings.cls_token",), _same),
    (r"reg_token", ("embeddings.register_tokens",), _same),
    (r"pos_embed", ("embeddings.position_embeddings",), _cls_slot),
    (r"patch_embed\.proj\.(weight|bias)", ("embeddings.patch_embeddings.projection.{0}",), _same),
    (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", ("encoder.layer.{0}.norm{1}.{2}",), _same),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", _qkv("encoder.layer.{0}.attention.PROJ.{1}"), _thirds),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", ("encoder.layer.{0}.attention.o_proj.{1}",), _same),
    (r"blocks\.(\d+)\.ls([12])\.scale_factor", ("encoder.layer.{0}.layer_scale{1}.lambda1",), _same),
    (r"blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)", ("encoder.layer.{0}.mlp.fc{1}.{2}",), _same),
]
SIGLIP_RULES: list[tuple[str, tuple[str, ...], Transform]] = [
    (r"pos_embed", ("embeddings.position_embedding.weight",), _squeeze),
    (r"patch_embed\.proj\.(weight|bias)", ("embeddings.patch_embedding.{0}",), _same),
    (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", ("encoder.layers.{0}.layer_norm{1}.{2}",), _same),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", _qkv("encoder.layers.{0}.self_attn.PROJ.{1}"), _thirds),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", ("encoder.layers.{0}.self_attn.out_proj.{1}",), _same),
    (r"blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)", ("encoder.layers.{0}.mlp.fc{1}.{2}",), _same),
]
# Read by nothing OpenVLA computes: the towers' final norms, SigLIP's attention-pooling head, the LM head
LEFT_OUT = re.compile(
    r"vision_backbone\.(featurizer|fused_featurizer)\.norm\.(weight|bias)"
    r"|vision_backbone\.fused_featurizer\.attn_pool\..+"
    r"|language_model\.lm_head\.weight"
)
BLOCK = re.compile(r"vision_backbone\.(?:featurizer|fused_featurizer)\.blocks\.(\d+)\.")


@dataclass(frozen=True)
class Step:
    """One source tensor: where it goes (empty: left out) and how."""

    source: str
    targets: tuple[str, ...]
    transform: Transform


def plan_tensor(key: str, towers: dict[str, TowerSpec], kept_blocks: dict[str, int]) -> Step:
    """The Step of source tensor `key`; raises OpenVLAFolderError for a name OpenVLA's layout has not."""
    if LEFT_OUT.fullmatch(key):
        return Step(key, (), _same)
    for spec in towers.values():
        if key.startswith(spec.prefix):
            block = BLOCK.match(key)
            if block and int(block.group(1)) >= kept_blocks[spec.prefix]:
                return Step(key, (), _same)  # after the block OpenVLA reads
            rest = key[len(spec.prefix) :]
            for pattern, names, transform in DINO_RULES if spec.kind == DINOV2_REG else SIGLIP_RULES:
                m = re.fullmatch(pattern, rest)
                if m:
                    where = f"vision.towers.{spec.position}.model."
                    return Step(key, tuple(where + n.format(*m.groups()) for n in names), transform)
            break
    m = re.fullmatch(r"projector\.fc([123])\.(weight|bias)", key)
    if m:
        return Step(key, (f"projector.net.{2 * (int(m.group(1)) - 1)}.{m.group(2)}",), _same)
    if key.startswith("language_model.model."):
        return Step(key, ("llm." + key[len("language_model.model.") :],), _same)
    raise OpenVLAFolderError(f"tensor {key} is not part of OpenVLA's layout (unknown name)")


# --- the PixelVLA config read off the weights ----------------------------------------------------------
def _depth(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    blocks = {int(m.group(1)) for k in shapes if k.startswith(prefix) and (m := BLOCK.match(k))}
    _need(blocks and blocks == set(range(len(blocks))), f"{prefix}blocks.N: missing or non-contiguous blocks")
    return len(blocks)


def _shape(shapes: dict[str, tuple[int, ...]], key: str, rank: int) -> tuple[int, ...]:
    _need(key in shapes, f"{INDEX}: tensor {key} is missing")
    _need(len(shapes[key]) == rank, f"tensor {key} has shape {shapes[key]}, expected {rank} dimensions")
    return shapes[key]


def _grid(n_positions: int, key: str) -> int:
    side = math.isqrt(n_positions)
    _need(side * side == n_positions, f"tensor {key}: {n_positions} positions are not a square patch grid")
    return side


def tower_config(
    spec: TowerSpec, shapes: dict[str, tuple[int, ...]], mean: list, std: list
) -> VisionTowerConfig:
    """The HF config of one tower, read off its tensors' shapes (the number of heads from the model id)."""
    p = spec.prefix
    patch = _shape(shapes, p + "patch_embed.proj.weight", 4)[-1]
    pos = _shape(shapes, p + "pos_embed", 3)
    width, depth = pos[2], _depth(shapes, p)
    mlp = _shape(shapes, p + "blocks.0.mlp.fc1.weight", 2)[0]
    _need(
        width % spec.num_heads == 0,
        f"{p}pos_embed: width {width} is not a multiple of {spec.num_heads} heads",
    )
    common = dict(
        hidden_size=width,
        num_hidden_layers=depth,
        num_attention_heads=spec.num_heads,
        patch_size=patch,
        image_size=_grid(pos[1], p + "pos_embed") * patch,
        layer_norm_eps=TIMM_LN_EPS,
        hidden_act="gelu",
    )
    if spec.kind == DINOV2_REG:
        registers = _shape(shapes, p + "reg_token", 3)[1]
        _need(p + "blocks.0.ls1.scale_factor" in shapes, f"{INDEX}: {p}blocks.0.ls1.scale_factor is missing")
        _need(mlp % width == 0, f"{p}blocks.0.mlp.fc1.weight: MLP width {mlp} is not a multiple of {width}")
        extra = dict(
            mlp_ratio=mlp // width, num_register_tokens=registers, qkv_bias=True, layerscale_value=1.0
        )
        hf = dict(common, **extra)
    else:
        hf = dict(common, intermediate_size=mlp, vision_use_head=False)
    return VisionTowerConfig(kind=spec.kind, hf_config=hf, feature_layer=-2, image_mean=mean, image_std=std)


def _normalization(folder: Path, n_towers: int) -> list[tuple[list[float], list[float]]]:
    """Per tower (mean, std) as OpenVLA's image processor applies them: tvf_normalize_params (DINOv2's are
    ImageNet's rounded to bfloat16), else means / stds."""
    pre = _json(folder, PREPROCESSOR)
    params = pre.get("tvf_normalize_params")
    pairs = [(p.get("mean"), p.get("std")) for p in params] if isinstance(params, list) else None
    if pairs is None:
        pairs = list(zip(pre.get("means") or [], pre.get("stds") or [], strict=False))
    ok = len(pairs) == n_towers and all(
        isinstance(m, list) and isinstance(s, list) and len(m) == len(s) == 3 for m, s in pairs
    )
    _need(ok, f"{folder / PREPROCESSOR}: no per-tower mean/std for {n_towers} towers (tvf_normalize_params)")
    return [([float(v) for v in m], [float(v) for v in s]) for m, s in pairs]


def action_stats(folder: Path, config: dict, unnorm_key: str | None) -> tuple[str, Any]:
    """(key, NormStats) of the chosen dataset, in this package's action convention (action_space.py)."""
    from pixelvla_ros.preprocessing import NormStats

    source = STATISTICS if (folder / STATISTICS).is_file() else f"{CONFIG} norm_stats"
    stats = _json(folder, STATISTICS) if (folder / STATISTICS).is_file() else config.get("norm_stats")
    _need(isinstance(stats, dict) and stats, f"{folder}: neither {STATISTICS} nor {CONFIG} norm_stats")
    if unnorm_key is None:
        _need(
            len(stats) == 1,
            f"{folder / source} holds {len(stats)} datasets' statistics: choose one with --unnorm-key "
            f"(e.g. bridge_orig, fractal20220817_data); known: {', '.join(sorted(stats))}",
        )
        unnorm_key = next(iter(stats))
    _need(
        unnorm_key in stats,
        f"{folder / source}: no dataset {unnorm_key!r}; known: {', '.join(sorted(stats))}",
    )
    action = stats[unnorm_key].get("action") if isinstance(stats[unnorm_key], dict) else None
    _need(isinstance(action, dict), f"{folder / source}: {unnorm_key}.action is missing")
    q01, q99 = action.get("q01"), action.get("q99")
    mask = action.get("mask", [True] * ACTION_DIM)  # absent: every dimension normalised (OpenVLA's default)
    ok = all(isinstance(v, list) and len(v) == ACTION_DIM for v in (q01, q99, mask))
    _need(ok, f"{folder / source}: {unnorm_key}.action needs q01, q99 (and mask) of {ACTION_DIM} values")
    return unnorm_key, openvla_to_project_stats(q01, q99, mask, NormStats)


def openvla_to_project_stats(q01: list, q99: list, mask: list, norm_stats: type) -> Any:
    """OPENVLA_ACTIONS bounds -> NormStats of this package's convention. Translation: the same. Rotation:
    roll/pitch/yaw steps read as rotation-vector steps (they agree to first order; per-step rotations are
    small). A dimension OpenVLA does not normalise (mask false) gets (-1, 1), which leaves it as it is.
    Gripper: 1 = open becomes 0 = open, so the bounds flip (this package does not normalise it either)."""
    lo = [float(q01[i]) if mask[i] else -1.0 for i in range(GRIPPER)]
    hi = [float(q99[i]) if mask[i] else 1.0 for i in range(GRIPPER)]
    g_lo, g_hi = sorted((1.0 - float(q99[GRIPPER]), 1.0 - float(q01[GRIPPER])))
    return norm_stats(lo + [max(0.0, g_lo)], hi + [min(1.0, g_hi)])


def pixelvla_config(folder: Path, config: dict, shapes: dict[str, tuple[int, ...]]) -> Any:
    """The 7b preset's PixelVLAConfig with the towers, projector and LLM of this OpenVLA folder."""
    from transformers import LlamaConfig

    _need(
        config.get("vision_backbone_id") == BACKBONE_ID and config.get("use_fused_vision_backbone") is True,
        f"{folder / CONFIG}: vision_backbone_id {config.get('vision_backbone_id')!r} (fused: "
        f"{config.get('use_fused_vision_backbone')}) is not OpenVLA's {BACKBONE_ID!r}",
    )
    ids = config.get("timm_model_ids")
    _need(
        isinstance(ids, list) and len(ids) == 2 and all(i in TIMM_TOWERS for i in ids) and len(set(ids)) == 2,
        f"{folder / CONFIG}: timm_model_ids {ids} are not OpenVLA's towers {sorted(TIMM_TOWERS)}",
    )
    _need(
        config.get("arch_specifier") == ARCH_SPECIFIER,
        f"{folder / CONFIG}: arch_specifier {config.get('arch_specifier')!r} is not {ARCH_SPECIFIER!r}",
    )
    norms = _normalization(folder, len(ids))
    towers = [tower_config(TIMM_TOWERS[i], shapes, *norms[n]) for n, i in enumerate(ids)]
    towers.sort(key=lambda t: 0 if t.kind == DINOV2_REG else 1)  # DINOv2 features first, as OpenVLA fuses
    sizes = {t.hf_config["image_size"] for t in towers}
    declared = config.get("image_sizes")
    _need(
        len(sizes) == 1 and declared == [sizes.pop()] * 2,
        f"{folder / CONFIG}: image_sizes {declared} do not match the towers' position tables",
    )
    text = config.get("text_config", {})
    _need(
        isinstance(text, dict) and text.get("model_type", "llama") == "llama",
        f"{folder / CONFIG}: text_config is not a Llama config",
    )
    # As OpenVLA's own config class: LlamaConfig defaults plus the diff that config.json stores
    llm = config_kwargs(LlamaConfig(**{k: v for k, v in text.items() if k != "model_type"}).to_dict())
    fused = sum(t.width for t in towers)
    fc1 = _shape(shapes, "projector.fc1.weight", 2)
    _need(
        fc1[1] == fused and fc1[0] % fused == 0,
        f"tensor projector.fc1.weight {fc1} does not take the {fused} fused tower channels",
    )
    cfg = config_7b()
    cfg.vision, cfg.image_size, cfg.projector_mult = towers, int(declared[0]), fc1[0] // fused
    cfg.llm.hf_config = dict(llm, model_type="llama")
    cfg.tokenizer = TokenizerConfig(kind="hf", path=None, max_text_tokens=cfg.tokenizer.max_text_tokens)
    cfg.name = "7b-openvla"
    cfg.validate()
    return cfg


# --- conversion ----------------------------------------------------------------------------------------
def _tokenizer_into(folder: Path, target: Path, vocab: int) -> Any:
    """Copy the tokenizer files (tokenizer_config.json without an auto_map: nothing is fetched or run) and
    load them; returns the tokenizer."""
    from pixelvla_ros.model.tokenizer import load_tokenizer

    present = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    _need(
        "tokenizer_config.json" in present and ("tokenizer.json" in present or "tokenizer.model" in present),
        f"{folder}: the tokenizer is missing (needs tokenizer_config.json and tokenizer.json or "
        f"tokenizer.model; found {present or 'none'})",
    )
    target.mkdir(parents=True)
    for name in present:
        if name == "tokenizer_config.json":
            tok_cfg = _json(folder, name)
            tok_cfg.pop("auto_map", None)
            (target / name).write_text(json.dumps(tok_cfg, indent=2))
        else:
            shutil.copyfile(folder / name, target / name)
    try:
        tokenizer = load_tokenizer(TokenizerConfig(kind="hf"), path_override=target)
    except (OSError, ValueError) as e:
        raise OpenVLAFolderError(f"{folder}: the tokenizer files cannot be loaded: {e}") from e
    _need(
        len(tokenizer) <= vocab, f"{folder}: the tokenizer has {len(tokenizer)} tokens, the LLM {vocab} rows"
    )
    return tokenizer


@dataclass
class Conversion:
    """What convert_openvla did: the checkpoint folder and the counts it printed."""

    output: Path
    unnorm_key: str
    converted: int  # source tensors mapped
    left_out: list[str]
    initialised: list[str]  # target tensors the model initialised (the parts OpenVLA lacks)
    bytes_written: int


def _groups(steps: list[Step], sizes: dict[str, int], limit: int) -> list[list[Step]]:
    """Steps in source order cut into output shards of at most `limit` bytes (one tensor may exceed it)."""
    groups: list[list[Step]] = [[]]
    total = 0
    for step in steps:
        if groups[-1] and total + sizes[step.source] > limit:
            groups.append([])
            total = 0
        groups[-1].append(step)
        total += sizes[step.source]
    return groups


def convert_openvla(
    input_dir: str | Path,
    output_dir: str | Path,
    unnorm_key: str | None = None,
    seed: int = 0,
    progress: bool = False,
    max_shard_bytes: int = OUTPUT_SHARD_BYTES,
) -> Conversion:
    """Convert the OpenVLA folder `input_dir` into a PixelVLA checkpoint at `output_dir` (which must not
    exist). Raises OpenVLAFolderError naming the file and key for a folder that is not OpenVLA's, before
    anything is written; `seed` initialises the parts OpenVLA lacks."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm import tqdm

    from pixelvla_ros.model.pixelvla import PixelVLA
    from pixelvla_ros.preprocessing import PreprocessConfig

    src, out = Path(input_dir), Path(output_dir)
    _need(src.is_dir(), f"input folder {src} does not exist")
    if out.exists():
        raise FileExistsError(f"output {out} exists: choose a new folder (nothing is overwritten)")
    config = _json(src, CONFIG)
    shapes, dtypes, weight_map = read_headers(src)
    cfg = pixelvla_config(src, config, shapes)
    key, stats = action_stats(src, config, unnorm_key)

    # The target: backbones as empty tensors of the right shapes, the new parts initialised
    torch.manual_seed(seed)
    model = PixelVLA(cfg, load_pretrained=False, meta_backbones=True)
    target = model.state_dict()
    towers = {i: TIMM_TOWERS[i] for i in config["timm_model_ids"]}
    kept = {s.prefix: cfg.vision[s.position].feature_index() for s in towers.values()}  # blocks run
    steps = [plan_tensor(k, towers, kept) for k in sorted(shapes, key=lambda k: (weight_map[k], k))]
    produced: dict[str, str] = {}
    for step in [s for s in steps if s.targets]:  # shapes and cover checked on meta tensors: nothing read yet
        outs = step.transform(torch.empty(shapes[step.source], device="meta"))
        for name, t in zip(step.targets, outs, strict=True):
            _need(
                name in target and target[name].is_meta,
                f"tensor {step.source} maps to {name}, which the "
                f"model has not (a tower deeper or differently built than OpenVLA's?)",
            )
            _need(name not in produced, f"{name} comes from both {produced.get(name)} and {step.source}")
            _need(
                tuple(t.shape) == tuple(target[name].shape),
                f"tensor {step.source} {shapes[step.source]} gives {name} {tuple(t.shape)}, the model "
                f"needs {tuple(target[name].shape)}",
            )
            produced[name] = step.source
    missing = sorted(k for k, v in target.items() if v.is_meta and k not in produced)
    _need(not missing, f"{src / INDEX}: the model needs tensors the folder has not: {missing[:6]}")
    mapped = [s for s in steps if s.targets]
    dtype = dtypes[mapped[0].source]
    new_parts = {k: v.to(dtype).contiguous() for k, v in target.items() if not v.is_meta}
    del model, target

    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.converting-", dir=parent))
    try:
        tokenizer = _tokenizer_into(src, staging / TOKENIZER_DIR, int(cfg.llm.hf_config["vocab_size"]))
        sizes = {k: math.prod(shapes[k]) * dtypes[k].itemsize for k in shapes}
        groups = _groups(mapped, sizes, max_shard_bytes)
        n = len(groups) + 1  # the last shard holds the parts OpenVLA lacks
        names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        new_map: dict[str, str] = {}
        bar = tqdm(
            total=sum(sizes[s.source] for s in mapped), unit="B", unit_scale=True, disable=not progress
        )
        for group, name in zip(groups, names, strict=False):
            tensors: dict[str, torch.Tensor] = {}
            for shard, steps_in_shard in _by_shard(group, weight_map):
                # opened per output shard: the mapped pages of the source are let go with it
                with safe_open(str(src / shard), "pt") as f:
                    for step in steps_in_shard:
                        for t_name, t in zip(
                            step.targets, step.transform(f.get_tensor(step.source)), strict=True
                        ):
                            tensors[t_name] = t.contiguous()
                        bar.update(sizes[step.source])
            save_file(tensors, str(staging / name), metadata={"format": "pt"})
            new_map.update(dict.fromkeys(tensors, name))
            del tensors
        bar.close()
        save_file(new_parts, str(staging / names[-1]), metadata={"format": "pt"})
        new_map.update(dict.fromkeys(new_parts, names[-1]))
        written = sum((staging / name).stat().st_size for name in names)
        (staging / WEIGHTS_INDEX).write_text(
            json.dumps({"metadata": {"total_size": written}, "weight_map": new_map}, indent=2, sort_keys=True)
        )
        files = {name: file_record(staging / name) for name in [*names, WEIGHTS_INDEX]}
        left_out = sorted(s.source for s in steps if not s.targets)
        pre = PreprocessConfig.for_model(cfg, stats, ActionSpace(chunk_size=cfg.action.chunk_size))
        sources = [CONFIG, INDEX, PREPROCESSOR, *sorted(set(weight_map.values()))]
        sources += [f for f in (STATISTICS, *TOKENIZER_FILES) if (src / f).is_file()]
        provenance = {
            "converted_from": "openvla",
            "source_folder": str(src.resolve()),
            "source_files": {f: file_record(src / f) for f in sources},
            "unnorm_key": key,
            "action_convention_read": OPENVLA_ACTIONS,
            "llm_rms_norm_eps": cfg.llm.hf_config.get("rms_norm_eps"),
            "left_out": left_out,
            "initialised": sorted(new_parts),
            "seed": seed,
            "tokenizer_size": len(tokenizer),
        }
        # An untrained action head has no statistics of its own to keep: train takes them from its data.
        write_record(staging, cfg, pre, files, {"openvla": provenance, "action_head": "untrained"})
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Conversion(out, key, len(mapped), left_out, sorted(new_parts), written)


def _by_shard(group: list[Step], weight_map: dict[str, str]) -> Iterator[tuple[str, list[Step]]]:
    current: list[Step] = []
    for step in group:
        if current and weight_map[current[0].source] != weight_map[step.source]:
            yield weight_map[current[0].source], current
            current = []
        current.append(step)
    if current:
        yield weight_map[current[0].source], current


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="convert_openvla", description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, type=Path, help="local openvla/openvla-7b folder")
    ap.add_argument("--output", required=True, type=Path, help="checkpoint folder to create (must not exist)")
    ap.add_argument(
        "--unnorm-key",
        help="dataset whose action statistics become the checkpoint's (e.g. bridge_orig); needed when the "
        "folder has several",
    )
    args = ap.parse_args(argv)
    try:
        result = convert_openvla(args.input, args.output, args.unnorm_key, progress=True)
    except (OpenVLAFolderError, FileExistsError) as e:
        print(f"convert_openvla: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {result.output}: {result.converted} tensors converted, {len(result.left_out)} left out "
        f"(unused by OpenVLA's forward), {len(result.initialised)} initialised (the parts OpenVLA lacks), "
        f"{result.bytes_written / 1e9:.2f} GB; action statistics of {result.unnorm_key!r}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
