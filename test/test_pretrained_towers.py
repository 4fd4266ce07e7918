"""The 7b preset from local folders written by save_pretrained: DINOv2 with and without registers, SigLIP
(vision-only or whole SiglipModel folders) and a causal LM with its tokenizer, all tiny and random, built
at reduced width on the real loading path; and the refusal of folders that are incomplete, unreadable or
of the wrong kind, naming the file."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import (
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    LlamaConfig,
    LlamaForCausalLM,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from pixelvla_ros.model import (
    PixelVLA,
    PixelVLAConfig,
    PretrainedFolderError,
    build_model,
    config_7b,
    load_checkpoint,
    save_checkpoint,
)
from pixelvla_ros.model.testing import make_preprocessor, sample_input

DINO_DEPTH, SIGLIP_DEPTH = 4, 5
# feature_layer -2 reads hidden_states[depth - 1]: the towers are cut after that layer
DINO_RUN, SIGLIP_RUN = DINO_DEPTH - 1, SIGLIP_DEPTH - 1
WORDS = ["<pad>", "<unk>", "<s>", "pick", "up", "the", "red", "block", "what", "should", "robot", "do", "to"]
SIGLIP_VISION = dict(
    image_size=224,
    patch_size=14,
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=SIGLIP_DEPTH,
    num_attention_heads=2,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.normalizer = normalizers.Lowercase()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """Each kind of folder (path, the model saved in it)."""
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    dino = dict(
        image_size=224,
        patch_size=14,
        hidden_size=32,
        num_hidden_layers=DINO_DEPTH,
        num_attention_heads=2,
        mlp_ratio=2,
    )
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=50,
        bos_token_id=0,
        eos_token_id=1,
    )
    llama = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=512,
    )
    models = {
        "dinov2": Dinov2Model(Dinov2Config(**dino)),
        "dinov2_reg": Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**dino, num_register_tokens=4)),
        "siglip_vision": SiglipVisionModel(SiglipVisionConfig(**SIGLIP_VISION)),
        "siglip_full": SiglipModel(SiglipConfig(vision_config=SIGLIP_VISION, text_config=text)),
        "llama": LlamaForCausalLM(LlamaConfig(**llama)),
    }
    out = {}
    for name, model in models.items():
        model.eval().save_pretrained(root / name)
        out[name] = (root / name, model)
    _tokenizer().save_pretrained(root / "llama")
    return out


def _inputs(pre):
    return pre.batch(
        [sample_input("all", seed=0, proprio_dim=0), sample_input("text", seed=1, proprio_dim=0)]
    )


@pytest.mark.parametrize("siglip", ["siglip_vision", "siglip_full"])
@pytest.mark.parametrize(
    ("dino", "kind", "prefix"), [("dinov2", "dinov2", 1), ("dinov2_reg", "dinov2_with_registers", 5)]
)
def test_the_7b_preset_builds_from_local_folders_and_reads_each_towers_patches(
    folders, dino, kind, prefix, siglip
):
    dino_path, dino_src = folders[dino]
    siglip_path, siglip_src = folders[siglip]
    llm_path, llm_src = folders["llama"]
    # The folder's config names out_features for its full depth: the cut tower must not inherit them.
    assert json.loads((dino_path / "config.json").read_text())["out_features"] == [f"stage{DINO_DEPTH}"]
    cfg = config_7b(llm_path=str(llm_path), dinov2_path=str(dino_path), siglip_path=str(siglip_path))
    torch.manual_seed(0)
    model = build_model(cfg, device="cpu").eval()
    d_cfg, s_cfg = model.cfg.vision
    assert (d_cfg.kind, s_cfg.kind) == (kind, "siglip")
    assert (d_cfg.num_prefix_tokens, s_cfg.num_prefix_tokens) == (prefix, 0)
    d_tower, s_tower = model.vision.towers
    assert (d_tower.num_prefix, s_tower.num_prefix) == (prefix, 0)
    assert (len(d_tower.model.encoder.layer), len(s_tower.model.encoder.layers)) == (DINO_RUN, SIGLIP_RUN)
    assert model.vision.width == 32 + 48 and model.cfg.llm.width == 64

    # Each tower's last level is the source model's hidden_states[depth - 1], prefix tokens dropped.
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        d_levels, s_levels = d_tower(images), s_tower(images)
        d_ref = dino_src(pixel_values=(images - d_tower.mean) / d_tower.std, output_hidden_states=True)
        s_model = siglip_src.vision_model if siglip == "siglip_full" else siglip_src
        s_ref = s_model(pixel_values=(images - s_tower.mean) / s_tower.std, output_hidden_states=True)
    assert d_levels[-1].shape == (2, 256, 32) and s_levels[-1].shape == (2, 256, 48)
    torch.testing.assert_close(d_levels[-1], d_ref.hidden_states[DINO_RUN][:, prefix:])
    torch.testing.assert_close(s_levels[-1], s_ref.hidden_states[SIGLIP_RUN])
    torch.testing.assert_close(model.llm.embed_tokens.weight, llm_src.model.embed_tokens.weight)

    # The LLM folder's tokenizer tokenizes the text; one forward gives a whole finite chunk.
    pre = make_preprocessor(model.cfg)
    x = _inputs(pre)
    tokens = pre.tokenizer.convert_ids_to_tokens(x.input_ids[0][x.text_mask[0].bool()].tolist())
    assert tokens[:6] == ["what", "should", "the", "robot", "do", "to"] and "block" in tokens
    actions = model.predict(x)
    assert actions.shape == (2, 8, 7) and torch.isfinite(actions).all()


def test_a_model_built_from_folders_saves_and_loads_without_them(folders, tmp_path):
    paths = {k: tmp_path / k for k in ("dinov2_reg", "siglip_full", "llama")}
    for k, p in paths.items():
        shutil.copytree(folders[k][0], p)
    cfg = config_7b(
        llm_path=str(paths["llama"]),
        dinov2_path=str(paths["dinov2_reg"]),
        siglip_path=str(paths["siglip_full"]),
    )
    torch.manual_seed(0)
    model = build_model(cfg, device="cpu").eval()
    pre = make_preprocessor(model.cfg)
    path = save_checkpoint(model, pre, tmp_path / "ckpt")
    for p in paths.values():
        shutil.rmtree(p)  # the checkpoint carries the configs, weights and tokenizer
    loaded, pre2 = load_checkpoint(path, device="cpu")
    assert loaded.cfg.vision[0].kind == "dinov2_with_registers" and loaded.vision.towers[0].num_prefix == 5
    want = model.predict(_inputs(pre))
    assert torch.equal(loaded.predict(_inputs(pre2)), want)
    low, _ = load_checkpoint(path, device="cpu", dtype=torch.bfloat16)
    err = (low.predict(_inputs(pre2)) - want).abs().max().item()
    print(f"7b layout at reduced width, bf16: max |actions - float32 actions| = {err:.1e}")
    assert err < 3e-2  # the bf16 tolerance of test_model_checkpoint.py


def test_the_7b_preset_defaults_to_openvlas_dinov2_with_4_registers():
    cfg = config_7b()
    with torch.device("meta"):
        model = PixelVLA(cfg, load_pretrained=False)
    dino, siglip = model.vision.towers
    assert dino.model.embeddings.register_tokens.shape == (1, 4, 1024) and dino.num_prefix == 5
    assert (len(dino.model.encoder.layer), len(siglip.model.encoder.layers)) == (23, 26)
    assert PixelVLAConfig.from_json(cfg.to_json()) == cfg
    hf = {k: v for k, v in cfg.vision[0].hf_config.items() if k != "num_register_tokens"}
    with pytest.raises(ValueError, match="must give num_register_tokens"):  # counted, never assumed
        replace(cfg.vision[0], hf_config=hf)


def _copy(folders, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(folders[name][0], dst)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def _build(folders, **paths):
    kw = {"llm_path": str(folders["llama"][0]), "dinov2_path": str(folders["dinov2"][0])}
    kw["siglip_path"] = str(folders["siglip_vision"][0])
    return build_model(config_7b(**{**kw, **{k: str(v) for k, v in paths.items()}}), device="cpu")


def test_folders_missing_a_file_unreadable_or_of_another_kind_are_refused_naming_the_file(folders, tmp_path):
    d = _copy(folders, "dinov2", tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        _build(folders, dinov2_path=d)
    d = _copy(folders, "dinov2", tmp_path / "noweights")
    (d / "model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"neither model\.safetensors nor model\.safetensors\.index\.json"
    ):
        _build(folders, dinov2_path=d)
    d = _copy(folders, "siglip_vision", tmp_path / "truncated")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedFolderError, match=r"model\.safetensors cannot be read \(truncated"):
        _build(folders, siglip_path=d)
    d = _copy(folders, "dinov2", tmp_path / "badjson")
    (d / "config.json").write_text("{not json")
    with pytest.raises(PretrainedFolderError, match=r"config\.json cannot be read as JSON"):
        _build(folders, dinov2_path=d)
    with pytest.raises(PretrainedFolderError, match="'siglip_vision_model' is not a dinov2 tower"):
        _build(folders, dinov2_path=folders["siglip_vision"][0])
    with pytest.raises(PretrainedFolderError, match="'dinov2' is not a siglip tower"):
        _build(folders, siglip_path=folders["dinov2"][0])
    with pytest.raises(PretrainedFolderError, match="'dinov2' is not a causal language model"):
        _build(folders, llm_path=folders["dinov2"][0])
    # a config that claims registers over weights without them: loading would leave them random
    d = _copy(folders, "dinov2", tmp_path / "noregisters")
    _edit_config(d, model_type="dinov2_with_registers", num_register_tokens=4)
    with pytest.raises(PretrainedFolderError, match=r"do not fit.*embeddings\.register_tokens"):
        _build(folders, dinov2_path=d)
    d = _copy(folders, "siglip_vision", tmp_path / "siglip384")
    _edit_config(d, image_size=448)
    with pytest.raises(ValueError, match="SigLIP tower image_size 448 != 224"):
        _build(folders, siglip_path=d)


def test_llm_folders_with_a_missing_shard_or_no_tokenizer_are_refused(folders, tmp_path):
    _, llm = folders["llama"]
    sharded = tmp_path / "sharded"
    llm.save_pretrained(sharded, max_shard_size="40KB")
    _tokenizer().save_pretrained(sharded)
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1
    model = _build(folders, llm_path=sharded)  # whole, the shards load
    torch.testing.assert_close(model.llm.norm.weight, llm.model.norm.weight)
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match=f"weights file {shards[-1].name} is missing"):
        _build(folders, llm_path=sharded)
    d = _copy(folders, "llama", tmp_path / "notokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()
    with pytest.raises(FileNotFoundError, match=r"holds no tokenizer file \(looked for tokenizer\.json"):
        _build(folders, llm_path=d)
    d = _copy(folders, "llama", tmp_path / "smallvocab")
    _edit_config(d, vocab_size=8)
    with pytest.raises(PretrainedFolderError, match=f"has {len(WORDS)} tokens but the LLM only 8 embeddings"):
        _build(folders, llm_path=d)
