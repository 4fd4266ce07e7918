"""Training: config and data errors before any work, resume after SIGKILL, NaN stop, DDP and FSDP on gloo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pixelvla_ros.learning.training.config import DataConfig
from pixelvla_ros.learning.training.data import (
    batches,
    chunk_targets,
    count_episodes,
    example_stream,
    idle_steps,
)
from pixelvla_ros.learning.training.train import main

from pixelvla_ros.model import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "train_tiny.yaml"
SMALL = [
    "batch_size=4",
    "warmup_steps=1",
    "log_every=1",
    "model_overrides={image_size: 32, chunk_size: 8, proprio_dim: 4}",
]


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 recorded and annotated simulator demonstrations in two shards."""
    base = tmp_path_factory.mktemp("train_data")
    run = [sys.executable, "-m"]
    subprocess.run(
        run
        + [
            "pixelvla_ros.sim.record",
            "--out",
            str(base / "demos"),
            "--episodes",
            "4",
            "--split",
            "train",
            "--task",
            "pick_prompted",
            "--image-size",
            "64",
        ],
        check=True,
        cwd=ROOT,
    )
    (base / "annotate.yaml").write_text("shard_size: 1\n")  # one episode per shard: enough for 2 ranks
    annotate = [
        "pixelvla_ros.learning.annotation",
        "annotate",
        "--input",
        str(base / "demos"),
        "--input-format",
        "sim",
        "--out",
        str(base / "ann"),
        "--config",
        str(base / "annotate.yaml"),
        "--no-progress",
    ]
    subprocess.run(run + annotate, check=True, cwd=ROOT)
    assert count_episodes(base / "ann") >= 3
    return base / "ann"


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        "--no-progress",
        "--set",
        f"data.train={data}",
        f"output_dir={out}",
        *SMALL,
        *extra,
    ]


def _losses(out: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in lines}  # a resumed run's record of a step replaces the killed run's


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["learning_rate=5.0"], "learning_rate"),
        (["batch_size=0"], "batch_size"),
        (["data.prompt_modes={text+telepathy: 1.0}"], "telepathy"),
        (["data.train=/nonexistent/data"], "does not exist"),
        (["init_checkpoint_changes={pixel.centroid_encoding: true}"], "needs init_checkpoint"),
        (["distributed=fsdp"], "torchrun"),  # FSDP shards between processes: one process is refused
        (["action_loss_weights=[1, 1, 1]"], "action_loss_weights"),
        (["action_loss_weights=[0, 0, 0, 0, 0, 0, 0]"], "action_loss_weights"),
        (["data.anchor_drop_prob=1.5"], "anchor_drop_prob"),
        # knobs retired in issue 18, set to anything but their old "off" value
        (["grasp_offset_loss_weight=1"], "grasp_offset_loss_weight was retired (issue 18"),
        (["data.proprio_shift_prob=0.3"], "data.proprio_shift_prob was retired"),
        (["data.proprio_shift_m=0.03"], "data.proprio_shift_m was retired"),
        (["data.proprio_hidden_dims=[0, 1]"], "data.proprio_hidden_dims was retired"),
        (["model_overrides={proprio_dim: 4, grasp_offset_head: true}"], "grasp_offset_head was retired"),
        (
            [
                f"init_checkpoint={ROOT / 'checkpoints' / 'tiny'}",
                "init_checkpoint_changes={action.grasp_offset_head: true}",
            ],
            "action.grasp_offset_head was retired",
        ),
    ],
)
def test_bad_config_is_refused_before_work(annotated, tmp_path, capsys, change, message) -> None:
    assert main(_args(annotated, tmp_path / "run", *change)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_config_file_and_empty_dataset(tmp_path, capsys) -> None:
    assert main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty" / "shards").mkdir(parents=True)
    assert main(_args(tmp_path / "empty", tmp_path / "run")) == 2
    assert "no episodes" in capsys.readouterr().err


def test_7b_config_names_the_pretrained_folder_to_set(tmp_path, capsys) -> None:
    config = ROOT / "config" / "train_7b_towers_lora.yaml"
    args = ["--config", str(config), "--set", f"data.train={tmp_path}", f"output_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "model_overrides.llm_path: /path/to/llama-2-7b-hf is not a folder" in error
    assert not (tmp_path / "run").exists()


def test_ranks_read_different_examples(annotated) -> None:
    cfg = DataConfig(train=str(annotated))
    keys = [{e.key for e in next(batches(cfg, 8, 8, seed=0, rank=r, world_size=2))[2]} for r in (0, 1)]
    assert keys[0] and keys[1] and not keys[0] & keys[1]


def test_a_list_of_dataset_folders_mixes_their_episodes(annotated, tmp_path) -> None:
    import shutil

    from pixelvla_ros.learning.annotation.format import list_shards

    shards = list_shards(annotated)
    for name, part in (("a", shards[:1]), ("b", shards[1:])):
        (tmp_path / name / "shards").mkdir(parents=True)
        for shard in part:
            shutil.copy(shard, tmp_path / name / "shards")
    mixed = DataConfig(train=[str(tmp_path / "a"), str(tmp_path / "b")])
    assert count_episodes(mixed.train) == count_episodes(annotated)
    keys = {e.key for e in example_stream(mixed, 8, seed=0, epoch=0)}
    assert keys == {e.key for e in example_stream(DataConfig(train=str(annotated)), 8, seed=0, epoch=0)}
    with pytest.raises(ValueError, match="nonexistent does not exist"):
        DataConfig(train=[str(tmp_path / "a"), "/nonexistent"])


def test_action_loss_weights_weigh_each_dimension_of_the_valid_steps(annotated, tmp_path) -> None:
    import yaml
    from pixelvla_ros.learning.training.config import load_config
    from pixelvla_ros.learning.training.train import Trainer

    weights = [2.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0]
    overrides = {"data.train": str(annotated), "output_dir": str(tmp_path / "run")}
    overrides.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in SMALL)})
    trainer = Trainer(load_config(CONFIG, {**overrides, "action_loss_weights": weights}), progress=False)
    inputs, targets, valid = trainer.collate(next(batches(trainer.cfg.data, 8, 4, seed=0))[2])
    valid[0, -3:] = False  # padding past an episode's end counts for nothing
    with torch.no_grad():
        loss = trainer.forward_loss(inputs, targets, valid)
        err = (trainer.model(inputs).actions - targets).abs()[valid]  # (valid steps, 7)
    w = torch.tensor(weights)
    assert loss.item() == pytest.approx(((err * w).sum() / (w.sum() * len(err))).item(), rel=1e-5)


def test_gradient_checkpointing_and_reduced_precision_frozen_weights_keep_the_gradients(
    annotated, tmp_path
) -> None:
    """gradient_checkpointing recomputes the blocks in the backward pass: the same gradients. dtype bfloat16
    stores the frozen weights in bf16 and keeps the trainable ones (and AdamW) in fp32."""
    import yaml
    from pixelvla_ros.learning.training.config import load_config
    from pixelvla_ros.learning.training.train import Trainer

    overrides = {"data.train": str(annotated), "output_dir": str(tmp_path / "run"), "stage": "stage2"}
    overrides.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in SMALL)})
    grads = []
    for checkpointing in (False, True):
        trainer = Trainer(
            load_config(CONFIG, {**overrides, "gradient_checkpointing": checkpointing}), progress=False
        )
        assert trainer.model.llm.is_gradient_checkpointing is checkpointing
        trainer.model.train()
        trainer.forward_loss(*trainer.collate(next(batches(trainer.cfg.data, 8, 4, seed=0))[2])).backward()
        grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("lora_B" in n for n in grads[0])
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6, msg=name)
    low = Trainer(load_config(CONFIG, {**overrides, "dtype": "bfloat16"}), progress=False)
    kinds = {(p.requires_grad, p.dtype) for p in low.model.parameters()}
    assert kinds == {(True, torch.float32), (False, torch.bfloat16)}
    low.model.train()
    loss = low.forward_loss(*low.collate(next(batches(low.cfg.data, 8, 4, seed=0))[2]))
    loss.backward()  # CPU autocast: bf16 frozen weights next to fp32 trainable ones
    assert torch.isfinite(loss) and all(
        p.grad.dtype == torch.float32 for p in low.model.parameters() if p.grad is not None
    )


def test_examples_carry_the_episode_camera_shifted_with_the_image(annotated) -> None:
    """The prompt anchor's calibration (preprocessing.prompt_anchor): the annotated episode's camera, its
    principal point moved with the shift augmentation, and none in the anchor_drop_prob share."""
    modes = {"text+point": 1.0}
    plain = list(example_stream(DataConfig(train=str(annotated), prompt_modes=modes), 8, 0, 0, augment=False))
    assert plain and all(e.inputs.camera is not None for e in plain)
    shifted = DataConfig(train=str(annotated), prompt_modes=modes, augment_shift_px=3)
    before = {e.key: e.inputs for e in plain}
    moved = 0
    for e in example_stream(shifted, 8, seed=0, epoch=0):
        b, a = before[e.key], e.inputs
        delta = a.prompts[0].points - b.prompts[0].points  # the point's shift, clipped at the image edge
        principal = a.camera.K[:2, 2] - b.camera.K[:2, 2]
        inside = np.all((a.prompts[0].points > 0) & (a.prompts[0].points < a.image.shape[1] - 1))
        if inside:
            np.testing.assert_allclose(principal, delta[0])
            moved += bool(np.any(principal))
    assert moved > 0
    dropped = DataConfig(train=str(annotated), prompt_modes=modes, anchor_drop_prob=1.0)
    assert all(e.inputs.camera is None for e in example_stream(dropped, 8, seed=0, epoch=0))


def test_padding_past_the_episode_end_is_marked_invalid() -> None:
    actions = np.zeros((5, 7))
    actions[:, 2], actions[3:, 6] = 0.04, 1.0
    chunk, valid = chunk_targets(actions, 3, 4)
    assert valid.tolist() == [True, True, False, False]
    np.testing.assert_array_equal(chunk[:2], actions[3:])
    assert np.all(chunk[2:, :6] == 0) and np.all(chunk[2:, 6] == 1.0)  # hold still, gripper kept


def test_idle_steps_are_those_that_neither_move_nor_change_the_gripper() -> None:
    actions = np.zeros((6, 7))
    actions[0, 0] = 0.03  # moves
    actions[1, 2] = 0.001  # a sub-millimetre correction: idle
    actions[2, 6] = 1.0  # closes the gripper without moving: not idle
    actions[3, 6] = 1.0  # waits with the gripper closed: idle
    actions[4, [2, 6]] = 0.04, 1.0  # lifts
    actions[5, [3, 6]] = 0.02, 1.0  # turns
    assert idle_steps(actions).tolist() == [False, True, False, True, False, False]


def test_dropping_idle_steps_keeps_one_example_per_moving_step(annotated) -> None:
    from pixelvla_ros.learning.annotation.format import iter_samples, list_shards

    episodes = [sample["actions"] for sample in iter_samples(list_shards(annotated))]
    moving = sum(int((~idle_steps(a)).sum()) for a in episodes)
    kept = list(example_stream(DataConfig(train=str(annotated), drop_idle_steps=True), 8, seed=0, epoch=0))
    every = list(example_stream(DataConfig(train=str(annotated)), 8, seed=0, epoch=0))
    assert len(every) == sum(len(a) for a in episodes)
    assert 0 < len(kept) == moving < len(every)  # the expert's demos do wait (descend, close)
    assert all(e.valid[0] for e in kept)


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly(annotated, tmp_path) -> None:
    steps = ["max_steps=8", "checkpoint_every=3"]
    assert main(_args(annotated, tmp_path / "straight", *steps)) == 0
    straight = _losses(tmp_path / "straight")

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pixelvla_ros.learning.training.train", *_args(annotated, killed, *steps)]
    process = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "step_0000003").is_dir():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for later in (killed / "checkpoints").glob("step_*"):  # as if killed right after step 3's checkpoint
        if later.name > "step_0000003":
            os.system(f"rm -rf {later}")

    assert main(_args(annotated, killed, *steps, "--resume", "auto")) == 0
    resumed = _losses(killed)
    for step in range(4, 9):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5), f"step {step}"
    model, _ = load_checkpoint(killed / "model", device="cpu")
    reference, _ = load_checkpoint(tmp_path / "straight" / "model", device="cpu")
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(
    annotated, tmp_path, monkeypatch, capsys
) -> None:
    from pixelvla_ros.learning.training import train as train_module

    real_loss, calls = train_module.Trainer._loss, []

    def loss_going_bad(self, examples):
        calls.append(1)
        loss = real_loss(self, examples)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(train_module.Trainer, "_loss", loss_going_bad)
    assert main(_args(annotated, tmp_path / "run", "max_steps=6", "checkpoint_every=2")) == 3
    error = capsys.readouterr().err
    assert "at step 3" in error and "@" in error  # the step and the examples (episode@t) are named
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*")] == ["step_0000002"]


def test_resume_with_another_action_space_is_refused(annotated, tmp_path, capsys) -> None:
    assert (
        main(_args(annotated, tmp_path / "run", "max_steps=2", "warmup_steps=0", "checkpoint_every=1")) == 0
    )
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000  # the run's loss curve
    other = "model_overrides={image_size: 32, chunk_size: 4, proprio_dim: 4}"
    assert (
        main(
            _args(
                annotated, tmp_path / "run", other, "--resume", str(tmp_path / "run/checkpoints/step_0000001")
            )
        )
        == 2
    )
    assert "action space" in capsys.readouterr().err


def _torchrun(data: Path, out: Path, *extra: str) -> list[dict]:
    """Train on 2 gloo processes; the records of ranks.json."""
    torchrun = Path(sys.executable).with_name("torchrun")
    module = "pixelvla_ros.learning.training.train"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", module, *_args(data, out, *extra)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = json.loads((out / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert not set(ranks[0]["first_examples"]) & set(ranks[1]["first_examples"])
    return ranks


def _metrics(out: Path) -> dict[int, tuple[float, float]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in lines}


@pytest.mark.slow
def test_ddp_on_two_gloo_processes(annotated, tmp_path) -> None:
    ranks = _torchrun(annotated, tmp_path / "ddp", "max_steps=3", "checkpoint_every=3")
    assert ranks[0]["param_checksum"] == ranks[1]["param_checksum"]


@pytest.mark.slow
def test_fsdp_with_lora_matches_ddp_and_resumes(annotated, tmp_path, capsys) -> None:
    """FSDP2 on 2 gloo processes, stage 2 (LoRA weights trainable next to frozen base weights in one FSDP
    unit), against DDP on the same data; then a resume from the FSDP run's step-2 checkpoint."""
    lora = ["stage=stage2", "max_steps=3"]
    _torchrun(annotated, tmp_path / "ddp", *lora, "checkpoint_every=3")
    _torchrun(annotated, tmp_path / "fsdp", *lora, "distributed=fsdp", "checkpoint_every=2")
    # Not bit-equal: FSDP reduce-scatters gradient shards and takes the clipping norm from per-shard norms,
    # DDP all-reduces buckets, so float sums run in another order (seen: ~1e-7 relative). The gradient norm
    # is compared because Adam's update is blind to a gradient scaled by the world size (a sum for a mean);
    # atol 1e-5 on the weights is 3% of one step's update (lr 3e-4): a rank's gradient lost would show.
    ddp_metrics, fsdp_metrics = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "fsdp")
    assert sorted(fsdp_metrics) == [1, 2, 3]
    for step, values in ddp_metrics.items():
        assert fsdp_metrics[step] == pytest.approx(values, rel=1e-5), f"step {step}"
    fsdp_model, _ = load_checkpoint(tmp_path / "fsdp" / "model", device="cpu")
    ddp_model, _ = load_checkpoint(tmp_path / "ddp" / "model", device="cpu")
    fsdp_state, ddp_state = fsdp_model.state_dict(), ddp_model.state_dict()
    assert any("lora_" in name for name in fsdp_state) and fsdp_state.keys() == ddp_state.keys()
    for name, value in fsdp_state.items():
        torch.testing.assert_close(value, ddp_state[name], rtol=1e-5, atol=1e-5, msg=name)

    step2 = tmp_path / "fsdp" / "checkpoints" / "step_0000002"
    _torchrun(annotated, tmp_path / "resumed", *lora, "distributed=fsdp", "checkpoint_every=2", "--resume",
              str(step2))  # fmt: skip
    assert _metrics(tmp_path / "resumed")[3] == pytest.approx(fsdp_metrics[3], rel=1e-5)
    resumed, _ = load_checkpoint(tmp_path / "resumed" / "model", device="cpu")
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, fsdp_state[name], rtol=1e-5, atol=1e-6, msg=name)

    # its optimizer state is saved by parameter name: resuming it without FSDP is refused, saying why
    assert main(_args(annotated, tmp_path / "single", *lora, "--resume", str(step2))) == 2
    assert "distributed: fsdp" in capsys.readouterr().err


def test_lora_at_the_7b_layout_from_converted_openvla_weights_trains_both_stages_and_acts(
    annotated, tmp_path, capfd
) -> None:
    """config/train_7b_lora.yaml on the CPU from a converted synthetic OpenVLA checkpoint (the 7b layout at
    reduced width): stage 1 (action head), then stage 2 (LoRA on the LLM, pixel and prompt encoders) with
    gradient checkpointing; the adapter is saved; evaluate and the policy node load the result merged and
    act. (capfd: the node's executor needs a real stderr.)"""
    import rclpy
    from pixelvla_ros.learning.evaluation.evaluate import main as evaluate

    from pixelvla_ros.model import read_checkpoint_config
    from pixelvla_ros.model.openvla import convert_openvla
    from pixelvla_ros.model.openvla_synthetic import write_synthetic_openvla
    from pixelvla_ros.model.testing import sample_input
    from pixelvla_ros.nodes.policy_node import PolicyNode

    source = write_synthetic_openvla(tmp_path / "openvla-7b")
    converted = convert_openvla(source, tmp_path / "converted", "bridge_orig").output
    config = ROOT / "config" / "train_7b_lora.yaml"
    common = ["--config", str(config), "--no-progress", "--set", f"data.train={annotated}", "batch_size=2",
              "max_steps=3", "warmup_steps=1", "checkpoint_every=3", "shuffle_buffer=8"]  # fmt: skip
    common[-1] = "data.shuffle_buffer=8"
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    assert main([*common, f"init_checkpoint={converted}", f"output_dir={stage1}"]) == 0
    assert "untrained action head; action statistics from" in capfd.readouterr().out
    record1 = read_checkpoint_config(stage1 / "model")
    assert record1["lora"] is None and record1["extra"]["train_config"]["gradient_checkpointing"] is True
    stats = record1["preprocessing"]["action_stats"]  # the training data's, not bridge_orig's
    assert stats != read_checkpoint_config(converted)["preprocessing"]["action_stats"]
    args2 = [*common, "stage=stage2", f"init_checkpoint={stage1 / 'model'}", f"output_dir={stage2}"]
    assert main(args2) == 0
    record2 = read_checkpoint_config(stage2 / "model")
    assert (
        record2["lora"]["rank"] == 32
        and (stage2 / "model" / "lora_adapter" / "adapter_config.json").is_file()
    )
    assert record2["preprocessing"]["action_stats"] == stats  # a trained head keeps its statistics
    model, _ = load_checkpoint(stage2 / "model", device="cpu")
    first, _ = load_checkpoint(stage1 / "model", device="cpu")
    moved = [n for n, p in model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert moved  # LoRA trained (B starts at zero)
    assert torch.equal(
        model.vision.towers[0].model.embeddings.cls_token, first.vision.towers[0].model.embeddings.cls_token
    )

    out = tmp_path / "eval"
    argv = ["--checkpoint", str(stage2 / "model"), "--families", "pick_prompted", "--modes", "text_point",
            "--episodes", "1", "--max-steps", "6", "--out", str(out), "--gif-episodes", "0", "--quiet",
            "--device", "cpu", "--dtype", "bfloat16"]  # fmt: skip
    assert evaluate(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["cells"][0]["episodes"] == 1

    rclpy.init(args=["--ros-args", "-p", f"policy_node:checkpoint:={stage2 / 'model'}", "-p",
                     "policy_node:device:=cpu", "-p", "policy_node:dtype:=bfloat16"])  # fmt: skip
    try:
        node = PolicyNode()
        assert node.policy.dtype == torch.bfloat16
        assert not any("lora_" in n for n, _ in node.policy.model.named_parameters())  # merged for serving
        x = sample_input("text_prompts", proprio_dim=0)
        result = node.policy.predict_chunk(x.image, x.task, x.prompts)
        assert result.valid, result.reason
        assert result.actions.shape == (8, 7)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
