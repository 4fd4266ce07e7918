"""Policy runtime: checked chunks from a small random checkpoint, invalid verdicts (chunk execution:
test_chunk_timeline.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelvla_ros.model import build_model, save_checkpoint
from pixelvla_ros.model.inputs import PixelVLAOutput
from pixelvla_ros.model.testing import default_stats, make_preprocessor, micro_config, sample_input
from pixelvla_ros.policy import Policy
from pixelvla_ros.safety import SafetyLimits


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    cfg = micro_config()
    model = build_model(cfg, device="cpu", load_pretrained=False)
    return save_checkpoint(model, make_preprocessor(cfg), tmp_path_factory.mktemp("ckpt") / "micro")


@pytest.fixture
def policy(checkpoint) -> Policy:
    return Policy.from_checkpoint(checkpoint, device="cpu")


def _query(policy: Policy, mode: str = "all"):
    x = sample_input(mode, seed=1, proprio_dim=policy.proprio_dim)
    return policy.predict_chunk(x.image, x.task, list(x.prompts), x.object_mask, x.proprio)


@pytest.mark.parametrize("mode", ["text", "text_mask", "prompts_only", "all"])
def test_chunk_shape_units_times(policy: Policy, mode: str) -> None:
    res = _query(policy, mode)
    assert res.valid, res.reason
    assert res.reason == ""
    n = policy.chunk_size
    assert res.actions.shape == (n, 7) and res.actions.dtype == np.float64
    stats = default_stats()
    lo, hi = np.asarray(stats.q01[:6]), np.asarray(stats.q99[:6])
    assert np.all(res.actions[:, :6] >= lo - 1e-9) and np.all(res.actions[:, :6] <= hi + 1e-9)  # robot units
    assert set(np.unique(res.actions[:, 6])) <= {0.0, 1.0}  # gripper binarized, 0 open / 1 closed
    rate = policy.preprocessor.config.action_space.control_rate_hz
    np.testing.assert_allclose(res.times, np.arange(n) / rate)
    assert res.dt == pytest.approx(1 / rate)
    assert 0 < res.latency_s <= res.total_s < 10


def test_from_model_and_preprocessor_matches_checkpoint(policy: Policy) -> None:
    again = Policy(policy.model, policy.preprocessor)
    np.testing.assert_allclose(_query(again).actions, _query(policy).actions)


def test_nan_output_is_invalid_without_motion(policy: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    real = policy.model.forward

    def nan_forward(x, *a, **k) -> PixelVLAOutput:
        out = real(x, *a, **k)
        out.actions = torch.full_like(out.actions, float("nan"))
        return out

    monkeypatch.setattr(policy.model, "forward", nan_forward)
    res = _query(policy)
    assert not res.valid and res.actions is None
    assert "nan" in res.reason.lower()
    assert res.times.shape == (policy.chunk_size,)


def test_out_of_range_output_is_invalid(checkpoint) -> None:
    tight = SafetyLimits(max_translation_per_step=1e-6)  # any motion the random model makes exceeds it
    res = _query(Policy.from_checkpoint(checkpoint, device="cpu", limits=tight))
    assert not res.valid and res.actions is None
    assert res.reason.startswith("safety:") and "translates" in res.reason


def test_raising_model_is_invalid_with_reason(policy: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(policy.model, "forward", boom)
    res = _query(policy)
    assert not res.valid and res.actions is None
    assert res.reason.startswith("model:") and "RuntimeError" in res.reason and "out of memory" in res.reason


def test_bad_input_is_invalid_with_reason(policy: Policy) -> None:
    res = policy.predict_chunk(np.zeros((32, 32, 3), np.float32), "pick", [], None, np.zeros(7))
    assert not res.valid and res.reason.startswith("preprocessing:") and "uint8" in res.reason
    res = policy.predict_chunk(np.zeros((32, 32, 3), np.uint8), "pick", [], None, None)
    assert not res.valid and "proprio" in res.reason


def test_missing_checkpoint_raises(tmp_path) -> None:
    from pixelvla_ros.model import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        Policy.from_checkpoint(tmp_path / "nope")
