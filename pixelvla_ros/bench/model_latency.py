"""Policy-call latency of PixelVLA: one forward producing an action chunk.

    python -m pixelvla_ros.bench.model_latency [--calls 100] [--warmup 10] [--skip-7b]

Always: the `tiny` preset on the CPU with 2 threads (forward alone, and the whole policy call:
preprocessing + forward + unnormalization). When CUDA is present: the `7b` preset in bf16 with random
weights, next to its physical floor measured in the same run:
    floor = weight bytes / measured device-to-device copy bandwidth
          + prefill FLOPs / measured bf16 matmul throughput
Prints a short table (median and p99 over the timed calls).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch

from pixelvla_ros.model import PixelVLA, autocast_context, build_model, config_7b, tiny_config
from pixelvla_ros.model.testing import make_preprocessor, sample_input
from pixelvla_ros.preprocessing import NormStats


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


def bench_tiny(calls: int, warmup: int, threads: int = 2) -> list[str]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg, device="cpu").eval()
    pre = make_preprocessor(cfg)
    obs = sample_input("all", hw=(480, 640), proprio_dim=cfg.proprio_dim)
    x = pre.batch([obs])
    fwd = _time_calls(lambda: model.predict(x), calls, warmup, cuda=False)
    full = _time_calls(lambda: pre.postprocess(model.predict(pre.batch([obs]))), calls, warmup, cuda=False)
    info = (
        f"{model.num_parameters() / 1e6:.2f}M params, {cfg.num_tokens()} tokens, N_c={cfg.action.chunk_size}"
    )
    return [
        _row(f"tiny, CPU {threads} threads, fp32: forward", fwd, info),
        _row(
            f"tiny, CPU {threads} threads: policy call (640x480 in)",
            full,
            "preprocess + forward + unnormalize",
        ),
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


def measure_matmul_flops(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = _time_calls(lambda: a @ b, 20, 3, cuda=True)
    return 2 * n**3 / (np.median(ms) / 1000.0)


def bench_7b(calls: int, warmup: int) -> list[str]:
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
    x = pre.batch([sample_input("all", hw=(480, 640), proprio_dim=0)]).to("cuda")
    with autocast_context("cuda"):
        ms = _time_calls(lambda: model.predict(x), calls, warmup, cuda=True)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    flops = prefill_flops(model)
    bw, mm = measure_copy_bandwidth(), measure_matmul_flops()
    floor_ms = (weight_bytes / bw + flops / mm) * 1000.0
    med = float(np.median(ms))
    return [
        _row("7b, CUDA bf16, random weights: forward", ms, f"{cfg.num_tokens()} tokens"),
        f"{'  physical floor':<44} {floor_ms:>9.2f} {'':>9}  "
        f"{weight_bytes / 1e9:.2f} GB / {bw / 1e9:.0f} GB/s"
        f" + {flops / 1e12:.2f} TFLOP / {mm / 1e12:.0f} TFLOP/s",
        f"{'  ratio forward / floor':<44} {med / floor_ms:>9.2f}",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for the tiny model")
    ap.add_argument("--skip-7b", action="store_true")
    args = ap.parse_args(argv)
    print(f"{'configuration':<44} {'median ms':>9} {'p99 ms':>9}  notes")
    for line in bench_tiny(args.calls, args.warmup, args.threads):
        print(line, flush=True)
    if torch.cuda.is_available() and not args.skip_7b:
        print(f"device: {torch.cuda.get_device_name()}")
        for line in bench_7b(args.calls, args.warmup):
            print(line, flush=True)
    else:
        print("7b: skipped (no CUDA device)" if not torch.cuda.is_available() else "7b: skipped (--skip-7b)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
