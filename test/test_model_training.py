"""Training stages (which parameters get gradients), LoRA, and a tiny model overfitting a few samples."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pixelvla_ros.model import apply_training_stage, build_model, has_lora, merge_lora
from pixelvla_ros.model.testing import MODES, make_preprocessor, micro_config, sample_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")


EXPECTED_PREFIXES = {
    "stage1": ("action_decoder.", "action_queries", "proprio_encoder."),
    "stage2": ("action_decoder.", "action_queries", "proprio_encoder.", "prompt_encoder.", "pixel_encoder."),
}


def _batch(pre, n=5):
    return pre.batch([sample_input(m, seed=i) for i, m in enumerate(MODES[:n])])


@pytest.mark.parametrize("stage", ["stage1", "stage2", "full"])
def test_gradients_reach_exactly_the_trained_parameters(stage):
    torch.manual_seed(0)
    cfg = micro_config()
    model = build_model(cfg, device="cpu").train()
    names = set(apply_training_stage(model, stage))
    pre = make_preprocessor(cfg)
    x = _batch(pre)
    model(x, actions=torch.rand(5, 4, 7) * 2 - 1).loss.backward()
    params = dict(model.named_parameters())
    assert names == {n for n, p in params.items() if p.requires_grad}
    for n, p in params.items():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        else:
            assert p.grad is None, n
    if stage == "full":
        assert names == set(params) and not has_lora(model)
        return
    lora = {n for n in names if "lora_" in n}
    assert (len(lora) > 0) == (stage == "stage2")
    assert all(n.startswith(EXPECTED_PREFIXES[stage]) for n in names - lora), sorted(names - lora)
    assert not any(n.startswith(("vision.", "projector.")) for n in names)
    assert all(p.grad.abs().sum() > 0 for n, p in params.items() if n.startswith("action_decoder."))
    if stage == "stage2":  # LoRA B starts at zero, so its A gets no signal on step 1; B must
        assert any(p.grad.abs().sum() > 0 for n, p in params.items() if "lora_B" in n)
        assert params["prompt_encoder.mlp.0.weight"].grad.abs().sum() > 0
        assert params["pixel_encoder.level_proj.0.weight"].grad.abs().sum() > 0


def test_lora_merge_keeps_outputs():
    torch.manual_seed(0)
    cfg = micro_config()
    model = build_model(cfg, device="cpu")
    apply_training_stage(model, "stage2")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    pre = make_preprocessor(cfg)
    x = _batch(pre, 3)
    before = model.predict(x)
    merge_lora(model)
    assert not has_lora(model)
    torch.testing.assert_close(model.predict(x), before, atol=1e-5, rtol=1e-4)


def test_tiny_model_overfits_a_handful_of_samples():
    torch.manual_seed(0)
    cfg = micro_config()
    model = build_model(cfg, device="cpu").train()
    apply_training_stage(model, "full")
    pre = make_preprocessor(cfg)
    x = _batch(pre, 5)
    rng = np.random.default_rng(0)
    raw = np.concatenate([rng.uniform(-0.02, 0.02, (5, 4, 6)), rng.integers(0, 2, (5, 4, 1))], axis=-1)
    target = torch.from_numpy(pre.normalize_actions(raw))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    first = model(x, actions=target).loss.item()
    t0, last = time.perf_counter(), first
    for _ in range(400):
        loss = model(x, actions=target).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = loss.item()
        if last < first / 10 or time.perf_counter() - t0 > 60:  # ~60 steps, a few seconds
            break
    assert last < first / 10, (first, last)
