"""Configs, presets, pretrained assembly, and checkpoints (save -> load, refusal of bad checkpoints)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelvla_ros.action_space import ActionSpace
from pixelvla_ros.model import (
    CheckpointError,
    PixelVLA,
    PixelVLAConfig,
    apply_training_stage,
    build_model,
    config_7b,
    load_checkpoint,
    save_checkpoint,
    tiny_config,
)
from pixelvla_ros.model.testing import MODES, make_preprocessor, micro_config, oblique_camera, sample_input
from pixelvla_ros.prompts import PixelVLAInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(pre):
    return pre.batch([sample_input(m, seed=i) for i, m in enumerate(MODES)])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = micro_config()
    model = build_model(cfg, device="cpu").eval()
    pre = make_preprocessor(cfg)
    path = save_checkpoint(model, pre, tmp_path_factory.mktemp("ckpt") / "plain")
    return model, pre, path


def test_config_json_roundtrip():
    for cfg in (tiny_config(), config_7b(), micro_config()):
        again = PixelVLAConfig.from_json(cfg.to_json())
        assert again == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        PixelVLAConfig.from_dict({**tiny_config().to_dict(), "bogus": 1})


def test_presets_sizes():
    tiny = build_model(tiny_config(), device="cpu")
    assert tiny.num_parameters() <= 10_000_000
    assert tiny.cfg.num_tokens() <= 136
    with torch.device("meta"):  # 7b: architecture only, no memory
        big = PixelVLA(config_7b(), load_pretrained=False)
    n = big.num_parameters()
    assert 7.0e9 < n < 8.0e9, n
    assert big.cfg.num_image_tokens == 256 and big.vision.width == 1024 + 1152


def test_save_load_identical_outputs(saved):
    model, pre, path = saved
    loaded, pre2 = load_checkpoint(path, device="cpu")
    x = _inputs(pre)
    assert torch.equal(
        model.predict(x), loaded.predict(pre2.batch([sample_input(m, seed=i) for i, m in enumerate(MODES)]))
    )
    assert pre2.config.to_dict() == pre.config.to_dict()
    assert pre2.config.action_space == ActionSpace(chunk_size=4)


# Max |actions - float32 actions| allowed on normalized actions (about [-1, 1]): bf16 keeps 8 significant
# bits, fp16 11; the micro model measured about 5e-3 and 6e-4.
@pytest.mark.parametrize(("dtype", "atol"), [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_a_reduced_precision_load_is_built_on_meta_and_acts_like_float32(saved, monkeypatch, dtype, atol):
    import pixelvla_ros.model.checkpoint as checkpoint

    model, pre, path = saved
    built = []

    class Spy(PixelVLA):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            backbones = [self.vision, self.projector, self.llm]
            built.append({p.device.type for m in backbones for p in m.parameters()})

    monkeypatch.setattr(checkpoint, "PixelVLA", Spy)
    low, pre2 = load_checkpoint(path, device="cpu", dtype=dtype)
    assert built == [{"meta"}]  # no backbone memory until the file's tensors are assigned
    assert {(p.dtype, p.device.type) for p in low.parameters()} == {(dtype, "cpu")}
    # the buffers the file does not hold keep their full-precision values
    assert low.llm.rotary_emb.inv_freq.dtype == torch.float32
    torch.testing.assert_close(low.llm.rotary_emb.inv_freq, model.llm.rotary_emb.inv_freq)
    torch.testing.assert_close(low.vision.towers[0].std, model.vision.towers[0].std)
    want, got = model.predict(_inputs(pre)), low.predict(_inputs(pre2))
    err = (got - want).abs().max().item()
    print(f"{dtype}: max |actions - float32 actions| = {err:.1e} (allowed {atol:.0e})")
    assert got.dtype == torch.float32 and err < atol


def test_a_dtype_the_device_cannot_run_is_refused(saved, monkeypatch):
    _, _, path = saved
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_checkpoint(path, device="cpu", dtype=torch.float64)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(ValueError, match="cuda does not support bfloat16"):
        load_checkpoint(path, device="cuda", dtype=torch.bfloat16)


def test_the_dtype_users_name_is_resolved_per_device_and_a_fallback_is_logged(saved, monkeypatch, caplog):
    from pixelvla_ros.model.pixelvla import resolve_dtype
    from pixelvla_ros.policy import Policy

    assert (
        resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    )
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("float64", "cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with caplog.at_level("WARNING"):
        assert resolve_dtype("auto", "cuda:0") == torch.float16  # an older GPU: said, not silent
    assert "has no bfloat16" in caplog.text
    with pytest.raises(ValueError, match="does not support bfloat16"):
        resolve_dtype("bfloat16", "cuda")
    _, _, path = saved
    policy = Policy.from_checkpoint(path, device="cpu", dtype="float16")
    assert policy.dtype == torch.float16
    with pytest.raises(ValueError, match="dtype must be one of"):
        Policy.from_checkpoint(path, device="cpu", dtype="int8")


def test_a_checkpoint_grows_the_mask_centroid_encoding_and_keeps_its_outputs(saved, tmp_path):
    model, pre, path = saved
    assert not model.cfg.pixel.centroid_encoding  # made before it existed
    grown, _ = load_checkpoint(path, device="cpu", config_changes={"pixel.centroid_encoding": True})
    assert grown.cfg.pixel.centroid_encoding
    x = _inputs(pre)  # every mode, object masks included
    with torch.no_grad():  # the added projection starts at zero
        torch.testing.assert_close(grown.eval()(x).actions, model(x).actions)
    loaded, _ = load_checkpoint(save_checkpoint(grown, pre, tmp_path / "grown"), device="cpu")
    assert loaded.cfg.pixel.centroid_encoding  # saved again, the added parameters travel with it
    with pytest.raises(CheckpointError, match="bogus"):
        load_checkpoint(path, device="cpu", config_changes={"pixel.bogus": True})
    # a tensor the file lacks is still refused: only the parameters the change adds may start fresh
    from safetensors.torch import load_file, save_file

    short = _copy(path, tmp_path, "short")
    weights = load_file(str(short / "model.safetensors"))
    weights.pop(next(iter(weights)))
    save_file(weights, str(short / "model.safetensors"))
    record = json.loads((short / "pixelvla_checkpoint.json").read_text())
    record["files"]["model.safetensors"]["bytes"] = (short / "model.safetensors").stat().st_size
    (short / "pixelvla_checkpoint.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(
            short, device="cpu", verify_hash=False, config_changes={"pixel.centroid_encoding": True}
        )


def test_a_checkpoint_grows_the_prompt_anchor_and_keeps_its_outputs(tmp_path):
    torch.manual_seed(0)
    cfg = micro_config(proprio_dim=4)
    model = build_model(cfg, device="cpu").eval()
    path = save_checkpoint(model, make_preprocessor(cfg), tmp_path / "plain")
    grown, pre = load_checkpoint(path, device="cpu", config_changes={"prompt_anchor": True})
    assert grown.cfg.prompt_anchor and pre.config.prompt_anchor  # the preprocessing builds the input
    camera = oblique_camera(64, 48)
    samples = [
        replace(sample_input(m, seed=i, proprio_dim=4), camera=camera, proprio=np.array([0.4, 0.0, 0.2, 0.0]))
        for i, m in enumerate(MODES)
    ]
    x = pre.batch(samples)
    assert x.anchor[:, 3].any()  # an anchor reaches the model (modes with prompts close enough to the TCP)
    with torch.no_grad():  # the added encoder starts at zero
        torch.testing.assert_close(grown.eval()(x).actions, model(replace(x, anchor=None)).actions)
    loaded, pre2 = load_checkpoint(save_checkpoint(grown, pre, tmp_path / "grown"), device="cpu")
    assert loaded.cfg.prompt_anchor and pre2.config.prompt_anchor
    for bad in (None, torch.full_like(x.anchor, float("nan")), x.anchor[:, :3]):
        with pytest.raises(PixelVLAInputError, match="anchor|NaN"):
            loaded(replace(x, anchor=bad))
    with pytest.raises(ValueError, match="proprio_dim"):
        replace(micro_config(proprio_dim=0), prompt_anchor=True)


def test_save_load_with_lora(tmp_path):
    torch.manual_seed(1)
    cfg = micro_config()
    model = build_model(cfg, device="cpu")
    apply_training_stage(model, "stage2")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    pre = make_preprocessor(cfg)
    x = _inputs(pre)
    want = model.predict(x)
    path = save_checkpoint(model, pre, tmp_path / "lora")
    assert (path / "lora_adapter" / "adapter_model.safetensors").is_file()
    loaded, _ = load_checkpoint(path, device="cpu")
    assert torch.equal(loaded.predict(x), want)
    merged, _ = load_checkpoint(path, device="cpu", merge=True)
    torch.testing.assert_close(merged.predict(x), want, atol=1e-5, rtol=1e-4)
    merged, _ = load_checkpoint(path, device="cpu", merge=True, dtype=torch.bfloat16)  # as served on a GPU
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    assert (merged.predict(x) - want).abs().max() < 3e-2  # the bf16 tolerance above
    resumed, _ = load_checkpoint(path, device="cpu", trainable=True)
    names = apply_training_stage(resumed, "stage2")
    assert any("lora_" in n for n in names)


def _copy(path, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(path, dst)
    return dst


def test_corrupted_or_incomplete_checkpoints_are_refused(saved, tmp_path):
    _, _, path = saved
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    d = _copy(path, tmp_path, "noconfig")
    (d / "pixelvla_checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(d)
    d = _copy(path, tmp_path, "noweights")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(d)
    d = _copy(path, tmp_path, "truncated")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(d)
    d = _copy(path, tmp_path, "flipped")
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(d)
    d = _copy(path, tmp_path, "badjson")
    (d / "pixelvla_checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(d)
    for key in ("action_stats", "action_space"):
        d = _copy(path, tmp_path, f"no_{key}")
        rec = json.loads((d / "pixelvla_checkpoint.json").read_text())
        del rec["preprocessing"][key]
        (d / "pixelvla_checkpoint.json").write_text(json.dumps(rec))
        with pytest.raises(CheckpointError, match=key):
            load_checkpoint(d)
    d = _copy(path, tmp_path, "badstats")
    rec = json.loads((d / "pixelvla_checkpoint.json").read_text())
    rec["preprocessing"]["action_stats"]["q01"] = [0.0] * 6
    (d / "pixelvla_checkpoint.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match="invalid configuration"):
        load_checkpoint(d)
    d = _copy(path, tmp_path, "badspace")
    rec = json.loads((d / "pixelvla_checkpoint.json").read_text())
    rec["preprocessing"]["action_space"]["gripper"] = "0_closed_1_open"
    (d / "pixelvla_checkpoint.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match="gripper"):
        load_checkpoint(d)
    d = _copy(path, tmp_path, "arch")  # config no longer matches the weights
    rec = json.loads((d / "pixelvla_checkpoint.json").read_text())
    rec["model"]["action"]["hidden_dim"] = 32
    (d / "pixelvla_checkpoint.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match="does not match|wrong shape"):
        load_checkpoint(d)
    with pytest.raises(CheckpointError, match="action space"):
        load_checkpoint(path, expected_action_space=ActionSpace(control_rate_hz=5.0, chunk_size=4))


def test_chunk_execution_travels_with_the_checkpoint(saved, tmp_path):
    """commit_steps (steps a started chunk runs) is saved with the preprocessing; a checkpoint made before
    the entry loads with half the chunk, the packaged one states the 4 steps it was evaluated with."""
    from pixelvla_ros.policy import Policy
    from pixelvla_ros.preprocessing import PreprocessConfig

    _, pre, path = saved
    assert pre.config.action_space.chunk_size == 4 and pre.config.commit_steps == 2
    rec = json.loads((path / "pixelvla_checkpoint.json").read_text())
    assert rec["preprocessing"]["commit_steps"] == 2
    for name, value, loaded in (("older", None, 2), ("three", 3, 3)):
        d = _copy(path, tmp_path, name)
        rec = json.loads((d / "pixelvla_checkpoint.json").read_text())
        if value is None:
            del rec["preprocessing"]["commit_steps"]
        else:
            rec["preprocessing"]["commit_steps"] = value
        (d / "pixelvla_checkpoint.json").write_text(json.dumps(rec))
        assert Policy.from_checkpoint(d, device="cpu").commit_steps == loaded
    rec["preprocessing"]["commit_steps"] = 5
    (d / "pixelvla_checkpoint.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match=r"commit_steps must be in \[1, chunk_size=4\], got 5"):
        load_checkpoint(d)
    packaged = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny" / "pixelvla_checkpoint.json"
    config = PreprocessConfig.from_dict(json.loads(packaged.read_text())["preprocessing"])
    assert (config.action_space.chunk_size, config.commit_steps) == (8, 4)


# Knobs retired in issue 18 as (JSON path, the old "off" value, another value).
RETIRED = [
    (("model", "action", "grasp_offset_head"), False, True),
    (("model", "action", "slot_layout"), "per_step", "per_dim"),
    (("preprocessing", "proprio_hidden_dims"), [], [0, 1]),
]


def test_the_packaged_checkpoint_names_retired_knobs_at_their_off_value_and_loads():
    packaged = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny"
    rec = json.loads((packaged / "pixelvla_checkpoint.json").read_text())
    for keys, off, _ in RETIRED:
        node = rec
        for key in keys:
            node = node[key]
        assert node == off  # made before issue 18: the test below is about such a file
    model, pre = load_checkpoint(packaged, device="cpu")
    assert model.cfg.name == "tiny" and pre.config.prompt_anchor


@pytest.mark.parametrize(("keys", "off", "other"), RETIRED)
def test_a_retired_knob_is_ignored_at_its_off_value_and_refused_at_any_other(
    saved, tmp_path, keys, off, other
):
    model, pre, path = saved
    name = ".".join(keys[1:])
    for value in (off, other):
        d = _copy(path, tmp_path, f"{name}-{'off' if value == off else 'set'}")
        rec = json.loads((d / "pixelvla_checkpoint.json").read_text())
        node = rec
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        (d / "pixelvla_checkpoint.json").write_text(json.dumps(rec))
        if value == off:
            again, _ = load_checkpoint(d, device="cpu")
            torch.testing.assert_close(again.predict(_inputs(pre)), model.predict(_inputs(pre)))
        else:
            with pytest.raises(CheckpointError, match=rf"{name} was retired \(issue 18.*at commit cb1d7b1"):
                load_checkpoint(d)


def test_lora_checkpoint_without_adapter_is_refused(tmp_path):
    cfg = micro_config()
    model = build_model(cfg, device="cpu")
    apply_training_stage(model, "stage2")
    path = save_checkpoint(model, make_preprocessor(cfg), tmp_path / "lora")
    shutil.rmtree(path / "lora_adapter")
    with pytest.raises(CheckpointError, match="adapter"):
        load_checkpoint(path)


def test_assembled_from_pretrained_component_folders(tmp_path):
    """Components saved the HF way in local folders are loaded (local_files_only) and recorded."""
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

    base = micro_config()
    torch.manual_seed(0)
    tower = SiglipVisionModel(SiglipVisionConfig(**base.vision[0].hf_config))
    tower.save_pretrained(tmp_path / "siglip")
    llm_kw = {k: v for k, v in base.llm.hf_config.items() if k != "model_type"}
    lm = LlamaForCausalLM(LlamaConfig(**llm_kw))
    lm.save_pretrained(tmp_path / "llama")
    cfg = micro_config()
    cfg.vision[0].pretrained_path = str(tmp_path / "siglip")
    cfg.llm.pretrained_path = str(tmp_path / "llama")
    model = build_model(cfg, device="cpu")
    torch.testing.assert_close(model.llm.embed_tokens.weight, lm.model.embed_tokens.weight)
    torch.testing.assert_close(
        model.vision.towers[0].model.embeddings.patch_embedding.weight,
        tower.embeddings.patch_embedding.weight,
    )
    assert model.cfg.llm.hf_config["hidden_size"] == 64
    cfg.llm.pretrained_path = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(cfg, device="cpu")


def test_hf_tokenizer_from_a_local_folder_travels_with_the_checkpoint(tmp_path):
    """kind 'hf': any tokenizer saved the HF way in a local folder (here built offline in code)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from pixelvla_ros.model import TokenizerConfig, load_tokenizer

    words = [
        "<pad>",
        "<unk>",
        "<s>",
        "what",
        "should",
        "the",
        "robot",
        "do",
        "to",
        "pick",
        "up",
        "can",
        "?",
        ",",
    ]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.normalizer = normalizers.Lowercase()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>")
    fast.save_pretrained(tmp_path / "tok")
    cfg = micro_config()
    cfg.tokenizer = TokenizerConfig(kind="hf", path=str(tmp_path / "tok"), max_text_tokens=24)
    model = build_model(cfg, device="cpu").eval()
    pre = make_preprocessor(cfg)
    x = pre.batch([sample_input("text")])
    assert x.input_ids[0, :3].tolist() == [3, 4, 5] and x.text_mask[0].sum() < 24
    path = save_checkpoint(model, pre, tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "tok")  # the checkpoint carries its own copy
    loaded, pre2 = load_checkpoint(path, device="cpu")
    # the same token ids, so the same actions (to float rounding: the loaded tensors' memory differs)
    assert torch.equal(pre2.batch([sample_input("text")]).input_ids, x.input_ids)
    torch.testing.assert_close(
        loaded.predict(pre2.batch([sample_input("text")])), model.predict(x), atol=1e-6, rtol=0
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(cfg.tokenizer)
