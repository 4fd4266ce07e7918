"""The one preprocessing path: raw observations -> ModelInputs, model outputs -> robot actions.

Used unchanged by training, evaluation and the live ROS node; its config (image size, text template,
prompt slots, action normalization statistics, action space) travels inside the checkpoint.

    pre = Preprocessor(PreprocessConfig.for_model(model.cfg, action_stats=NormStats.from_actions(a)))
    inputs = pre.batch([PolicyInput(image=rgb, task="pick up the can", prompts=[VisualPrompt.point(xy)])])
    actions = pre.postprocess(model.predict(inputs))     # (B, N_c, 7) in robot units, gripper in {0, 1}
    times = pre.chunk_times()                             # (N_c,) seconds after the observation
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pixelvla_ros.action_space import ACTION_DIM, GRIPPER, ActionSpace
from pixelvla_ros.camera import CameraModel
from pixelvla_ros.model.config import PixelVLAConfig, TokenizerConfig, drop_retired
from pixelvla_ros.model.inputs import ANCHOR_DIM, ModelInputs, collate_prompts, resize_mask
from pixelvla_ros.model.tokenizer import load_tokenizer
from pixelvla_ros.prompts import (
    PixelVLAInputError,
    PromptSlots,
    VisualPrompt,
    describe_prompts,
    validate_mask,
)

__all__ = ["NormStats", "PolicyInput", "PreprocessConfig", "Preprocessor", "PixelVLAInputError"]


@dataclass
class NormStats:
    """Per-dimension 1st / 99th percentiles; values map to [-1, 1] (clipped)."""

    q01: list[float]
    q99: list[float]

    def __post_init__(self) -> None:
        self.q01, self.q99 = [float(v) for v in self.q01], [float(v) for v in self.q99]
        if len(self.q01) != len(self.q99) or not self.q01:
            raise ValueError(
                f"q01 and q99 must have the same non-zero length, got {len(self.q01)}, {len(self.q99)}"
            )
        if not all(np.isfinite(self.q01 + self.q99)) or any(
            a > b for a, b in zip(self.q01, self.q99, strict=True)
        ):
            raise ValueError(f"bad normalization statistics q01={self.q01} q99={self.q99}")

    @classmethod
    def from_data(cls, data: np.ndarray) -> NormStats:
        data = np.asarray(data, dtype=np.float64).reshape(-1, np.shape(data)[-1])
        return cls(np.quantile(data, 0.01, axis=0).tolist(), np.quantile(data, 0.99, axis=0).tolist())

    from_actions = from_data

    def normalize(self, x: np.ndarray, clip: bool = True) -> np.ndarray:
        lo, hi = np.asarray(self.q01), np.asarray(self.q99)
        span = hi - lo
        y = np.where(span > 1e-8, 2 * (x - lo) / np.where(span > 1e-8, span, 1.0) - 1, 0.0)
        return np.clip(y, -1, 1) if clip else y

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.q01), np.asarray(self.q99)
        return (np.clip(y, -1, 1) + 1) / 2 * (hi - lo) + lo


STATE_PROPRIO_DIM = 4


def state_proprio(tcp_position: np.ndarray, gripper: np.ndarray | float) -> np.ndarray:
    """The proprio vector of the simulator presets, the same in training, evaluation and the live node:
    TCP position in the base frame (3, metres) then the measured gripper closure (1, 0 = open)."""
    position = np.asarray(tcp_position, dtype=np.float64)
    closure = np.asarray(gripper, dtype=np.float64)
    return np.concatenate([position, closure[..., None]], axis=-1)


ANCHOR_SCALE_M = 0.1  # the anchor's offset from the TCP is given in units of 10 cm
ANCHOR_MAX_M = 1.0  # an anchor further than this from the TCP is a miscalibration, not a target: absent


def prompt_anchor_pixel(
    object_masks: Sequence[np.ndarray], prompts: Sequence[VisualPrompt]
) -> np.ndarray | None:
    """The pixel (u, v) the inputs point at: the object mask's centroid, else the mean of the first point
    prompt's positive points, else the first box's centre, else the first mask prompt's centroid. None for
    text or lines alone (a line is a path, not a place)."""
    if len(object_masks):  # validated: not empty
        ys, xs = np.nonzero(object_masks[0])
        return np.array([xs.mean(), ys.mean()])
    by_kind: dict[str, VisualPrompt] = {}
    for p in prompts:
        by_kind.setdefault(p.kind, p)
    if "point" in by_kind and np.any(by_kind["point"].labels == 1):
        p = by_kind["point"]
        return p.points[p.labels == 1].mean(axis=0)
    if "box" in by_kind:
        return by_kind["box"].points.mean(axis=0)
    if "mask" in by_kind and by_kind["mask"].mask.any():
        ys, xs = np.nonzero(by_kind["mask"].mask)
        return np.array([xs.mean(), ys.mean()])
    return None


RETIRED_PREPROCESS_KNOBS: dict[str, Any] = {"proprio_hidden_dims": []}  # model.config.drop_retired


@dataclass
class PreprocessConfig:
    image_size: int
    tokenizer: TokenizerConfig
    slots: PromptSlots
    max_object_masks: int
    action_space: ActionSpace
    action_stats: NormStats  # 7 dims; the gripper entry is stored but not used (gripper not normalized)
    proprio_dim: int = 0
    proprio_stats: NormStats | None = None
    # The prompt anchor (PixelVLAConfig.prompt_anchor): the prompt's pixel (prompt_anchor_pixel) cast
    # through the camera calibration onto the horizontal plane z = anchor_plane_z of the base frame, minus
    # the TCP. The pixel alone leaves the target's depth to a guess at the camera's pose from a 64 px image
    # (docs/experiments.md, stage L). 0.02 m: the centre height of the simulator's objects above the table.
    prompt_anchor: bool = False
    anchor_plane_z: float = 0.02
    gripper_threshold: float = 0.5
    # Chunk execution (chunk_timeline.ChunkTimeline, one step per action_space.dt): a started chunk runs this
    # many steps before a newer one takes over; evaluation and the live stack execute chunks so. None: half
    # the chunk, the 4 of 8 steps the packaged checkpoint was evaluated with before the entry existed.
    commit_steps: int | None = None
    template: str = "What should the robot do to {task}, refer to {refs}?"
    template_no_refs: str = "What should the robot do to {task}?"
    template_no_task: str = "What should the robot do, refer to {refs}?"
    object_mask_phrase: str = "the object mask"

    def __post_init__(self) -> None:
        if len(self.action_stats.q01) != ACTION_DIM:
            raise ValueError(f"action_stats need {ACTION_DIM} dims, got {len(self.action_stats.q01)}")
        if self.proprio_stats is not None and len(self.proprio_stats.q01) != self.proprio_dim:
            raise ValueError(f"proprio_stats need {self.proprio_dim} dims, got {len(self.proprio_stats.q01)}")
        if not 0 < self.gripper_threshold < 1:
            raise ValueError("gripper_threshold must be in (0, 1)")
        chunk = self.action_space.chunk_size
        if self.commit_steps is None:
            self.commit_steps = max(1, chunk // 2)
        if not 1 <= self.commit_steps <= chunk:
            raise ValueError(f"commit_steps must be in [1, chunk_size={chunk}], got {self.commit_steps}")

    @classmethod
    def for_model(
        cls,
        cfg: PixelVLAConfig,
        action_stats: NormStats,
        action_space: ActionSpace | None = None,
        proprio_stats: NormStats | None = None,
        **kw: Any,
    ) -> PreprocessConfig:
        space = action_space or ActionSpace(chunk_size=cfg.action.chunk_size)
        return cls(
            image_size=cfg.image_size,
            tokenizer=cfg.tokenizer,
            slots=cfg.prompt.slots,
            max_object_masks=cfg.pixel.max_object_masks,
            action_space=space,
            action_stats=action_stats,
            proprio_dim=cfg.proprio_dim,
            proprio_stats=proprio_stats,
            prompt_anchor=cfg.prompt_anchor,
            **kw,
        )

    def check_matches(self, cfg: PixelVLAConfig) -> None:
        """Raise ValueError if this preprocessing does not fit the model config."""
        want = {
            "image_size": cfg.image_size,
            "slots": cfg.prompt.slots,
            "tokenizer": cfg.tokenizer,
            "max_object_masks": cfg.pixel.max_object_masks,
            "proprio_dim": cfg.proprio_dim,
            "prompt_anchor": cfg.prompt_anchor,
            "action_space.chunk_size": cfg.action.chunk_size,
        }
        have = {
            "image_size": self.image_size,
            "slots": self.slots,
            "tokenizer": self.tokenizer,
            "max_object_masks": self.max_object_masks,
            "proprio_dim": self.proprio_dim,
            "prompt_anchor": self.prompt_anchor,
            "action_space.chunk_size": self.action_space.chunk_size,
        }
        bad = [f"{k}: preprocessing {have[k]} vs model {want[k]}" for k in want if have[k] != want[k]]
        if bad:
            raise ValueError("preprocessing config does not match the model: " + "; ".join(bad))

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["tokenizer"] = dict(self.tokenizer.__dict__)
        d["slots"] = dict(self.slots.__dict__)
        d["action_space"] = self.action_space.to_dict()
        d["action_stats"] = dict(self.action_stats.__dict__)
        d["proprio_stats"] = None if self.proprio_stats is None else dict(self.proprio_stats.__dict__)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Rebuild from to_dict() output; a retired knob at its old "off" value is dropped, at any other
        value refused (drop_retired)."""
        d = drop_retired(d, RETIRED_PREPROCESS_KNOBS, "checkpoint")
        for key in ("image_size", "tokenizer", "slots", "max_object_masks", "action_space", "action_stats"):
            if key not in d:
                raise ValueError(f"preprocessing config lacks {key!r}")
        d["tokenizer"] = TokenizerConfig(**d["tokenizer"])
        d["slots"] = PromptSlots(**d["slots"])
        d["action_space"] = ActionSpace.from_dict(d["action_space"])
        d["action_stats"] = NormStats(**d["action_stats"])
        if d.get("proprio_stats") is not None:
            d["proprio_stats"] = NormStats(**d["proprio_stats"])
        return cls(**d)


@dataclass
class PolicyInput:
    """One observation as the robot sees it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    task: str | None = None  # the instruction, or None / "" for prompts without text
    object_mask: np.ndarray | None = None  # (H, W) bool: the target object (pixel-aware encoder)
    prompts: Sequence[VisualPrompt] = field(default_factory=list)
    proprio: np.ndarray | None = None  # (proprio_dim,) EE pose + gripper, robot units
    camera: CameraModel | None = None  # the image's calibration (intrinsics, pose in the base frame)


class Preprocessor:
    def __init__(self, config: PreprocessConfig, tokenizer: Any | None = None):
        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.tokenizer)
        # Where images are converted and resized: a GPU takes the uint8 frame (a quarter of the float bytes)
        # and does the arithmetic; Policy sets it to its engine's device.
        self.device = torch.device("cpu")

    # --- observations -> model inputs ------------------------------------------------------------------
    def image_tensor(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (3, S, S) float in [0, 1] (bilinear, antialiased, aspect squashed), on
        self.device."""
        if not isinstance(image, np.ndarray):
            raise PixelVLAInputError(f"image must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise PixelVLAInputError(f"image must be uint8 RGB, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise PixelVLAInputError(f"image must have shape (H, W, 3), got {image.shape}")
        s = self.config.image_size
        x = torch.from_numpy(np.ascontiguousarray(image))
        if self.device.type == "cuda":  # page-locked, so the copy runs asynchronously
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1)[None].float() / 255.0
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return x[0].clamp_(0.0, 1.0)

    def build_text(self, task: str | None, has_object_mask: bool, prompts: Sequence[VisualPrompt]) -> str:
        c = self.config
        refs = ([c.object_mask_phrase] if has_object_mask else []) + describe_prompts(prompts)
        task = (task or "").strip().rstrip(".?!")
        if task and refs:
            return c.template.format(task=task, refs=" and ".join(refs))
        if task:
            return c.template_no_refs.format(task=task)
        if refs:
            return c.template_no_task.format(refs=" and ".join(refs))
        raise PixelVLAInputError(
            "nothing to act on: give a task, an object mask or at least one visual prompt"
        )

    def batch(self, samples: Sequence[PolicyInput]) -> ModelInputs:
        c = self.config
        if not samples:
            raise PixelVLAInputError("empty batch")
        s, M = c.image_size, c.max_object_masks
        images, texts, hws, prompt_lists, proprio, anchors = [], [], [], [], [], []
        obj = torch.zeros(len(samples), M, s, s)
        obj_valid = torch.zeros(len(samples), M, dtype=torch.bool)
        for b, smp in enumerate(samples):
            images.append(self.image_tensor(smp.image))
            h, w = smp.image.shape[:2]
            hws.append((h, w))
            masks = [] if smp.object_mask is None else smp.object_mask
            if isinstance(masks, np.ndarray) and masks.ndim == 2:
                masks = [masks]
            if len(masks) > M:
                raise PixelVLAInputError(f"at most {M} object masks, got {len(masks)}")
            for i, m in enumerate(masks):
                m = validate_mask(m, "object mask")
                if m.shape != (h, w):
                    raise PixelVLAInputError(
                        f"object mask has shape {m.shape}, expected the image size {(h, w)}"
                    )
                obj[b, i], obj_valid[b, i] = resize_mask(m, (s, s)), True
            prompts = list(smp.prompts)
            prompt_lists.append(prompts)
            if smp.task is not None and not isinstance(smp.task, str):
                raise PixelVLAInputError(f"task must be a string or None, got {type(smp.task).__name__}")
            texts.append(self.build_text(smp.task, bool(masks), prompts))
            if c.proprio_dim:
                proprio.append(self.proprio_vector(smp.proprio))
            if c.prompt_anchor:
                anchors.append(self.anchor_vector(smp, masks, prompts))
        tok = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=c.tokenizer.max_text_tokens,
            return_tensors="pt",
        )
        return ModelInputs(
            images=torch.stack(images),
            input_ids=tok["input_ids"].long(),
            text_mask=tok["attention_mask"].bool(),
            object_mask=obj,
            object_mask_valid=obj_valid,
            prompts=collate_prompts(prompt_lists, hws, c.slots, (s, s)),
            proprio=torch.from_numpy(np.stack(proprio)).float() if c.proprio_dim else None,
            anchor=torch.from_numpy(np.stack(anchors)).float() if c.prompt_anchor else None,
        )

    def __call__(
        self,
        image: np.ndarray,
        task: str | None = None,
        object_mask: np.ndarray | None = None,
        prompts: Sequence[VisualPrompt] = (),
        proprio: np.ndarray | None = None,
        camera: CameraModel | None = None,
    ) -> ModelInputs:
        """One observation -> a batch of one."""
        return self.batch([PolicyInput(image, task, object_mask, list(prompts), proprio, camera)])

    def anchor_vector(
        self, smp: PolicyInput, object_masks: Sequence[np.ndarray], prompts: Sequence[VisualPrompt]
    ) -> np.ndarray:
        """(ANCHOR_DIM,): [(anchor - TCP) / ANCHOR_SCALE_M, 1], or zeros without a camera, without a pixel
        to anchor, or when the ray misses the plane or lands further than ANCHOR_MAX_M from the TCP."""
        out = np.zeros(ANCHOR_DIM)
        if smp.camera is None:
            return out
        if not isinstance(smp.camera, CameraModel):
            raise PixelVLAInputError(f"camera must be a CameraModel, got {type(smp.camera).__name__}")
        uv = prompt_anchor_pixel(object_masks, prompts)
        if uv is None:
            return out
        h, w = smp.image.shape[:2]
        camera = smp.camera if (smp.camera.width, smp.camera.height) == (w, h) else smp.camera.scaled(w, h)
        plane = np.array([0.0, 0.0, self.config.anchor_plane_z])
        points, hit = camera.pixel_to_plane(uv[None], plane, np.array([0.0, 0.0, 1.0]))
        offset = points[0] - np.asarray(smp.proprio, dtype=np.float64)[:3]  # state_proprio: TCP first
        if not hit[0] or not np.all(np.isfinite(offset)) or np.linalg.norm(offset) > ANCHOR_MAX_M:
            return out
        out[:3], out[3] = offset / ANCHOR_SCALE_M, 1.0
        return out

    def proprio_vector(self, proprio: np.ndarray | None) -> np.ndarray:
        c = self.config
        if proprio is None:
            raise PixelVLAInputError(f"this model needs proprio, a ({c.proprio_dim},) vector; got None")
        p = np.asarray(proprio, dtype=np.float64)
        if p.shape != (c.proprio_dim,):
            raise PixelVLAInputError(f"proprio must have shape ({c.proprio_dim},), got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise PixelVLAInputError(f"proprio contains NaN or inf: {p.tolist()}")
        p = c.proprio_stats.normalize(p, clip=False) if c.proprio_stats else p
        return p.astype(np.float32)

    # --- actions ---------------------------------------------------------------------------------------
    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """(..., 7) robot units -> normalized: dims 0-5 to [-1, 1] (clipped), gripper kept in [0, 1]."""
        a = np.asarray(actions, dtype=np.float64)
        if a.shape[-1] != ACTION_DIM or not np.all(np.isfinite(a)):
            raise PixelVLAInputError(f"actions must be finite (..., {ACTION_DIM}), got shape {a.shape}")
        out = np.empty_like(a)
        out[..., :GRIPPER] = self.config.action_stats.normalize(a, clip=True)[..., :GRIPPER]
        out[..., GRIPPER] = np.clip(a[..., GRIPPER], 0.0, 1.0)
        return out.astype(np.float32)

    def unnormalize_actions(self, normalized: np.ndarray | torch.Tensor) -> np.ndarray:
        """(..., 7) normalized model output -> robot units; gripper binarized at the threshold (0 / 1)."""
        if isinstance(normalized, torch.Tensor):
            normalized = normalized.detach().float().cpu().numpy()
        y = np.asarray(normalized, dtype=np.float64)
        if y.shape[-1] != ACTION_DIM:
            raise PixelVLAInputError(f"model output must end in {ACTION_DIM} dims, got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise PixelVLAInputError("model output contains NaN or inf: refusing to produce an action")
        out = np.empty_like(y)
        out[..., :GRIPPER] = self.config.action_stats.unnormalize(y)[..., :GRIPPER]
        out[..., GRIPPER] = (y[..., GRIPPER] >= self.config.gripper_threshold).astype(np.float64)
        return out

    postprocess = unnormalize_actions

    def chunk_times(self, n: int | None = None) -> np.ndarray:
        """(n,) time offset of each action of a chunk: k / control_rate, k = 0..n-1 (seconds)."""
        n = self.config.action_space.chunk_size if n is None else n
        return np.arange(n, dtype=np.float64) / self.config.action_space.control_rate_hz

    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict()
