"""Annotation pipeline: phrase parser, prompt sampling, end-to-end run on sim demos, quality filter with
reasons on bad input, resume after a crash, --shard i/N, the tar-shard format and its streaming reader."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from pixelvla_ros.learning.annotation import (  # noqa: E402
    AnnotationConfig,
    Annotator,
    build_text,
    iter_samples,
    list_shards,
    main,
    run_annotation,
    sample_prompts,
)
from pixelvla_ros.learning.annotation.evaluate import evaluate  # noqa: E402
from pixelvla_ros.learning.annotation.format import decode_rle  # noqa: E402
from pixelvla_ros.learning.annotation.stages import rule_based_phrase  # noqa: E402
from pixelvla_ros.learning.datasets import SimDemoSource  # noqa: E402

from pixelvla_ros.prompts import VisualPrompt  # noqa: E402


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "pixelvla_sim_demos"
    if len(list(root.glob("train_*"))) < 6:
        from pixelvla_ros.sim import record

        assert record.main(["--out", str(root), "--episodes", "6", "--image-size", "96"]) == 0
    return root


@pytest.mark.parametrize(
    "instruction, phrase",
    [
        ("pick up the red cube", "red cube"),
        ("put the blue cylinder in the green bowl", "blue cylinder"),
        ("pick vessel and place it on the blue cloth", "vessel"),
        ("grasp the yellow sphere and lift it", "yellow sphere"),
        ("Lift the cylinder.", "cylinder"),
        ("place the red cube into the purple tray", "red cube"),
        ("move left", None),
        ("do it now", None),
        ("", None),
    ],
)
def test_rule_based_phrase(instruction, phrase):
    assert rule_based_phrase(instruction) == phrase


def test_prompt_sampling_respects_the_mask():
    mask = np.zeros((40, 50), bool)
    mask[10:25, 12:30] = True
    rng = np.random.default_rng(0)
    for _ in range(20):
        prompts = sample_prompts(mask, rng)
        kinds = [p.kind for p in prompts]
        assert kinds == ["point", "line", "box", "mask"]
        assert all(isinstance(p, VisualPrompt) for p in prompts)
        pts = prompts[0]
        for (x, y), lab in zip(pts.points, pts.labels, strict=True):
            assert -0.5 <= x <= 50 - 0.5 and -0.5 <= y <= 40 - 0.5
            assert mask[int(y), int(x)] == bool(lab)  # positives inside, negatives outside
        assert (pts.labels == 1).sum() == 2 and (pts.labels == 0).sum() == 1
        line = prompts[1]
        assert all(mask[int(round(y)), int(round(x))] for x, y in line.points)
        np.testing.assert_allclose(prompts[2].points, [[11.5, 9.5], [29.5, 24.5]])  # pixel-edge box
        assert np.array_equal(prompts[3].mask, mask)
    # a mask in two parts (an object half hidden by the fingers): the scribble stays on it or is left out
    split = np.zeros((40, 50), bool)
    split[10:16, 5:11] = split[10:16, 35:41] = True
    for _ in range(20):
        line = next((p for p in sample_prompts(split, rng) if p.kind == "line"), None)
        assert line is None or all(split[int(round(y)), int(round(x))] for x, y in line.points)
    text = build_text("pick up the red cube", "red cube", prompts)
    assert text == (
        "What should the robot do to pick up the red cube, refer to the red cube marked by the points, "
        "the line, the box and the mask?"
    )


def test_end_to_end_on_sim_demos(demos, tmp_path):
    out = tmp_path / "ann"
    assert (
        main(["annotate", "--input", str(demos), "--input-format", "sim", "--out", str(out), "--no-progress"])
        == 0
    )
    rep = json.loads((out / "report.json").read_text())
    assert rep["episodes"] == len(SimDemoSource(demos).keys())
    assert rep["accepted"] >= rep["episodes"] - 1
    for f in ("provenance.json", "contact_sheet.png", "format.json"):
        assert (out / f).exists()
    prov = json.loads((out / "provenance.json").read_text())["runs"][0]
    assert (
        prov["models"]["segmenter"] == "colour_region_growing" and "versions" in prov and "git_commit" in prov
    )
    assert prov["config"]["min_mask_px"] == AnnotationConfig().min_mask_px
    res = evaluate(demos, out)
    assert res["mean_iou"] >= 0.7 and res["right_object_rate"] >= 0.8
    assert main(["evaluate", "--demos", str(demos), "--annotations", str(out)]) == 0
    # the format is readable without this package: tarfile + json + numpy + pycocotools
    from pycocotools import mask as mu

    shard = list_shards(out)[0]
    with tarfile.open(shard) as tar:
        names = tar.getnames()
        key = names[0].split(".", 1)[0]
        assert {f"{key}.json", f"{key}.steps.npz", f"{key}.frame0.png"} <= set(names)
        ann = json.loads(tar.extractfile(f"{key}.json").read())
        import io

        steps = np.load(io.BytesIO(tar.extractfile(f"{key}.steps.npz").read()))
        assert steps["images"].shape[0] == steps["actions"].shape[0] == ann["num_steps"]
        m = mu.decode({"size": ann["mask"]["size"], "counts": ann["mask"]["counts"].encode()})
        assert m.sum() == ann["mask_area"]
        assert ann["text"].startswith("What should the robot do to")


def _bad_inputs(demos: Path, dst: Path) -> dict[str, str]:
    """Copy the demos and break four of them; returns key -> expected reject reason."""
    shutil.copytree(demos, dst)
    keys = sorted(p.name for p in dst.glob("train_*"))
    expect = {}
    # 1. truncated steps.npz
    f = dst / keys[0] / "steps.npz"
    f.write_bytes(f.read_bytes()[:1000])
    expect[keys[0]] = "corrupt_episode"
    # 2. the gripper never closes
    with np.load(dst / keys[1] / "steps.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["action"][:, 6] = 0.0
    arrays["gripper"][:] = 0.0
    np.savez_compressed(dst / keys[1] / "steps.npz", **arrays)
    expect[keys[1]] = "no_gripper_close"
    # 3. no recognisable object in the instruction
    meta = json.loads((dst / keys[2] / "episode.json").read_text())
    meta["instruction"] = "move left"
    (dst / keys[2] / "episode.json").write_text(json.dumps(meta))
    expect[keys[2]] = "phrase_not_found"
    # 4. no camera model
    meta = json.loads((dst / keys[3] / "episode.json").read_text())
    meta["cameras"] = {}
    (dst / keys[3] / "episode.json").write_text(json.dumps(meta))
    expect[keys[3]] = "missing_camera_model"
    return expect


def test_bad_inputs_are_skipped_with_reasons(demos, tmp_path):
    expect = _bad_inputs(demos, tmp_path / "bad")
    out = tmp_path / "ann"
    rep = run_annotation(SimDemoSource(tmp_path / "bad"), out, AnnotationConfig(), progress=False)
    got = {r["key"]: r["reason"] for r in rep["rejected_episodes"]}
    for k, reason in expect.items():
        assert got.get(k) == reason, (k, got)
    assert rep["accepted"] + rep["rejected"] == rep["episodes"] == 6
    assert rep["filtered_fraction"] == pytest.approx(rep["rejected"] / 6)
    keys = {s["key"] for s in iter_samples(out)}
    assert keys.isdisjoint(expect) and len(keys) == rep["accepted"]


def _digest(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_resume_after_a_crash_keeps_work_and_redoes_nothing(demos, tmp_path):
    out = tmp_path / "ann"
    cfg = AnnotationConfig(shard_size=2)
    src = SimDemoSource(demos)
    run_annotation(src, out, cfg, progress=False, limit=3)  # first 3 episodes: one full shard + 1 staged
    shards_before = _digest(list_shards(out))
    journal = out / "journal" / "part000of001.jsonl"
    assert len(journal.read_text().splitlines()) == 3
    # simulate a crash mid-write: a truncated journal line and a temp file
    with open(journal, "a") as f:
        f.write('{"key": "train_00000')
    (out / "staging" / ".part000of001--x.tar.abc.tmp").write_bytes(b"partial")

    calls = []

    class Counting(Annotator):
        def annotate(self, ep, timings=None):
            calls.append(ep.episode_id)
            return super().annotate(ep, timings)

    rep = run_annotation(src, out, cfg, annotator=Counting(cfg), progress=False)
    assert len(calls) == len(src.keys()) - 3 and not set(calls) & {
        json.loads(x)["key"] for x in journal.read_text().splitlines()[:3]
    }
    assert rep["episodes"] == len(src.keys())
    for name, h in shards_before.items():  # finished shards untouched
        assert _digest([out / "shards" / name])[name] == h
    keys = [
        s["key"] for s in iter_samples(out, decode=False) for s in [{"key": json.loads(s["json"])["key"]}]
    ]
    assert len(keys) == len(set(keys)) == rep["accepted"]
    # a third run does nothing
    calls.clear()
    run_annotation(src, out, cfg, annotator=Counting(cfg), progress=False)
    assert calls == []


def test_shards_split_the_work_and_the_reader_splits_the_shards(demos, tmp_path):
    out = tmp_path / "ann"
    cfg = AnnotationConfig(shard_size=1)
    src = SimDemoSource(demos)
    for i in range(2):
        run_annotation(src, out, cfg, shard=(i, 2), progress=False)
    rep = json.loads((out / "report.json").read_text())
    assert rep["episodes"] == len(src.keys())
    prefixes = {p.name.split("-")[0] for p in list_shards(out)}
    assert prefixes <= {"part000of002", "part001of002"}
    all_keys = sorted(json.loads(s["json"])["key"] for s in iter_samples(out, decode=False))
    assert len(all_keys) == rep["accepted"] == len(set(all_keys))
    parts = [
        sorted(
            json.loads(s["json"])["key"]
            for s in iter_samples(out, rank=r, world_size=2, worker_id=w, num_workers=2, decode=False)
        )
        for r in range(2)
        for w in range(2)
    ]
    assert sorted(sum(parts, [])) == all_keys  # every sample read exactly once
    s = next(iter_samples(out))
    assert s["mask"].shape == s["images"].shape[1:3] and s["mask"].sum() == s["annotation"]["mask_area"]
    assert np.array_equal(s["mask"], decode_rle(s["annotation"]["mask"]))
    assert s["actions"].shape == (s["images"].shape[0], 7)


def test_config_file_and_cli_errors(demos, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("min_mask_px: 100000\nshard_size: 3\n")
    out = tmp_path / "ann"
    assert (
        main(
            [
                "annotate",
                "--input",
                str(demos),
                "--input-format",
                "sim",
                "--out",
                str(out),
                "--config",
                str(cfg),
                "--no-progress",
                "--limit",
                "2",
            ]
        )
        == 0
    )
    rep = json.loads((out / "report.json").read_text())
    assert rep["reasons"] == {"tiny_mask": 2}
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_key: 1\n")
    assert (
        main(
            [
                "annotate",
                "--input",
                str(demos),
                "--input-format",
                "sim",
                "--out",
                str(out),
                "--config",
                str(bad),
            ]
        )
        == 2
    )
    assert (
        main(["annotate", "--input", str(tmp_path / "nope"), "--input-format", "sim", "--out", str(out)]) == 2
    )
