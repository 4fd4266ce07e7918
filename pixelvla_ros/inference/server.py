"""The policy server: one GPU machine runs a checkpoint's Policy for robot PCs without a GPU.

    policy_server --checkpoint checkpoints/tiny --token-file ~/.pixelvla_token       # ws://127.0.0.1:8765
    policy = RemotePolicy.connect("ws://gpu-pc:8765", token)                            # on the robot PC

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

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from pixelvla_ros.camera import CameraModel
from pixelvla_ros.prompts import MASK, PROMPT_KINDS, VisualPrompt

__all__ = [
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "PolicyServer",
    "camera_to_wire",
    "checkpoint_hash",
    "decode_array",
    "encode_array",
    "main",
    "observation_from_wire",
    "pack",
    "prompt_to_wire",
    "unpack",
]

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
def _keys(d: dict[str, Any], allowed: frozenset[str], what: str) -> None:
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
    _keys(x, PROMPT_KEYS, "a prompt")
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
    _keys(msg, REQUEST_KEYS, "an infer request")
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


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:MAX_REASON_CHARS]


# ------------------------------------------------------------------------------------------------ server
def policy_worker() -> ThreadPoolExecutor:
    """The single thread that loads, warms up and runs the policy. Torch's CPU kernels run on an OpenMP
    thread team per calling thread: a model loaded in one thread and run in another kept two teams busy on
    the same cores (tiny, 2 cores: 24.6 ms per call in the worker against 13.5 ms in the loading thread,
    measured in one process), so everything torch does happens in this one thread."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")


class PolicyServer:
    """Serves one Policy (or anything with its interface) to authenticated WebSocket clients."""

    def __init__(
        self,
        policy: Any,
        token: str,
        checkpoint_digest: str,
        *,
        max_connections: int = MAX_CONNECTIONS,
        send_timeout_s: float = SEND_TIMEOUT_S,
        auth_timeout_s: float = AUTH_TIMEOUT_S,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """policy: a loaded Policy; token: the shared secret every connection must present; executor: the
        one worker thread that runs the policy (pass the one that loaded it: policy_worker)."""
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the token must have at least {MIN_TOKEN_CHARS} characters")
        self.policy = policy
        self._token = token.encode()
        self.checkpoint_digest = checkpoint_digest
        self.max_connections = max_connections
        self.send_timeout_s = send_timeout_s
        self.auth_timeout_s = auth_timeout_s
        # One worker thread: the model is not thread-safe, and requests then queue in arrival order.
        self.executor = executor or policy_worker()
        self.active = 0
        self.stats = dict.fromkeys(
            (
                "connections",
                "auth_ok",
                "auth_refused",
                "requests",
                "predictions",
                "valid_chunks",
                "error_replies",
                "closed_abnormally",
                "slow_readers_dropped",
                "replies_undelivered",
            ),
            0,
        )

    def metadata(self) -> dict[str, Any]:
        """The handshake the server sends after authentication."""
        p = self.policy
        cfg = p.preprocess_config
        slots = cfg.slots
        slot_counts = {"point": slots.max_points, "line": slots.max_lines, "box": slots.max_boxes}
        slot_counts["mask"] = slots.max_masks
        engine = getattr(p, "engine", None)
        return {
            "type": "metadata",
            "protocol": PROTOCOL,
            "protocol_version": PROTOCOL_VERSION,
            "checkpoint_hash": self.checkpoint_digest,
            "checkpoint_name": Path(str(p.checkpoint)).name if p.checkpoint else "",
            "action_space": cfg.action_space.to_dict(),
            "chunk_size": int(p.chunk_size),
            "commit_steps": int(p.commit_steps),
            "proprio_dim": int(p.proprio_dim),
            "chunk_times": np.asarray(p.chunk_times(), dtype=np.float64),
            "preprocess_config": cfg.to_dict(),
            "input_modes": {
                "text": True,
                "prompt_kinds": [k for k in PROMPT_KINDS if slot_counts[k] > 0],
                "prompt_slots": slot_counts,
                "object_mask": cfg.max_object_masks > 0,
                "proprio_dim": int(p.proprio_dim),
                "camera": bool(cfg.prompt_anchor),  # the calibration only reaches a prompt-anchor model
            },
            "backend": str(getattr(engine, "name", None) or getattr(p, "backend", None) or "eager"),
            "device": str(p.device),
            "dtype": str(p.dtype),
            "limits": {
                "max_message_bytes": MAX_MESSAGE_BYTES,
                "max_image_side": MAX_IMAGE_SIDE,
                "max_prompts": MAX_PROMPTS,
                "max_prompt_points": MAX_PROMPT_POINTS,
                "max_text_chars": MAX_TEXT_CHARS,
            },
            "stats": dict(self.stats),
        }

    # --- connection ----------------------------------------------------------------------------------
    async def handler(self, ws: Any) -> None:
        """One connection: authentication, the handshake, then one reply per request, in order."""
        from websockets.exceptions import ConnectionClosed

        address = ws.remote_address
        peer = f"{address[0]}:{address[1]}" if address else "?"
        self.stats["connections"] += 1
        if self.active >= self.max_connections:
            log.warning("connection from %s refused: %d connections open", peer, self.active)
            await ws.close(BUSY_CLOSE_CODE, f"server busy: at most {self.max_connections} connections")
            return
        self.active += 1
        try:
            refusal = await self._authenticate(ws)
            if refusal:
                self.stats["auth_refused"] += 1
                log.warning("connection from %s: auth refused (%s)", peer, refusal)
                await ws.close(AUTH_CLOSE_CODE, refusal)
                return
            self.stats["auth_ok"] += 1
            log.info("connection from %s: auth ok", peer)
            if not await self._send(ws, self.metadata(), peer):
                return
            async for message in ws:
                reply = await self._reply(message, peer)
                if not await self._send(ws, reply, peer):
                    return
            log.info("connection from %s closed", peer)
        except ConnectionClosed as e:
            self.stats["closed_abnormally"] += 1
            log.warning("connection from %s lost: %s", peer, _short(e))
        except Exception as e:  # noqa: BLE001 - one connection's failure must not reach the server
            self.stats["closed_abnormally"] += 1
            log.error("connection from %s: internal error, closing it: %s", peer, _short(e))
            ws.transport.abort()
        finally:
            self.active -= 1

    async def _authenticate(self, ws: Any) -> str:
        """Return "" when the first message carries the token and a supported protocol version, else the
        reason for refusing the connection."""
        try:
            first = await asyncio.wait_for(ws.recv(), self.auth_timeout_s)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            return f"authentication required: no auth message within {self.auth_timeout_s:g} s"
        if not isinstance(first, bytes):
            return "authentication required: the first message must be a binary msgpack auth message"
        try:
            msg = msgpack.unpackb(first, raw=False, strict_map_key=True)
        except Exception:  # noqa: BLE001 - any unreadable first message is a refusal
            msg = None
        if not isinstance(msg, dict) or msg.get("type") != "auth" or not isinstance(msg.get("token"), str):
            return 'authentication required: the first message must be {"type": "auth", "token": ...}'
        if not hmac.compare_digest(msg["token"].encode(), self._token):
            return "authentication failed: wrong token"
        if msg.get("protocol_version") != PROTOCOL_VERSION:
            return (
                f"unsupported protocol version {msg.get('protocol_version')!r}: this server speaks "
                f"{PROTOCOL} version {PROTOCOL_VERSION}"
            )[:MAX_REASON_CHARS]
        return ""

    async def _send(self, ws: Any, message: dict[str, Any], peer: str) -> bool:
        """Send one message; False (connection dropped) when the client is gone or does not read it within
        send_timeout_s: websockets' write_limit makes send() wait for the client to drain its buffer."""
        from websockets.exceptions import ConnectionClosed

        try:
            await asyncio.wait_for(ws.send(pack(message)), self.send_timeout_s)
            return True
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            self.stats["slow_readers_dropped"] += 1
            log.warning("connection from %s dropped: reply not read within %g s", peer, self.send_timeout_s)
            ws.transport.abort()
        except ConnectionClosed as e:
            self.stats["replies_undelivered"] += 1
            log.warning("connection from %s lost before its reply was sent: %s", peer, _short(e))
        return False

    # --- requests -------------------------------------------------------------------------------------
    async def _reply(self, message: bytes | str, peer: str) -> dict[str, Any]:
        """One request -> its reply; never raises."""
        t_receive = time.perf_counter()
        counted = False  # stats requests are not counted as requests
        request_id = None
        try:
            if not isinstance(message, bytes):
                raise ProtocolError("text frames are not read: send msgpack in binary frames")
            try:
                msg = unpack(message)
            except ProtocolError:
                raise
            except Exception as e:  # noqa: BLE001 - msgpack raises many types for malformed input
                raise ProtocolError(f"malformed msgpack: {_short(e)}") from e
            if not isinstance(msg, dict):
                raise ProtocolError(f"a request must be a map, got {type(msg).__name__}")
            request_id = request_id_from_wire(msg.get("request_id"))
            kind = msg.get("type")
            if kind == "stats":
                _keys(msg, STATS_KEYS, "a stats request")
                return {"type": "stats", "request_id": request_id, "stats": dict(self.stats)}
            self.stats["requests"] += 1
            counted = True
            if kind != "infer":
                raise ProtocolError(f'request type must be "infer" or "stats", got {kind!r}'[:200])
            kwargs = observation_from_wire(msg)
        except Exception as e:  # noqa: BLE001 - a request the server cannot read runs nothing
            self.stats["requests"] += int(not counted)
            self.stats["error_replies"] += 1
            reason = f"request: {e}" if isinstance(e, ProtocolError) else f"request: {_short(e)}"
            reason = reason[:MAX_REASON_CHARS]
            log.warning("request from %s refused: %s", peer, reason)
            elapsed = time.perf_counter() - t_receive
            return self._result(request_id, None, None, reason, {"server_receive_to_reply_s": elapsed})
        t_decoded = time.perf_counter()
        loop = asyncio.get_running_loop()
        result, t_start = await loop.run_in_executor(self.executor, self._predict, kwargs)
        self.stats["predictions"] += 1
        self.stats["valid_chunks"] += int(result.valid)
        if not result.valid:
            log.info("request from %s: invalid chunk: %s", peer, result.reason[:MAX_REASON_CHARS])
        timing = {
            "decode_s": t_decoded - t_receive,
            "queue_s": t_start - t_decoded,
            "model_s": float(result.latency_s),
            "policy_total_s": float(result.total_s),
            "server_receive_to_reply_s": time.perf_counter() - t_receive,
        }
        return self._result(request_id, result.actions, result.times, result.reason, timing)

    def _predict(self, kwargs: dict[str, Any]) -> tuple[Any, float]:
        """In the worker thread: the policy call, and when it started (to separate queueing from it)."""
        t_start = time.perf_counter()
        return self.policy.predict_chunk(**kwargs), t_start

    def _result(
        self,
        request_id: int | str | None,
        actions: np.ndarray | None,
        times: np.ndarray | None,
        reason: str,
        timing: dict[str, float],
    ) -> dict[str, Any]:
        return {
            "type": "result",
            "request_id": request_id,
            "valid": actions is not None,
            "reason": reason,
            "actions": None if actions is None else np.asarray(actions, dtype=np.float64),
            "times": np.asarray(self.policy.chunk_times() if times is None else times, dtype=np.float64),
            "timing": timing,
        }

    # --- serving --------------------------------------------------------------------------------------
    async def serve(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        ssl_context: ssl.SSLContext | None = None,
        stop: asyncio.Future | None = None,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        """Serve until `stop` completes (forever without one)."""
        from websockets.asyncio.server import serve

        async with serve(
            self.handler,
            host,
            port,
            ssl=ssl_context,
            compression=None,  # images and float bytes barely compress; deflate would cost CPU and memory
            max_size=MAX_MESSAGE_BYTES,
            max_queue=4,  # frames buffered per connection before TCP back-pressure on the client
            write_limit=2**16,
            open_timeout=10,
            close_timeout=5,
            ping_interval=20,
            ping_timeout=20,
        ) as server:
            sock = next(iter(server.sockets))
            address = sock.getsockname()
            url = f"{'wss' if ssl_context else 'ws'}://{address[0]}:{address[1]}"
            if on_ready:
                on_ready(url)
            await (stop if stop is not None else asyncio.get_running_loop().create_future())
        self.executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------- CLI
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from pixelvla_ros.inference.engine import BACKENDS
    from pixelvla_ros.model.pixelvla import DTYPE_CHOICES

    p = argparse.ArgumentParser(
        prog="policy_server",
        description="Serve a PixelVLA checkpoint's Policy over WebSocket + msgpack to robot PCs "
        "(client: pixelvla_ros.inference.remote.RemotePolicy).",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (config + weights)")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind; 0.0.0.0 exposes it to the network")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--token-file", help=f"file holding the shared token (else the env var {TOKEN_ENV})")
    p.add_argument("--tls-cert", help="PEM certificate: serve wss:// (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    p.add_argument(
        "--backend",
        choices=[b for b in BACKENDS if b != "remote"],
        help="inference engine of the served Policy (default: Policy's, eager)",
    )
    p.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    p.add_argument(
        "--send-timeout-s",
        type=float,
        default=SEND_TIMEOUT_S,
        help="drop a client that has not read its reply after this long",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """policy_server: load the checkpoint, then serve it until SIGINT / SIGTERM. Exit status 2 for a bad
    argument, a missing token or an unloadable checkpoint."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s policy_server: %(message)s")
    logging.getLogger("websockets").setLevel(logging.ERROR)  # we log connections ourselves, one line each
    try:
        token = read_token(args.token_file)
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        ssl_context = None
        if args.tls_cert:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        from pixelvla_ros.model.checkpoint import read_checkpoint_config
        from pixelvla_ros.policy import Policy

        digest = checkpoint_hash(read_checkpoint_config(args.checkpoint))
        device = None if args.device == "auto" else args.device
        engine = {"backend": args.backend} if args.backend else {}
        worker = policy_worker()
        policy = worker.submit(
            Policy.from_checkpoint, args.checkpoint, device=device, dtype=args.dtype, **engine
        ).result()
        server = PolicyServer(
            policy,
            token,
            digest,
            max_connections=args.max_connections,
            send_timeout_s=args.send_timeout_s,
            executor=worker,
        )
    except Exception as e:  # noqa: BLE001 - a start-up failure is reported, not a traceback
        print(f"policy_server: {_short(e)}", file=sys.stderr)
        return 2

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

        def ready(url: str) -> None:
            log.info(
                "serving %s (hash %s) on %s, %s %s %s, token required",
                args.checkpoint,
                digest[:12],
                url,
                server.metadata()["backend"],
                policy.device,
                policy.dtype,
            )

        await server.serve(args.host, args.port, ssl_context, stop, ready)
        log.info("stopped: %s", json.dumps(server.stats))

    try:
        asyncio.run(run())
    except OSError as e:  # the port is taken, the address not ours
        print(f"policy_server: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
