"""Checks of local Hugging Face model folders (written by `save_pretrained`) before and after loading
from them. Every refusal names the folder and the file that is missing, unreadable or of the wrong kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
SAFETENSORS_FILE, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


class PretrainedFolderError(ValueError):
    """A local pretrained folder is unreadable, incomplete or holds another kind of model."""


def config_kwargs(hf: dict[str, Any]) -> dict[str, Any]:
    """A config's to_dict() without private entries, the writing library's version and the weights'
    dtype: the architecture only (the dtype is chosen when the model is built)."""
    skip = ("transformers_version", "dtype", "torch_dtype")
    return {k: v for k, v in hf.items() if not k.startswith("_") and k not in skip}


def read_folder_config(path: str | Path, what: str) -> dict[str, Any]:
    """The parsed config.json of the folder `path` holding `what` (e.g. "dinov2 tower"); raises
    FileNotFoundError for a missing folder or config.json, PretrainedFolderError for a bad one."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what} folder {str(folder)!r} does not exist (expected a local Hugging Face model folder: "
            f"{CONFIG_FILE} + weights; nothing is downloaded)"
        )
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{what} folder {str(folder)!r} has no {CONFIG_FILE}")
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PretrainedFolderError(f"{file} cannot be read as JSON: {e}") from e
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise PretrainedFolderError(f"{file} names no model_type: not a Hugging Face model config")
    return config


def check_weights(path: str | Path, what: str) -> list[Path]:
    """The safetensors files of the folder (one file, or the shards its index lists), each opened to
    check that its header is whole and covers the file; raises naming the first file that is not."""
    from safetensors import SafetensorError, safe_open

    folder = Path(path)
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise PretrainedFolderError(f"{index} is not a safetensors index (weight_map): {e}") from e
    elif (folder / SAFETENSORS_FILE).is_file():
        files = [folder / SAFETENSORS_FILE]
    else:
        raise FileNotFoundError(
            f"{what} folder {str(folder)!r} has neither {SAFETENSORS_FILE} nor {SAFETENSORS_INDEX} "
            "(weights are read from safetensors files, as save_pretrained writes them)"
        )
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{what} folder {str(folder)!r}: weights file {file.name} is missing")
        try:
            with safe_open(str(file), "pt") as f:
                f.keys()
        except (SafetensorError, OSError) as e:
            raise PretrainedFolderError(f"{file} cannot be read (truncated or not safetensors): {e}") from e
    return files


def check_loading_info(info: dict[str, Any], path: str | Path, what: str) -> None:
    """Refuse a from_pretrained load that left parameters of the model uninitialised or mismatched
    (transformers only warns about them)."""
    missing, mismatched = sorted(info.get("missing_keys", ())), sorted(info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise PretrainedFolderError(
            f"{what} folder {str(path)!r}: its weights do not fit the model its {CONFIG_FILE} describes: "
            f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"wrong shape {[str(m) for m in mismatched[:6]]}"
        )


def check_tokenizer_folder(path: str | Path) -> None:
    """Raise FileNotFoundError unless the folder holds a tokenizer vocabulary file."""
    folder = Path(path)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"tokenizer folder {str(folder)!r} holds no tokenizer file "
            f"(looked for {', '.join(TOKENIZER_FILES)})"
        )
