"""Checkpoints the Hugging Face way: a JSON config + safetensors weights (+ a peft LoRA adapter folder).

Layout of a checkpoint folder:
  pixelvla_checkpoint.json   model config, preprocessing config (normalization statistics, action space,
                             image / prompt / text parameters), file sizes and SHA-256 digests
  model.safetensors          every weight except LoRA (LLM base weights under their plain names); or, for
                             a large model (convert_openvla), model.safetensors.index.json (Hugging Face's
                             {"weight_map": {name: file}}) and the shards it names
  lora_adapter/              peft adapter (adapter_config.json + adapter_model.safetensors), if unmerged
  tokenizer/                 HF tokenizer files (only for tokenizer kind "hf")
Loading validates all of it and raises CheckpointError, saying what is wrong, for anything missing,
corrupted or inconsistent.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from pixelvla_ros.action_space import ActionSpace
from pixelvla_ros.model.config import PixelVLAConfig
from pixelvla_ros.model.lora import add_lora, has_lora, merge_lora
from pixelvla_ros.model.pixelvla import PixelVLA, check_dtype, default_device
from pixelvla_ros.model.tokenizer import load_tokenizer

FORMAT, VERSION = "pixelvla_ros.checkpoint", 1
CONFIG_FILE, WEIGHTS_FILE, WEIGHTS_INDEX, ADAPTER_DIR, TOKENIZER_DIR = (
    "pixelvla_checkpoint.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "lora_adapter",
    "tokenizer",
)
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupted or inconsistent."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """{"bytes", "sha256"} of a file, as the checkpoint record lists its files."""
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def write_record(
    directory: Path,
    model_config: PixelVLAConfig,
    preprocess_config: Any,
    files: dict[str, dict[str, Any]],
    extra: dict[str, Any],
    lora: dict[str, Any] | None = None,
) -> None:
    """Write pixelvla_checkpoint.json, last: a folder without it is not a checkpoint (half-written)."""
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_config.to_dict(),
        "preprocessing": preprocess_config.to_dict(),
        "files": files,
        "lora": lora,
        "extra": extra,
    }
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(directory / CONFIG_FILE)


def base_state_dict(model: PixelVLA) -> dict[str, torch.Tensor]:
    """All weights except LoRA, with peft's wrapping removed from the LLM names."""
    out = {}
    for k, v in model.state_dict().items():
        if "lora_" in k:
            continue
        k = k.replace("llm.base_model.model.", "llm.").replace(".base_layer.", ".")
        out[k] = v.detach().cpu().contiguous()
    return out


def save_checkpoint(
    model: PixelVLA, preprocessor: Any, directory: str | Path, extra: dict | None = None
) -> Path:
    """Write model + preprocessing into `directory` (created). Returns the folder."""
    from safetensors.torch import save_file

    preprocessor.config.check_matches(model.cfg)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file(base_state_dict(model), str(d / WEIGHTS_FILE), metadata={"format": FORMAT})
    files = {WEIGHTS_FILE: file_record(d / WEIGHTS_FILE)}
    lora = None
    if has_lora(model):
        model.llm.save_pretrained(str(d / ADAPTER_DIR))
        lora = dict(model.cfg.lora.__dict__)
        files[f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS}"] = file_record(d / ADAPTER_DIR / ADAPTER_WEIGHTS)
    if model.cfg.tokenizer.kind == "hf":
        preprocessor.tokenizer.save_pretrained(str(d / TOKENIZER_DIR))
    write_record(d, model.cfg, preprocessor.config, files, extra or {}, lora)
    return d


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint folder {str(d)!r} does not exist")
    path = d / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{str(d)!r} is not a complete checkpoint: {CONFIG_FILE} is missing")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    if record.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint version {record.get('version')} (expected {VERSION})"
        )
    for key in ("model", "preprocessing", "files"):
        if key not in record:
            raise CheckpointError(f"{path} lacks {key!r}")
    for key in ("action_stats", "action_space", "image_size", "slots", "tokenizer"):
        if key not in record["preprocessing"]:
            raise CheckpointError(
                f"{path} lacks the preprocessing entry {key!r} (normalization statistics, action "
                "space and image / prompt parameters must travel with the model)"
            )
    return record


def _verify_file(d: Path, rel: str, rec: dict[str, Any], verify_hash: bool) -> Path:
    path = d / rel
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(d)!r} is incomplete: {rel} is missing")
    size = path.stat().st_size
    if size != rec.get("bytes"):
        raise CheckpointError(
            f"{rel} has {size} bytes, the checkpoint records {rec.get('bytes')} (truncated?)"
        )
    if verify_hash and _sha256(path) != rec.get("sha256"):
        raise CheckpointError(f"{rel} is corrupted: its SHA-256 differs from the one recorded at save time")
    return path


def _changed(model_config: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of a checkpoint's model configuration with dotted keys set."""
    out = copy.deepcopy(model_config)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = out
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                raise ValueError(f"config change {key!r}: no section {parent!r}")
            node = node[parent]
        node[leaf] = value
    return out


def _weight_files(d: Path, files: dict[str, Any], verify_hash: bool) -> list[Path]:
    """The checkpoint's safetensors files, each checked against the record: model.safetensors, or the
    shards model.safetensors.index.json names."""
    if WEIGHTS_FILE in files:
        return [_verify_file(d, WEIGHTS_FILE, files[WEIGHTS_FILE], verify_hash)]
    if WEIGHTS_INDEX not in files:
        raise CheckpointError(f"checkpoint {str(d)!r} records neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX}")
    index = _verify_file(d, WEIGHTS_INDEX, files[WEIGHTS_INDEX], verify_hash)
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is not a safetensors index (weight_map): {e}") from e
    unrecorded = [name for name in shards if name not in files]
    if unrecorded:
        raise CheckpointError(f"{index} names shards the checkpoint does not record: {unrecorded}")
    return [_verify_file(d, name, files[name], verify_hash) for name in shards]


def load_checkpoint(
    directory: str | Path,
    device: torch.device | str | None = None,
    merge: bool = False,
    trainable: bool = False,
    expected_action_space: ActionSpace | None = None,
    verify_hash: bool = True,
    config_changes: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[PixelVLA, Any]:
    """Load (model, preprocessor). merge=True folds a LoRA adapter into the LLM; trainable=True keeps the
    adapter trainable. expected_action_space: refuse a checkpoint whose action space differs.
    config_changes: dotted model-config keys to change first (e.g. {"pixel.centroid_encoding": True}, to
    fine-tune with a part the checkpoint was made without); parameters they add keep their initialisation,
    every other tensor must still come from the file.
    dtype: of the floating-point weights (float32, bfloat16 or float16; a dtype the device cannot run is
    refused with ValueError). The model is built on the meta device and each tensor is read from the file,
    cast and moved to the device, then assigned: no float32 copy of the backbones is made."""
    from safetensors import SafetensorError, safe_open

    from pixelvla_ros.preprocessing import PreprocessConfig, Preprocessor

    target = torch.device(device or default_device())
    check_dtype(dtype, target)
    d = Path(directory)
    record = read_checkpoint_config(d)
    try:
        cfg = PixelVLAConfig.from_dict(_changed(record["model"], config_changes or {}))
        pre_cfg = PreprocessConfig.from_dict(record["preprocessing"])
        if config_changes and pre_cfg.prompt_anchor != cfg.prompt_anchor:  # the preprocessing builds it
            pre_cfg = dataclasses.replace(pre_cfg, prompt_anchor=cfg.prompt_anchor)
        pre_cfg.check_matches(cfg)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"checkpoint {str(d)!r} has an invalid configuration: {e}") from e
    if expected_action_space is not None and pre_cfg.action_space != expected_action_space:
        raise CheckpointError(
            f"checkpoint action space {pre_cfg.action_space} differs from the expected "
            f"{expected_action_space}"
        )
    files = record["files"]
    shapes: dict[str, tuple[int, ...]] = {}
    file_of: dict[str, Path] = {}
    for weights in _weight_files(d, files, verify_hash):
        try:
            with safe_open(str(weights), "pt") as f:
                for k in f.keys():
                    if k in file_of:
                        raise CheckpointError(f"{k} is in both {file_of[k].name} and {weights.name}")
                    shapes[k], file_of[k] = tuple(f.get_slice(k).get_shape()), weights
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{weights} cannot be read: {e}") from e
    where = str(d) if len(set(file_of.values())) > 1 else str(weights)

    if cfg.tokenizer.kind == "hf":
        tok_dir = d / TOKENIZER_DIR
        if not tok_dir.is_dir():
            raise CheckpointError(f"checkpoint {str(d)!r} is incomplete: {TOKENIZER_DIR}/ is missing")
        tokenizer = load_tokenizer(cfg.tokenizer, path_override=tok_dir)
    else:
        tokenizer = load_tokenizer(cfg.tokenizer)
    vocab = int(cfg.llm.hf_config.get("vocab_size", 0))
    if len(tokenizer) > vocab:
        raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the LLM only {vocab} embeddings")

    # The backbones' parameters come from the file: built on the meta device, they cost no memory. The parts
    # added to them are small and built initialised: a config change may add parameters to them, which keep
    # their initialisation; every other tensor must come from the file.
    model = PixelVLA(cfg, load_pretrained=False, meta_backbones=True)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(shapes)), sorted(set(shapes) - set(own))
    added: set[str] = set()
    if config_changes and missing:
        with torch.device("meta"):  # the unchanged model's tensors, built without memory
            before = PixelVLA(PixelVLAConfig.from_dict(record["model"]), load_pretrained=False).state_dict()
        added = {k for k in missing if k not in before and not own[k].is_meta}
        missing = [k for k in missing if k not in added]
    if missing or unexpected:
        raise CheckpointError(
            f"{where} does not match the model: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    wrong = [
        f"{k} {shapes[k]} vs {tuple(v.shape)}" for k, v in own.items() if shapes.get(k, v.shape) != v.shape
    ]
    if wrong:
        raise CheckpointError(f"{where}: tensors of the wrong shape (file vs config): {wrong[:8]}")

    def placed(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=target, dtype=dtype if t.is_floating_point() else t.dtype)

    state = {k: placed(own[k]) for k in added}
    for weights in sorted(set(file_of.values())):
        try:
            with safe_open(str(weights), "pt") as f:
                for k in f.keys():  # one tensor at a time: the host holds the file's dtype, never float32 too
                    state[k] = placed(f.get_tensor(k))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{weights} cannot be read: {e}") from e
    model.load_state_dict(state, strict=True, assign=True)
    model.to(target)  # the buffers that are not in the file

    if record.get("lora"):
        rel = f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS}"
        if rel not in files:
            raise CheckpointError(f"checkpoint {str(d)!r} has LoRA settings but records no adapter file")
        _verify_file(d, rel, files[rel], verify_hash)
        if not (d / ADAPTER_DIR / "adapter_config.json").is_file():
            raise CheckpointError(
                f"checkpoint {str(d)!r} is incomplete: {ADAPTER_DIR}/adapter_config.json missing"
            )
        from peft import PeftModel

        from pixelvla_ros.model.config import LoraSettings

        model.cfg.lora = LoraSettings(**record["lora"])
        try:
            model.llm = PeftModel.from_pretrained(model.llm, str(d / ADAPTER_DIR), is_trainable=trainable)
        except Exception as e:  # peft raises several types for a bad adapter
            raise CheckpointError(f"LoRA adapter in {str(d)!r} cannot be loaded: {e}") from e
        if merge:
            merge_lora(model)
    model = model.to(target)
    if not trainable:
        model.eval()
    return model, Preprocessor(pre_cfg, tokenizer)


__all__ = ["CheckpointError", "add_lora", "load_checkpoint", "read_checkpoint_config", "save_checkpoint"]
