"""ONNX export of the policy call: the exported graph on ONNX Runtime gives eager's action chunks (the
packaged tiny checkpoint and the 7b layout at reduced width), the `export` executable merges a LoRA adapter
and records the parity, bad input is refused clearly, and the paths that need a GPU run where one is lent
(they skip elsewhere, saying why)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pixelvla_ros.inference import onnx_engine
from pixelvla_ros.inference.engine import BackendUnavailableError, make_engine
from pixelvla_ros.inference.export import PARITY_MODES, main
from pixelvla_ros.inference.onnx_engine import example_inputs, export_onnx
from pixelvla_ros.model import load_checkpoint
from pixelvla_ros.model.checkpoint import save_checkpoint
from pixelvla_ros.model.lora import add_lora
from pixelvla_ros.model.testing import sample_input
from pixelvla_ros.prompts import PixelVLAInputError

TINY = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny"
EXPORT = Path(sys.prefix) / "lib" / "pixelvla_ros" / "export"
MODES = ("text", "text_mask", "text_prompts", "prompts_only", "all")
# float32 graph vs float32 eager: only the order of float operations differs (measured: about 1e-6)
TOLERANCE = 1e-4
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _cuda_provider() -> bool:
    import onnxruntime

    return torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()


CUDA_PROVIDER = pytest.mark.skipif(
    not _cuda_provider(),
    reason="needs a CUDA GPU and onnxruntime with its CUDA execution provider: runs when a GPU is lent",
)


@pytest.fixture(scope="module")
def seven_b(tmp_path_factory) -> Path:
    """The 7b layout at reduced width: a converted synthetic OpenVLA checkpoint (bfloat16 weights)."""
    from pixelvla_ros.model.openvla import convert_openvla
    from pixelvla_ros.model.openvla_synthetic import write_synthetic_openvla

    tmp = tmp_path_factory.mktemp("openvla")
    return convert_openvla(write_synthetic_openvla(tmp / "src"), tmp / "ckpt", "bridge_orig").output


def _max_diffs(engine, reference, pre, proprio_dim: int) -> dict[str, float]:
    out = {}
    for mode in MODES:
        x = pre.batch([sample_input(mode, seed=3, proprio_dim=proprio_dim)])
        got, want = engine(x), reference(x)
        assert got.shape == want.shape and got.dtype == torch.float32
        out[mode] = (got - want).abs().max().item()
    return out


def _report(what: str, diffs: dict[str, float]) -> None:
    print(f"{what}, max |difference| per mode: " + ", ".join(f"{m} {d:.1e}" for m, d in diffs.items()))


def test_onnxruntime_gives_eagers_chunks_on_the_tiny_checkpoint():
    model, pre = load_checkpoint(TINY, device="cpu")
    engine = make_engine("onnxruntime", model)  # exported now, into a temporary folder
    assert engine.name == "onnxruntime" and engine.providers == ["CPUExecutionProvider"]
    assert engine.input_names == list(example_inputs(model).tensors())
    assert {"proprio", "anchor", "prompt_point_valid"} <= set(engine.input_names)
    diffs = _max_diffs(engine, make_engine("eager", model), pre, 4)
    _report("tiny: onnxruntime vs eager", diffs)
    assert max(diffs.values()) < TOLERANCE
    # The graph leaves eager's value checks out: the engine runs them on the host, and refuses another batch.
    bad = pre.batch([sample_input("all", proprio_dim=4)])
    bad.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(PixelVLAInputError, match="NaN"):
        engine(bad)
    two = pre.batch([sample_input("text", proprio_dim=4)] * 2)
    with pytest.raises(ValueError, match="shapes differ from the exported ones"):
        engine(two)


def test_onnxruntime_gives_eagers_chunks_at_the_7b_layout(seven_b, tmp_path, monkeypatch):
    model, pre = load_checkpoint(seven_b, device="cpu")  # bfloat16 weights loaded as float32
    assert model.cfg.proprio_dim == 0 and len(model.cfg.vision) == 2  # DINOv2 + SigLIP, no proprio token
    # The weights go to an external data file, as the full-width model's 15 GB must: the same exporter path.
    monkeypatch.setattr(onnx_engine, "EXTERNAL_DATA_BYTES", 0)
    path = export_onnx(model, example_inputs(model), tmp_path / "policy.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.onnx", "policy.onnx.data"]  # no leftovers
    assert onnx_engine.external_data_files(path) == [tmp_path / "policy.onnx.data"]
    assert path.stat().st_size < 2e6 < (tmp_path / "policy.onnx.data").stat().st_size
    engine = make_engine("onnxruntime", model, str(path))
    assert "proprio" not in engine.input_names
    diffs = _max_diffs(engine, make_engine("eager", model), pre, 0)
    _report("7b layout: onnxruntime vs eager", diffs)
    assert max(diffs.values()) < TOLERANCE
    tiny, _ = load_checkpoint(TINY, device="cpu")
    with pytest.raises(ValueError, match="is not an export of this model"):
        make_engine("onnxruntime", tiny, str(path))


def test_export_command_merges_a_lora_adapter_and_records_the_parity(tmp_path):
    model, pre = load_checkpoint(TINY, device="cpu")
    add_lora(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # lora_B starts at zero: perturbed, the adapter changes the actions
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    ckpt = save_checkpoint(model, pre, tmp_path / "lora")
    out = tmp_path / "export"
    command = [str(EXPORT), "--checkpoint", str(ckpt), "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    print(run.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "policy.onnx"]  # no partial files left
    record = json.loads((out / "export.json").read_text())
    assert record["checkpoint"]["lora_adapter_merged"] and record["dtype"] == "float32"
    assert set(record["parity"]["max_abs_diff"]) == set(PARITY_MODES)
    assert record["parity"]["max"] < TOLERANCE
    assert list(record["inputs"]) == list(example_inputs(model).tensors())
    assert record["inputs"]["text_mask"] == {"shape": [1, 24], "dtype": "bool"}
    assert record["versions"]["onnxruntime"] and record["graph"]["external_data"] == []
    for mode in PARITY_MODES:
        assert mode in run.stdout

    # The graph is the merged model, which is the model with its adapter; without the adapter it differs.
    merged, pre = load_checkpoint(ckpt, device="cpu", merge=True)
    engine = make_engine("onnxruntime", merged, str(out / "policy.onnx"))
    x = pre.batch([sample_input("all", proprio_dim=4)])
    got = engine(x)
    assert (got - make_engine("eager", merged)(x)).abs().max().item() < TOLERANCE
    assert (got - make_engine("eager", model)(x)).abs().max().item() < TOLERANCE  # unmerged adapter
    base, _ = load_checkpoint(TINY, device="cpu")
    assert (got - make_engine("eager", base)(x)).abs().max().item() > 1e-3


def test_export_refuses_bad_input_clearly(tmp_path, capsys):
    code = main(["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "export: checkpoint folder" in err and "does not exist" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(TINY), "--out", str(tmp_path / "out"), "--dtype", "float64"])
    assert exit_info.value.code == 2
    if HAS_TENSORRT and torch.cuda.is_available():
        pytest.skip("tensorrt imports and a GPU exists: --tensorrt can run here")
    code = main(["--checkpoint", str(TINY), "--out", str(tmp_path / "out"), "--tensorrt"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "out").exists()
    assert ("tensorrt-cu12" in err and "pypi.nvidia.com" in err) if not HAS_TENSORRT else "CUDA GPU" in err


def test_tensorrt_where_it_cannot_run_is_refused_naming_the_alternatives():
    if HAS_TENSORRT and torch.cuda.is_available():
        pytest.skip("tensorrt imports and a GPU exists: the backend can run here (it is built on the GPU)")
    model, _ = load_checkpoint(TINY, device="cpu")
    with pytest.raises(BackendUnavailableError) as refused:
        make_engine("tensorrt", model)
    message = str(refused.value)
    assert "eager" in message and "compile" in message and "onnxruntime" in message
    if not HAS_TENSORRT:
        assert "import tensorrt" in message and "tensorrt-cu12" in message and "CUDA GPU" in message


@CUDA_PROVIDER
def test_onnxruntime_cuda_provider_gives_eagers_chunks(tmp_path):
    cpu_model, pre = load_checkpoint(TINY, device="cpu")
    path = export_onnx(cpu_model, example_inputs(cpu_model), tmp_path / "policy.onnx")
    model, _ = load_checkpoint(TINY, device="cuda")
    engine = make_engine("onnxruntime", model, str(path))
    assert engine.providers[0] == "CUDAExecutionProvider"
    # against float32 eager on the CPU: eager on CUDA autocasts to bfloat16, the graph runs in float32
    diffs = _max_diffs(engine, make_engine("eager", cpu_model), pre, 4)
    _report("tiny: onnxruntime CUDA vs eager CPU", diffs)
    assert max(diffs.values()) < 1e-2  # the CUDA provider may run matmuls in TF32 (10-bit mantissa)
