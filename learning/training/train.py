"""`ros2 run pixelvla_ros train`: visuomotor instruction tuning of PixelVLA on an annotated dataset.

    train --config config/train_tiny.yaml [--max-steps N] [--time-budget-min M] [--resume auto|DIR]
    torchrun --nproc-per-node 2 -m pixelvla_ros.learning.training.train --config ...   (DDP)
    the same under torchrun with `distributed: fsdp` in the config: FSDP2 (parameters sharded between ranks)

Writes OUTPUT/checkpoints/step_XXXXXXX/ (a loadable model checkpoint + trainer_state.pt, each folder
written under a temporary name and renamed), OUTPUT/model/ (the final model), OUTPUT/metrics.jsonl,
OUTPUT/loss.png, OUTPUT/tensorboard/. Exit codes: 0 done, 2 bad configuration or data, 3 non-finite loss.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from tqdm import tqdm

from pixelvla_ros.action_space import ActionSpace
from pixelvla_ros.model import (
    CheckpointError,
    ModelInputs,
    PixelVLA,
    add_lora,
    apply_training_stage,
    autocast_context,
    build_model,
    default_device,
    has_lora,
    load_checkpoint,
    preset,
    read_checkpoint_config,
    save_checkpoint,
)
from pixelvla_ros.model.pixelvla import resolve_dtype
from pixelvla_ros.preprocessing import NormStats, PreprocessConfig, Preprocessor, state_proprio

from ..annotation.format import iter_samples, list_shards
from .config import TrainConfig, TrainConfigError, load_config
from .data import Example, batches, count_episodes
from .loss_plot import plot_loss

TRAINER_STATE = "trainer_state.pt"
# Gathered state under FSDP: every tensor whole and on the CPU, on rank 0 only (the others get {}), so a
# checkpoint has the same format as one written by DDP or a single process.
FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names the step and the examples of the batch."""


def dataset_statistics(root: str | list[str]) -> tuple[NormStats, NormStats | None]:
    """q01/q99 of the training split's actions (and proprio), streamed episode by episode."""
    actions, proprio = [], []
    for sample in iter_samples(list_shards(root)):
        actions.append(sample["actions"])
        if "ee_pos" in sample:
            proprio.append(state_proprio(sample["ee_pos"], sample["gripper_state"]))
    if not actions:
        raise TrainConfigError(f"{root}: the dataset has no episodes")
    return NormStats.from_data(np.concatenate(actions)), NormStats.from_data(
        np.concatenate(proprio)
    ) if proprio else None


def shard_model(model: PixelVLA, device: torch.device) -> None:
    """FSDP2 in place: one unit per transformer block (vision towers and LLM), then the root unit holding
    the rest (embeddings, projector, encoders, action head). Parameters of one unit may mix frozen and
    trainable ones (LoRA next to its frozen base weight): FSDP2 shards per parameter and keeps requires_grad.
    On CUDA the units compute in bf16 and reduce gradients in fp32; on the CPU everything stays fp32."""
    from transformers.modeling_layers import GradientCheckpointingLayer  # every HF decoder / encoder block

    block, root = MixedPrecisionPolicy(), MixedPrecisionPolicy()
    if device.type == "cuda":
        block = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        # The root's inputs are the batch: targets, prompt coordinates and proprio must stay fp32 (bf16 keeps
        # 8 bits of mantissa: a point's coordinate would move by up to a pixel at 224 px).
        root = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
        )
    for module in [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]:
        fully_shard(module, mp_policy=block)
    fully_shard(model, mp_policy=root)


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        resume: str | None = None,
        progress: bool = True,
        device: torch.device | None = None,
    ) -> None:
        """device: default CUDA when present, else the CPU (under torchrun on CUDA: the local rank's GPU)."""
        self.cfg, self.progress = cfg, progress
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self.output = Path(cfg.output_dir)
        self.device = device or default_device()
        self.fsdp = cfg.distributed == "fsdp"
        try:  # under FSDP the master weights stay float32: its mixed-precision policy casts them
            self.dtype = torch.float32 if self.fsdp else resolve_dtype(cfg.dtype, self.device)
        except ValueError as error:
            raise TrainConfigError(f"dtype: {error}") from None
        if self.fsdp and self.world == 1:
            raise TrainConfigError(
                "distributed: fsdp shards the model between torchrun processes, and this is a single "
                "process (WORLD_SIZE=1): run it under torchrun --nproc-per-node N with N >= 2, or set "
                "distributed: ddp"
            )
        if self.world > 1 and not dist.is_initialized():
            local = int(os.environ.get("LOCAL_RANK", 0))
            if self.device.type == "cuda":
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if count_episodes(cfg.data.train) == 0:
            raise TrainConfigError(f"{cfg.data.train}: the dataset has no episodes")

        resume_dir = self._find_resume(resume) if resume else None
        self.step, self.epoch, self.consumed = 0, 0, 0
        self.seen: list[str] = []  # the first examples this rank trained on (ranks.json under DDP)
        if resume_dir is not None:
            self._load_model(resume_dir)
        elif cfg.init_checkpoint:
            try:
                self.model, self.pre = load_checkpoint(
                    cfg.init_checkpoint,
                    device=self.device,
                    trainable=True,
                    config_changes=cfg.init_checkpoint_changes,
                    dtype=self.dtype,
                )
                untrained = (
                    read_checkpoint_config(cfg.init_checkpoint)["extra"].get("action_head") == "untrained"
                )
            except CheckpointError as error:
                raise TrainConfigError(f"init_checkpoint: {error}") from error
            if untrained:  # e.g. converted from OpenVLA: its statistics are another robot's
                self.pre.config.action_stats = dataset_statistics(cfg.data.train)[0]
                print(
                    f"{cfg.init_checkpoint}: untrained action head; action statistics from {cfg.data.train}"
                )
        else:
            model_cfg = preset(cfg.preset, **cfg.model_overrides)
            action_stats, proprio_stats = dataset_statistics(cfg.data.train)
            space = ActionSpace(chunk_size=model_cfg.action.chunk_size)
            self.pre = Preprocessor(
                PreprocessConfig.for_model(
                    model_cfg, action_stats, space, proprio_stats if model_cfg.proprio_dim else None
                )
            )
            torch.manual_seed(cfg.seed)
            self.model = build_model(model_cfg, device=self.device, dtype=self.dtype)
        self.trainable = apply_training_stage(self.model, cfg.stage)
        for p in self.model.parameters():  # AdamW's weights and states in float32, whatever the frozen ones
            if p.requires_grad:
                p.data = p.data.float()
        if cfg.gradient_checkpointing:
            for hf_model in [t.model for t in self.model.vision.towers] + [self.model.llm]:
                # transformers 5 renamed it (the old name warns); 4.x has only the old one
                enable = getattr(hf_model, "activation_checkpointing_enable", None)
                if enable is not None:
                    enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    hf_model.gradient_checkpointing_enable(
                        gradient_checkpointing_kwargs={"use_reentrant": False}
                    )
        if self.fsdp:
            # DDP starts every rank from rank 0's weights (it broadcasts them); FSDP does not, so do it here.
            with torch.no_grad():
                for tensor in itertools.chain(self.model.parameters(), self.model.buffers()):
                    dist.broadcast(tensor, 0)
            shard_model(self.model, self.device)  # before the optimizer: it must hold the sharded parameters
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        if resume_dir is not None:
            self._load_trainer_state(resume_dir)
        # fully_shard changed self.model in place; DDP wraps it. `wrapped` is what the loop calls.
        self.wrapped = (
            torch.nn.parallel.DistributedDataParallel(self.model, find_unused_parameters=True)
            if self.world > 1 and not self.fsdp
            else self.model
        )

    # --- schedule: linear warm-up, then cosine decay to 0 ------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        warmup, total = self.cfg.warmup_steps, self.cfg.max_steps
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    # --- checkpoints ---------------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        return sorted((self.output / "checkpoints").glob("step_[0-9]*[0-9]"))

    def _find_resume(self, resume: str) -> Path | None:
        if resume != "auto":
            path = Path(resume)
            if not (path / TRAINER_STATE).is_file():
                raise TrainConfigError(f"--resume {path}: not a training checkpoint (no {TRAINER_STATE})")
            return path
        found = self._checkpoints()
        return found[-1] if found else None

    def _expected_action_space(self) -> ActionSpace:
        if self.cfg.init_checkpoint:
            record = read_checkpoint_config(self.cfg.init_checkpoint)
            return ActionSpace.from_dict(record["preprocessing"]["action_space"])
        return ActionSpace(chunk_size=preset(self.cfg.preset, **self.cfg.model_overrides).action.chunk_size)

    def _load_model(self, path: Path) -> None:
        try:
            self.model, self.pre = load_checkpoint(path, device=self.device, trainable=True, dtype=self.dtype)
        except CheckpointError as error:
            raise TrainConfigError(f"--resume {path}: {error}") from None
        expected = self._expected_action_space()
        if self.pre.config.action_space != expected:
            raise TrainConfigError(
                f"--resume {path}: its action space {self.pre.config.action_space} differs from this "
                f"config's {expected}"
            )

    def _load_trainer_state(self, path: Path) -> None:
        # Under FSDP every rank reads the whole optimizer state and keeps its shard: memory-mapped, the ranks
        # share the file's pages instead of each holding a copy.
        state = torch.load(path / TRAINER_STATE, weights_only=False, mmap=self.fsdp)
        if state["train_config"]["data"]["prompt_modes"] != self.cfg.to_dict()["data"]["prompt_modes"]:
            raise TrainConfigError(f"--resume {path}: it was trained with other prompt modes")
        saved_mode = state["train_config"].get("distributed", "ddp")
        if saved_mode != self.cfg.distributed:
            # FSDP saves the optimizer state by parameter name, DDP by parameter index
            raise TrainConfigError(
                f"--resume {path}: it was trained with distributed: {saved_mode}, this config says "
                f"{self.cfg.distributed}; resume with --set distributed={saved_mode}"
            )
        if self.fsdp:
            set_optimizer_state_dict(
                self.model, self.optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True)
            )
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.consumed = state["step"], state["epoch"], state["consumed"]
        torch.set_rng_state(state["torch_rng"][self.rank])  # dropout; data order is seeded by (seed, epoch)
        print(f"resumed from {path} at step {self.step} (epoch {self.epoch}, {self.consumed} examples in)")

    def _unsharded_twin(self, state: dict[str, torch.Tensor]) -> PixelVLA:
        """Rank 0's whole-model view of the gathered FSDP weights, for save_checkpoint. Built on the meta
        device and given the gathered tensors themselves, it costs no memory beyond them."""
        with torch.device("meta"):
            twin = PixelVLA(self.model.cfg, load_pretrained=False)
            if has_lora(self.model):
                add_lora(twin, self.model.cfg.lora)
        twin.load_state_dict(state, strict=True, assign=True)
        return twin

    def save(self, final: bool = False) -> Path | None:
        """Write checkpoints/step_N atomically (rank 0); with final=True also OUTPUT/model."""
        torch_rng = [torch.get_rng_state()]
        if self.world > 1:
            gathered = [None] * self.world
            dist.all_gather_object(gathered, torch.get_rng_state())
            torch_rng = gathered
        model, optimizer_state = self.model, None
        if self.fsdp:  # collectives: every rank takes part, rank 0 receives the whole tensors
            model_state = get_model_state_dict(self.model, options=FULL_ON_RANK0)
            optimizer_state = get_optimizer_state_dict(self.model, self.optimizer, options=FULL_ON_RANK0)
            if self.rank == 0:
                model = self._unsharded_twin(model_state)
        if self.rank != 0:
            return None
        target = self.output / "checkpoints" / f"step_{self.step:07d}"
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        extra = {"train_config": self.cfg.to_dict(), "step": self.step}
        save_checkpoint(model, self.pre, tmp, extra=extra)
        state = {
            "optimizer": optimizer_state if self.fsdp else self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "torch_rng": torch_rng,
            "train_config": self.cfg.to_dict(),
        }
        torch.save(state, tmp / TRAINER_STATE)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)  # a checkpoint folder exists complete or not at all
        for old in self._checkpoints()[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old)
        if final:
            model_dir = self.output / "model"
            tmp_model = model_dir.with_name("model.tmp")
            shutil.rmtree(tmp_model, ignore_errors=True)
            save_checkpoint(model, self.pre, tmp_model, extra=extra)
            shutil.rmtree(model_dir, ignore_errors=True)
            tmp_model.rename(model_dir)
        return target

    # --- the loop ------------------------------------------------------------------------------------
    # collate, forward_loss and optimizer_step are the parts of a step, public for the throughput benchmark
    def collate(self, examples: list[Example]) -> tuple[ModelInputs, torch.Tensor, torch.Tensor]:
        """Examples -> (model inputs, normalized target chunks (B, N_c, 7), valid steps (B, N_c)) on the
        training device."""
        inputs = self.pre.batch([e.inputs for e in examples]).to(self.device)
        targets = np.stack([self.pre.normalize_actions(e.actions) for e in examples])
        valid = np.stack([e.valid for e in examples])
        return inputs, torch.from_numpy(targets).to(self.device), torch.from_numpy(valid).to(self.device)

    def forward_loss(self, inputs: ModelInputs, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The L1 action loss over the valid steps, each dimension weighted by action_loss_weights."""
        weights = valid
        if self.cfg.action_loss_weights is not None:
            dims = torch.tensor(self.cfg.action_loss_weights, dtype=torch.float32, device=valid.device)
            weights = valid.float()[..., None] * dims  # (B, N_c, 7)
        with autocast_context(self.device, self.dtype):
            return self.wrapped(inputs, targets, weights).loss

    def optimizer_step(self) -> float:
        """Clip the gradients, step the optimizer and the schedule, clear the gradients; returns the norm
        before clipping."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if isinstance(grad_norm, DTensor):  # FSDP: the norm over all shards, replicated on every rank
            grad_norm = grad_norm.full_tensor()
        return float(grad_norm)

    def _loss(self, examples: list[Example]) -> torch.Tensor:
        return self.forward_loss(*self.collate(examples))

    def _check_replicas(self) -> None:
        """Under DDP every rank must end with the same weights: compare checksums, write ranks.json. Under
        FSDP each rank holds a shard; the checksum is the whole model's (the sum over the shards)."""
        if self.world == 1:
            return
        if self.fsdp:
            local = torch.tensor(
                [sum(float(p.detach().to_local().double().sum()) for p in self.model.parameters())],
                dtype=torch.float64,
                device=self.device,
            )
            dist.all_reduce(local)
            checksum = float(local.item())
        else:
            checksum = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        records = [None] * self.world
        dist.all_gather_object(
            records, {"rank": self.rank, "param_checksum": checksum, "first_examples": self.seen}
        )
        if self.rank == 0:
            (self.output / "ranks.json").write_text(json.dumps(records, indent=2))
            if not self.fsdp and len({r["param_checksum"] for r in records}) != 1:
                raise RuntimeError(f"DDP replicas diverged: {records}")

    def train(self) -> int:
        cfg = self.cfg
        self.output.mkdir(parents=True, exist_ok=True)
        writer = metrics = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.output / "tensorboard"))
            metrics = (self.output / "metrics.jsonl").open("a")
            (self.output / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        stream = batches(cfg.data, self.pre.config.action_space.chunk_size, cfg.batch_size, cfg.seed,
                         self.epoch, self.consumed, self.rank, self.world)  # fmt: skip
        started = time.monotonic()
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not self.progress or self.rank != 0,
                   unit="step", dynamic_ncols=True)  # fmt: skip
        self.wrapped.train()
        while self.step < cfg.max_steps:
            t0 = time.perf_counter()
            total, keys = 0.0, []
            for _ in range(cfg.grad_accum_steps):
                self.epoch, self.consumed, examples = next(stream)
                keys += [e.key for e in examples]
                if len(self.seen) < 64:
                    self.seen += [e.key for e in examples]
                loss = self._loss(examples)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss is {loss.item()} at step {self.step + 1} (epoch {self.epoch}); examples: "
                        f"{', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}. The last good checkpoint "
                        f"is kept in {self.output / 'checkpoints'}"
                    )
                (loss / cfg.grad_accum_steps).backward()
                total += loss.item() / cfg.grad_accum_steps
            grad_norm = self.optimizer_step()
            self.step += 1
            rate = cfg.batch_size * cfg.grad_accum_steps * self.world / (time.perf_counter() - t0)
            if self.rank == 0:
                lr = self.scheduler.get_last_lr()[0]
                record = {"step": self.step, "loss": total, "lr": lr, "grad_norm": grad_norm,
                          "samples_per_s": rate, "epoch": self.epoch}  # fmt: skip
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                if self.step % cfg.log_every == 0 or self.step == 1:
                    for key in ("loss", "lr", "grad_norm", "samples_per_s"):
                        writer.add_scalar(f"train/{key}", record[key], self.step)
                bar.set_postfix(loss=f"{total:.4f}", samples_s=f"{rate:.1f}", refresh=False)
                bar.update(1)
            out_of_time = (
                cfg.time_budget_min is not None and time.monotonic() - started > 60 * cfg.time_budget_min
            )
            if self.world > 1:  # every rank stops at the same step
                flag = torch.tensor([float(out_of_time)], device=self.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps or out_of_time:
                self.save(final=self.step == cfg.max_steps or out_of_time)
            if out_of_time:
                print(f"time budget of {cfg.time_budget_min} min reached at step {self.step}")
                break
        bar.close()
        self._check_replicas()
        if writer is not None:
            writer.close()
            metrics.close()
            plot_loss({self.output.name: self.output}, self.output / "loss.png")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="training config YAML (see config/train_*.yaml)")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument(
        "--time-budget-min", type=float, help="stop with a checkpoint after this many minutes"
    )
    parser.add_argument("--resume", help="'auto' (latest checkpoint of output_dir) or a checkpoint folder")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config values (YAML), e.g. --set learning_rate=1e-4")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for key, value in (("output_dir", args.output_dir), ("max_steps", args.max_steps),
                       ("time_budget_min", args.time_budget_min)):  # fmt: skip
        if value is not None:
            overrides[key] = value
    try:
        for item in args.set:
            key, _, value = item.partition("=")
            overrides[key] = yaml.safe_load(value)
        cfg = load_config(args.config, overrides)
        if args.resume and args.resume != "auto" and not Path(args.resume).exists():
            raise TrainConfigError(f"--resume {args.resume} does not exist")
        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
        code = trainer.train()
        if dist.is_initialized():
            # Every rank done before any tears down: a rank exiting while gloo still served its peer
            # aborted once ("terminate called without an active exception").
            dist.barrier()
        return code
    except (TrainConfigError, yaml.YAMLError) as error:
        print(f"train: configuration error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"train: stopped: {error}", file=sys.stderr)
        return 3
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
