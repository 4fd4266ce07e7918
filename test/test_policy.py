"""Policy runtime: checked chunks from a small random checkpoint, invalid verdicts, chunk execution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelvla_ros.model import build_model, save_checkpoint
from pixelvla_ros.model.inputs import PixelVLAOutput
from pixelvla_ros.model.testing import default_stats, make_preprocessor, micro_config, sample_input
from pixelvla_ros.policy import ChunkExecutor, Policy
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


# ------------------------------------------------------------------------------------ ChunkExecutor
def _chunk(value: float, n: int = 4, gripper: float = 0.0) -> np.ndarray:
    a = np.zeros((n, 7))
    a[:, 0] = value + np.arange(n)  # step k of the chunk carries value + k
    a[:, 6] = gripper
    return a


def test_open_loop_executes_then_requeries() -> None:
    ex = ChunkExecutor(chunk_size=4, execute_steps=3)
    assert ex.needs_query(0)
    ex.add_chunk(_chunk(10), 0)
    got = []
    for t in range(3):
        assert not ex.needs_query(t)
        got.append(ex.action(t)[0])
    assert got == [10, 11, 12]
    assert ex.needs_query(3)
    ex.add_chunk(_chunk(20), 3)
    assert [ex.action(t)[0] for t in (3, 4, 5)] == [20, 21, 22]


def test_open_loop_failed_query_keeps_old_chunk_until_it_runs_out() -> None:
    ex = ChunkExecutor(chunk_size=4, execute_steps=2)
    ex.add_chunk(_chunk(10), 0)
    assert ex.action(1)[0] == 11 and ex.needs_query(2)
    ex.skip_query(2)  # the query at step 2 gave an invalid chunk
    assert ex.action(2)[0] == 12 and ex.action(3)[0] == 13
    assert ex.needs_query(4) and ex.action(4) is None  # nothing left: the caller holds still


def test_temporal_ensembling_weights() -> None:
    k = 0.5
    ex = ChunkExecutor(chunk_size=4, execute_steps=1, ensemble=True, ensemble_k=k)
    ex.add_chunk(_chunk(0.0, gripper=1.0), 0)
    assert ex.action(0)[0] == 0.0
    assert ex.needs_query(1)
    ex.add_chunk(_chunk(100.0, gripper=0.0), 1)
    ex.add_chunk(_chunk(200.0, gripper=0.0), 2)
    # step 2: chunk@0 gives 2, chunk@1 gives 101, chunk@2 gives 200; weights exp(-k i), oldest i = 0
    w = np.exp(-k * np.arange(3))
    want = (w * [2.0, 101.0, 200.0]).sum() / w.sum()
    a = ex.action(2)
    assert a[0] == pytest.approx(want)
    g = (w * [1.0, 0.0, 0.0]).sum() / w.sum()  # 0.507: the oldest chunk (closed) still outweighs the others
    assert g == pytest.approx(0.5065, abs=1e-4) and a[6] == 1.0  # binarized at 0.5
    # step 4: chunk@0 has run out (covers 0..3); chunk@1 gives 103, chunk@2 gives 202
    w2 = np.exp(-k * np.arange(2))
    assert ex.action(4)[0] == pytest.approx((w2 * [103.0, 202.0]).sum() / w2.sum())


def test_ensembling_k0_is_plain_average_and_validation() -> None:
    ex = ChunkExecutor(chunk_size=2, ensemble=True, ensemble_k=0.0, execute_steps=1)
    ex.add_chunk(_chunk(0.0, n=2), 0)
    ex.add_chunk(_chunk(10.0, n=2), 1)
    assert ex.action(1)[0] == pytest.approx((1.0 + 10.0) / 2)
    with pytest.raises(ValueError, match="execute_steps"):
        ChunkExecutor(chunk_size=4, execute_steps=5)
    with pytest.raises(ValueError, match="shape"):
        ex.add_chunk(np.zeros((3, 7)), 2)
    with pytest.raises(ValueError, match="older"):
        ex.add_chunk(_chunk(0.0, n=2), 0)
