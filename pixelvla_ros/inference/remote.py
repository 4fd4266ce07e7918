"""RemotePolicy: the Policy interface, run by a policy server (pixelvla_ros.inference.server) elsewhere.

    policy = RemotePolicy.connect("ws://gpu-pc:8765", token, timeout_s=1.0,
                                  expected_checkpoint_hash="c38d...")  # RemotePolicyError if refused
    res = policy.predict_chunk(rgb, "pick up the red cube", prompts, None, proprio, camera)
    policy.last_timing   # {"round_trip_s", "model_s", "overhead_s", ...} of the last request

The nodes and evaluation use it exactly like Policy: chunk_size, commit_steps, proprio_dim, checkpoint,
device, dtype, preprocess_config, chunk_times() and predict_chunk(). The robot side never trusts the
network: every chunk received is checked here again (shape, finiteness, safety.check_chunk with this
side's limits), and predict_chunk never raises. A lost server, a timeout or a malformed reply gives
valid=False with a reason starting "remote:" and no motion; the connection is then re-opened with
exponential back-off (RECONNECT_FIRST_S doubling to RECONNECT_MAX_S), one attempt per call at most and
never for longer than the request timeout, so calls return invalid results promptly meanwhile. Every
re-opened connection's handshake must match the first one's checkpoint hash.

Synchronous (websockets' sync client): the policy node calls predict_chunk from its inference thread.
"""

from __future__ import annotations

import inspect
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pixelvla_ros.action_space import ACTION_DIM
from pixelvla_ros.camera import CameraModel
from pixelvla_ros.inference.wire import (
    MAX_MESSAGE_BYTES,
    PROTOCOL,
    PROTOCOL_VERSION,
    camera_to_wire,
    encode_array,
    pack,
    prompt_to_wire,
    unpack,
)
from pixelvla_ros.policy import ActionChunkResult
from pixelvla_ros.preprocessing import PreprocessConfig
from pixelvla_ros.prompts import VisualPrompt
from pixelvla_ros.safety import SafetyLimits, UnsafeChunkError, check_chunk

__all__ = ["RemotePolicy", "RemotePolicyError"]

DEFAULT_TIMEOUT_S = 2.0
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.1, 2.0
CLOSE_TIMEOUT_S = 0.5
WATCHDOG_BYTES = 2**16


class RemotePolicyError(ConnectionError):
    """The policy server cannot be reached, refused the token, or serves something other than expected."""


class RemotePolicy:
    """A policy server's Policy behind the Policy interface; build it with RemotePolicy.connect."""

    def __init__(
        self,
        url: str,
        token: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        expected_checkpoint_hash: str | None = None,
        limits: SafetyLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Not connected yet: connect() opens the connection and checks the handshake."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.url = url
        self._token = token
        self.timeout_s = float(timeout_s)
        self.expected_checkpoint_hash = expected_checkpoint_hash
        self.limits = limits or SafetyLimits()
        self.ssl_context = ssl_context
        self.metadata: dict[str, Any] = {}
        self.last_timing: dict[str, float] = {}
        self.backend = "remote"  # as Policy.backend; the server's own backend is in metadata
        self.warm_up_s: float | None = None  # the server warmed its model up before serving
        self.reconnects = 0
        self._ws: Any = None
        self._lock = threading.Lock()  # one request in flight: replies are matched in order
        self._request_id = 0
        self._backoff_s = RECONNECT_FIRST_S
        self._next_attempt = 0.0
        self._last_error = ""

    @classmethod
    def connect(
        cls,
        url: str,
        token: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        expected_checkpoint_hash: str | None = None,
        limits: SafetyLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> RemotePolicy:
        """Open ws:// or wss:// `url`, authenticate with `token` and check the server's handshake (protocol
        version; checkpoint hash when expected_checkpoint_hash is given). timeout_s bounds this and every
        later request. Raises RemotePolicyError saying what failed."""
        policy = cls(url, token, timeout_s, expected_checkpoint_hash, limits, ssl_context)
        policy._open(time.monotonic() + policy.timeout_s)
        return policy

    # --- the Policy interface -------------------------------------------------------------------------
    @property
    def chunk_size(self) -> int:
        return int(self.metadata["chunk_size"])

    @property
    def commit_steps(self) -> int:
        return int(self.metadata["commit_steps"])

    @property
    def proprio_dim(self) -> int:
        return int(self.metadata["proprio_dim"])

    @property
    def checkpoint(self) -> str:
        """Where the model runs, for logs: "remote:<url> <checkpoint folder name>"."""
        return f"remote:{self.url} {self.metadata.get('checkpoint_name', '')}"

    @property
    def checkpoint_hash(self) -> str:
        return str(self.metadata["checkpoint_hash"])

    @property
    def device(self) -> torch.device:
        """The CPU: nothing runs locally (the server's device is server_device)."""
        return torch.device("cpu")

    @property
    def server_device(self) -> str:
        return str(self.metadata.get("device", ""))

    @property
    def dtype(self) -> torch.dtype | str:
        """The server's weight dtype: a torch.dtype when the handshake names one, else its string."""
        name = str(self.metadata.get("dtype", ""))
        value = getattr(torch, name.removeprefix("torch."), None)
        return value if isinstance(value, torch.dtype) else name

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """The served checkpoint's preprocessing configuration, from the handshake."""
        return self._preprocess_config

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def chunk_times(self) -> np.ndarray:
        """(N_c,) s after the image stamp, as the server's Policy reports them."""
        return self._times.copy()

    def predict_chunk(
        self,
        image: np.ndarray,
        instruction: str | None,
        prompts: Sequence[VisualPrompt] = (),
        object_mask: np.ndarray | None = None,
        proprio: np.ndarray | None = None,
        camera: CameraModel | None = None,
    ) -> ActionChunkResult:
        """Policy.predict_chunk on the server: the same arguments, a chunk checked again here, or an
        invalid result with the reason. Never raises; returns within about timeout_s."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s
        with self._lock:
            try:
                return self._predict(t0, deadline, image, instruction, prompts, object_mask, proprio, camera)
            except Exception as e:  # noqa: BLE001 - any doubt means no motion; the caller gets the reason
                self._drop(f"{type(e).__name__}: {e}")
                return self._invalid(t0, 0.0, f"remote: {type(e).__name__}: {e}")

    def close(self) -> None:
        """Close the connection (a later predict_chunk re-opens it)."""
        with self._lock:
            ws, self._ws = self._ws, None
            self._next_attempt = 0.0
            if ws is not None:
                try:
                    ws.close()  # the closing handshake, bounded by CLOSE_TIMEOUT_S
                except Exception:  # noqa: BLE001 - then without it
                    _abort(ws)

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connection -----------------------------------------------------------------------------------
    def _open(self, deadline: float) -> None:
        """Connect, authenticate and check the handshake before `deadline` (time.monotonic); raises
        RemotePolicyError. On success self._ws is the open connection."""
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RemotePolicyError(f"no time left to connect to {self.url}")
        try:
            ws = connect(
                self.url,
                open_timeout=remaining,
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=MAX_MESSAGE_BYTES,
                compression=None,
                proxy=None,  # a robot cell's policy server is never reached through a web proxy
                ssl=self.ssl_context,
                ping_interval=5,  # detects a dead server between requests
                ping_timeout=5,
                **_direct_connection(connect),
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as e:
            raise RemotePolicyError(f"cannot connect to {self.url}: {type(e).__name__}: {e}") from e
        try:
            ws.send(pack({"type": "auth", "token": self._token, "protocol_version": PROTOCOL_VERSION}))
            reply = ws.recv(timeout=max(deadline - time.monotonic(), 1e-3), decode=False)
            metadata, config = self._check_metadata(unpack(reply))
        except ConnectionClosed as e:
            _abort(ws)
            rcvd = e.rcvd
            why = f"{rcvd.code} {rcvd.reason}" if rcvd else "no close frame"
            raise RemotePolicyError(f"{self.url} closed the connection: {why}") from e
        except TimeoutError as e:
            _abort(ws)
            raise RemotePolicyError(f"{self.url} sent no handshake within the timeout") from e
        except RemotePolicyError:
            _abort(ws)
            raise
        except Exception as e:  # noqa: BLE001 - a handshake we cannot read is a refusal
            _abort(ws)
            why = f"{type(e).__name__}: {e}"
            raise RemotePolicyError(f"{self.url} sent an unreadable handshake: {why}") from e
        if not self.metadata:  # the first handshake fixes the chunk layout (later ones have the same hash)
            self._preprocess_config = config
            self._times = metadata["chunk_times"].astype(np.float64)
        self.metadata = metadata
        self._ws = ws

    def _check_metadata(self, meta: Any) -> tuple[dict[str, Any], PreprocessConfig]:
        """The handshake, checked (protocol, version, the expected checkpoint, a usable chunk layout), and
        its preprocessing config."""
        if not isinstance(meta, dict) or meta.get("type") != "metadata":
            raise RemotePolicyError(f"{self.url} did not answer with a {PROTOCOL} handshake")
        if meta.get("protocol") != PROTOCOL or meta.get("protocol_version") != PROTOCOL_VERSION:
            raise RemotePolicyError(
                f"{self.url} speaks {meta.get('protocol')!r} version {meta.get('protocol_version')!r}; "
                f"this client speaks {PROTOCOL} version {PROTOCOL_VERSION}"
            )
        digest = meta.get("checkpoint_hash")
        want = self.expected_checkpoint_hash or self.metadata.get("checkpoint_hash")
        if want is not None and digest != want:
            what = "expected" if self.expected_checkpoint_hash else "served before the reconnection"
            raise RemotePolicyError(
                f"{self.url} serves checkpoint {meta.get('checkpoint_name')!r} with hash {digest}, "
                f"not the {what} {want}"
            )
        chunk, times = meta.get("chunk_size"), meta.get("chunk_times")
        if (
            type(chunk) is not int
            or chunk < 1
            or not isinstance(times, np.ndarray)
            or times.shape != (chunk,)
            or not np.all(np.isfinite(times))
            or not isinstance(meta.get("preprocess_config"), dict)
        ):
            raise RemotePolicyError(f"{self.url} sent a handshake without a usable chunk layout")
        try:
            config = PreprocessConfig.from_dict(dict(meta["preprocess_config"]))
        except (ValueError, TypeError, KeyError) as e:
            raise RemotePolicyError(f"{self.url} sent an unusable preprocessing config: {e}") from e
        for key in ("commit_steps", "proprio_dim"):
            if type(meta.get(key)) is not int:
                raise RemotePolicyError(f"{self.url} sent a handshake without an integer {key}")
        return meta, config

    def _ensure_connected(self, deadline: float) -> str:
        """Return "" when connected (re-opening the connection if the back-off allows), else why not."""
        if self._ws is not None:
            return ""
        now = time.monotonic()
        if now < self._next_attempt:
            return (
                f"remote: not connected to {self.url} ({self._last_error}); "
                f"next attempt in {self._next_attempt - now:.2f} s"
            )
        try:
            self._open(deadline)
        except RemotePolicyError as e:
            self._schedule_retry(str(e))
            return f"remote: reconnection failed: {e}"
        self.reconnects += 1
        self._backoff_s = RECONNECT_FIRST_S
        return ""

    def _schedule_retry(self, error: str) -> None:
        self._last_error = error
        self._next_attempt = time.monotonic() + self._backoff_s
        self._backoff_s = min(2.0 * self._backoff_s, RECONNECT_MAX_S)

    def _drop(self, error: str) -> None:
        """Abandon the connection (a late reply must never be taken for the next request's) and schedule
        the next attempt to re-open it."""
        if self._ws is not None:
            _abort(self._ws)
            self._ws = None
            self._schedule_retry(error)

    # --- one request ----------------------------------------------------------------------------------
    def _predict(
        self,
        t0: float,
        deadline: float,
        image: Any,
        instruction: Any,
        prompts: Sequence[VisualPrompt],
        object_mask: Any,
        proprio: Any,
        camera: Any,
    ) -> ActionChunkResult:
        from websockets.exceptions import ConnectionClosed

        try:
            self._request_id += 1
            request = _request(self._request_id, image, instruction, prompts, object_mask, proprio, camera)
            payload = pack(request)
        except Exception as e:  # noqa: BLE001 - an observation we cannot send runs nothing
            return self._invalid(t0, 0.0, f"request: {type(e).__name__}: {e}")
        if len(payload) > MAX_MESSAGE_BYTES:
            why = f"request: {len(payload)} bytes, over the {MAX_MESSAGE_BYTES} byte limit"
            return self._invalid(t0, 0.0, why)
        t_encoded = time.perf_counter()
        why = self._ensure_connected(deadline)
        if why:
            return self._invalid(t0, 0.0, why)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return self._invalid(t0, 0.0, f"remote: no time left for the request after {self.timeout_s:g} s")
        t_send = time.perf_counter()
        ws = self._ws
        # send() has no timeout: a large request to a server that stopped reading would block it once the
        # socket buffers are full, so a watchdog shuts the socket down at the deadline. Small requests
        # always fit in the buffers (one request in flight per connection) and skip its thread.
        watchdog = None
        if len(payload) > WATCHDOG_BYTES:
            watchdog = threading.Timer(remaining, _shutdown, (ws,))
            watchdog.daemon = True
            watchdog.start()
        try:
            ws.send(payload)
            data = ws.recv(timeout=max(deadline - time.monotonic(), 1e-3), decode=False)
        except TimeoutError:
            self._drop(f"no reply within {self.timeout_s:g} s")
            return self._invalid(t0, 0.0, f"remote: no reply within {self.timeout_s:g} s")
        except ConnectionClosed as e:
            if time.monotonic() >= deadline:  # the watchdog closed it
                self._drop(f"request not sent within {self.timeout_s:g} s")
                return self._invalid(t0, 0.0, f"remote: request not sent within {self.timeout_s:g} s")
            rcvd = e.rcvd
            why = f"{rcvd.code} {rcvd.reason}".strip() if rcvd else "no close frame"
            self._drop(f"connection lost ({why})")
            return self._invalid(t0, 0.0, f"remote: connection to {self.url} lost ({why})")
        finally:
            if watchdog is not None:
                watchdog.cancel()
        t_reply = time.perf_counter()
        try:
            reply = unpack(data)
            if not isinstance(reply, dict) or reply.get("type") != "result":
                raise ValueError("the reply is not a result map")
            if reply.get("request_id") != self._request_id:
                raise ValueError(f"reply to request {reply.get('request_id')!r}, expected {self._request_id}")
            timing = reply.get("timing")
            timing = {k: float(v) for k, v in timing.items() if isinstance(v, (int, float))}
        except Exception as e:  # noqa: BLE001 - a reply we cannot read: the connection is suspect
            self._drop(f"malformed reply: {e}")
            return self._invalid(t0, 0.0, f"remote: malformed reply: {type(e).__name__}: {e}")
        model_s = timing.get("model_s", 0.0)
        round_trip = t_reply - t_send
        self.last_timing = {
            **timing,
            "client_encode_s": t_encoded - t0,
            "round_trip_s": round_trip,
            "overhead_s": round_trip - model_s,  # transport, (de)serialization, server queue and checks
        }
        if reply.get("valid") is not True:
            reason = reply.get("reason")
            if not isinstance(reason, str) or not reason:
                reason = "remote: invalid chunk without a reason"
            return self._invalid(t0, model_s, reason)
        actions = reply.get("actions")
        expected = (self.chunk_size, ACTION_DIM)
        if not isinstance(actions, np.ndarray) or actions.dtype != np.float64 or actions.shape != expected:
            got = type(actions).__name__
            if isinstance(actions, np.ndarray):
                got = f"{actions.dtype} {actions.shape}"
            return self._invalid(t0, model_s, f"remote: actions must be float64 {expected}, got {got}")
        if not np.all(np.isfinite(actions)):
            return self._invalid(t0, model_s, "remote: actions contain NaN or inf")
        try:
            actions = check_chunk(actions, self.limits)
        except UnsafeChunkError as e:
            return self._invalid(t0, model_s, f"safety: {e}")
        self.last_timing["client_total_s"] = time.perf_counter() - t0
        return ActionChunkResult(actions, self.chunk_times(), model_s, time.perf_counter() - t0, True, "")

    def _invalid(self, t0: float, latency: float, reason: str) -> ActionChunkResult:
        times = self.chunk_times() if self.metadata else np.zeros(0)
        return ActionChunkResult(None, times, latency, time.perf_counter() - t0, False, reason)


def _request(
    request_id: int,
    image: Any,
    instruction: Any,
    prompts: Sequence[VisualPrompt],
    object_mask: Any,
    proprio: Any,
    camera: Any,
) -> dict[str, Any]:
    """predict_chunk's arguments -> an infer message; raises for what cannot be sent (the local Policy
    would refuse it too)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if instruction is not None and not isinstance(instruction, str):
        raise TypeError(f"instruction must be a string or None, got {type(instruction).__name__}")
    if object_mask is not None:
        mask = np.asarray(object_mask)
        # Policy takes 0/1 numbers as a mask too; the wire takes bool only.
        if mask.dtype != np.bool_ and mask.dtype.kind in "biuf" and np.all((mask == 0) | (mask == 1)):
            mask = mask.astype(bool)
        object_mask = mask
    for p in prompts:
        if not isinstance(p, VisualPrompt):
            raise TypeError(f"prompts must be VisualPrompts, got {type(p).__name__}")
    if camera is not None and not isinstance(camera, CameraModel):
        raise TypeError(f"camera must be a CameraModel, got {type(camera).__name__}")
    return {
        "type": "infer",
        "request_id": request_id,
        "image": encode_array(image),
        "instruction": instruction,
        "prompts": [prompt_to_wire(p) for p in prompts],
        "object_mask": object_mask,
        "proprio": None if proprio is None else np.asarray(proprio, dtype=np.float64),
        "camera": None if camera is None else camera_to_wire(camera),
    }


def _direct_connection(connect: Any) -> dict[str, Any]:
    """websockets >= 17.1 wants `legacy=True` for a connection that outlives a `with` block (ours lives
    as long as the RemotePolicy); older versions have no such argument."""
    return {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


def _shutdown(ws: Any) -> None:
    """Shut a connection's socket down: wakes its reader thread and a send() blocked on it at once."""
    try:
        ws.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _abort(ws: Any) -> None:
    """Close a sync connection without waiting for a server that may be gone or hung."""
    _shutdown(ws)
    try:
        ws.close()
    except Exception:  # noqa: BLE001, S110 - the connection is being abandoned either way
        pass
