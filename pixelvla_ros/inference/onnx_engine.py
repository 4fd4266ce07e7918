"""The policy call exported to ONNX, and the engines that run the exported graph: ONNX Runtime and TensorRT.

    path = export_onnx(model, example_inputs(model), Path("out/policy.onnx"))
    engine = OnnxRuntimeEngine(model, path)           # or make_engine("onnxruntime", model, path)
    actions = engine(inputs)                          # (1, N_c, 7) float32 on the CPU

The graph takes every input tensor by its flat name (ModelInputs.tensors(): images, input_ids, text_mask, ...,
proprio, anchor) at batch 1 and returns "actions". The shapes are static: the token layout is fixed, every
input mode fills the same slots. Its precision is the weights' dtype (no autocast inside the graph).

Exporter settings: torch.onnx.export with dynamo=True (torch.export, non-strict, then onnxscript), opset 22.
The model's forward traces as written (sdpa attention with its 4-D boolean mask included), except for
PixelVLA._check: its NaN / inf test branches in Python on tensor values, which torch.export cannot trace.
The trace skips it (the example is checked eagerly first) and the engines run it on the host before each
call, so a bad input is refused as eager refuses it. The static token layout (block ids, point slots) is
computed once by an eager call before the trace, so the graph holds it as constants. Opset 22 is the first
whose Conv, Gemm and normalizations accept bfloat16 (a bfloat16 export at opset 20 is an invalid model);
opset 23 would fuse attention and RMSNorm into its new Attention / RMSNormalization ops, which fewer runtimes
implement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pixelvla_ros.inference.engine import BackendUnavailableError, InferenceEngine
from pixelvla_ros.model.inputs import ANCHOR_DIM, ModelInputs, PromptTensors
from pixelvla_ros.model.pixelvla import PixelVLA

OUTPUT_NAME = "actions"
OPSET = 22
# Weights above this go to an external data file (<name>.data beside the graph): a protobuf file cannot
# exceed 2 GiB, and the graph's own constants and framing come on top of the weights.
EXTERNAL_DATA_BYTES = 3 << 29  # 1.5 GiB
ALTERNATIVES = "eager, compile, cuda_graph (on a CUDA GPU) or onnxruntime"
TENSORRT_INSTALL = (
    "TensorRT is an optional extra: its PyPI wheels (pip install tensorrt-cu12, or tensorrt) are stubs that "
    "download NVIDIA's libraries from NVIDIA's package index (pypi.nvidia.com) at install time, for the "
    "machine's CUDA version, and it needs a CUDA GPU"
)
_NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}
log = logging.getLogger(__name__)


def example_inputs(model: PixelVLA) -> ModelInputs:
    """A batch of one all-padding input of the shapes `model` takes (black image, no text, no object mask, no
    prompts, zero proprio / anchor where the model has them), on the model's device: an export example
    (the layout is fixed, so the values do not change the traced graph) and the reference for input names."""
    c = model.cfg
    H, T, M = c.image_size, c.tokenizer.max_text_tokens, c.pixel.max_object_masks
    x = ModelInputs(
        images=torch.zeros(1, 3, H, H),
        input_ids=torch.zeros(1, T, dtype=torch.long),
        text_mask=torch.zeros(1, T, dtype=torch.bool),
        object_mask=torch.zeros(1, M, H, H),
        object_mask_valid=torch.zeros(1, M, dtype=torch.bool),
        prompts=PromptTensors.empty(1, c.prompt.slots, (H, H)),
        proprio=torch.zeros(1, c.proprio_dim) if c.proprio_dim else None,
        anchor=torch.zeros(1, ANCHOR_DIM) if c.prompt_anchor else None,
    )
    return x.to(model.device)


def input_signature(inputs: ModelInputs) -> dict[str, tuple[tuple[int, ...], str]]:
    """{flat name: (shape, numpy dtype name)} of every input tensor, in the graph's input order."""
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in inputs.tensors().items()}


def graph_signature(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{input name: (shape, numpy dtype name)} of an ONNX file's graph inputs (its weights are not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = {}
    for value in model.graph.input:
        t = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        out[value.name] = (shape, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name)
    return out


def check_graph_inputs(model: PixelVLA, path: Path) -> list[str]:
    """The graph's input names, after checking that they, their shapes and dtypes are those `model` takes;
    ValueError, saying what differs, for the export of another model."""
    want, got = input_signature(example_inputs(model)), graph_signature(path)
    if list(got) != list(want):
        raise ValueError(
            f"{path} is not an export of this model: its inputs are {list(got)}, the model's {list(want)} "
            "(export it again with the `export` executable)"
        )
    wrong = [f"{k}: {got[k]} vs {want[k]}" for k in want if got[k] != want[k]]
    if wrong:
        raise ValueError(
            f"{path} is not an export of this model: inputs of another shape or dtype (file vs model): "
            f"{wrong} (export it again with the `export` executable)"
        )
    return list(want)


class _PolicyCall(nn.Module):
    """Flat input tensors, in `names` order -> (B, N_c, 7) actions: the function the graph computes."""

    def __init__(self, model: PixelVLA, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(ModelInputs.from_tensors(dict(zip(self.names, tensors, strict=True)))).actions


@contextlib.contextmanager
def _unchecked(model: PixelVLA):
    """model._check skipped (an instance attribute shadows the method): its NaN test is a Python branch on
    tensor values, which torch.export cannot trace."""
    model._check = lambda x: None
    try:
        yield
    finally:
        del model._check


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's notices that concern its own internals: torchvision ops it cannot register
    (unused here) and pytree deprecations."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def export_onnx(model: PixelVLA, example: ModelInputs, path: Path) -> Path:
    """Export the policy call (flat named inputs -> "actions") for inputs shaped like `example` to `path`,
    weights in an external <name>.data file beside it when they exceed EXTERNAL_DATA_BYTES, and check the
    result with onnx.checker. Written in a temporary folder beside `path` and moved in place graph last, so
    a half-written export never sits at `path`. Returns `path`."""
    import onnx

    path = Path(path)
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) != 1:
        raise ValueError(
            f"export needs the weights in one dtype, they are in {sorted(map(str, dtypes))}: load the "
            "checkpoint with load_checkpoint(..., dtype=...)"
        )
    model.eval()
    example = example.to(model.device)
    names = list(example.tensors())
    with torch.no_grad():
        model(example)  # checks the example, and caches the static token layout that the trace reads
    external = weight_bytes(model) > EXTERNAL_DATA_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        with _unchecked(model), _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                _PolicyCall(model, names).eval(),
                tuple(example.tensors().values()),
                str(partial / path.name),
                input_names=names,
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                dynamo=True,
                external_data=external,
                verbose=False,
            )
        onnx.checker.check_model(str(partial / path.name))  # by path: works for external data too
        stale = path.parent / f"{path.name}.data"
        if not (partial / stale.name).exists() and stale.exists():
            stale.unlink()  # an earlier, larger export's weights
        for f in sorted(partial.iterdir(), key=lambda f: f.name == path.name):  # the graph last
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return path


def external_data_files(path: Path) -> list[Path]:
    """The external data files an ONNX file names (none when its weights are inside it)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    names = {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    return [Path(path).parent / n for n in sorted(names)]


class OnnxEngine(InferenceEngine):
    """What the ONNX engines share: the graph at onnx_path (checked to be this model's export), its inputs
    by name, and eager's input checks on the host (the graph leaves them out)."""

    def __init__(self, model: PixelVLA, onnx_path: Path) -> None:
        super().__init__(model)
        self.onnx_path = Path(onnx_path)
        self.input_names = check_graph_inputs(model, self.onnx_path)
        self.input_shapes = {k: v[0] for k, v in graph_signature(self.onnx_path).items()}

    def __call__(self, inputs: ModelInputs) -> torch.Tensor:
        self.model._check(inputs)  # raises PixelVLAInputError as eager does (NaN / inf, wrong shapes)
        tensors = inputs.tensors()
        if any(tuple(tensors[k].shape) != self.input_shapes[k] for k in self.input_names):
            raise ValueError(
                f"{self.name}: the inputs' shapes differ from the exported ones (batch "
                f"{self.input_shapes['images'][0]}; export again for another batch size)"
            )
        self.calls += 1
        return self.run(inputs).float().cpu()


class OnnxRuntimeEngine(OnnxEngine):
    """The exported graph on ONNX Runtime: the CUDA execution provider when the model is on a CUDA device
    and onnxruntime has it (onnxruntime-gpu), else the CPU one, with torch's intra-op thread count."""

    name = "onnxruntime"

    @staticmethod
    def check_available(model: PixelVLA) -> None:
        """Raise BackendUnavailableError, saying what to install, where onnxruntime does not import."""
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise BackendUnavailableError(
                f"backend onnxruntime needs the onnxruntime package ({e}): pip install onnxruntime (or "
                "onnxruntime-gpu for CUDA); alternatives: eager, compile or cuda_graph (on a CUDA GPU)"
            ) from e

    def __init__(self, model: PixelVLA, onnx_path: Path) -> None:
        self.check_available(model)
        import onnxruntime as ort

        super().__init__(model, onnx_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        # Idle threads sleep instead of spinning: the policy call's preprocessing runs in torch between two
        # runs, and spinning threads took its cores (tiny, 2 cores: call 17.1 ms / p99 43 ms, not 12.6 / 15.6)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device.index or 0}))
            else:
                log.warning(
                    "onnxruntime: the model is on %s but this onnxruntime has no CUDA execution provider "
                    "(pip install onnxruntime-gpu): running on the CPU",
                    self.device,
                )
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own types, e.g. for a dtype it has no kernels for
            raise BackendUnavailableError(
                f"onnxruntime cannot run {self.onnx_path} ({self.dtype} weights) on {providers[0]}: "
                f"{str(e).strip().splitlines()[0]}. Load the model in float32 or float16, or use tensorrt, "
                "eager or compile"
            ) from e
        self.providers = self.session.get_providers()
        self.feed_dtypes = {i.name: _NUMPY_DTYPES[i.type] for i in self.session.get_inputs()}

    def run(self, inputs: ModelInputs) -> torch.Tensor:
        """inputs (any device) -> (B, N_c, 7) actions on the CPU."""
        tensors = inputs.tensors()
        feed = {
            k: np.ascontiguousarray(tensors[k].detach().cpu().numpy(), dtype=dtype)  # bool stays bool
            for k, dtype in self.feed_dtypes.items()
        }
        (actions,) = self.session.run([OUTPUT_NAME], feed)
        return torch.from_numpy(actions)


def import_tensorrt() -> Any:
    """The tensorrt module; BackendUnavailableError, saying what to install and naming the alternatives,
    where it does not import."""
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend tensorrt needs NVIDIA TensorRT, and `import tensorrt` fails here ({e}). "
            f"{TENSORRT_INSTALL}. Alternatives: {ALTERNATIVES}"
        ) from e
    return tensorrt


def build_tensorrt_engine(onnx_path: Path) -> bytes:
    """A serialized TensorRT engine of the ONNX file, strongly typed: each layer runs in the dtype the
    graph gives it (the export's precision), not one TensorRT picks."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    return bytes(plan)


class TensorRTEngine(OnnxEngine):
    """The exported graph as a TensorRT engine on the model's CUDA device: the plan beside the ONNX file
    (<stem>.engine, written by `export --tensorrt`) when this TensorRT can load it, else built now."""

    name = "tensorrt"

    @staticmethod
    def check_available(model: PixelVLA) -> None:
        """Raise BackendUnavailableError, saying why, unless tensorrt imports and the model is on CUDA."""
        import_tensorrt()
        if model.device.type != "cuda":
            raise BackendUnavailableError(
                f"backend tensorrt needs the model on a CUDA device, it is on {model.device}: load it on "
                "cuda, or use eager, compile or onnxruntime on the CPU"
            )

    def __init__(self, model: PixelVLA, onnx_path: Path) -> None:
        self.check_available(model)
        trt = import_tensorrt()
        super().__init__(model, onnx_path)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        plan = self.onnx_path.with_suffix(".engine")
        engine = runtime.deserialize_cuda_engine(plan.read_bytes()) if plan.is_file() else None
        if engine is None:  # none, or one of another TensorRT version / GPU
            engine = runtime.deserialize_cuda_engine(build_tensorrt_engine(self.onnx_path))
        self.engine, self.context = engine, engine.create_execution_context()
        dtypes = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.bfloat16: torch.bfloat16,
            trt.int64: torch.int64,
            trt.int32: torch.int32,
            trt.bool: torch.bool,
        }
        self.io_dtypes = {k: dtypes[engine.get_tensor_dtype(k)] for k in [*self.input_names, OUTPUT_NAME]}
        shape = tuple(engine.get_tensor_shape(OUTPUT_NAME))
        self.output = torch.empty(shape, dtype=self.io_dtypes[OUTPUT_NAME], device=self.device)

    def run(self, inputs: ModelInputs) -> torch.Tensor:
        """inputs (any device) -> (B, N_c, 7) actions on the model's device."""
        tensors = inputs.to(self.device).tensors()
        feed = {k: tensors[k].to(self.io_dtypes[k]).contiguous() for k in self.input_names}  # kept alive
        for k, t in feed.items():
            self.context.set_tensor_address(k, t.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, self.output.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT failed to run the engine")
        return self.output.clone()


ENGINES: dict[str, type[OnnxEngine]] = {"onnxruntime": OnnxRuntimeEngine, "tensorrt": TensorRTEngine}


def make_onnx_engine(backend: str, model: PixelVLA, onnx_path: str | Path | None = None) -> OnnxEngine:
    """The onnxruntime or tensorrt engine of `model`, on its export at onnx_path (checked to be this model's:
    same input names, shapes and dtypes), or exported now into a temporary folder, removed once loaded.
    BackendUnavailableError, before any export, where the backend cannot run here."""
    if backend not in ENGINES:
        raise BackendUnavailableError(f"no ONNX engine {backend!r}; known: {', '.join(ENGINES)}")
    cls = ENGINES[backend]
    cls.check_available(model)
    if onnx_path is not None:
        return cls(model, Path(onnx_path))
    with tempfile.TemporaryDirectory(prefix="pixelvla_onnx_") as tmp:
        path = export_onnx(model, example_inputs(model), Path(tmp) / "policy.onnx")
        return cls(model, path)  # loads the graph: the file is not read again
