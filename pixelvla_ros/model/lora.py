"""LoRA on the LLM (peft) and the paper's training stages.

stage1  continuous action training: only the action decoder + action query slots (+ the proprio
        encoder when present) train; everything else frozen.
stage2  pixel-level understanding enhancement: LoRA on the LLM + prompt encoder + pixel encoder +
        action decoder (+ query slots, proprio encoder); vision towers and projector frozen.
full    training from scratch (tiny models): every parameter trains, no LoRA.
"""

from __future__ import annotations

import torch.nn as nn

from pixelvla_ros.model.config import LoraSettings
from pixelvla_ros.model.pixelvla import PixelVLA

STAGES = ("stage1", "stage2", "full")


def has_lora(model: PixelVLA) -> bool:
    from peft import PeftModel

    return isinstance(model.llm, PeftModel)


def add_lora(model: PixelVLA, settings: LoraSettings | None = None) -> PixelVLA:
    """Wrap model.llm in a peft LoRA model (rank 32 by default, as in the paper). Idempotent."""
    from peft import LoraConfig, get_peft_model

    if has_lora(model):
        return model
    s = settings or model.cfg.lora
    model.cfg.lora = s
    cfg = LoraConfig(
        r=s.rank,
        lora_alpha=s.alpha,
        lora_dropout=s.dropout,
        target_modules=list(s.target_modules),
        bias="none",
    )
    model.llm = get_peft_model(model.llm, cfg)
    return model


def merge_lora(model: PixelVLA) -> PixelVLA:
    """Fold the LoRA weights into the LLM (no adapter at inference)."""
    if has_lora(model):
        model.llm = model.llm.merge_and_unload()
    return model


def _modules_for_stage(model: PixelVLA, stage: str) -> list[nn.Module | nn.Parameter]:
    head = [model.action_decoder, model.action_queries]
    head += [model.proprio_encoder] if model.proprio_encoder is not None else []
    if stage == "stage1":
        return head
    if stage == "stage2":
        return head + [model.prompt_encoder, model.pixel_encoder]
    return [model]


def apply_training_stage(model: PixelVLA, stage: str) -> list[str]:
    """Set requires_grad for `stage` (adding LoRA for stage2); returns the names of trainable parameters."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage == "stage2":
        add_lora(model)
    elif stage == "full" and has_lora(model):
        raise ValueError("stage 'full' trains the whole LLM: merge or drop the LoRA adapter first")
    model.requires_grad_(False)
    for item in _modules_for_stage(model, stage):
        item.requires_grad_(True)
    if stage == "stage2":
        for name, p in model.llm.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]
