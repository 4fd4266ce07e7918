"""PixelVLA: vision towers + projector, pixel-aware encoder, prompt encoder, an HF causal LM and a
continuous action decoder. One forward pass produces a whole action chunk.

LLM input sequence (fixed length, absent inputs are padding slots nobody attends to):
  [image N_v][pixel M*Lv][prompt S][proprio 0|1][text T][action slots A]
Attention: causal, except that the prompt slots and the action slots each attend bidirectionally
within their block. Position ids count only present tokens, and all point slots share one position,
so a padded batch equals the unpadded sequence and the order of points does not matter.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn as nn

from pixelvla_ros.model.action_decoder import ActionDecoder
from pixelvla_ros.model.config import PixelVLAConfig
from pixelvla_ros.model.hf_folder import (
    CONFIG_FILE,
    PretrainedFolderError,
    check_loading_info,
    check_weights,
    config_kwargs,
    read_folder_config,
)
from pixelvla_ros.model.inputs import ANCHOR_DIM, ModelInputs, PixelVLAOutput
from pixelvla_ros.model.pixel_encoder import PixelEncoder
from pixelvla_ros.model.prompt_encoder import PromptEncoder
from pixelvla_ros.model.tokenizer import load_tokenizer
from pixelvla_ros.model.vision import Projector, VisionBackbone, resolve_pretrained_tower
from pixelvla_ros.prompts import PixelVLAInputError

BLOCK_CAUSAL, BLOCK_PROMPT, BLOCK_ACTION = 0, 1, 2


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DTYPES = (torch.float32, torch.bfloat16, torch.float16)
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# what users pass: policy_node's dtype, evaluate --dtype, train's dtype
DTYPE_CHOICES = ("auto", *DTYPE_NAMES)


def check_dtype(dtype: torch.dtype, device: torch.device | str) -> None:
    """Raise ValueError, saying why, unless the model can run in `dtype` on `device`."""
    device = torch.device(device)
    if dtype not in DTYPES:
        raise ValueError(f"model dtype must be one of {DTYPES}, got {dtype}")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"{device} does not support bfloat16 (it needs compute capability 8.0 or newer): use "
            "torch.float16 or torch.float32"
        )


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """The weights' dtype that `name` (DTYPE_CHOICES) means on `device`. "auto": bfloat16 on a GPU that has
    it, float16 on an older GPU (logged as a warning), float32 on the CPU. An explicit name the device cannot
    run raises ValueError."""
    device = torch.device(device)
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        logging.getLogger(__name__).warning(
            "dtype auto: %s has no bfloat16 (compute capability < 8.0), using float16", device
        )
        return torch.float16
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {name!r}")
    check_dtype(DTYPE_NAMES[name], device)
    return DTYPE_NAMES[name]


def autocast_context(device: torch.device | str, dtype: torch.dtype = torch.float32):
    """On CUDA, autocast to the weights' reduced dtype, or to bfloat16 (float16 without it) for float32
    weights. On the CPU, autocast to a reduced dtype (weights of mixed dtypes: reduced frozen ones, float32
    trainable ones); float32 weights compute in float32."""
    device = torch.device(device)
    if device.type != "cuda":
        return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast("cpu", dtype=dtype)
    if dtype == torch.float32:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


@contextlib.contextmanager
def parameters_on_meta():
    """Modules built inside get their parameters on the meta device (no memory; their values are assigned
    later, from a file). Buffers are made as usual: the non-persistent ones (e.g. rotary frequencies, image
    mean/std) are in no weights file and must keep their values."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def resolve_pretrained_llm(cfg: PixelVLAConfig) -> None:
    """Replace cfg.llm.hf_config by the config in cfg.llm.pretrained_path (so checkpoints rebuild it),
    after checking that the folder holds a causal LM with readable weights."""
    if cfg.llm.pretrained_path is None:
        return
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = cfg.llm.pretrained_path
    raw = read_folder_config(path, "LLM")
    if raw["model_type"] not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise PretrainedFolderError(
            f"{path}/{CONFIG_FILE}: model_type {raw['model_type']!r} is not a causal language model "
            "(AutoModelForCausalLM does not load it)"
        )
    check_weights(path, "LLM")
    try:
        hf = AutoConfig.from_pretrained(str(path), local_files_only=True).to_dict()
    except (OSError, ValueError, TypeError) as e:
        raise PretrainedFolderError(f"{path}/{CONFIG_FILE} is not a valid config: {e}") from e
    cfg.llm.hf_config = config_kwargs(hf)


def check_tokenizer_fits(cfg: PixelVLAConfig) -> None:
    """Raise PretrainedFolderError if the configured tokenizer has ids beyond the LLM's embeddings."""
    tokenizer = load_tokenizer(cfg.tokenizer)
    vocab = int(cfg.llm.hf_config.get("vocab_size", 0))
    if len(tokenizer) > vocab:
        raise PretrainedFolderError(
            f"tokenizer {cfg.tokenizer.path or cfg.tokenizer.kind!r} has {len(tokenizer)} tokens but the "
            f"LLM only {vocab} embeddings"
        )


def build_llm(cfg: PixelVLAConfig, load_pretrained: bool = True) -> nn.Module:
    """The LM's base model (no LM head): any AutoModelForCausalLM architecture's decoder stack."""
    from transformers import AutoConfig, AutoModel

    kw = dict(cfg.llm.hf_config)
    model_type = kw.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **kw)
    path = cfg.llm.pretrained_path
    if load_pretrained and path is not None:
        try:
            model, info = AutoModel.from_pretrained(
                path,
                config=hf_config,
                local_files_only=True,
                attn_implementation=cfg.llm.attn_implementation,
                dtype=torch.get_default_dtype(),
                output_loading_info=True,
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise PretrainedFolderError(f"LLM folder {path!r} cannot be loaded: {e}") from e
        check_loading_info(info, path, "LLM")
        return model
    return AutoModel.from_config(hf_config, attn_implementation=cfg.llm.attn_implementation)


class PixelVLA(nn.Module):
    def __init__(self, cfg: PixelVLAConfig, load_pretrained: bool = True, meta_backbones: bool = False):
        """load_pretrained: the towers and LLM from their configs' local folders (else random weights).
        meta_backbones: the towers, projector and LLM get their parameters on the meta device, to be assigned
        from a file (checkpoint loading, OpenVLA conversion); the parts added to them (pixel and prompt
        encoders, proprio encoder, action queries and decoder) are initialised as usual."""
        super().__init__()
        if load_pretrained and meta_backbones:
            raise ValueError("meta_backbones builds the backbones empty: it excludes load_pretrained")
        backbones = parameters_on_meta if meta_backbones else contextlib.nullcontext
        if load_pretrained:  # record the pretrained components' configs, so checkpoints rebuild them
            cfg.vision = [resolve_pretrained_tower(v) for v in cfg.vision]
            resolve_pretrained_llm(cfg)
            cfg.validate()  # the folders' towers must still fit the image size and each other
            if cfg.tokenizer.kind == "hf":
                check_tokenizer_fits(cfg)
        self.cfg = cfg
        D = cfg.llm.width
        with backbones():
            self.vision = VisionBackbone(cfg, load_pretrained)
            self.projector = Projector(self.vision.width, D, cfg.projector_mult)
        self.pixel_encoder = PixelEncoder(
            self.vision.width,
            cfg.pixel.level_dim,
            D,
            cfg.pixel.num_levels,
            cfg.grid,
            cfg.pixel.centroid_encoding,
        )
        self.prompt_encoder = PromptEncoder(cfg.prompt, D)
        self.proprio_encoder = (
            nn.Sequential(nn.Linear(cfg.proprio_dim, D), nn.GELU(), nn.Linear(D, D))
            if cfg.proprio_dim
            else None
        )
        self.anchor_encoder = None
        if cfg.prompt_anchor:
            self.anchor_encoder = nn.Sequential(nn.Linear(ANCHOR_DIM, D), nn.GELU(), nn.Linear(D, D))
            # Output zero at first: a checkpoint fine-tuned with the anchor added starts as it was.
            nn.init.zeros_(self.anchor_encoder[2].weight)
            nn.init.zeros_(self.anchor_encoder[2].bias)
        with backbones():
            self.llm = build_llm(cfg, load_pretrained)
        self.action_queries = nn.Parameter(torch.randn(cfg.action.chunk_size, D) * 0.02)  # (A, D)
        a = cfg.action
        self.action_decoder = ActionDecoder(D, a.hidden_dim, a.num_blocks, a.action_dim)
        self._static_cache: dict = {}

    # --- helpers ---------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.action_queries.device

    def text_embeddings(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    def _static_layout(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int | None]:
        """Per-token block ids (L,), point-slot flags (L,) and the first point slot (None without point
        slots) of the fixed sequence layout."""
        key = str(device)
        if key not in self._static_cache:
            c = self.cfg
            n_pre = c.num_image_tokens + c.pixel.num_levels * c.pixel.max_object_masks
            S = self.prompt_encoder.num_tokens
            n_mid = (1 if c.proprio_dim else 0) + c.tokenizer.max_text_tokens
            A = c.action.chunk_size
            block = torch.cat(
                [
                    torch.full((n_pre,), BLOCK_CAUSAL),
                    torch.full((S,), BLOCK_PROMPT),
                    torch.full((n_mid,), BLOCK_CAUSAL),
                    torch.full((A,), BLOCK_ACTION),
                ]
            ).to(device)
            point = torch.zeros_like(block, dtype=torch.bool)
            point[n_pre : n_pre + S] = self.prompt_encoder.point_slot_flags(device)
            # a Python int, found once: no device sync per call, nothing data-dependent to trace (export)
            first_point = int(point.nonzero()[0]) if point.any() else None
            self._static_cache[key] = (block, point, first_point)
        return self._static_cache[key]

    def attention_layout(self, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """valid (B, L) bool -> 4D mask (B, 1, L, L) for the LLM's attention and position ids (B, L)."""
        block, point, first_point = self._static_layout(valid.device)
        L = valid.shape[1]
        idx = torch.arange(L, device=valid.device)
        causal = idx[None, :] <= idx[:, None]  # (L, L) key <= query
        same_block = (block[:, None] == block[None, :]) & (block[:, None] != BLOCK_CAUSAL)
        allowed = (causal | same_block)[None] & valid[:, None, :]  # (B, L, L): query row, key column
        allowed = allowed | torch.eye(L, dtype=torch.bool, device=valid.device)[None]  # no empty rows
        # positions: present tokens advance by one; the point set advances once in all
        advance = (valid & ~point[None]).long()
        if first_point is not None:
            advance[:, first_point] = (valid & point[None]).any(-1).long()
        position_ids = (advance.cumsum(-1) - 1).clamp_min(0)  # (B, L)
        mask = allowed[:, None]  # (B, 1, L, L)
        if self.cfg.llm.attn_implementation == "eager":  # additive float mask
            dtype = self.action_queries.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=valid.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
        return mask, position_ids

    def _check(self, x: ModelInputs) -> None:
        c, B = self.cfg, x.images.shape[0]
        H = c.image_size
        if x.images.shape != (B, 3, H, H) or not x.images.is_floating_point():
            raise PixelVLAInputError(
                f"images must be float (B, 3, {H}, {H}), got {tuple(x.images.shape)} {x.images.dtype}"
            )
        T, M = c.tokenizer.max_text_tokens, c.pixel.max_object_masks
        if x.input_ids.shape != (B, T) or x.text_mask.shape != (B, T):
            raise PixelVLAInputError(
                f"input_ids / text_mask must be (B, {T}), got {tuple(x.input_ids.shape)}"
            )
        if x.object_mask.shape != (B, M, H, H) or x.object_mask_valid.shape != (B, M):
            raise PixelVLAInputError(
                f"object_mask must be (B, {M}, {H}, {H}), got {tuple(x.object_mask.shape)}"
            )
        if x.prompts.batch_size != B or tuple(x.prompts.mask.shape[-2:]) != (H, H):
            raise PixelVLAInputError("prompt tensors do not match the batch size / model image size")
        if c.proprio_dim and (x.proprio is None or x.proprio.shape != (B, c.proprio_dim)):
            got = None if x.proprio is None else tuple(x.proprio.shape)
            raise PixelVLAInputError(f"this model needs proprio of shape (B, {c.proprio_dim}), got {got}")
        if c.prompt_anchor and (x.anchor is None or x.anchor.shape != (B, ANCHOR_DIM)):
            got = None if x.anchor is None else tuple(x.anchor.shape)
            raise PixelVLAInputError(f"this model needs the prompt anchor, (B, {ANCHOR_DIM}); got {got}")
        finite = [
            x.images,
            x.object_mask,
            x.prompts.point_xy,
            x.prompts.line_xy,
            x.prompts.box_xy,
            x.prompts.mask,
        ]
        finite += [t for t in (x.proprio, x.anchor) if t is not None]
        if not all(bool(torch.isfinite(t).all()) for t in finite):
            raise PixelVLAInputError("an input tensor contains NaN or inf")

    # --- forward -----------------------------------------------------------------------------------------
    def forward(
        self, x: ModelInputs, actions: torch.Tensor | None = None, action_mask: torch.Tensor | None = None
    ) -> PixelVLAOutput:
        """x: batch of B examples; actions: (B, N_c, 7) normalized targets; action_mask: (B, N_c) bool, or
        (B, N_c, 7) weights of each target in the loss (padding 0)."""
        self._check(x)
        B, dev = x.batch_size, self.device
        towers_train = any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and towers_train):
            levels = self.vision(x.images)  # Lv x (B, N_v, C_f)
        e_v = self.projector(levels[-1])  # (B, N_v, D)
        e_p = self.pixel_encoder(levels, x.object_mask)  # (B, M*Lv, D)
        e_s, s_valid = self.prompt_encoder(x.prompts)  # (B, S, D), (B, S)
        e_l = self.text_embeddings()(x.input_ids)  # (B, T, D)
        e_a = self.action_queries[None].expand(B, -1, -1)  # (B, A, D)
        groups = [e_v, e_p, e_s]
        Lv = self.cfg.pixel.num_levels
        valid = [
            torch.ones(e_v.shape[:2], dtype=torch.bool, device=dev),
            x.object_mask_valid.bool().repeat_interleave(Lv, dim=1),
            s_valid.bool(),
        ]
        if self.proprio_encoder is not None:
            e_q = self.proprio_encoder(x.proprio.to(e_v.dtype))  # (B, D)
            if self.anchor_encoder is not None:
                e_q = e_q + self.anchor_encoder(x.anchor.to(e_v.dtype))
            groups.append(e_q[:, None])  # (B, 1, D)
            valid.append(torch.ones(B, 1, dtype=torch.bool, device=dev))
        groups += [e_l, e_a]
        valid += [x.text_mask.bool(), torch.ones(e_a.shape[:2], dtype=torch.bool, device=dev)]
        dtype = e_l.dtype if not torch.is_autocast_enabled(dev.type) else torch.get_autocast_dtype(dev.type)
        seq = torch.cat([g.to(dtype) for g in groups], dim=1)  # (B, L, D)
        mask, position_ids = self.attention_layout(torch.cat(valid, dim=1))
        if mask.is_floating_point():
            mask = mask.to(dtype)
        h = self.llm(inputs_embeds=seq, attention_mask=mask, position_ids=position_ids, use_cache=False)
        h = h.last_hidden_state[:, -e_a.shape[1] :]  # (B, A, D)
        pred = self.action_decoder(h).float()  # (B, N_c, 7)
        loss = None
        if actions is not None:
            if actions.shape != pred.shape:
                raise PixelVLAInputError(
                    f"target actions must be {tuple(pred.shape)}, got {tuple(actions.shape)}"
                )
            err = (pred - actions.to(pred)).abs()  # L1 on normalized actions
            if action_mask is not None:
                w = action_mask.to(err)
                w = (w[..., None] if w.dim() == 2 else w).expand_as(err)
                loss = (err * w).sum() / w.sum().clamp_min(1.0)
            else:
                loss = err.mean()
        return PixelVLAOutput(actions=pred, loss=loss)

    @torch.inference_mode()
    def predict(self, x: ModelInputs) -> torch.Tensor:
        """One forward -> (B, N_c, 7) normalized actions (float32). Autocast on CUDA (autocast_context)."""
        with autocast_context(self.device, self.action_queries.dtype):
            return self(x.to(self.device)).actions.float()

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def build_model(
    cfg: PixelVLAConfig,
    device: torch.device | str | None = None,
    load_pretrained: bool = True,
    dtype: torch.dtype | None = None,
) -> PixelVLA:
    """Build PixelVLA from a config (random weights, or pretrained components from local folders)."""
    model = PixelVLA(cfg, load_pretrained=load_pretrained)
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device or default_device())
