"""The policy server: one GPU machine runs a checkpoint's Policy for robot PCs without a GPU.

    policy_server --checkpoint checkpoints/tiny --token-file ~/.pixelvla_token       # ws://127.0.0.1:8765
    policy = RemotePolicy.connect("ws://gpu-pc:8765", token)                            # on the robot PC

The protocol, its limits and the reasons for websocket + msgpack: pixelvla_ros/inference/wire.py.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
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

from pixelvla_ros.inference.wire import (
    AUTH_CLOSE_CODE,
    AUTH_TIMEOUT_S,
    BUSY_CLOSE_CODE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_CONNECTIONS,
    MAX_IMAGE_SIDE,
    MAX_MESSAGE_BYTES,
    MAX_PROMPT_POINTS,
    MAX_PROMPTS,
    MAX_REASON_CHARS,
    MAX_TEXT_CHARS,
    MIN_TOKEN_CHARS,
    PROTOCOL,
    PROTOCOL_VERSION,
    SEND_TIMEOUT_S,
    STATS_KEYS,
    TOKEN_ENV,
    ProtocolError,
    check_keys,
    checkpoint_hash,
    observation_from_wire,
    pack,
    read_token,
    request_id_from_wire,
    short_error,
    unpack,
)
from pixelvla_ros.prompts import PROMPT_KINDS

__all__ = ["PolicyServer", "main", "policy_worker"]

log = logging.getLogger("pixelvla_ros.policy_server")


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
            log.warning("connection from %s lost: %s", peer, short_error(e))
        except Exception as e:  # noqa: BLE001 - one connection's failure must not reach the server
            self.stats["closed_abnormally"] += 1
            log.error("connection from %s: internal error, closing it: %s", peer, short_error(e))
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
            log.warning("connection from %s lost before its reply was sent: %s", peer, short_error(e))
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
                raise ProtocolError(f"malformed msgpack: {short_error(e)}") from e
            if not isinstance(msg, dict):
                raise ProtocolError(f"a request must be a map, got {type(msg).__name__}")
            request_id = request_id_from_wire(msg.get("request_id"))
            kind = msg.get("type")
            if kind == "stats":
                check_keys(msg, STATS_KEYS, "a stats request")
                return {"type": "stats", "request_id": request_id, "stats": dict(self.stats)}
            self.stats["requests"] += 1
            counted = True
            if kind != "infer":
                raise ProtocolError(f'request type must be "infer" or "stats", got {kind!r}'[:200])
            kwargs = observation_from_wire(msg)
        except Exception as e:  # noqa: BLE001 - a request the server cannot read runs nothing
            self.stats["requests"] += int(not counted)
            self.stats["error_replies"] += 1
            reason = f"request: {e}" if isinstance(e, ProtocolError) else f"request: {short_error(e)}"
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
        print(f"policy_server: {short_error(e)}", file=sys.stderr)
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
