"""The training throughput benchmark prints its figures (a few steps of a small tiny model)."""

from __future__ import annotations

import re

import pytest
import torch

from pixelvla_ros.bench.train_throughput import PHASES, main

MODEL = "model_overrides={image_size: 32, chunk_size: 8, proprio_dim: 4}"
SMALL = ["--steps", "2", "--warmup", "1", "--batch-size", "4", "--image-size", "64", "--set",
         "data.shuffle_buffer=8", MODEL]  # fmt: skip


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return float(match.group(1))


def test_train_throughput_prints_positive_figures(capsys) -> None:
    threads = torch.get_num_threads()
    try:
        assert main(SMALL) == 0
    finally:
        torch.set_num_threads(threads)  # the benchmark sets its own; leave this process as it was
    out = capsys.readouterr().out
    shares = 0.0
    for phase in (*PHASES, "step"):
        median = _number(rf"^{phase} +([\d.]+) +[\d.]+ +[\d.]+%$", out)
        p99 = _number(rf"^{phase} +[\d.]+ +([\d.]+) ", out)
        assert 0 < median <= p99, phase
        shares += _number(rf"^{phase} +[\d.]+ +[\d.]+ +([\d.]+)%$", out) if phase != "step" else 0.0
    assert shares == pytest.approx(100.0, abs=0.5)
    assert _number(r"^floor: fwd\+bwd\+opt, batch in memory +([\d.]+)", out) > 0
    assert _number(r"^samples/s at the median step: ([\d.]+)", out) > 0
    assert _number(r"^samples/s at the median step: [\d.]+ \(floor ([\d.]+)\)", out) > 0
    assert 0 < _number(r"^data loading share: ([\d.]+)%", out) < 100
    assert _number(r"^step / floor: ([\d.]+)", out) > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the 7b preset runs")
def test_7b_without_a_gpu_says_so(capsys) -> None:
    assert main(["--preset", "7b"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
