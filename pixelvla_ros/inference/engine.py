"""The inference engine behind Policy: one policy call (ModelInputs -> normalized action chunk) on the backend
one parameter names.

    engine = make_engine("compile", model)      # eager | compile | cuda_graph | onnxruntime | tensorrt
    engine.warm_up(example)                     # before the first real call: compiles, captures, allocates
    actions = engine(inputs)                    # (B, N_c, 7) float32 on the CPU

The token layout is fixed (every input mode fills the same slots, absent ones padded), so one shape per
batch size: one compilation, one captured graph, one exported graph. `remote` is not an engine: the whole
Policy runs on a policy server (pixelvla_ros.inference.remote).
"""

from __future__ import annotations

import torch

from pixelvla_ros.model.inputs import ModelInputs
from pixelvla_ros.model.pixelvla import PixelVLA, autocast_context

BACKENDS = ("eager", "compile", "cuda_graph", "onnxruntime", "tensorrt", "remote")


class BackendUnavailableError(ValueError):
    """A backend that is unknown or cannot run here; the message names the alternatives."""


class InferenceEngine:
    """Eager PyTorch: the model's forward as written (what the other backends are checked against)."""

    name = "eager"

    def __init__(self, model: PixelVLA) -> None:
        self.model = model.eval()
        self.device = model.device
        self.dtype = model.action_queries.dtype
        self.calls = 0

    def __call__(self, inputs: ModelInputs) -> torch.Tensor:
        inputs = self._to_device(inputs) if self.device.type == "cuda" else inputs.to(self.device)
        self.calls += 1
        return self.run(inputs).float().cpu()  # waits for the device

    def _to_device(self, inputs: ModelInputs) -> ModelInputs:
        """Host tensors through page-locked memory (torch's caching host allocator: no allocation per call),
        so that their copies run asynchronously; tensors already on the device stay."""
        return ModelInputs.from_tensors(
            {
                k: (t.pin_memory() if t.device.type == "cpu" else t).to(self.device, non_blocking=True)
                for k, t in inputs.tensors().items()
            }
        )

    @torch.inference_mode()
    def run(self, inputs: ModelInputs) -> torch.Tensor:
        """inputs on the engine's device -> (B, N_c, 7) normalized actions on the device."""
        with autocast_context(self.device, self.dtype):
            return self.model(inputs).actions

    def warm_up(self, example: ModelInputs, iterations: int = 3) -> None:
        """Run the call until its one-time costs (compilation, capture, allocator growth) are paid."""
        for _ in range(iterations):
            self(example)


class CompiledEngine(InferenceEngine):
    """torch.compile, regionally: each transformer block (of the towers and the LLM) is compiled once and the
    compiled code reused by its identical siblings, so compilation takes seconds, not minutes."""

    name = "compile"

    def __init__(self, model: PixelVLA) -> None:
        from transformers.modeling_layers import (
            GradientCheckpointingLayer,
        )  # every HF encoder / decoder block

        super().__init__(model)
        blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        for block in blocks:
            block.compile(dynamic=False)
        self.compiled_blocks = len(blocks)


class CudaGraphEngine(InferenceEngine):
    """The whole call captured once as a CUDA graph on static input buffers and replayed: no per-kernel
    launch cost. Each call copies its inputs into the buffers and reads the output buffer."""

    name = "cuda_graph"

    def __init__(self, model: PixelVLA) -> None:
        super().__init__(model)
        if self.device.type != "cuda":
            raise BackendUnavailableError(
                f"backend cuda_graph needs the model on a CUDA device, it is on {self.device}: use eager, "
                "compile or onnxruntime on the CPU"
            )
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, torch.Tensor] = {}
        self.output: torch.Tensor | None = None

    def _capture(self, example: ModelInputs) -> None:
        self.static = {k: v.to(self.device).clone() for k, v in example.tensors().items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # allocator warm-up outside the graph, as capture requires
            for _ in range(3):
                super().run(ModelInputs.from_tensors(self.static))
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = super().run(ModelInputs.from_tensors(self.static))

    def run(self, inputs: ModelInputs) -> torch.Tensor:
        tensors = inputs.tensors()
        if self.graph is None:
            self._capture(inputs)
        elif tensors.keys() != self.static.keys() or any(
            v.shape != self.static[k].shape for k, v in tensors.items()
        ):
            raise ValueError("cuda_graph: the inputs' shapes differ from the captured ones (one batch size)")
        for k, v in tensors.items():
            self.static[k].copy_(v, non_blocking=True)
        self.graph.replay()
        return self.output.clone()


def make_engine(backend: str, model: PixelVLA, onnx_path: str | None = None) -> InferenceEngine:
    """The engine `backend` names for `model`; BackendUnavailableError, naming the alternatives, for one that
    is unknown or cannot run here. onnxruntime and tensorrt run the model's ONNX export (`export`
    executable), at onnx_path, or exported now into a temporary folder."""
    if backend == "eager":
        return InferenceEngine(model)
    if backend == "compile":
        return CompiledEngine(model)
    if backend == "cuda_graph":
        return CudaGraphEngine(model)
    if backend in ("onnxruntime", "tensorrt"):
        from pixelvla_ros.inference.onnx_engine import make_onnx_engine

        return make_onnx_engine(backend, model, onnx_path)
    if backend == "remote":
        raise BackendUnavailableError(
            "backend remote runs the whole policy on a policy server: RemotePolicy.connect(url, token) "
            "(pixelvla_ros/inference/remote.py), or the policy node's server_url parameter"
        )
    raise BackendUnavailableError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
