"""Closed-loop evaluation: a tiny random checkpoint end to end, the expert reference, statistics, errors."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from learning.evaluation.evaluate import (
    MODES,
    EvaluationError,
    ground_truth_inputs,
    main,
    proprio_vector,
)
from learning.evaluation.report import config_hash, draw_inputs, wilson_interval
from pixelvla_ros.model import build_model, read_checkpoint_config, save_checkpoint
from pixelvla_ros.model.testing import make_preprocessor, micro_config
from pixelvla_ros.sim.env import TabletopEnv
from pixelvla_ros.sim.seeds import SPLIT_SPAN, episode_seed, split_of_seed
from pixelvla_ros.sim.tasks import TaskConfig


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    cfg = micro_config(proprio_dim=4)  # preprocessing.state_proprio
    model = build_model(cfg, device="cpu", load_pretrained=False)
    return save_checkpoint(model, make_preprocessor(cfg), tmp_path_factory.mktemp("ckpt") / "micro")


def test_end_to_end_tiny_checkpoint(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    argv = ["--checkpoint", str(checkpoint), "--families", "pick_named", "pick_prompted"]
    argv += ["--modes", "text,text_point", "--episodes", "1", "--start", "3", "--max-steps", "10"]
    argv += ["--out", str(out), "--gif-episodes", "2", "--quiet", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "episodes/min" in printed

    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "pixelvla_eval_report" and report["agent"] == "policy"
    ck = report["checkpoint"]
    assert ck["path"] == str(checkpoint.resolve())
    assert ck["config_hash"] == config_hash(read_checkpoint_config(checkpoint))
    assert len(ck["config_hash"]) == 64 and ck["chunk_size"] == 4
    s = report["settings"]
    assert s["families"] == ["pick_named", "pick_prompted"] and s["modes"] == ["text", "text_point"]
    assert s["split"] == "eval" and s["indices"] == [3] and s["seeds"] == [episode_seed("eval", 3)]
    assert all(split_of_seed(x) == "eval" for x in s["seeds"])
    assert s["camera_calibration"] is True  # --uncalibrated: False, the policy gets no camera
    assert s["execute_steps"] == 2  # no --execute-steps: the checkpoint's commit_steps (half its 4 steps)
    assert [(c["family"], c["mode"]) for c in report["cells"]] == [
        ("pick_named", "text"),
        ("pick_named", "text_point"),
        ("pick_prompted", "text"),
        ("pick_prompted", "text_point"),
    ]
    for c in report["cells"]:
        assert c["episodes"] == 1 and 0 <= c["ci95"][0] <= c["ci95"][1] <= 1
        assert c["ci95"] == pytest.approx(list(wilson_interval(c["successes"], 1)))
    assert len(report["episodes"]) == 4
    for e in report["episodes"]:
        assert e["seed"] == episode_seed("eval", 3) and e["seed"] >= SPLIT_SPAN
        assert e["steps"] <= 10 and isinstance(e["success"], bool) and e["reason"]
        assert e["text_given"] and e["instruction"]
        assert e["prompts"] == ([] if e["mode"] == "text" else ["point"])
        assert e["queries"] >= 1 and e["mean_latency_s"] > 0
    assert report["timing"]["episodes"] == 4 and report["timing"]["episodes_per_min"] > 0

    png = imageio.imread(out / "success.png")
    assert png.ndim == 3 and png.shape[0] > 100
    frames = imageio.mimread(out / "episodes.gif", memtest=False)
    assert len(frames) > 5 and frames[0].shape[0] > frames[0].shape[1]  # image + caption band below
    assert report["artifacts"] == {"plot": "success.png", "gif": "episodes.gif"}


def test_expert_reference_succeeds(tmp_path) -> None:
    out = tmp_path / "expert"
    argv = ["--expert", "--episodes", "2", "--modes", "text", "--out", str(out), "--quiet"]
    assert main(argv + ["--gif-episodes", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["agent"] == "expert" and report["checkpoint"] is None
    assert {c["family"] for c in report["cells"]} == {"pick_named", "pick_prompted", "place_container"}
    assert all(c["rate"] == 1.0 for c in report["cells"]), [e["reason"] for e in report["episodes"]]
    assert report["overall"]["successes"] == 6
    assert "gif" not in report["artifacts"]
    for e in report["episodes"]:  # the expert closes on the untouched target (the grasp-attempt record)
        close = e["first_close"]
        assert close is not None and close["step"] > 0, e
        assert np.hypot(*close["tcp_minus_target_m"][:2]) < 0.015 and close["target_moved_m"] < 0.005, e
        assert e["target_moved_m"] > 0.03, e  # lifted or carried


def test_ground_truth_prompts_mark_the_entity() -> None:
    env = TabletopEnv(
        TaskConfig(family="pick_prompted", image_sizes=(96,)), seed=episode_seed("eval", 0), split="eval"
    )
    env.reset()
    inp = ground_truth_inputs(env, MODES["all"], "scene", 96)
    assert inp.prompt_entity == env.task.target and inp.instruction == env.task.instruction
    point, box = inp.prompts
    assert point.kind == "point" and box.kind == "box"
    (x0, y0), (x1, y1) = box.points
    u, v = point.points[0]
    assert x0 <= u <= x1 and y0 <= v <= y1
    assert inp.object_mask[int(round(v)), int(round(u))]  # the centre projects onto the target's pixels
    assert (x0, y0) == (
        np.nonzero(inp.object_mask)[1].min() - 0.5,
        np.nonzero(inp.object_mask)[0].min() - 0.5,
    )
    # the calibration handed to the policy is this episode's camera (its pose jitter included): the point
    # cast back onto the horizontal plane through the target's centre lands on it
    target = env.object_pose(env.task.target)[:3, 3]
    landed, hit = inp.camera.pixel_to_plane(point.points, target, np.array([0.0, 0.0, 1.0]))
    assert hit[0]
    np.testing.assert_allclose(landed[0], target, atol=1e-6)
    none = ground_truth_inputs(env, MODES["point"], "scene", 96)
    assert none.instruction is None and none.object_mask is None and len(none.prompts) == 1
    drawn = draw_inputs(env.render("scene", 96), inp.prompts, inp.object_mask, scale=2)
    assert drawn.shape == (192, 192, 3)
    env.close()


def test_proprio_layouts() -> None:
    env = TabletopEnv(TaskConfig(image_sizes=(32,)), seed=episode_seed("eval", 0), split="eval")
    obs = env.reset()
    assert proprio_vector(obs, 0) is None
    p4 = proprio_vector(obs, 4)
    np.testing.assert_allclose(p4, [*obs.ee_pos, obs.gripper], atol=1e-6)
    for unsupported in (5, 7, 10):
        with pytest.raises(EvaluationError, match="proprio"):
            proprio_vector(obs, unsupported)
    env.close()


def test_wilson_interval_known_values() -> None:
    # Standard Wilson score values (z = 1.96).
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(1, 1) == pytest.approx((0.2065, 1.0), abs=1e-4)
    assert wilson_interval(45, 50) == pytest.approx((0.7864, 0.9565), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give --checkpoint"),
        (["--checkpoint", "/nonexistent/ckpt"], "does not exist"),
        (["--expert", "--families", "pick_everything"], "unknown task family ['pick_everything']"),
        (["--expert", "--modes", "text", "telepathy"], "unknown prompt mode ['telepathy']"),
        (["--expert", "--episodes", "0"], "--episodes must be >= 1, got 0"),
        (["--expert", "--episodes", "-3"], "--episodes must be >= 1"),
        (["--expert", "--max-steps", "0"], "--max-steps must be >= 1"),
        (["--expert", "--checkpoint", "/tmp"], "either --checkpoint or --expert"),
        (["--expert", "--out", "/dev/null/eval"], "cannot create the output folder"),
    ],
)
def test_bad_arguments_give_clear_errors(argv, message, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_incomplete_checkpoint_and_execute_steps(checkpoint, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--checkpoint", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "pixelvla_checkpoint.json is missing" in capsys.readouterr().err
    argv = ["--checkpoint", str(checkpoint), "--execute-steps", "9", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--execute-steps must be in [1, 4]" in capsys.readouterr().err


def test_probe_reads_the_proprio_and_servo_responses() -> None:
    from learning.evaluation.probe import probe
    from pixelvla_ros.policy import Policy

    root = Path(__file__).resolve().parents[1]
    packaged = Policy.from_checkpoint(root / "checkpoints" / "tiny")
    medians = probe(packaged, ["pick_named"], start=100, episodes=2, shift=0.03, execute_steps=4)
    assert set(medians) == {"first frame", "approach", "descend"}
    responses = {f"{kind}_response_{axis}" for kind in ("proprio", "servo") for axis in "xy"}
    assert set(medians["approach"]) == responses
    # the packaged policy reads its proprio position during the approach: the shift reaches the model,
    # and so does moving the arm itself (proprio and image)
    assert abs(medians["approach"]["proprio_response_x"]) > 0.1
    assert abs(medians["approach"]["servo_response_x"]) > 0.1
