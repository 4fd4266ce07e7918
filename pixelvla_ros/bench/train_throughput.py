"""Training throughput of PixelVLA: time per optimizer step, samples/s, and where the time goes.

    python -m pixelvla_ros.bench.train_throughput [--data DIR] [--steps 20] [--warmup 2] [--threads 2]
    python -m pixelvla_ros.bench.train_throughput --preset 7b [--batch-size 8]     (needs a CUDA GPU)

The steps are the trainer's own (pixelvla_ros.learning.training.train.Trainer: its data stream,
preprocessing, model, AdamW + schedule + clipping), timed in phases:
  data       the next batch of examples: shard reading and decoding, prompt sampling, augmentation
  collate    examples -> model input tensors (resizing, prompt tensors, action normalization)
  forward, backward, optimizer (clipping + AdamW step + schedule + zero_grad)
The floor, measured in the same run: forward + backward + optimizer on one batch collated once and kept
in memory, i.e. a step without a data pipeline; step / floor is the pipeline's overhead.

tiny (default): config/train_tiny.yaml (its model, data settings and batch size 32) on the CPU, 2 threads.
7b: config/train_7b_towers_lora.yaml (stage 2: LoRA on the LLM) with random weights of the 7b layout on one
CUDA GPU, as the trainer runs it in a single process (frozen weights in bf16, trainable ones and AdamW in
fp32, bf16 autocast); also prints torch.cuda.max_memory_allocated.
Without --data, a synthetic annotated dataset is written with the project's shard writer to a temporary
folder, large enough that the timed steps come after the shuffle buffer has filled; that fill, paid once
per epoch, is reported on its own line.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

from pixelvla_ros.learning.annotation.format import FORMAT, VERSION, ShardWriter, encode_rle, sample_members
from pixelvla_ros.learning.annotation.sampling import prompts_to_json, sample_prompts
from pixelvla_ros.learning.training.config import load_config
from pixelvla_ros.learning.training.data import batches
from pixelvla_ros.learning.training.train import Trainer

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
DEFAULT_CONFIG = {"tiny": CONFIG_DIR / "train_tiny.yaml", "7b": CONFIG_DIR / "train_7b_towers_lora.yaml"}
PHASES = ("data", "collate", "forward", "backward", "optimizer")


def write_synthetic_dataset(
    out: Path, episodes: int, steps: int = 60, image_size: int = 224, seed: int = 0
) -> Path:
    """`episodes` annotated episodes in the project's format (ShardWriter, 8 per shard): a coloured block
    lifted off a textured table, its mask and sampled prompts, small random actions and proprio. The content
    only has to look like the recorded data to the pipeline: same arrays, sizes and encodings."""
    rng = np.random.default_rng(seed)
    writer = ShardWriter(out, prefix="synthetic", shard_size=8)
    yy, xx = np.mgrid[0:image_size, 0:image_size]
    texture = 0.85 + 0.15 * (np.sin(xx / 5.0) * np.cos(yy / 7.0))[..., None]
    side = image_size // 6
    for i in range(episodes):
        key = f"synthetic-{i:05d}"
        table = (rng.uniform(60, 200, 3) * texture).astype(np.uint8)
        images = np.repeat(table[None], steps, axis=0)
        x0, y0 = (int(v) for v in rng.integers(0, image_size - 2 * side, 2))
        colour = rng.integers(0, 256, 3, dtype=np.uint8)
        for t in range(steps):
            lift = min(t, side)
            images[t, y0 + side - lift : y0 + 2 * side - lift, x0 : x0 + side] = colour
        mask = np.zeros((image_size, image_size), dtype=bool)
        mask[y0 + side : y0 + 2 * side, x0 : x0 + side] = True
        actions = rng.normal(0.0, 0.01, (steps, 7)).astype(np.float32)
        actions[:, 6] = np.arange(steps) > steps // 2
        annotation = {
            "format": FORMAT,
            "version": VERSION,
            "key": key,
            "episode_id": key,
            "source": "synthetic",
            "instruction": "pick up the block",
            "num_steps": steps,
            "image_size": [image_size, image_size],
            "frame_index": 0,
            "mask": encode_rle(mask),
            "mask_area": int(mask.sum()),
            "prompts": prompts_to_json(sample_prompts(mask, rng)),
        }
        arrays = {
            "images": images,
            "actions": actions,
            "ee_pos": np.cumsum(actions[:, :3], axis=0),
            "gripper_state": actions[:, 6].copy(),
        }
        _, png = cv2.imencode(".png", cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
        writer.write(key, sample_members(key, annotation, arrays, png.tobytes()))
        writer.maybe_flush()
    writer.flush()
    return out


def _stats(ms: np.ndarray) -> str:
    return f"{np.median(ms):>10.1f} {np.percentile(ms, 99):>10.1f}"


def _timed(phases: list[tuple[str, Callable[[], object]]], sync: Callable[[], None]) -> dict[str, float]:
    """Run the phases in order; milliseconds per phase."""
    times = {}
    for name, fn in phases:
        t = time.perf_counter()
        fn()
        sync()
        times[name] = (time.perf_counter() - t) * 1000.0
    return times


def bench(
    preset: str, config: Path, data: str | None, steps: int, warmup: int, threads: int,
    batch_size: int | None, image_size: int, overrides: dict[str, Any],
) -> list[str]:  # fmt: skip
    """Build the trainer for `config` and time `steps` training steps and `steps` floor steps."""
    torch.set_num_threads(threads)
    cuda = preset == "7b"  # tiny is timed on the CPU even where a GPU is present
    sync = torch.cuda.synchronize if cuda else lambda: None
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
        settings: dict[str, Any] = {"output_dir": f"{tmp}/run", "grad_accum_steps": 1}
        if cuda:  # random weights of the 7b layout, one process
            settings.update({"model_overrides": {}, "distributed": "ddp"})
        if batch_size is not None:
            settings["batch_size"] = batch_size
        settings.update(overrides)
        sizes = load_config(config, {**settings, "data.train": tmp})  # batch and buffer sizes, validated
        buffer = sizes.data.shuffle_buffer
        lines = []
        if data is None:
            episode_steps = 60
            needed = buffer + (warmup + steps + 1) * sizes.batch_size  # the timed steps start no new epoch
            episodes = math.ceil(needed / episode_steps)
            t = time.perf_counter()
            data = str(write_synthetic_dataset(Path(tmp) / "data", episodes, episode_steps, image_size))
            lines.append(
                f"synthetic dataset: {episodes} episodes x {episode_steps} steps, {image_size} px "
                f"(written in {time.perf_counter() - t:.1f} s)"
            )
        settings["data.train"] = data
        cfg = load_config(config, settings)
        trainer = Trainer(cfg, progress=False, device=torch.device("cuda" if cuda else "cpu"))
        trainer.wrapped.train()
        model = trainer.model
        stream: Iterator = batches(
            cfg.data, trainer.pre.config.action_space.chunk_size, cfg.batch_size, cfg.seed
        )
        holder: dict[str, Any] = {}

        def data_phase() -> None:
            holder["examples"] = next(stream)[2]

        def collate_phase() -> None:
            holder["batch"] = trainer.collate(holder["examples"])

        def forward_phase(key: str) -> None:
            holder["loss"] = trainer.forward_loss(*holder[key])

        backward = ("backward", lambda: holder["loss"].backward())
        optimizer = ("optimizer", trainer.optimizer_step)
        step = [("data", data_phase), ("collate", collate_phase),
                ("forward", lambda: forward_phase("batch")), backward, optimizer]  # fmt: skip
        floor_step = [("forward", lambda: forward_phase("kept")), backward, optimizer]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        first = _timed(step, sync)  # the first batch of an epoch fills the shuffle buffer
        holder["kept"] = holder["batch"]  # the floor's batch, collated once
        for _ in range(warmup):
            _timed(step, sync)
            _timed(floor_step, sync)
        timed, floor = [], []
        for i in range(steps):  # interleaved in ABBA order: both see the same machine, neither goes first
            if i % 2:
                floor.append(sum(_timed(floor_step, sync).values()))
            timed.append(_timed(step, sync))
            if not i % 2:
                floor.append(sum(_timed(floor_step, sync).values()))

    per_phase = {name: np.array([t[name] for t in timed]) for name in PHASES}
    step_ms = np.sum([per_phase[name] for name in PHASES], axis=0)
    floor_ms = np.array(floor)
    total = step_ms.sum()
    device = torch.cuda.get_device_name() if cuda else f"CPU, {threads} threads"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines += [
        f"{preset}, stage {cfg.stage}, batch {cfg.batch_size}, {device}: {model.num_parameters() / 1e6:.1f}M "
        f"parameters ({trainable / 1e6:.1f}M trainable), {steps} timed steps after {warmup} warm-up",
        f"first batch of an epoch (fills the {buffer}-example shuffle buffer): {first['data'] / 1000:.2f} s",
        f"{'phase':<34} {'median ms':>10} {'p99 ms':>10} {'share':>7}",
    ]
    for name in PHASES:
        lines.append(f"{name:<34} {_stats(per_phase[name])} {100 * per_phase[name].sum() / total:>6.1f}%")
    data_share = 100 * (per_phase["data"].sum() + per_phase["collate"].sum()) / total
    step_rate = cfg.batch_size / (np.median(step_ms) / 1000.0)
    floor_rate = cfg.batch_size / (np.median(floor_ms) / 1000.0)
    lines += [
        f"{'step':<34} {_stats(step_ms)} {100.0:>6.1f}%",
        f"{'floor: fwd+bwd+opt, batch in memory':<34} {_stats(floor_ms)}",
        f"samples/s at the median step: {step_rate:.1f} (floor {floor_rate:.1f})",
        f"data loading share: {data_share:.1f}% (data + collate of the step time)",
        f"step / floor: {np.median(step_ms) / np.median(floor_ms):.2f}",
    ]
    if cuda:
        lines.append(f"max memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(DEFAULT_CONFIG), default="tiny")
    ap.add_argument("--config", type=Path, help="training config (default: config/train_tiny.yaml, or "
                    "config/train_7b_towers_lora.yaml with --preset 7b)")  # fmt: skip
    ap.add_argument("--data", help="annotated dataset folder (default: synthetic, in a temporary folder)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (and as many floor steps)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--batch-size", type=int, help="override the config's batch size")
    ap.add_argument("--image-size", type=int, default=224, help="synthetic dataset frames (the recorder's)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, as train's")
    args = ap.parse_args(argv)
    if args.preset == "7b" and not torch.cuda.is_available():
        print(
            "train_throughput: --preset 7b needs a CUDA GPU (LoRA training of the ~7.5B-parameter layout in "
            "bf16); this machine has none",
            file=sys.stderr,
        )
        return 2
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    config = args.config or DEFAULT_CONFIG[args.preset]
    if not config.is_file():
        ap.error(f"{config} does not exist: pass --config")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    lines = bench(args.preset, config, args.data, args.steps, args.warmup, args.threads, args.batch_size,
                  args.image_size, overrides)  # fmt: skip
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
