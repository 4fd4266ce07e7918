"""The ROS-free policy runtime: one observation -> one checked action chunk.

Used unchanged by closed-loop evaluation (learning/evaluation) and the live ROS policy node. Chunks are
executed by chunk_timeline.ChunkTimeline, for the checkpoint's `commit_steps` each.

    policy = Policy.from_checkpoint("runs/ckpt")                 # (model, preprocessor) from one folder
    res = policy.predict_chunk(rgb, "pick up the red cube", [VisualPrompt.point([[40, 31]])], None, proprio)
    if res.valid:                                                  # res.actions: (N_c, 7) robot units
        timeline.add(TimedChunk(stamp, res.dt, res.actions, commit_steps=policy.commit_steps), now)
    action = timeline.action_at(now)                               # (7,), or None: no motion

`Policy.predict_chunk` never raises for a bad observation or a failing model: everything goes through
the checkpoint's own Preprocessor (the one preprocessing path), and any error, a NaN, or a step beyond
`safety.check_chunk`'s limits comes back as `valid=False` with the reason and no actions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixelvla_ros.action_space import ACTION_DIM
from pixelvla_ros.camera import CameraModel
from pixelvla_ros.inference.engine import InferenceEngine, make_engine
from pixelvla_ros.preprocessing import PreprocessConfig, Preprocessor
from pixelvla_ros.prompts import VisualPrompt
from pixelvla_ros.safety import SafetyLimits, UnsafeChunkError, check_chunk

__all__ = ["ActionChunkResult", "Policy"]


@dataclass(frozen=True)
class ActionChunkResult:
    """One policy query. `actions` is None unless `valid`: an invalid chunk never carries motion."""

    actions: np.ndarray | None  # (N_c, 7) float64, robot units, base frame; gripper in {0, 1}
    times: np.ndarray  # (N_c,) s: time of each action relative to the source image's stamp
    latency_s: float  # model time (forward + transfer of the result), time.perf_counter
    total_s: float  # preprocessing + model + postprocessing + safety check
    valid: bool
    reason: str = ""  # why the chunk is invalid ("" when valid), prefixed by the stage that failed

    @property
    def dt(self) -> float:
        """Seconds between two consecutive actions of the chunk."""
        return float(self.times[1] - self.times[0]) if len(self.times) > 1 else float("nan")


class Policy:
    """A PixelVLA model and its checkpoint's preprocessing, with the safety check on every output."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessor: Preprocessor,
        limits: SafetyLimits | None = None,
        engine: InferenceEngine | None = None,
    ) -> None:
        """`model` (a PixelVLA, switched to eval mode here) and the Preprocessor saved with it; `engine`: the
        backend that runs the model (pixelvla_ros.inference.engine; default eager)."""
        preprocessor.config.check_matches(model.cfg)
        self.model = model.eval()
        self.preprocessor = preprocessor
        self.limits = limits or SafetyLimits()
        self.engine = engine or InferenceEngine(model)
        preprocessor.device = self.engine.device  # images go to the model's device as uint8, resized there
        self.chunk_size = int(preprocessor.config.action_space.chunk_size)
        self.commit_steps = int(preprocessor.config.commit_steps)  # steps a started chunk runs (checkpoint)
        self.proprio_dim = int(preprocessor.config.proprio_dim)
        self.checkpoint: Path | None = None
        self.warm_up_s: float | None = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: torch.device | str | None = None,
        limits: SafetyLimits | None = None,
        dtype: str = "auto",
        backend: str = "eager",
        onnx_path: str | Path | None = None,
    ) -> Policy:
        """Load a checkpoint folder (raises CheckpointError saying what is wrong), LoRA merged, on the backend
        `backend` names (BackendUnavailableError for one that cannot run here), warmed up.
        dtype: the weights' (pixelvla_ros.model.pixelvla.resolve_dtype: "auto" is bfloat16 on a GPU, float32
        on the CPU); one the device cannot run raises ValueError. onnx_path: the `export` of this checkpoint
        for onnxruntime / tensorrt (default: exported at start)."""
        from pixelvla_ros.model.checkpoint import load_checkpoint
        from pixelvla_ros.model.pixelvla import default_device, resolve_dtype

        device = torch.device(device or default_device())
        model, preprocessor = load_checkpoint(
            path, device=device, merge=True, dtype=resolve_dtype(dtype, device)
        )
        policy = cls(model, preprocessor, limits, make_engine(backend, model, onnx_path))
        policy.checkpoint = Path(path)
        policy.warm_up()
        return policy

    def warm_up(self) -> float:
        """Pay the backend's one-time costs (compilation, graph capture, allocations) on a synthetic
        observation before the first real one; returns the seconds it took."""
        c = self.preprocessor.config
        size = c.image_size
        image = np.zeros((size, size, 3), dtype=np.uint8)
        proprio = np.zeros(c.proprio_dim) if c.proprio_dim else None
        point = [VisualPrompt.point([[size / 2, size / 2]])] if c.slots.max_points else []
        t0 = time.perf_counter()
        self.engine.warm_up(self.preprocessor(image, "warm up", None, point, proprio, None))
        self.warm_up_s = time.perf_counter() - t0
        return self.warm_up_s

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def backend(self) -> str:
        """The inference backend's name (pixelvla_ros.inference.engine.BACKENDS)."""
        return self.engine.name

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """The checkpoint's preprocessing configuration (action space, prompt anchor, normalization)."""
        return self.preprocessor.config

    def chunk_times(self) -> np.ndarray:
        """(N_c,) s after the image stamp (the preprocessor's chunk_times: k / control rate)."""
        return self.preprocessor.chunk_times(self.chunk_size)

    def predict_chunk(
        self,
        image: np.ndarray,
        instruction: str | None,
        prompts: Sequence[VisualPrompt] = (),
        object_mask: np.ndarray | None = None,
        proprio: np.ndarray | None = None,
        camera: CameraModel | None = None,
    ) -> ActionChunkResult:
        """image (H, W, 3) uint8 RGB; prompts in that image's pixels; object_mask (H, W) bool or None;
        proprio (proprio_dim,) or None; camera: the image's calibration, for a model with the prompt
        anchor (without one it acts from pixels alone). Returns a checked chunk, or an invalid result with
        the reason."""
        times = self.chunk_times()
        t0 = time.perf_counter()
        latency = 0.0
        stage = "preprocessing"
        try:
            inputs = self.preprocessor(image, instruction, object_mask, list(prompts), proprio, camera)
            stage = "model"
            t1 = time.perf_counter()
            out = self.engine(inputs).numpy()  # (1, N_c, 7) normalized; waits for the device
            latency = time.perf_counter() - t1
            stage = "postprocessing"
            if out.shape != (1, self.chunk_size, ACTION_DIM):
                raise ValueError(f"model output has shape {out.shape}, expected (1, {self.chunk_size}, 7)")
            actions = self.preprocessor.postprocess(out)[0]  # (N_c, 7) robot units; raises on NaN
            stage = "safety"
            actions = check_chunk(actions, self.limits)
        except UnsafeChunkError as e:
            return self._invalid(times, latency, t0, f"safety: {e}")
        except Exception as e:  # noqa: BLE001 - any doubt means no motion; the caller gets the reason
            return self._invalid(times, latency, t0, f"{stage}: {type(e).__name__}: {e}")
        return ActionChunkResult(actions, times, latency, time.perf_counter() - t0, True, "")

    @staticmethod
    def _invalid(times: np.ndarray, latency: float, t0: float, reason: str) -> ActionChunkResult:
        return ActionChunkResult(None, times, latency, time.perf_counter() - t0, False, reason)
