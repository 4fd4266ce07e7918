"""The policy server (pixelvla_ros.inference.server) and its client RemotePolicy, end to end: the real server
in a subprocess on a free port with the packaged tiny checkpoint on the CPU, the real client.

Covers: the remote chunk equals the local Policy's, the handshake, token refusal, a killed / hung /
restarted server, clients that vanish mid-request or never read, and 10,000+ malformed requests."""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from pixelvla_ros.inference.remote import RemotePolicy, RemotePolicyError
from pixelvla_ros.inference.wire import (
    MAX_MESSAGE_BYTES,
    PROTOCOL,
    PROTOCOL_VERSION,
    camera_to_wire,
    checkpoint_hash,
    pack,
    prompt_to_wire,
    unpack,
)
from pixelvla_ros.model.checkpoint import read_checkpoint_config
from pixelvla_ros.model.testing import oblique_camera, sample_input
from pixelvla_ros.policy import Policy
from pixelvla_ros.prompts import VisualPrompt

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "tiny"
TOKEN = "test-token-0123456789abcdef"
SEND_TIMEOUT_S = 2.0  # the server drops a client that does not read its reply for this long
READY_TIMEOUT_S = 120.0  # loading torch + transformers on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """The policy_server executable in a subprocess; its log goes to a file (a pipe nobody reads would
    fill up and block the server)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.token_file = folder / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / f"server{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        cmd = [sys.executable, "-m", "pixelvla_ros.inference.server", "--checkpoint", str(CHECKPOINT)]
        cmd += ["--port", str(self.port), "--token-file", str(self.token_file), "--device", "cpu"]
        cmd += ["--send-timeout-s", str(SEND_TIMEOUT_S)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("PIXELVLA_SERVER_TOKEN", None)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {self.log_path.read_text()[-3000:]}"
            if "serving" in self.log_path.read_text():
                return
            time.sleep(0.1)
        pytest.fail(f"server not ready within {READY_TIMEOUT_S} s: {self.log_path.read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(tmp_path_factory.mktemp("policy_server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local_policy(server: ServerProcess) -> Policy:
    """Loaded while the server starts (the server fixture comes first)."""
    return Policy.from_checkpoint(CHECKPOINT, device="cpu")


@pytest.fixture
def url(server: ServerProcess, local_policy: Policy) -> str:
    server.wait_ready()
    return server.url


def raw_connect(url: str, **kw: Any) -> Any:
    kw = {"open_timeout": 10, "close_timeout": 2, "proxy": None, "compression": None, "max_size": None, **kw}
    if "legacy" in inspect.signature(ws_connect).parameters:
        kw["legacy"] = True  # websockets >= 17.1: a connection used outside a `with` block
    return ws_connect(url, **kw)


def authed(url: str, token: str = TOKEN, **kw: Any) -> tuple[Any, dict]:
    ws = raw_connect(url, **kw)
    ws.send(pack({"type": "auth", "token": token, "protocol_version": PROTOCOL_VERSION}))
    return ws, unpack(ws.recv(timeout=10))


def server_stats(url: str) -> dict[str, int]:
    ws, _ = authed(url)
    try:
        ws.send(pack({"type": "stats"}))
        return unpack(ws.recv(timeout=10))["stats"]
    finally:
        ws.close()


def observation(mode: str, seed: int = 0) -> dict[str, Any]:
    """predict_chunk's keyword arguments for an input mode of the tiny checkpoint (proprio_dim 4)."""
    x = sample_input("text" if mode == "text_point" else mode, seed=seed, proprio_dim=4)
    prompts = list(x.prompts)
    if mode == "text_point":
        prompts = [VisualPrompt.point([[20.0, 12.5]])]
    camera = oblique_camera(x.image.shape[1], x.image.shape[0])
    return {
        "image": x.image,
        "instruction": x.task,
        "prompts": prompts,
        "object_mask": x.object_mask,
        "proprio": x.proprio,
        "camera": camera,
    }


def infer_message(obs: dict[str, Any], request_id: int) -> dict[str, Any]:
    return {
        "type": "infer",
        "request_id": request_id,
        "image": obs["image"],
        "instruction": obs["instruction"],
        "prompts": [prompt_to_wire(p) for p in obs["prompts"]],
        "object_mask": obs["object_mask"],
        "proprio": None if obs["proprio"] is None else np.asarray(obs["proprio"], dtype=np.float64),
        "camera": None if obs["camera"] is None else camera_to_wire(obs["camera"]),
    }


# ------------------------------------------------------------------------------------- equivalence
def test_remote_chunk_equals_local(url: str, local_policy: Policy) -> None:
    with RemotePolicy.connect(url, TOKEN, timeout_s=10.0) as remote:
        for mode in ("text", "text_point", "text_mask", "text_prompts", "prompts_only", "all"):
            for seed in (0, 1):
                obs = observation(mode, seed)
                here, there = local_policy.predict_chunk(**obs), remote.predict_chunk(**obs)
                assert here.valid and there.valid, (mode, here.reason, there.reason)
                np.testing.assert_allclose(there.actions, here.actions, rtol=0, atol=1e-6)
                np.testing.assert_array_equal(there.times, here.times)
                timing = remote.last_timing
                assert there.latency_s == timing["model_s"] > 0
                assert timing["round_trip_s"] >= timing["server_receive_to_reply_s"] >= timing["model_s"]
                assert there.total_s >= timing["round_trip_s"]
        # Invalid locally -> invalid remotely, for the same reason (the server's Policy gives it).
        obs = observation("text")
        obs["proprio"] = None
        here, there = local_policy.predict_chunk(**obs), remote.predict_chunk(**obs)
        assert not here.valid and not there.valid and there.actions is None
        assert there.reason == here.reason
        obs = observation("text")
        obs["image"] = obs["image"].astype(np.float64)  # refused by the server before anything runs
        there = remote.predict_chunk(**obs)
        assert not there.valid and there.reason.startswith("request:") and "dtype" in there.reason


# ---------------------------------------------------------------------------------------- handshake
def test_handshake(url: str, local_policy: Policy) -> None:
    digest = checkpoint_hash(read_checkpoint_config(CHECKPOINT))
    with RemotePolicy.connect(url, TOKEN, timeout_s=5.0, expected_checkpoint_hash=digest) as remote:
        meta = remote.metadata
        assert meta["protocol"] == PROTOCOL and meta["protocol_version"] == PROTOCOL_VERSION
        assert meta["checkpoint_hash"] == digest and meta["checkpoint_name"] == "tiny"
        assert meta["chunk_size"] == remote.chunk_size == local_policy.chunk_size == 8
        assert meta["commit_steps"] == remote.commit_steps == local_policy.commit_steps
        assert meta["proprio_dim"] == remote.proprio_dim == 4
        assert meta["action_space"] == local_policy.preprocess_config.action_space.to_dict()
        assert meta["preprocess_config"] == local_policy.preprocess_config.to_dict()
        assert remote.preprocess_config.to_dict() == local_policy.preprocess_config.to_dict()
        np.testing.assert_array_equal(remote.chunk_times(), local_policy.chunk_times())
        assert meta["input_modes"]["prompt_kinds"] == ["point", "line", "box", "mask"]
        assert meta["input_modes"]["object_mask"] and meta["input_modes"]["text"]
        assert meta["backend"] == "eager" and meta["device"] == "cpu"
        assert remote.dtype == local_policy.dtype
        assert str(remote.device) == "cpu" and remote.server_device == "cpu"
        assert remote.checkpoint == f"remote:{url} tiny"
        assert meta["limits"]["max_message_bytes"] == MAX_MESSAGE_BYTES
    with pytest.raises(RemotePolicyError, match="hash"):
        RemotePolicy.connect(url, TOKEN, timeout_s=5.0, expected_checkpoint_hash="0" * 64)


def test_token_refused_nothing_runs(url: str) -> None:
    before = server_stats(url)
    request = pack(infer_message(observation("text"), 1))
    cases = {
        "wrong token": pack({"type": "auth", "token": "x" * 26, "protocol_version": PROTOCOL_VERSION}),
        "no token": request,  # a request straight away, without the auth message
        "text frame": "hello",
    }
    for name, first in cases.items():
        ws = raw_connect(url)
        ws.send(first)
        try:
            ws.send(request)  # must not run either
        except ConnectionClosed:
            pass
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008, name
        assert ("authentication failed" if name == "wrong token" else "authentication required") in (
            info.value.rcvd.reason
        )
    with pytest.raises(RemotePolicyError, match="1008 authentication failed"):
        RemotePolicy.connect(url, "y" * 30, timeout_s=5.0)
    after = server_stats(url)
    assert after["auth_refused"] == before["auth_refused"] + len(cases) + 1
    assert after["predictions"] == before["predictions"] and after["requests"] == before["requests"]


# ------------------------------------------------------------------------------------ bad clients
def test_vanishing_and_non_reading_clients_do_not_block_others(url: str, local_policy: Policy) -> None:
    obs = observation("text")
    expected = local_policy.predict_chunk(**obs).actions
    before = server_stats(url)
    # A client that sends a request and disconnects before the reply.
    ws, _ = authed(url)
    ws.send(pack(infer_message(obs, 1)))
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.close()
    # A client that never reads: a tiny receive buffer, and its reader thread stops after one message.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    slow, _ = authed(url, sock=sock, max_queue=1)
    flood_sent = [0]

    def flood() -> None:
        # Small requests, each answered with an error reply the client never reads; sending stops once
        # the server stops reading it (back-pressure) and ends when the server drops it.
        message = pack({"type": "infer", "request_id": "x" * 100})
        try:
            for _ in range(20000):
                slow.send(message)
                flood_sent[0] += 1
        except (ConnectionClosed, OSError):
            pass

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    with RemotePolicy.connect(url, TOKEN, timeout_s=5.0) as remote:
        t_end = time.monotonic() + SEND_TIMEOUT_S + 3.0
        served = 0
        while time.monotonic() < t_end:
            res = remote.predict_chunk(**obs)
            assert res.valid, res.reason
            np.testing.assert_allclose(res.actions, expected, rtol=0, atol=1e-6)
            served += 1
        assert served >= 5
        flooder.join(timeout=10)
        assert not flooder.is_alive(), "the non-reading client was never dropped"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = server_stats(url)
            if after["replies_undelivered"] > before["replies_undelivered"]:
                break
            time.sleep(0.1)
        assert after["slow_readers_dropped"] == before["slow_readers_dropped"] + 1
        assert after["replies_undelivered"] >= before["replies_undelivered"] + 1
        assert remote.predict_chunk(**obs).valid
    print(f"non-reading client: {flood_sent[0]} requests sent before it was dropped; {served} chunks served")
    slow.close()


# ---------------------------------------------------------------------------- lost server, back-off
def test_killed_hung_and_restarted_server(server: ServerProcess, url: str, local_policy: Policy) -> None:
    obs = observation("text_point")
    expected = local_policy.predict_chunk(**obs).actions
    timeout = 1.0
    remote = RemotePolicy.connect(url, TOKEN, timeout_s=timeout)
    assert remote.predict_chunk(**obs).valid
    big = {**obs, "image": np.zeros((2000, 2000, 3), np.uint8), "prompts": [], "camera": None}
    remote_big = RemotePolicy.connect(url, TOKEN, timeout_s=timeout)
    # Hung (SIGSTOP): no reply within the timeout -> invalid, promptly; a 12 MB request, more than the
    # socket buffers take, is not even sent within it.
    server.signal(signal.SIGSTOP)
    try:
        cases = ((remote, obs, "no reply within"), (remote_big, big, "not sent within"))
        for client, request, reason in cases:
            t0 = time.monotonic()
            res = client.predict_chunk(**request)
            assert time.monotonic() - t0 < timeout + 0.5
            assert not res.valid and res.actions is None and reason in res.reason, res.reason
    finally:
        server.signal(signal.SIGCONT)
    remote_big.close()
    # Killed: every call returns invalid at once while reconnection is tried with back-off.
    server.kill()
    reasons = []
    t_dead = time.monotonic()
    while time.monotonic() - t_dead < 1.5:
        t0 = time.monotonic()
        res = remote.predict_chunk(**obs)
        assert time.monotonic() - t0 < timeout + 0.5
        assert not res.valid and res.actions is None and res.reason.startswith("remote:")
        reasons.append(res.reason)
        time.sleep(0.02)
    attempts = sum("reconnection failed" in r for r in reasons)
    assert any("next attempt in" in r for r in reasons)
    assert 2 <= attempts <= 5, reasons  # 0.1, 0.2, 0.4, 0.8 s apart: not one attempt per call
    # Restarted on the same port: the client reconnects, checks the handshake again and serves.
    server.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        res = remote.predict_chunk(**obs)
        assert time.monotonic() - t0 < timeout + 0.5
        if res.valid:
            break
        time.sleep(0.05)
    assert res.valid, res.reason
    np.testing.assert_allclose(res.actions, expected, rtol=0, atol=1e-6)
    assert remote.reconnects >= 1
    remote.close()


# ------------------------------------------------------------------------------------------- fuzz
FUZZ_COUNT = 10_000


def _array_map(dtype: Any, shape: Any, data: Any, **extra: Any) -> dict[str, Any]:
    return {"__ndarray__": True, "dtype": dtype, "shape": shape, "data": data, **extra}


def malformed_messages(seed: int, count: int) -> list[tuple[str, bytes | str]]:
    """`count` requests the server must refuse (category, frame), deterministic for a seed. A few carry a
    readable observation the Policy refuses (empty mask, prompt off the image, ...): those run the
    preprocessing, never produce a chunk."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    mask = np.zeros((12, 16), dtype=bool)
    mask[2:6, 3:9] = True
    cam = camera_to_wire(oblique_camera(16, 12))
    base = {
        "type": "infer",
        "request_id": 7,
        "image": img,
        "instruction": "pick up the red block",
        "prompts": [prompt_to_wire(VisualPrompt.point([[4.0, 3.0]]))],
        "object_mask": mask,
        "proprio": np.array([0.5, 0.0, 0.2, 0.0]),
        "camera": cam,
    }
    valid = pack(base)

    def with_(key: str, value: Any) -> bytes:
        return pack({**base, key: value})

    def arr(a: np.ndarray) -> dict[str, Any]:
        return _array_map(a.dtype.str, list(a.shape), a.tobytes())

    nan_img = np.full((12, 16, 3), np.nan)
    wrong_values = {
        "image": [
            "img",
            3,
            None,
            True,
            [1, 2, 3],
            {},
            arr(img[..., 0]),
            arr(np.zeros((12, 16, 4), np.uint8)),
            arr(np.zeros((12, 16, 1), np.uint8)),
            arr(np.zeros((0, 16, 3), np.uint8)),
            arr(img.astype(np.float32)),
            arr(img.astype(np.float64)),
            arr(nan_img),
            arr(img.astype(np.int64)),
            arr(img.astype(bool)),
            arr(np.zeros((1, 4097, 3), np.uint8)),
            arr(np.zeros((2, 2, 2, 3), np.uint8)),
        ],
        "instruction": [3, 2.5, b"bytes", ["a"], {"a": 1}, "x" * 2001, True],
        "prompts": [
            "point",
            3,
            {"kind": "point"},
            [1, 2],
            [None],
            [{"kind": "star", "points": arr(np.zeros((1, 2)))}],
            [{"kind": "point"}],
            [{"kind": "point", "points": arr(np.zeros((1, 3)))}],
            [{"kind": "point", "points": arr(np.zeros((1, 2), np.int64))}],
            [{"kind": "point", "points": arr(np.full((1, 2), np.inf))}],
            [{"kind": "point", "points": arr(np.zeros((1, 2))), "labels": arr(np.array([0.5]))}],
            [{"kind": "point", "points": arr(np.zeros((1, 2))), "labels": arr(np.array([2]))}],
            [{"kind": "point", "points": arr(np.zeros((1, 2))), "colour": "red"}],
            [{"kind": "box", "points": arr(np.zeros((3, 2)))}],
            [{"kind": "line", "points": arr(np.zeros((1, 2)))}],
            [{"kind": "mask", "mask": arr(np.ones((5, 5), bool))}],
            [{"kind": "mask", "mask": arr(np.ones((12, 16), np.uint8))}],
            [{"kind": "mask", "points": arr(np.zeros((1, 2)))}],
            [{"kind": "point", "points": arr(np.zeros((2000, 2)))}],
            [prompt_to_wire(VisualPrompt.point([[1.0, 1.0]]))] * 33,
        ],
        "object_mask": [
            1,
            "mask",
            [[True]],
            arr(np.ones((12, 15), bool)),
            arr(np.ones((12, 16), np.uint8)),
            arr(np.ones((12, 16), np.float32)),
            arr(np.ones((12, 16, 1), bool)),
        ],
        "proprio": [
            "p",
            [0.1, 0.2, 0.3, 0.4],
            arr(np.zeros((2, 2))),
            arr(np.zeros(4, np.int64)),
            arr(np.array([0.1, np.nan, 0.0, 0.0])),
            arr(np.array([np.inf, 0.0, 0.0, 0.0])),
            arr(np.zeros(100)),
        ],
        "camera": [
            "cam",
            [1, 2],
            {},
            {**cam, "K": arr(np.zeros((3, 4)))},
            {**cam, "K": arr(np.full((3, 3), np.nan))},
            {**cam, "width": "16"},
            {**cam, "width": 0},
            {**cam, "T_base_camera": arr(np.ones((4, 4)))},
            {**cam, "D": arr(np.zeros(3))},
            {**cam, "extra": 1},
        ],
        "request_id": [[1], 1.5, {"a": 1}, "r" * 200, True],
        "type": ["run", 1, None, "auth"],
    }
    bad_array_maps = [
        _array_map("|O", [1], b"\0" * 8),
        _array_map("<U4", [1], b"\0" * 16),
        _array_map("V8", [1], b"\0" * 8),
        _array_map(">f8", [1], b"\0" * 8),
        _array_map(5, [1], b"\0"),
        _array_map("|u1", [-1, 16, 3], b""),
        _array_map("|u1", [1.5, 16, 3], b"\0"),
        _array_map("|u1", "12,16,3", b"\0"),
        _array_map("|u1", [100_000, 100_000, 3], b"\0" * 10),
        _array_map("|u1", [2**62, 2**62, 3], b"\0"),
        _array_map("|u1", [1, 1, 1, 1, 1, 1], b"\0"),
        _array_map("|u1", [12, 16, 3], "text"),
        _array_map("|u1", [12, 16, 3], b"\0" * 10),
        _array_map("|b1", [12, 16], bytes([7]) * 192),
        _array_map("|u1", [12, 16, 3], img.tobytes(), extra=1),
        {"__ndarray__": True, "dtype": "|u1"},
        {"__ndarray__": False, "dtype": "|u1", "shape": [1], "data": b"\0"},
    ]
    policy_refusals = [  # readable, refused by the Policy's preprocessing
        with_("object_mask", np.zeros((12, 16), bool)),  # empty mask
        with_("prompts", [prompt_to_wire(VisualPrompt.point([[400.0, 3.0]]))]),  # off the image
        with_("proprio", np.zeros(3)),  # wrong length
        pack({**base, "instruction": None, "prompts": [], "object_mask": None}),  # nothing to act on
    ]
    specials = [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x91" * 100_000 + b"\xc0",  # nested too deep
        b"\xdd\xff\xff\xff\xff",  # array of 4 billion items, announced
        b"\xdb\xff\xff\xff\xff",  # str of 4 GiB, announced
        b"\xc7\x01\x05a",  # ext type
        b"\xa3\xff\xfe\xfd",  # invalid UTF-8 str
        b"\x81\x01\x02",  # int map key
        msgpack.packb({"type": "infer", "image": msgpack.ExtType(1, b"x")}),
        valid + b"\x00",  # trailing data
    ]
    flip_targets = []
    for token in (b"type", b"request_id", b"image", b"__ndarray__", b"dtype", b"|u1", b"shape"):
        j = valid.index(token)
        flip_targets += range(j, j + len(token))
    j = valid.index(b"shape") + len(b"shape")
    assert valid[j : j + 4] == bytes([0x93, 12, 16, 3])  # the image's shape, a 3-item list
    flip_targets += range(j, j + 4)
    out: list[tuple[str, bytes | str]] = []
    fields = sorted(wrong_values)
    for _ in range(count):
        category = int(rng.integers(0, 10))
        if category == 0:
            out.append(("random_bytes", rng.bytes(int(rng.integers(0, 300)))))
        elif category == 1:
            out.append(("truncated", valid[: int(rng.integers(0, len(valid)))]))
        elif category == 2:
            value = [1, "x", None, 2.5, [1, 2], b"raw", True][int(rng.integers(0, 7))]
            out.append(("wrong_top_level", msgpack.packb(value)))
        elif category in (3, 4):
            key = fields[int(rng.integers(0, len(fields)))]
            values = wrong_values[key]
            out.append((f"wrong_{key}", with_(key, values[int(rng.integers(0, len(values)))])))
        elif category == 5:
            key = ["image", "object_mask", "proprio"][int(rng.integers(0, 3))]
            bad = bad_array_maps[int(rng.integers(0, len(bad_array_maps)))]
            out.append(("bad_array_map", with_(key, bad)))
        elif category == 6:
            message = dict(base)
            variant = int(rng.integers(0, 3))
            if variant == 0:
                message["colour"] = "red"  # an unknown key
            elif variant == 1:
                del message["image"]  # a missing one
            else:
                message["x_proprio"] = message.pop("proprio")  # a misspelt one
            out.append(("unknown_or_missing_keys", pack(message)))
        elif category == 7:
            out.append(("special", specials[int(rng.integers(0, len(specials)))]))
        elif category == 8:
            out.append(("text_frame", "".join(chr(int(c)) for c in rng.integers(32, 127, size=20))))
        elif rng.random() < 0.05:  # the few that reach the Policy's preprocessing
            out.append(("policy_refusal", policy_refusals[int(rng.integers(0, len(policy_refusals)))]))
        else:
            # Change 1-3 bytes among the map keys, the array map's dtype and its shape: every such change
            # breaks the message (a flip in the pixel data would make a valid request).
            b = bytearray(valid)
            for _ in range(int(rng.integers(1, 4))):
                j = int(flip_targets[int(rng.integers(0, len(flip_targets)))])
                b[j] = (b[j] + int(rng.integers(1, 256))) % 256
            out.append(("header_flip", bytes(b)))
    big_image = arr(np.zeros((2048, 2800, 3), np.uint8))
    return out + [("oversized", b"\x00" * (MAX_MESSAGE_BYTES + 1)), ("oversized", with_("image", big_image))]


def test_fuzz_malformed_requests(server: ServerProcess, url: str, local_policy: Policy) -> None:
    messages = malformed_messages(seed=1234, count=FUZZ_COUNT)
    before = server_stats(url)
    counts: dict[str, int] = {"error_replies": 0, "closed": 0, "valid_replies": 0, "reconnects": 0}
    by_category: dict[str, int] = {}
    close_codes: dict[int, int] = {}
    ws, _ = authed(url)
    t0 = time.monotonic()
    for category, frame in messages:
        by_category[category] = by_category.get(category, 0) + 1
        try:
            ws.send(frame)
            reply = unpack(ws.recv(timeout=10))
        except ConnectionClosed as e:
            counts["closed"] += 1
            code = e.rcvd.code if e.rcvd else -1
            close_codes[code] = close_codes.get(code, 0) + 1
            ws, _ = authed(url)
            counts["reconnects"] += 1
            continue
        assert reply["type"] == "result" and reply["actions"] is None, (category, reply)
        if reply["valid"]:
            counts["valid_replies"] += 1
        else:
            counts["error_replies"] += 1
            assert reply["reason"], category
    ws.close()
    elapsed = time.monotonic() - t0
    assert server.alive(), "the server crashed"
    after = server_stats(url)
    with RemotePolicy.connect(url, TOKEN, timeout_s=10.0) as remote:
        obs = observation("text_mask")
        res = remote.predict_chunk(**obs)
        assert res.valid, res.reason
        np.testing.assert_allclose(res.actions, local_policy.predict_chunk(**obs).actions, rtol=0, atol=1e-6)
    unreadable = after["error_replies"] - before["error_replies"]
    policy_calls = after["predictions"] - before["predictions"]
    print(
        f"\nfuzz: {len(messages)} malformed requests in {elapsed:.1f} s; server crashes: 0; "
        f"{counts}; close codes {close_codes}; server counted {unreadable} unreadable requests and "
        f"{policy_calls} Policy calls (all refused)"
        f"\nby category: {dict(sorted(by_category.items()))}"
    )
    assert counts["valid_replies"] == 0
    assert counts["error_replies"] + counts["closed"] == len(messages)
    assert close_codes.get(1009, 0) >= 1  # the oversized frame
    assert after["valid_chunks"] == before["valid_chunks"]


def test_the_policy_node_with_backend_remote_acts_through_the_server_and_stops_when_it_is_lost(
    tmp_path: Path, local_policy: Policy
) -> None:
    """The ROS side on a robot PC: policy_node with backend remote (its server_url and server_token_file
    parameters) runs the model on the server; a lost server gives invalid chunks (no motion), promptly."""
    import rclpy

    from pixelvla_ros.nodes.policy_node import PolicyNode

    srv = ServerProcess(tmp_path)
    srv.start()
    try:
        srv.wait_ready()
        params = ["backend:=remote", f"server_url:={srv.url}", f"server_token_file:={srv.token_file}"]
        rclpy.init(args=["--ros-args", *[a for p in params for a in ("-p", f"policy_node:{p}")]])
        node = PolicyNode()
        try:
            assert node.policy.backend == "remote" and node.policy.checkpoint.startswith("remote:")
            x = sample_input("text_prompts", proprio_dim=4)
            got = node.policy.predict_chunk(x.image, x.task, x.prompts, None, x.proprio)
            want = local_policy.predict_chunk(x.image, x.task, x.prompts, None, x.proprio)
            assert got.valid and np.allclose(got.actions, want.actions, atol=1e-6)
            srv.kill()
            t0 = time.monotonic()
            lost = node.policy.predict_chunk(x.image, x.task, x.prompts, None, x.proprio)
            assert not lost.valid and lost.actions is None and lost.reason.startswith("remote:")
            assert time.monotonic() - t0 < node.policy.timeout_s + 1.0
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    finally:
        srv.stop()
