"""OpenVLA-7B -> PixelVLA conversion (pixelvla_ros.model.openvla.convert_openvla): wall time and peak host
memory, measured at reduced width and extrapolated to the real 15.08 GB checkpoint.

    python -m pixelvla_ros.bench.convert_openvla [--runs 3] [--small-cap-mib 64] [--workdir DIR] [--warm]

Two synthetic OpenVLA folders (openvla_synthetic.write_synthetic_openvla: the real file set and key names,
bf16, 3 shards) are written into a temporary folder: "full", about 0.78 GB (LLM 1024 wide, 24 layers), and
"half", about 0.37 GB (the same with 8 layers). Each conversion runs in a child process (this module, hidden
--child sub-command) that reports its own VmHWM (/proc/self/status: the peak resident set of its address
space, which execve starts afresh; getrusage's ru_maxrss is not used: Linux carries the parent's RSS over
fork + exec into it, and RUSAGE_CHILDREN is a maximum over all children). The child first imports every
module a conversion loads (the list a warm-up conversion child ends with), then times the call alone. A
baseline child imports the same modules and builds nothing: peak - baseline is the conversion's own memory.

Series, `--runs` runs each (median, min, max): the full model with the default output shard cap
(OUTPUT_SHARD_BYTES, 2 GiB: the whole reduced model is one output shard) and with a small cap (64 MiB); the
half model with the default cap (time: the cost per byte, apart from the fixed part) and with the small cap
(memory: whether the peak depends on the model's size). By default the source shards are evicted from
the page cache before each run (fsync + posix_fadvise DONTNEED: cold for this machine's page cache, though
a virtual disk may be cached by its host); --warm keeps them cached. The time is convert_openvla's call
(hashing of source and output files included); "fsync" is the time then taken to flush the output to disk,
which a conversion larger than the dirty-page limit pays inline.

The extrapolation to the real model is arithmetic on these measurements, printed with its assumptions:
    time_7B   = t0 + 15,082,474,368 B / r      (wall = t0 + source bytes / r, fitted on full and half)
    memory_7B = baseline + F + k x G_7B        (peak - baseline = F + k x G, G = source bytes held at once,
                                                fitted on the two caps; F corrected for the parts PixelVLA
                                                adds, held in bf16, counted at 7B on a meta-device build)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pixelvla_ros.model.openvla import OUTPUT_SHARD_BYTES, convert_openvla
from pixelvla_ros.model.openvla_synthetic import SyntheticSizes, write_synthetic_openvla

# Large enough that the weights (~0.78 GB) dominate the ~0.36 GB of imported modules; vocab stays 32064
FULL = SyntheticSizes(
    dino_width=256,
    dino_depth=6,
    siglip_width=288,
    siglip_depth=6,
    llm_width=1024,
    llm_layers=24,
    llm_mlp=2816,
    llm_heads=8,
)
HALF = replace(FULL, llm_layers=8)
# openvla/openvla-7b, from ../shared/notes/openvla-checkpoint.md (computed there, not measured here)
REAL_SOURCE_BYTES = 15_082_474_368  # 7,541,237,184 parameters x 2 (bf16)
REAL_PARAMS = 7_541_237_184
REAL_SHARDS_NOTE = "3 shards of about 7 GB, 7 GB, 1 GB (save_pretrained max_shard_size='7GB')"
UNNORM_KEY = "bridge_orig"
LOAD_DTYPES = ("bfloat16", "float32")
REAL_MODEL_PARAMS = (
    7_422_903_911 + 64 * 4096
)  # PixelVLA-7B from OpenVLA before LoRA (meta count, vocab 32064)
MB, MIB = 1e6, 1 << 20


# --- the child processes -------------------------------------------------------------------------------
def _status() -> dict[str, int]:
    """/proc/self/status memory fields in KiB (VmHWM, VmRSS, RssAnon, RssFile)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


class _Sampler(threading.Thread):
    """Polls RssAnon / RssFile every 10 ms: which kind of page the peak is made of (may miss short peaks)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop, self.peak = threading.Event(), {"RssAnon": 0, "RssFile": 0, "total": 0}

    def run(self) -> None:
        while not self.stop.wait(0.01):
            s = _status()
            total = s["RssAnon"] + s["RssFile"]
            if total > self.peak["total"]:
                self.peak = {"RssAnon": s["RssAnon"], "RssFile": s["RssFile"], "total": total}


def _import_all(modules_file: str) -> tuple[int, int]:
    """Import the modules listed in the file, in order; returns (loaded now, not importable)."""
    failed = 0
    for name in json.loads(Path(modules_file).read_text()):
        try:
            importlib.import_module(name)
        except Exception:  # e.g. a module only a script's __main__ defines: nothing a conversion needs
            failed += 1
    return len(sys.modules), failed


def _child_convert(src: str, out: str, cap: int, modules_file: str) -> dict[str, Any]:
    t = time.perf_counter()
    if modules_file != "-":
        _import_all(modules_file)
    import_s = time.perf_counter() - t
    before = _status()["VmHWM"]
    sampler = _Sampler()
    sampler.start()
    t0 = time.perf_counter()
    result = convert_openvla(src, out, unnorm_key=UNNORM_KEY, max_shard_bytes=cap)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    hwm = _status()["VmHWM"]
    t1 = time.perf_counter()
    for path in sorted(Path(out).rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    shards = sorted(Path(out).glob("model-*.safetensors"))
    return {
        "wall_s": wall,
        "fsync_s": time.perf_counter() - t1,
        "import_s": import_s,
        "hwm_kib": hwm,
        "hwm_before_kib": before,
        "sampled": sampler.peak,
        "bytes_written": result.bytes_written,
        "shard_bytes": [p.stat().st_size for p in shards],  # the last one: the parts PixelVLA adds
        "modules": list(sys.modules),
    }


def _child_load(path: str, dtype: str, modules_file: str) -> dict[str, Any]:
    """load_checkpoint of a converted checkpoint in `dtype`: the peak resident set it adds."""
    from pixelvla_ros.model.checkpoint import load_checkpoint

    _import_all(modules_file)
    before = _status()["VmHWM"]
    t0 = time.perf_counter()
    model, _ = load_checkpoint(path, device="cpu", dtype=getattr(torch, dtype))
    wall = time.perf_counter() - t0
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    loaded = _status()["VmHWM"]
    with torch.no_grad():  # read every weight, as a forward pass does: pages still mapped come in
        for p in model.parameters():
            p.sum()
    return {"wall_s": wall, "hwm_kib": loaded, "touched_kib": _status()["VmHWM"], "hwm_before_kib": before,
            "weight_bytes": weights, "params": sum(p.numel() for p in model.parameters())}  # fmt: skip


def _child_baseline(modules_file: str) -> dict[str, Any]:
    modules, failed = _import_all(modules_file)
    return {"hwm_kib": _status()["VmHWM"], "modules": modules, "failed": failed}


def _run_child(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pixelvla_ros.bench.convert_openvla", "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT ") :])


# --- the parent ----------------------------------------------------------------------------------------
def evict(paths: list[Path]) -> None:
    """Flush and drop these files' pages from the page cache (no root needed; clean pages only)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def new_part_params(cfg: Any) -> int:
    """Parameters PixelVLA adds to OpenVLA's (pixel, prompt, proprio and anchor encoders, action queries and
    decoder): the conversion initialises them and holds them in bf16 while it streams the rest."""
    from pixelvla_ros.model.pixelvla import PixelVLA

    with torch.device("meta"):
        model = PixelVLA(cfg, load_pretrained=False, meta_backbones=True)
    backbones = ("vision.", "projector.", "llm.")
    return sum(v.numel() for k, v in model.state_dict().items() if not k.startswith(backbones))


def reduced_config(folder: Path) -> Any:
    """The PixelVLAConfig convert_openvla derives from a synthetic folder (headers and JSON only)."""
    from pixelvla_ros.model.openvla import CONFIG, _json, pixelvla_config, read_headers

    shapes, _, _ = read_headers(folder)
    return pixelvla_config(folder, _json(folder, CONFIG), shapes)


@dataclass
class Series:
    name: str
    source_bytes: int
    largest_source: int
    cap: int
    runs: list[dict[str, Any]]

    def med(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)

    def span(self, key: str) -> tuple[float, float]:
        return min(r[key] for r in self.runs), max(r[key] for r in self.runs)

    @property
    def held(self) -> int:
        """G: source bytes held at once = the largest output weight shard (the last holds the new parts)."""
        return max(self.runs[0]["shard_bytes"][:-1])


def run_series(
    name: str, src: Path, work: Path, cap: int, runs: int, cold: bool, modules: str = "-"
) -> Series:
    shards = sorted(src.glob("model-*.safetensors"))
    out, results = work / "converted", []
    for _ in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        if cold:
            evict(shards)
        results.append(_run_child(["convert", str(src), str(out), str(cap), modules]))
        print(f"  {name}: run {len(results)}/{runs} {results[-1]['wall_s']:.2f} s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    sizes = [p.stat().st_size for p in shards]
    return Series(name, sum(sizes), max(sizes), cap, results)


def _mb(n: float) -> str:
    return f"{n / MB:,.0f}"


def _write(folder: Path, sizes: SyntheticSizes, label: str) -> Path:
    t = time.perf_counter()
    src = write_synthetic_openvla(folder, sizes, dtype=torch.bfloat16, shards=3)
    paths = sorted(src.glob("model-*.safetensors"))
    evict(paths)  # flushed now: no writeback of this folder runs under a timed conversion
    shards = [p.stat().st_size for p in paths]
    print(
        f"{label}: {sizes}\n  {_mb(sum(shards))} MB bf16 in shards of {', '.join(_mb(s) for s in shards)} MB "
        f"(written in {time.perf_counter() - t:.1f} s)",
        flush=True,
    )
    return src


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="conversions per series (median reported)")
    ap.add_argument("--small-cap-mib", type=int, default=64, help="the small output shard cap, MiB")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="parent of the temporary folder (default /tmp)"
    )
    ap.add_argument("--warm", action="store_true", help="leave the source in the page cache between runs")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "convert":
            result = _child_convert(rest[0], rest[1], int(rest[2]), rest[3])
        elif kind == "load":
            result = _child_load(rest[0], rest[1], rest[2])
        else:
            result = _child_baseline(rest[0])
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}; Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)\n"
        "units: MB = 10^6 bytes, MiB = 2^20 bytes; s = seconds",
        flush=True,
    )
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    cold, small, big = not args.warm, args.small_cap_mib * MIB, OUTPUT_SHARD_BYTES
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-convert-openvla-", dir=args.workdir) as tmp:
        work = Path(tmp)
        full = _write(work / "full", FULL, "full")
        half = _write(work / "half", HALF, "half")
        # Warm-up child: imports inside the call (as a first `convert_openvla` run pays them); its module
        # list is what the measured children and the baseline import before anything is timed
        first = run_series("warm-up (imports in the call)", half, work, small, 1, cold).runs[0]
        modules = work / "modules.json"
        modules.write_text(json.dumps(first["modules"]))
        m = str(modules)
        cap_big, cap_small = f"{big // MIB} MiB (default)", f"{args.small_cap_mib} MiB"
        series = [
            run_series(f"full, cap {cap_big}", full, work, big, args.runs, cold, m),
            run_series(f"full, cap {cap_small}", full, work, small, args.runs, cold, m),
            run_series(f"half, cap {cap_big}", half, work, big, args.runs, cold, m),
            run_series(f"half, cap {cap_small}", half, work, small, args.runs, cold, m),
        ]
        bases = [_run_child(["baseline", m]) for _ in range(args.runs)]
        p_new_red = new_part_params(reduced_config(full))
        loadable = convert_openvla(full, work / "loadable", UNNORM_KEY).output
        loads = {
            d: [_run_child(["load", str(loadable), d, m]) for _ in range(args.runs)] for d in LOAD_DTYPES
        }
    base = statistics.median(b["hwm_kib"] for b in bases) * 1024
    from pixelvla_ros.model.config import config_7b

    p_new_7b = new_part_params(config_7b())

    # --- measurements ----------------------------------------------------------------------------------
    print(
        f"\nMEASURED ({'source evicted from the page cache before each run' if cold else 'warm page cache'})"
        f"\nbaseline: a child importing the {bases[0]['modules']} modules a conversion loads "
        f"({bases[0]['failed']} not importable), building nothing: peak RSS {_mb(base)} MB "
        f"(median of {', '.join(_mb(b['hwm_kib'] * 1024) for b in bases)})\n"
        f"warm-up conversion with its imports inside the call: {first['wall_s']:.2f} s (half model)\n"
    )
    head = (
        f"{'series':<29} {'n':>1} {'wall s med [min-max]':>20} {'fsync s':>7} {'src MB/s':>8} "
        f"{'peak MB':>7} {'peak-base MB [min-max]':>22} {'src MB':>6} {'shard':>5} {'G MB':>5} {'out MB':>6}"
    )
    print(head + "\n" + "-" * len(head))
    for s in series:
        lo, hi = s.span("wall_s")
        peak, (p_lo, p_hi) = s.med("hwm_kib") * 1024, s.span("hwm_kib")
        print(
            f"{s.name:<29} {len(s.runs):>1} {s.med('wall_s'):>6.2f} [{lo:5.2f}-{hi:5.2f}] "
            f"{s.med('fsync_s'):>7.2f} {s.source_bytes / s.med('wall_s') / MB:>8.0f} {_mb(peak):>7} "
            f"{_mb(peak - base):>9} [{_mb(p_lo * 1024 - base):>4}-{_mb(p_hi * 1024 - base):>5}] "
            f"{_mb(s.source_bytes):>6} {_mb(s.largest_source):>5} {_mb(s.held):>5} "
            f"{_mb(s.runs[0]['bytes_written']):>6}"
        )
    print(
        "peak: VmHWM of the conversion child, median of runs; peak-base: minus the baseline; src: source "
        "bytes (all shards);\nshard: the largest source shard; G: source bytes held at once = the largest "
        "output weight shard; out: output bytes.\nParts PixelVLA adds (full): "
        f"{p_new_red / 1e6:.1f}M params (meta-device count) = {_mb(2 * p_new_red)} MB in bf16; the last "
        f"output shard, which holds them: {_mb(series[0].runs[0]['shard_bytes'][-1])} MB."
    )
    for s in series:
        r = s.runs[-1]
        sp = r["sampled"]
        print(
            f"  {s.name}: {len(r['shard_bytes'])} output shards; VmHWM before the call "
            f"{_mb(r['hwm_before_kib'] * 1024)} MB; sampled at the peak (10 ms polls): "
            f"{_mb(sp['RssAnon'] * 1024)} MB anonymous + {_mb(sp['RssFile'] * 1024)} MB file-backed"
        )

    print(
        "\nloading the converted full checkpoint (load_checkpoint(dtype=...), backbones built on the meta "
        "device), in a child;\n'loaded': peak added by the call; 'read': after reading every weight once, as "
        "a forward pass does\n(tensors of the file's dtype stay memory-mapped from it: their pages come in "
        "when read, file-backed)"
    )
    ratios = {}
    for dtype, runs in loads.items():
        loaded = statistics.median((r["hwm_kib"] - r["hwm_before_kib"]) * 1024 for r in runs)
        read = statistics.median((r["touched_kib"] - r["hwm_before_kib"]) * 1024 for r in runs)
        weights = runs[0]["weight_bytes"]
        ratios[dtype] = read / weights
        print(
            f"  {dtype:<9} {statistics.median(r['wall_s'] for r in runs):5.2f} s; loaded {_mb(loaded)} MB, "
            f"read {_mb(read)} MB, for {_mb(weights)} MB of weights ({runs[0]['params'] / 1e6:.0f}M params): "
            f"{ratios[dtype]:.2f} x the weights"
        )

    # --- extrapolation ---------------------------------------------------------------------------------
    f_big, f_small, h_big, h_small = series
    t_full, t_half = f_big.med("wall_s"), h_big.med("wall_s")
    rate = (f_big.source_bytes - h_big.source_bytes) / (t_full - t_half)
    t0 = t_full - f_big.source_bytes / rate
    simple = f_big.source_bytes / t_full
    flush = f_big.source_bytes / (t_full + f_big.med("fsync_s"))
    slow = f_big.source_bytes / f_big.span("wall_s")[1]
    d_big, d_small = f_big.med("hwm_kib") * 1024 - base, f_small.med("hwm_kib") * 1024 - base
    k = (d_big - d_small) / (f_big.held - f_small.held)
    fixed = d_small - k * f_small.held
    fixed7 = fixed + 2 * (p_new_7b - p_new_red)
    mem7 = base + fixed7 + k * big
    d_half = h_small.med("hwm_kib") * 1024 - base
    print(
        f"\nEXTRAPOLATION to openvla/openvla-7b: ESTIMATES, from the measurements above and, not measured, "
        f"the notes'\n  source {REAL_SOURCE_BYTES:,} B = {REAL_PARAMS:,} params x 2 (bf16), "
        f"{REAL_SHARDS_NOTE}; output shard cap {big / 2**30:.0f} GiB\n"
        "time (assumes this machine's disk and page-cache throughput, time linear in bytes; the hashing of "
        "source and output\n  files is in the measured time):\n"
        f"  fit wall = t0 + bytes / r on full and half (default cap): r = ({_mb(f_big.source_bytes)} - "
        f"{_mb(h_big.source_bytes)}) MB / ({t_full:.2f} - {t_half:.2f}) s = {rate / MB:,.0f} MB/s, "
        f"t0 = {t0:.2f} s\n"
        f"  time_7B = {t0:.2f} s + 15,082 MB / {rate / MB:,.0f} MB/s = "
        f"{t0 + REAL_SOURCE_BYTES / rate:,.0f} s = {(t0 + REAL_SOURCE_BYTES / rate) / 60:.1f} min\n"
        f"  (without the fit: 15,082 MB / {simple / MB:,.0f} MB/s (full, default cap) = "
        f"{REAL_SOURCE_BYTES / simple:,.0f} s; with the output flushed to disk: 15,082 MB / "
        f"{flush / MB:,.0f} MB/s = {REAL_SOURCE_BYTES / flush:,.0f} s;\n   the slowest run of full, default "
        f"cap (reads the least helped by caches below this machine's page cache, e.g. a virtual disk's "
        f"host):\n   15,082 MB / {slow / MB:,.0f} MB/s = {REAL_SOURCE_BYTES / slow:,.0f} s)\n"
        "memory (model: peak - baseline = F + k x G, G = source bytes held at once: one output shard's, "
        "<= the cap):\n"
        f"  fit on the two caps (full): k = ({_mb(d_big)} - {_mb(d_small)}) MB / ({_mb(f_big.held)} - "
        f"{_mb(f_small.held)}) MB = {k:.2f}, F = {_mb(d_small)} - {k:.2f} x {_mb(f_small.held)} = "
        f"{_mb(fixed)} MB\n"
        f"  size check, cap {cap_small}: peak - baseline {_mb(d_small)} MB (full, "
        f"{_mb(f_small.source_bytes)} MB) vs {_mb(d_half)} MB (half, {_mb(h_small.source_bytes)} MB);\n"
        f"    largest source shard {_mb(f_small.largest_source)} MB (full) vs G {_mb(f_small.held)} MB\n"
        f"  F_7B = F + 2 B x ({p_new_7b / 1e6:.1f}M - {p_new_red / 1e6:.1f}M) added params held in bf16 = "
        f"{_mb(fixed7)} MB\n"
        f"  peak_7B = baseline {_mb(base)} + F_7B {_mb(fixed7)} + {k:.2f} x G_7B {_mb(big)} (the 2 GiB cap; "
        f"no 7B tensor exceeds it)\n"
        f"          = {_mb(mem7)} MB = {mem7 / 2**30:.2f} GiB  (vs "
        f"{REAL_SOURCE_BYTES / 1e9:.2f} GB of weights)\n"
        f"  the added parts' fp32 build before streaming, 6 B x {p_new_7b / 1e6:.1f}M = "
        f"{_mb(6 * p_new_7b)} MB, is {'below' if 6 * p_new_7b < fixed7 + k * big else 'ABOVE'} the "
        "streaming term\n"
        f"  of that peak, {_mb(k * big)} MB are mapped source pages (clean, file-backed: reclaimable under "
        f"memory pressure)\n"
        f"loading PixelVLA-7B ({REAL_MODEL_PARAMS / 1e6:,.0f}M params) on the host and reading its weights, "
        "at the measured ratios:\n"
        + "".join(
            f"  {d}: {ratios[d]:.2f} x {n} B x {REAL_MODEL_PARAMS / 1e6:,.0f}M = "
            f"{ratios[d] * n * REAL_MODEL_PARAMS / 2**30:.1f} GiB above the imports\n"
            for d, n in (("bfloat16", 2), ("float32", 4))
        )
        + f"benchmark wall time {time.perf_counter() - t_all:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
