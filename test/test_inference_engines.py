"""The inference engine behind Policy: each backend that runs on the CPU gives eager's action chunks (the
packaged tiny checkpoint and the 7b layout at reduced width), one that cannot run here is refused naming the
alternatives, and the CUDA-only paths run where CUDA exists (they skip elsewhere, saying so)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelvla_ros.inference.engine import BACKENDS, BackendUnavailableError, make_engine
from pixelvla_ros.model import load_checkpoint
from pixelvla_ros.model.testing import sample_input
from pixelvla_ros.policy import Policy

TINY = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny"
MODES = ("text", "text_mask", "text_prompts", "prompts_only", "all")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: runs when one is lent")


@pytest.fixture(scope="module")
def seven_b(tmp_path_factory) -> Path:
    """The 7b layout at reduced width: a converted synthetic OpenVLA checkpoint."""
    from pixelvla_ros.model.openvla import convert_openvla
    from pixelvla_ros.model.openvla_synthetic import write_synthetic_openvla

    tmp = tmp_path_factory.mktemp("openvla")
    return convert_openvla(write_synthetic_openvla(tmp / "src"), tmp / "ckpt", "bridge_orig").output


def _chunks(engine, pre, proprio_dim: int) -> dict[str, torch.Tensor]:
    return {m: engine(pre.batch([sample_input(m, seed=3, proprio_dim=proprio_dim)])) for m in MODES}


@pytest.mark.parametrize("checkpoint", ["tiny", "7b"])
def test_compiled_blocks_give_eagers_action_chunks(checkpoint, seven_b):
    path, proprio = (TINY, 4) if checkpoint == "tiny" else (seven_b, 0)
    model, pre = load_checkpoint(path, device="cpu")
    eager = _chunks(make_engine("eager", model), pre, proprio)
    compiled_model, _ = load_checkpoint(path, device="cpu")
    engine = make_engine("compile", compiled_model)
    assert engine.compiled_blocks >= 4  # the towers' and the LLM's transformer blocks
    compiled = _chunks(engine, pre, proprio)
    diff = max((compiled[m] - eager[m]).abs().max().item() for m in MODES)
    print(f"{checkpoint}: compile vs eager, max |difference| over {len(MODES)} input modes: {diff:.1e}")
    assert diff < 1e-4
    assert all(
        c.shape == (1, model.cfg.action.chunk_size, 7) and c.dtype == torch.float32 for c in eager.values()
    )


def test_a_policy_loads_on_a_backend_warms_it_up_and_acts():
    policy = Policy.from_checkpoint(TINY, device="cpu", backend="compile")
    assert policy.engine.name == "compile" and policy.warm_up_s > 0 and policy.engine.calls >= 1
    x = sample_input("text_prompts", proprio_dim=4)
    result = policy.predict_chunk(x.image, x.task, x.prompts, None, x.proprio)
    reference = Policy.from_checkpoint(TINY, device="cpu").predict_chunk(
        x.image, x.task, x.prompts, None, x.proprio
    )
    assert result.valid and reference.valid
    torch.testing.assert_close(
        torch.from_numpy(result.actions), torch.from_numpy(reference.actions), atol=1e-4, rtol=0
    )


def test_a_backend_that_cannot_run_here_is_refused_naming_the_alternatives():
    model, _ = load_checkpoint(TINY, device="cpu")
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tensorrtx'; known: eager, compile"):
        make_engine("tensorrtx", model)
    with pytest.raises(BackendUnavailableError, match="policy server"):
        make_engine("remote", model)
    if not torch.cuda.is_available():
        with pytest.raises(
            BackendUnavailableError, match="cuda_graph needs the model on a CUDA device.*eager"
        ):
            make_engine("cuda_graph", model)
    with pytest.raises(BackendUnavailableError):
        Policy.from_checkpoint(TINY, device="cpu", backend="no_such_backend")
    assert set(BACKENDS) == {"eager", "compile", "cuda_graph", "onnxruntime", "tensorrt", "remote"}


@CUDA
@pytest.mark.parametrize("backend", ["compile", "cuda_graph"])
def test_cuda_backends_give_eagers_chunks_in_bfloat16(backend):
    model, pre = load_checkpoint(TINY, device="cuda", dtype=torch.bfloat16)
    eager = _chunks(make_engine("eager", model), pre, 4)
    other_model, _ = load_checkpoint(TINY, device="cuda", dtype=torch.bfloat16)
    engine = make_engine(backend, other_model)
    engine.warm_up(pre.batch([sample_input("all", proprio_dim=4)]))
    other = _chunks(engine, pre, 4)
    diff = max((other[m] - eager[m]).abs().max().item() for m in MODES)
    print(f"CUDA bf16, {backend} vs eager: max |difference| {diff:.1e}")
    assert diff < 2e-2  # bf16 keeps 8 bits: fused kernels may round differently


@CUDA
def test_cuda_graph_refuses_inputs_of_another_shape():
    model, pre = load_checkpoint(TINY, device="cuda")
    engine = make_engine("cuda_graph", model)
    engine.warm_up(pre.batch([sample_input("all", proprio_dim=4)]))
    two = pre.batch([sample_input("all", proprio_dim=4), sample_input("text", proprio_dim=4)])
    with pytest.raises(ValueError, match="shapes differ from the captured ones"):
        engine(two)


@CUDA
def test_on_a_gpu_the_image_is_resized_there_and_the_policy_call_matches_the_cpus():
    cpu = Policy.from_checkpoint(TINY, device="cpu")
    gpu = Policy.from_checkpoint(TINY, device="cuda", dtype="float32")
    x = sample_input("all", hw=(480, 640), proprio_dim=4)
    assert gpu.preprocessor.device.type == "cuda" and gpu.preprocessor.image_tensor(x.image).is_cuda
    torch.testing.assert_close(
        gpu.preprocessor.image_tensor(x.image).cpu(), cpu.preprocessor.image_tensor(x.image)
    )
    a = cpu.predict_chunk(x.image, x.task, x.prompts, x.object_mask, x.proprio)
    b = gpu.predict_chunk(x.image, x.task, x.prompts, x.object_mask, x.proprio)
    assert a.valid and b.valid
    assert abs(a.actions - b.actions).max() < 5e-2  # float32 weights under bf16 autocast on the GPU
