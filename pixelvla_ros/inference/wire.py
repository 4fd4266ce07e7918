"""The policy server's wire protocol, shared by the server (server.py) and its client (remote.py):
message encoding, request validation, limits and the shared token.

Transport: WebSocket (the `websockets` package, asyncio server) carrying msgpack, as openpi does. Binary
frames carry images as raw bytes (no base64); msgpack needs no schema compilation (unlike protobuf / gRPC);
each is one small dependency without further requirements; WebSocket brings message framing, size limits,
keep-alive pings and TLS. numpy arrays travel as msgpack maps {"__ndarray__": true, "dtype", "shape",
"data"}: dtype is numpy's dtype.str from a short allow-list (|u1 |b1 <f4 <f8 <i4 <i8), data the raw
little-endian bytes, checked against dtype and shape before anything is allocated.

Protocol (version PROTOCOL_VERSION), every message one binary frame holding one msgpack map:
  1. client -> {"type": "auth", "token": str, "protocol_version": int}  (the first message, within
     AUTH_TIMEOUT_S). A wrong or missing token, or a first message of another shape, closes the
     connection with code 1008 (policy violation) and a reason saying so; nothing else is read from it.
     The token is a message, not an HTTP header, so that it never lands in proxy or access logs.
  2. server -> {"type": "metadata", protocol, protocol_version, checkpoint_hash (checkpoint_hash(): model
     + preprocessing config + weight digests), checkpoint_name, action_space, chunk_size, commit_steps,
     proprio_dim, chunk_times, preprocess_config (PreprocessConfig.to_dict()), input_modes, backend,
     device, dtype, limits, stats}.
  3. client -> {"type": "infer", "request_id": int|str|None, "image": uint8 (H, W, 3),
     "instruction": str|None, "prompts": [{"kind", "points" (N, 2) float, "labels" int (N,), "mask" bool
     (H, W)}], "object_mask": bool (H, W)|None, "proprio": float (D,)|None, "camera": {width, height, K,
     D, R, P, distortion_model, frame_id, T_base_camera, base_frame_id}|None}; only these keys.
     server -> {"type": "result", "request_id", "valid", "reason", "actions": float64 (N_c, 7)|None,
     "times": float64 (N_c,), "timing": {decode_s, queue_s, model_s, policy_total_s,
     server_receive_to_reply_s}}. A request the server cannot read gets the same reply with valid false
     and a reason starting "request:"; nothing runs for it and the connection stays open.
  4. client -> {"type": "stats"}; server -> {"type": "stats", "stats": {counters}}.
Limits: MAX_MESSAGE_BYTES per message (larger ones close the connection, code 1009), images up to
MAX_IMAGE_SIDE pixels a side, MAX_PROMPTS prompts of MAX_PROMPT_POINTS points, MAX_TEXT_CHARS of text;
float inputs must be finite. One model call at a time (the model is not thread-safe) runs in a worker
thread, so the event loop keeps answering pings and other connections; a client that does not read its
replies for SEND_TIMEOUT_S is disconnected, so it cannot hold anything but its own connection. Beyond
MAX_CONNECTIONS open connections, new ones are closed with code 1013 (try again later).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from pixelvla_ros.camera import CameraModel
from pixelvla_ros.prompts import MASK, PROMPT_KINDS, VisualPrompt

log = logging.getLogger("pixelvla_ros.policy_server")

PROTOCOL, PROTOCOL_VERSION = "pixelvla_policy_server", 1
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
TOKEN_ENV = "PIXELVLA_SERVER_TOKEN"
MIN_TOKEN_CHARS = 16
AUTH_CLOSE_CODE = 1008  # RFC 6455 "policy violation"
BUSY_CLOSE_CODE = 1013  # RFC 6455 "try again later"

MAX_MESSAGE_BYTES = 16 * 2**20
MAX_IMAGE_SIDE = 4096
MAX_PROMPTS = 32
MAX_PROMPT_POINTS = 1024
MAX_TEXT_CHARS = 2000
MAX_PROPRIO_DIM = 64
MAX_ID_CHARS = 128
MAX_NDIM = 4
AUTH_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 16
MAX_REASON_CHARS = 300

NDARRAY_KEY = "__ndarray__"
ARRAY_KEYS = frozenset({NDARRAY_KEY, "dtype", "shape", "data"})
WIRE_DTYPES = {np.dtype(t).str: np.dtype(t) for t in ("uint8", "bool", "<f4", "<f8", "<i4", "<i8")}
REQUEST_KEYS = frozenset(
    {"type", "request_id", "image", "instruction", "prompts", "object_mask", "proprio", "camera"}
)
STATS_KEYS = frozenset({"type", "request_id"})
PROMPT_KEYS = frozenset({"kind", "points", "labels", "mask"})
CAMERA_KEYS = frozenset(
    {"width", "height", "K", "D", "R", "P", "distortion_model", "frame_id", "T_base_camera", "base_frame_id"}
)


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the message says what was wrong and what is expected."""


# ------------------------------------------------------------------------------------------ wire format
def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A numpy array -> its wire map; ProtocolError for a dtype outside WIRE_DTYPES."""
    a = np.asarray(a)
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if dt.str not in WIRE_DTYPES:
        raise ProtocolError(f"arrays of dtype {a.dtype} cannot be sent; allowed: {sorted(WIRE_DTYPES)}")
    a = np.ascontiguousarray(a, dtype=dt)
    return {NDARRAY_KEY: True, "dtype": dt.str, "shape": list(a.shape), "data": a.tobytes()}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    """A wire map -> a writable numpy array, after checking that its size matches its declared shape (so a
    huge declared shape allocates nothing)."""
    if set(d) != ARRAY_KEYS or d[NDARRAY_KEY] is not True:
        raise ProtocolError(f"an array map has exactly the keys {sorted(ARRAY_KEYS)}")
    dtype, shape, data = d["dtype"], d["shape"], d["data"]
    if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
        raise ProtocolError(f"array dtype {dtype!r} is not one of {sorted(WIRE_DTYPES)}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise ProtocolError(f"array shape must be a list of at most {MAX_NDIM} non-negative ints")
    if not isinstance(data, bytes):
        raise ProtocolError("array data must be bytes")
    dt = WIRE_DTYPES[dtype]
    need = math.prod(shape) * dt.itemsize  # Python ints: no overflow for absurd shapes
    if need != len(data):
        raise ProtocolError(f"array of shape {shape} and dtype {dtype} needs {need} bytes, got {len(data)}")
    if dt == np.bool_:  # a bool byte other than 0 / 1 is not a bool numpy would treat consistently
        raw = np.frombuffer(data, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            raise ProtocolError("bool array bytes must be 0 or 1")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()


def _default(obj: Any) -> Any:
    """msgpack's hook for what it cannot pack: numpy arrays and scalars."""
    if isinstance(obj, np.ndarray):
        return encode_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot pack {type(obj).__name__}")


def _object_hook(d: dict[str, Any]) -> Any:
    return decode_array(d) if NDARRAY_KEY in d else d


def pack(obj: Any) -> bytes:
    """One protocol message -> msgpack bytes (numpy arrays as wire maps)."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """msgpack bytes -> one message (wire maps as numpy arrays); raises on anything malformed."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, object_hook=_object_hook)


def checkpoint_hash(record: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint record's model config, preprocessing config and file digests (canonical
    JSON): the same hash means the same model contract and the same weights."""
    blob = json.dumps(
        {k: record.get(k) for k in ("model", "preprocessing", "files")}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def prompt_to_wire(p: VisualPrompt) -> dict[str, Any]:
    """A VisualPrompt -> its wire map."""
    labels = np.asarray(p.labels, dtype=np.int64)
    return {"kind": p.kind, "points": p.points, "labels": labels, "mask": p.mask}


def camera_to_wire(c: CameraModel) -> dict[str, Any]:
    """A CameraModel -> its wire map (every field, so the server rebuilds the identical camera)."""
    return {
        "width": int(c.width),
        "height": int(c.height),
        "K": c.K,
        "D": c.D,
        "R": c.R,
        "P": c.P,
        "distortion_model": str(c.distortion_model),
        "frame_id": str(c.frame_id),
        "T_base_camera": c.T_base_camera,
        "base_frame_id": str(c.base_frame_id),
    }


# ------------------------------------------------------------------------------------- request checks
def check_keys(d: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = [k for k in d if k not in allowed]
    if unknown:
        names = [repr(k)[:40] for k in unknown][:5]
        raise ProtocolError(f"{what} has unknown keys {names}; allowed: {sorted(allowed)}")


def _array(x: Any, what: str, kinds: str, ndim: int) -> np.ndarray:
    """x must be a decoded array of one of the dtype kinds (numpy kind letters) and ndim dimensions; float
    ones must be finite."""
    if not isinstance(x, np.ndarray):
        raise ProtocolError(f"{what} must be an array, got {type(x).__name__}")
    if x.dtype.kind not in kinds:
        raise ProtocolError(f"{what} has dtype {x.dtype}, expected kind {kinds!r}")
    if x.ndim != ndim:
        raise ProtocolError(f"{what} must have {ndim} dimensions, got shape {x.shape}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ProtocolError(f"{what} contains NaN or inf")
    return x


def _string(x: Any, what: str, limit: int) -> str:
    if not isinstance(x, str) or len(x) > limit:
        raise ProtocolError(f"{what} must be a string of at most {limit} characters")
    return x


def _mask(x: Any, what: str, hw: tuple[int, int]) -> np.ndarray:
    m = _array(x, what, "b", 2)
    if m.shape != hw:
        raise ProtocolError(f"{what} has shape {m.shape}, expected the image size {hw}")
    return m


def request_id_from_wire(x: Any) -> int | str | None:
    """A request id as sent (None, an int, or a short string); ProtocolError otherwise."""
    if x is None or (type(x) is int) or (isinstance(x, str) and len(x) <= MAX_ID_CHARS):
        return x
    raise ProtocolError(f"request_id must be None, an int or a string of at most {MAX_ID_CHARS} characters")


def _prompt_from_wire(x: Any, hw: tuple[int, int]) -> VisualPrompt:
    if not isinstance(x, dict):
        raise ProtocolError(f"a prompt must be a map, got {type(x).__name__}")
    check_keys(x, PROMPT_KEYS, "a prompt")
    kind = x.get("kind")
    if kind not in PROMPT_KINDS:
        raise ProtocolError(f"prompt kind must be one of {PROMPT_KINDS}, got {kind!r}"[:MAX_REASON_CHARS])
    points = x.get("points")
    if points is not None:
        points = _array(points, f"{kind} prompt points", "f", 2)
        if points.shape[1] != 2 or not 1 <= points.shape[0] <= MAX_PROMPT_POINTS:
            raise ProtocolError(f"{kind} prompt points must be (N, 2) with 1 <= N <= {MAX_PROMPT_POINTS}")
        points = points.astype(np.float64)
    labels = x.get("labels", np.ones(1, dtype=np.int64))
    labels = _array(labels, f"{kind} prompt labels", "iub", 1)
    if not 1 <= labels.size <= MAX_PROMPT_POINTS:
        raise ProtocolError(f"{kind} prompt labels must hold 1 to {MAX_PROMPT_POINTS} values")
    mask = x.get("mask")
    if mask is not None:
        mask = _mask(mask, "mask prompt", hw)
    if kind == MASK and (mask is None or points is not None):
        raise ProtocolError("a mask prompt carries `mask` (bool (H, W)) and no points")
    if kind != MASK and (points is None or mask is not None):
        raise ProtocolError(f"a {kind} prompt carries `points` ((N, 2) float) and no mask")
    try:
        return VisualPrompt(kind, points=points, labels=labels, mask=mask)
    except ValueError as e:  # PixelVLAInputError: says what is wrong with the prompt
        raise ProtocolError(str(e)) from e


def _camera_from_wire(x: Any) -> CameraModel:
    if not isinstance(x, dict):
        raise ProtocolError(f"camera must be a map, got {type(x).__name__}")
    if set(x) != CAMERA_KEYS:
        raise ProtocolError(f"camera must have exactly the keys {sorted(CAMERA_KEYS)}")
    for k in ("width", "height"):
        if type(x[k]) is not int or not 1 <= x[k] <= 8 * MAX_IMAGE_SIDE:
            raise ProtocolError(f"camera {k} must be an int in [1, {8 * MAX_IMAGE_SIDE}]")
    shapes = {"K": (3, 3), "R": (3, 3), "P": (3, 4), "T_base_camera": (4, 4)}
    arrays = {k: _array(x[k], f"camera {k}", "f", 2) for k in shapes}
    for k, shape in shapes.items():
        if arrays[k].shape != shape:
            raise ProtocolError(f"camera {k} must have shape {shape}, got {arrays[k].shape}")
    D = _array(x["D"], "camera D", "f", 1)
    names = {k: _string(x[k], f"camera {k}", 256) for k in ("distortion_model", "frame_id", "base_frame_id")}
    try:
        return CameraModel(
            width=x["width"],
            height=x["height"],
            D=D,
            **{k: v.astype(np.float64) for k, v in arrays.items()},
            **names,
        )
    except ValueError as e:
        raise ProtocolError(f"camera: {e}") from e


def observation_from_wire(msg: dict[str, Any]) -> dict[str, Any]:
    """An "infer" message -> Policy.predict_chunk's keyword arguments; ProtocolError says what is wrong."""
    check_keys(msg, REQUEST_KEYS, "an infer request")
    if "image" not in msg:
        raise ProtocolError("an infer request needs `image`, a uint8 (H, W, 3) array")
    image = _array(msg["image"], "image", "u", 3)
    if image.dtype != np.uint8 or image.shape[2] != 3:
        raise ProtocolError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise ProtocolError(f"image sides must be in [1, {MAX_IMAGE_SIDE}], got {h}x{w}")
    instruction = msg.get("instruction")
    if instruction is not None:
        instruction = _string(instruction, "instruction", MAX_TEXT_CHARS)
    prompts = msg.get("prompts") or []
    if not isinstance(prompts, list) or len(prompts) > MAX_PROMPTS:
        raise ProtocolError(f"prompts must be a list of at most {MAX_PROMPTS} prompt maps")
    prompts = [_prompt_from_wire(p, (h, w)) for p in prompts]
    object_mask = msg.get("object_mask")
    if object_mask is not None:
        object_mask = _mask(object_mask, "object_mask", (h, w))
    proprio = msg.get("proprio")
    if proprio is not None:
        proprio = _array(proprio, "proprio", "f", 1)
        if proprio.size > MAX_PROPRIO_DIM:
            raise ProtocolError(f"proprio has {proprio.size} values, at most {MAX_PROPRIO_DIM} are read")
        proprio = proprio.astype(np.float64)
    camera = msg.get("camera")
    if camera is not None:
        camera = _camera_from_wire(camera)
    return {
        "image": image,
        "instruction": instruction,
        "prompts": prompts,
        "object_mask": object_mask,
        "proprio": proprio,
        "camera": camera,
    }


def short_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:MAX_REASON_CHARS]


def read_token(token_file: str | None) -> str:
    """The token from --token-file (its first line, stripped), else from PIXELVLA_SERVER_TOKEN; ValueError
    when there is none or it is too short."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            token = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the token file {str(path)!r}: {e}") from e
        if path.stat().st_mode & 0o077:
            log.warning("token file %s is readable by other users: chmod 600 it", path)
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ValueError(
            f"no token: give --token-file FILE or set {TOKEN_ENV}; the server never runs without one "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the token has {len(token)} characters; at least {MIN_TOKEN_CHARS} are required")
    return token
