"""Policy-call latency of PixelVLA per inference backend: one call producing an action chunk.

    python -m pixelvla_ros.bench.model_latency [--backend all|eager|compile|...] [--calls 100] [--warmup 10]
                                               [--skip-7b]

The packaged tiny checkpoint on the CPU with 2 threads, per backend (pixelvla_ros.inference.engine), next to
its compute floor measured in the same run (prefill FLOPs / fp32 matmul throughput): the engine call alone
(model inputs -> normalized chunk) and the whole policy call (Policy.predict_chunk from a 640x480 image:
preprocessing, engine, unnormalization, safety check), each with its speedup over eager in the same run. A
backend that cannot run here is listed with the reason. `remote`: the same policy in a policy_server on
loopback against in process. When CUDA is present: the `7b` preset in bf16 with random weights per CUDA
backend (eager, compile, cuda_graph), next to its
physical floor measured in the same run:
    floor = weight bytes / measured device-to-device copy bandwidth
          + prefill FLOPs / measured bf16 matmul throughput
Prints a short table (median and p99 over the timed calls).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pixelvla_ros.inference.engine import BACKENDS, BackendUnavailableError, make_engine
from pixelvla_ros.model import PixelVLA, config_7b, load_checkpoint
from pixelvla_ros.model.testing import make_preprocessor, sample_input
from pixelvla_ros.policy import Policy
from pixelvla_ros.preprocessing import NormStats

TINY = Path(__file__).resolve().parents[2] / "checkpoints" / "tiny"
LOCAL_BACKENDS = tuple(b for b in BACKENDS if b != "remote")
BENCH_TOKEN = "model-latency-benchmark-token"  # a throwaway server on loopback, for this run only
CUDA_7B_BACKENDS = ("eager", "compile", "cuda_graph")


def _time_calls(fn: Callable[[], object], calls: int, warmup: int, cuda: bool) -> np.ndarray:
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return np.asarray(out) * 1000.0  # ms


def _row(name: str, ms: np.ndarray, extra: str = "") -> str:
    return f"{name:<44} {np.median(ms):>9.2f} {np.percentile(ms, 99):>9.2f}  {extra}"


def bench_tiny(backends: list[str], calls: int, warmup: int, threads: int = 2) -> list[str]:
    """The packaged checkpoint on the CPU, per backend; a fresh model each (compile changes its model)."""
    torch.set_num_threads(threads)
    obs = sample_input("all", hw=(480, 640), proprio_dim=4)
    rows, eager = [], None
    model, _ = load_checkpoint(TINY, device="cpu")
    rate = measure_matmul_flops(1024, "cpu", torch.float32)
    flops = prefill_flops(model)
    rows.append(
        f"{'tiny compute floor':<44} {flops / rate * 1e3:>9.2f} {'':>9}  {flops / 1e9:.2f} GFLOP / "
        f"{rate / 1e9:.0f} GFLOP/s (fp32 matmul, {threads} threads, measured now)"
    )
    for backend in backends:
        model, pre = load_checkpoint(TINY, device="cpu")
        try:
            t0 = time.perf_counter()
            engine = make_engine(backend, model)
            policy = Policy(model, pre, engine=engine)
            policy.warm_up()
            ready = time.perf_counter() - t0
        except BackendUnavailableError as e:
            rows.append(f"tiny, {backend}: not run here: {e}")
            continue
        x = pre.batch([obs])
        fwd = _time_calls(lambda e=engine, x=x: e(x), calls, warmup, cuda=False)
        call = _time_calls(
            lambda p=policy: p.predict_chunk(obs.image, obs.task, obs.prompts, obs.object_mask, obs.proprio),
            calls,
            warmup,
            cuda=False,
        )
        if backend == "eager":
            eager = (np.median(fwd), np.median(call))
        speed = (
            f", x{eager[0] / np.median(fwd):.2f} / x{eager[1] / np.median(call):.2f} vs eager"
            if eager
            else ""
        )
        rows.append(
            _row(f"tiny, CPU {threads} threads, {backend}: engine", fwd, f"ready in {ready:.1f} s{speed}")
        )
        rows.append(_row(f"tiny, CPU {threads} threads, {backend}: policy call", call, "640x480 image in"))
    return rows


def bench_remote(calls: int, warmup: int, threads: int = 2) -> list[str]:
    """The policy server on loopback (a subprocess, the packaged checkpoint, eager, CPU) against the same
    policy in process, in the same run: the remote backend's overhead (transport and serialization)."""
    import os
    import socket
    import subprocess
    import sys
    import tempfile

    from pixelvla_ros.inference.remote import RemotePolicy

    torch.set_num_threads(threads)
    obs = sample_input("all", hw=(480, 640), proprio_dim=4)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        env = {**os.environ, "PIXELVLA_SERVER_TOKEN": BENCH_TOKEN, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "pixelvla_ros.inference.server", "--checkpoint", str(TINY), "--port",
               str(port), "--device", "cpu"]  # fmt: skip
        with open(log, "w") as out:
            server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while "serving" not in log.read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    return [f"remote: the server did not start: {log.read_text()[-500:]}"]
                time.sleep(0.2)
            remote = RemotePolicy.connect(f"ws://127.0.0.1:{port}", BENCH_TOKEN, timeout_s=10.0)
            local = Policy.from_checkpoint(TINY, device="cpu")
            overheads: list[float] = []
            server_calls: list[float] = []

            def remote_call() -> None:
                remote.predict_chunk(obs.image, obs.task, obs.prompts, obs.object_mask, obs.proprio)
                t = remote.last_timing
                overheads.append(t["round_trip_s"] - t.get("server_receive_to_reply_s", t["round_trip_s"]))
                server_calls.append(t.get("policy_total_s", float("nan")))

            def local_call() -> None:
                local.predict_chunk(obs.image, obs.task, obs.prompts, obs.object_mask, obs.proprio)

            here = _time_calls(local_call, calls, warmup, cuda=False)
            there = _time_calls(remote_call, calls, warmup, cuda=False)
            remote.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    wire = np.asarray(overheads[warmup:]) * 1000.0
    return [
        _row("tiny, CPU: policy call in process", here, "eager, 640x480 image in"),
        _row("tiny, CPU: policy call, remote on loopback", there, "the same policy in a policy_server"),
        f"{'  remote overhead (median difference)':<44} {np.median(there) - np.median(here):>9.2f} {'':>9}  "
        f"transport + serialization per call: {np.median(wire):.2f} ms median, {np.percentile(wire, 99):.2f} "
        "ms p99 (round trip minus the server's receive-to-reply)",
        f"{'  the policy call inside the server':<44} {np.median(server_calls[warmup:]) * 1e3:>9.2f} "
        f"{np.percentile(server_calls[warmup:], 99) * 1e3:>9.2f}  server and client share the cores",
    ]


def _llm_flops(hf: dict, tokens: int) -> float:
    D, L, F = hf["hidden_size"], hf["num_hidden_layers"], hf["intermediate_size"]
    kv = hf.get("num_key_value_heads", hf["num_attention_heads"]) / hf["num_attention_heads"]
    per_layer = 2 * tokens * (D * D * (2 + 2 * kv) + 3 * D * F) + 4 * tokens * tokens * D
    return L * per_layer


def _tower_flops(model: PixelVLA, tokens: int) -> float:
    total = 0.0
    for tower in model.vision.towers:
        n = sum(p.numel() for p in tower.parameters())
        layers, D = tower.levels[-1], tower.width  # layers actually run
        t = tokens + tower.num_prefix
        total += 2 * n * t + layers * 4 * t * t * D
    return total


def prefill_flops(model: PixelVLA) -> float:
    """Matmul FLOPs of one forward: towers + projector + LLM (heads and encoders are negligible)."""
    cfg = model.cfg
    proj = sum(p.numel() for p in model.projector.parameters())
    return (
        _tower_flops(model, cfg.num_image_tokens)
        + 2 * proj * cfg.num_image_tokens
        + _llm_flops(cfg.llm.hf_config, cfg.num_tokens())
    )


def measure_copy_bandwidth(nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = _time_calls(lambda: b.copy_(a), 20, 3, cuda=True)
    return 2 * nbytes / (np.median(ms) / 1000.0)


def measure_matmul_flops(n: int = 8192, device: str = "cuda", dtype: torch.dtype = torch.bfloat16) -> float:
    """Matmul FLOP/s of one n x n product on `device`, median of 20."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = _time_calls(lambda: a @ b, 20, 3, cuda=device == "cuda")
    return 2 * n**3 / (np.median(ms) / 1000.0)


def bench_7b(backends: list[str], calls: int, warmup: int) -> list[str]:
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover
        no_init_weights = contextlib.nullcontext
    cfg = config_7b()
    with torch.device("cuda"), no_init_weights():
        model = PixelVLA(cfg, load_pretrained=False)
    model = model.to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    stats = NormStats([-1.0] * 7, [1.0] * 7)
    pre = make_preprocessor(cfg, stats)
    x = pre.batch([sample_input("all", hw=(480, 640), proprio_dim=0)])
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    flops = prefill_flops(model)
    bw, mm = measure_copy_bandwidth(), measure_matmul_flops()
    floor_ms = (weight_bytes / bw + flops / mm) * 1000.0
    rows = [
        f"{'7b physical floor':<44} {floor_ms:>9.2f} {'':>9}  {weight_bytes / 1e9:.2f} GB / {bw / 1e9:.0f} "
        f"GB/s + {flops / 1e12:.2f} TFLOP / {mm / 1e12:.0f} TFLOP/s"
    ]
    # compile last: it compiles the model's blocks in place
    for backend in sorted((b for b in backends if b in CUDA_7B_BACKENDS), key=CUDA_7B_BACKENDS.index):
        engine = make_engine(backend, model)
        engine.warm_up(x)
        ms = _time_calls(lambda e=engine: e(x), calls, warmup, cuda=True)
        rows.append(
            _row(
                f"7b, CUDA bf16, {backend}: engine",
                ms,
                f"{np.median(ms) / floor_ms:.2f} x the floor, {cfg.num_tokens()} tokens",
            )  # fmt: skip
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="all", choices=("all", *BACKENDS), help="default: all")
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for the tiny model")
    ap.add_argument("--skip-7b", action="store_true")
    args = ap.parse_args(argv)
    backends = list(BACKENDS) if args.backend == "all" else ["eager", args.backend]
    backends = list(dict.fromkeys(backends))  # eager first: the speedups are over it
    print(f"{'configuration':<44} {'median ms':>9} {'p99 ms':>9}  notes")
    for line in bench_tiny([b for b in backends if b != "remote"], args.calls, args.warmup, args.threads):
        print(line, flush=True)
    if "remote" in backends:
        for line in bench_remote(args.calls, args.warmup, args.threads):
            print(line, flush=True)
    if torch.cuda.is_available() and not args.skip_7b:
        print(f"device: {torch.cuda.get_device_name()}")
        for line in bench_7b(backends, args.calls, args.warmup):
            print(line, flush=True)
    else:
        print("7b: skipped (no CUDA device)" if not torch.cuda.is_available() else "7b: skipped (--skip-7b)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
