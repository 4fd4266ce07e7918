"""export: a checkpoint's policy call as an ONNX graph (and a TensorRT engine), checked against eager.

    export --checkpoint checkpoints/tiny --out exports/tiny [--dtype float32|bfloat16|float16] [--tensorrt]

Loads the checkpoint on the CPU with a LoRA adapter merged into the weights, exports policy.onnx (weights in
policy.onnx.data beside it above 1.5 GiB), prints the parity of the graph on ONNX Runtime (CPU) against eager
PyTorch over a few input modes, and writes export.json: the checkpoint (path, record hash), the inputs'
names, shapes and dtypes, the dtype, the parity figures and the versions used. With --tensorrt it also
builds policy.engine (needs tensorrt and a CUDA GPU). export.json is written last: a folder without it holds
no complete export. Exit codes: 0 exported; 2 bad arguments, checkpoint, or --tensorrt where it cannot run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from pixelvla_ros.inference.engine import BackendUnavailableError, InferenceEngine
from pixelvla_ros.inference.onnx_engine import (
    OPSET,
    OnnxRuntimeEngine,
    build_tensorrt_engine,
    example_inputs,
    export_onnx,
    external_data_files,
    import_tensorrt,
    input_signature,
)
from pixelvla_ros.model.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_config,
)
from pixelvla_ros.model.inputs import ModelInputs
from pixelvla_ros.model.pixelvla import DTYPE_NAMES, PixelVLA
from pixelvla_ros.prompts import POINT

FORMAT, VERSION = "pixelvla_ros.export", 1
GRAPH_FILE, ENGINE_FILE, RECORD_FILE = "policy.onnx", "policy.engine", "export.json"
PARITY_MODES = ("text", "text+point", "object_mask", "all")


class ExportError(ValueError):
    """Bad arguments or checkpoint for export (exit code 2)."""


def parity_inputs(model: PixelVLA, preprocessor: Any, seed: int = 3) -> dict[str, ModelInputs]:
    """Synthetic model inputs for each of PARITY_MODES: text; text and one point prompt; text and an object
    mask; everything (mask, points, line, box, mask prompt, and a camera for the prompt anchor)."""
    from pixelvla_ros.model.testing import oblique_camera, sample_input

    proprio = model.cfg.proprio_dim
    text_prompts = sample_input("text_prompts", seed=seed, proprio_dim=proprio)
    points = [p for p in text_prompts.prompts if p.kind == POINT][:1]
    every = sample_input("all", seed=seed, proprio_dim=proprio)
    if model.cfg.prompt_anchor:
        h, w = every.image.shape[:2]
        every = dataclasses.replace(every, camera=oblique_camera(w, h))
    samples = {
        "text": sample_input("text", seed=seed, proprio_dim=proprio),
        "text+point": dataclasses.replace(text_prompts, prompts=points),
        "object_mask": sample_input("text_mask", seed=seed, proprio_dim=proprio),
        "all": every,
    }
    return {mode: preprocessor.batch([s]) for mode, s in samples.items()}


def onnxruntime_parity(model: PixelVLA, preprocessor: Any, onnx_path: Path) -> dict[str, Any]:
    """Max |ONNX Runtime - eager| of the action chunk per input mode (and over all), on the model's device;
    {"unavailable": why} where ONNX Runtime cannot run the graph (e.g. bfloat16 on the CPU)."""
    try:
        engine = OnnxRuntimeEngine(model, onnx_path)
    except BackendUnavailableError as e:  # no onnxruntime, or no kernels for the graph's dtype here
        return {"unavailable": str(e)}
    eager = InferenceEngine(model)
    diffs = {}
    for mode, x in parity_inputs(model, preprocessor).items():
        diffs[mode] = float((engine(x) - eager(x)).abs().max())
    return {"provider": engine.providers[0], "max_abs_diff": diffs, "max": max(diffs.values())}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write under a temporary name, then rename: the file is either absent or complete."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _versions() -> dict[str, str | None]:
    import onnx
    import onnxscript

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": ort_version,
    }


def check_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The checkpoint's record; ExportError, saying what is wrong, for a bad checkpoint or a --tensorrt that
    cannot run here (checked before the export, which takes minutes at the 7b size)."""
    try:
        record = read_checkpoint_config(args.checkpoint)
    except CheckpointError as e:
        raise ExportError(str(e)) from e
    if args.tensorrt:
        try:
            import_tensorrt()
        except BackendUnavailableError as e:
            raise ExportError(f"--tensorrt: {e}") from e
        if not torch.cuda.is_available():
            raise ExportError("--tensorrt builds an engine for a CUDA GPU, and this machine has none")
    if args.out.exists() and not args.out.is_dir():
        raise ExportError(f"--out {str(args.out)!r} exists and is not a folder")
    return record


def run_export(args: argparse.Namespace) -> dict[str, Any]:
    """Export as the arguments say; returns the export record (also written to <out>/export.json)."""
    record = check_arguments(args)
    try:
        model, pre = load_checkpoint(args.checkpoint, device="cpu", merge=True, dtype=DTYPE_NAMES[args.dtype])
    except (CheckpointError, ValueError) as e:
        raise ExportError(str(e)) from e
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORD_FILE).unlink(missing_ok=True)  # the folder holds no complete export until the new record
    (out / ENGINE_FILE).unlink(missing_ok=True)  # a stale engine would be taken for this graph's
    example = example_inputs(model)
    path = export_onnx(model, example, out / GRAPH_FILE)
    print(f"export: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {OPSET}, {args.dtype})")
    parity = onnxruntime_parity(model, pre, path)
    if "unavailable" in parity:
        print(f"export: parity on ONNX Runtime not measured: {parity['unavailable']}")
    else:
        print(f"export: parity, ONNX Runtime ({parity['provider']}) vs eager, max |difference| of the chunk:")
        for mode, diff in parity["max_abs_diff"].items():
            print(f"  {mode:12s} {diff:.2e}")
    tensorrt = None
    if args.tensorrt:
        trt = import_tensorrt()
        _write_atomic(out / ENGINE_FILE, build_tensorrt_engine(path))
        tensorrt = {"engine": ENGINE_FILE, "version": trt.__version__}
        print(f"export: wrote {out / ENGINE_FILE} (TensorRT {trt.__version__})")
    ckpt = Path(args.checkpoint)
    result = {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint": {
            "path": str(ckpt.resolve()),
            "name": record["model"].get("name"),
            "record_sha256": _sha256(ckpt / CONFIG_FILE),  # the record holds every file's SHA-256
            "files": {k: v.get("sha256") for k, v in record["files"].items()},
            "lora_adapter_merged": bool(record.get("lora")),
        },
        "graph": {
            "file": GRAPH_FILE,
            "external_data": [f.name for f in external_data_files(path)],
            "opset": OPSET,
            "batch_size": 1,
        },
        "dtype": args.dtype,
        "inputs": {k: {"shape": list(s), "dtype": d} for k, (s, d) in input_signature(example).items()},
        "output": {"name": "actions", "shape": [1, model.cfg.action.chunk_size, 7], "dtype": "float32"},
        "parity": parity,
        "tensorrt": tensorrt,
        "versions": _versions(),
    }
    _write_atomic(out / RECORD_FILE, json.dumps(result, indent=2).encode())
    print(f"export: wrote {out / RECORD_FILE}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="export", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkpoint", required=True, type=Path, help="checkpoint folder (a LoRA adapter is merged)"
    )
    ap.add_argument("--out", required=True, type=Path, help="folder for policy.onnx and export.json")
    ap.add_argument(
        "--dtype",
        choices=list(DTYPE_NAMES),
        default="float32",
        help="the weights' and the graph's precision (default float32; ONNX Runtime on the CPU cannot run "
        "bfloat16 graphs, TensorRT can)",
    )
    ap.add_argument(
        "--tensorrt", action="store_true", help="also build policy.engine (needs tensorrt and a CUDA GPU)"
    )
    args = ap.parse_args(argv)  # exits with code 2 on bad arguments
    try:
        run_export(args)
    except ExportError as e:
        print(f"export: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
