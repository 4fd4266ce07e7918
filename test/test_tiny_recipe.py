"""The packaged checkpoint's recipe: config/tiny/stage_*.yaml, run in order with the model card's commands,
rebuild checkpoints/tiny. Checked without training: the configs load, chain, and resolve to the packaged
checkpoint's own training configuration and model architecture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pixelvla_ros.learning.training.config import TrainConfig, load_config

from pixelvla_ros.model import PixelVLAConfig, preset
from pixelvla_ros.model.checkpoint import _changed

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "checkpoints" / "tiny"
STAGES = ("stage_a", "stage_b", "stage_c", "stage_d", "stage_l")
PATHS = ("output_dir", "init_checkpoint")  # where a run writes and reads: may differ from the packaged run's


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """The stage configs, loaded from a folder holding what the model card's commands leave there (the
    loader refuses data folders and checkpoints that do not exist)."""
    monkeypatch.chdir(tmp_path)
    for folder in ("train", "dart", "more", "dagger"):
        (tmp_path / "data" / "annotated" / folder).mkdir(parents=True)
    for stage in STAGES:
        (tmp_path / "runs" / "tiny" / stage / "model").mkdir(parents=True)
    (tmp_path / "checkpoints" / "tiny").mkdir(parents=True)  # the packaged run's init_checkpoint
    return [load_config(ROOT / "config" / "tiny" / f"{stage}.yaml") for stage in STAGES]


def test_each_stage_starts_from_the_one_before(configs: list[TrainConfig]) -> None:
    assert configs[0].init_checkpoint is None
    for before, after in zip(configs, configs[1:], strict=False):
        assert after.init_checkpoint == f"{before.output_dir}/model"
        assert set(_folders(before)) <= set(_folders(after))  # data is only added


def test_the_last_stage_resolves_to_the_packaged_training_config(configs: list[TrainConfig]) -> None:
    # train_config.json names knobs retired since, at their off values: the loader drops them
    packaged = load_config(PACKAGED / "train_config.json").to_dict()
    final = configs[-1].to_dict()
    for key in PATHS:
        del packaged[key], final[key]
    assert final == packaged


def test_the_stages_build_the_packaged_architecture(configs: list[TrainConfig]) -> None:
    model = preset(configs[0].preset, **configs[0].model_overrides)
    for stage in configs[1:]:
        assert (stage.preset, stage.model_overrides) == (configs[0].preset, configs[0].model_overrides)
        model = PixelVLAConfig.from_dict(_changed(model.to_dict(), stage.init_checkpoint_changes))
    record = json.loads((PACKAGED / "pixelvla_checkpoint.json").read_text())
    assert model == PixelVLAConfig.from_dict(record["model"])


def test_the_model_card_has_the_commands_of_every_stage_and_data_folder(configs: list[TrainConfig]) -> None:
    card = (PACKAGED / "README.md").read_text()
    for stage in STAGES:
        assert f"train --config config/tiny/{stage}.yaml" in card
    annotated = set(re.findall(r"annotate annotate --input \S+ --input-format sim --out (\S+)", card))
    assert set(_folders(configs[-1])) == annotated


def _folders(cfg: TrainConfig) -> list[str]:
    return [cfg.data.train] if isinstance(cfg.data.train, str) else list(cfg.data.train)
