"""convert_openvla on synthetic OpenVLA folders at reduced width (the real file set, tensor names, config
fields and bfloat16 shards; pixelvla_ros.model.openvla_synthetic):

- the converted towers and projector against timm itself: test/fixtures/openvla_timm holds towers built by
  timm 0.9.16 with OpenVLA's module structure, their features and the projector's output (timm cannot be
  installed in CI: it imports torchvision, whose only build that imports here is a 5.5 GB CUDA one; the
  fixture's make_fixture.py regenerates it);
- each part of the mapping (qkv split, class position slot, LayerScale, the LLM and its config, the new
  parts, the statistics and their convention), the provenance, streaming into several output shards;
- the refusal of folders that are not OpenVLA's, naming the file and the tensor, with nothing written.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pixelvla_ros.model import CheckpointError, PixelVLA, load_checkpoint, read_checkpoint_config
from pixelvla_ros.model.openvla import OPENVLA_ACTIONS, OpenVLAFolderError, convert_openvla, main
from pixelvla_ros.model.openvla_synthetic import DINO, SIGLIP, SyntheticSizes, write_synthetic_openvla
from pixelvla_ros.model.testing import sample_input

FIXTURE = Path(__file__).parent / "fixtures" / "openvla_timm" / "towers.safetensors"
TIMM_SIZES = SyntheticSizes(dino_width=64, dino_depth=3, siglip_width=80, siglip_depth=4, llm_width=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A bfloat16 synthetic OpenVLA folder, as the real one is stored."""
    return write_synthetic_openvla(tmp_path_factory.mktemp("openvla") / "openvla-7b")


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory) -> Path:
    return convert_openvla(source, tmp_path_factory.mktemp("converted") / "ckpt", "bridge_orig").output


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for shard in sorted(set(index.values())):
        out |= load_file(str(folder / shard))
    return out


def test_the_towers_and_projector_match_timm_run_on_the_same_weights(tmp_path):
    golden = load_file(str(FIXTURE))
    weights = {k: v for k, v in golden.items() if not k.startswith("test.")}
    src = write_synthetic_openvla(tmp_path / "src", TIMM_SIZES, tensors=weights, dtype=torch.float32)
    convert_openvla(src, tmp_path / "ckpt", "bridge_orig")
    model, _ = load_checkpoint(tmp_path / "ckpt", device="cpu")
    image = golden[
        "test.image"
    ]  # (2, 3, 56, 56) in [0, 1]; each tower normalises it with the file's mean/std
    with torch.no_grad():
        dino, siglip = (tower(image)[-1] for tower in model.vision.towers)
        projected = model.projector(model.vision(image)[-1])
    diffs = {
        "dinov2-reg features": (dino - golden["test.dino_features"]).abs().max().item(),
        "siglip features": (siglip - golden["test.siglip_features"]).abs().max().item(),
        "projector output": (projected - golden["test.projector_output"]).abs().max().item(),
    }
    scale = {k: golden[f"test.{k}"].abs().max().item() for k in ("dino_features", "projector_output")}
    print(f"max |converted - timm|: {diffs} (largest values {scale})")
    assert max(diffs.values()) < 2e-5


def test_every_source_tensor_is_mapped_or_listed_and_the_mapping_splits_fused_tensors(source, converted):
    src = {}
    for shard in sorted(source.glob("model-*.safetensors")):
        src |= load_file(str(shard))
    out = _tensors(converted)
    record = read_checkpoint_config(converted)
    left_out = record["extra"]["openvla"]["left_out"]
    # OpenVLA reads block depth - 2 of each tower, before the final norm: the rest is left out
    assert f"{DINO}blocks.2.mlp.fc1.weight" in left_out and f"{SIGLIP}blocks.3.attn.qkv.weight" in left_out
    assert {f"{DINO}norm.weight", f"{SIGLIP}norm.bias", "language_model.lm_head.weight"} <= set(left_out)
    assert all(k.startswith(f"{SIGLIP}attn_pool.") for k in left_out if "attn_pool" in k)
    dino, sig = "vision.towers.0.model.", "vision.towers.1.model."
    qkv = src[f"{DINO}blocks.1.attn.qkv.weight"]
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):  # rows q | k | v
        assert torch.equal(out[f"{dino}encoder.layer.1.attention.{name}.weight"], qkv[i * 64 : (i + 1) * 64])
    bias = src[f"{SIGLIP}blocks.0.attn.qkv.bias"]
    assert torch.equal(out[f"{sig}encoder.layers.0.self_attn.v_proj.bias"], bias[160:])
    pos = out[f"{dino}embeddings.position_embeddings"]  # timm folds the class position into cls_token
    assert (
        pos.shape == (1, 17, 64) and not pos[:, 0].any() and torch.equal(pos[:, 1:], src[f"{DINO}pos_embed"])
    )
    assert torch.equal(
        out[f"{dino}encoder.layer.0.layer_scale2.lambda1"], src[f"{DINO}blocks.0.ls2.scale_factor"]
    )
    assert torch.equal(out[f"{sig}embeddings.position_embedding.weight"], src[f"{SIGLIP}pos_embed"][0])
    assert torch.equal(out["projector.net.4.weight"], src["projector.fc3.weight"])
    emb = out["llm.embed_tokens.weight"]  # all 32064 rows: Llama-2's 32000, <PAD> and the padding
    assert emb.shape == (32064, 32) and torch.equal(emb, src["language_model.model.embed_tokens.weight"])
    assert torch.equal(
        out["llm.layers.1.mlp.down_proj.weight"], src["language_model.model.layers.1.mlp.down_proj.weight"]
    )
    assert {v.dtype for v in out.values()} == {torch.bfloat16}  # the source's dtype, no float32 copy
    initialised = set(record["extra"]["openvla"]["initialised"])
    assert initialised <= set(out)
    assert all(k.startswith(("vision.", "projector.", "llm.")) for k in set(out) - initialised)
    # one source tensor gives three (qkv), one gives none (left out), the others one each
    n_qkv = sum(k.endswith(("attn.qkv.weight", "attn.qkv.bias")) and k not in left_out for k in src)
    assert len(out) - len(initialised) == len(src) - len(left_out) + 2 * n_qkv


def test_the_model_config_follows_openvlas_own_config_classes(converted):
    record = read_checkpoint_config(converted)
    cfg = record["model"]
    dino, siglip = cfg["vision"]
    assert dino["kind"] == "dinov2_with_registers" and dino["hf_config"]["num_register_tokens"] == 4
    assert dino["hf_config"]["num_attention_heads"] == 16 and siglip["hf_config"]["num_attention_heads"] == 16
    assert siglip["hf_config"]["hidden_act"] == "gelu"  # timm's exact GELU, not SigLIP's tanh default
    assert dino["image_mean"] == [0.484375, 0.455078125, 0.40625]  # as OpenVLA's processor applies them
    assert siglip["image_std"] == [0.5, 0.5, 0.5]
    llm = cfg["llm"]["hf_config"]
    # text_config holds only a diff to LlamaConfig's defaults, as OpenVLA's config class reads it
    assert (
        llm["rms_norm_eps"] == 1e-6 and llm["max_position_embeddings"] == 2048 and llm["vocab_size"] == 32064
    )
    assert not llm["tie_word_embeddings"]
    assert cfg["projector_mult"] == 4 and cfg["image_size"] == 56


def test_statistics_become_the_checkpoints_normalization_in_this_packages_convention(
    converted, source, tmp_path
):
    record = read_checkpoint_config(converted)
    stats = record["preprocessing"]["action_stats"]
    assert stats["q01"][:6] == [-0.029, -0.041, -0.026, -0.081, -0.092, -0.127]
    assert stats["q99"][:6] == [0.028, 0.040, 0.040, 0.082, 0.078, 0.133]
    assert (stats["q01"][6], stats["q99"][6]) == (0.0, 1.0)
    provenance = record["extra"]["openvla"]
    assert (
        provenance["unnorm_key"] == "bridge_orig" and provenance["action_convention_read"] == OPENVLA_ACTIONS
    )
    assert record["extra"]["action_head"] == "untrained"
    digests = provenance["source_files"]
    assert set(digests) >= {"config.json", "dataset_statistics.json", "model-00001-of-00003.safetensors"}
    assert all(len(d["sha256"]) == 64 for d in digests.values())
    # an unnormalised dimension stays as it is; a gripper seen mostly closed (1 = open) flips its bounds
    folder = tmp_path / "src"
    shutil.copytree(source, folder)
    data = json.loads((folder / "dataset_statistics.json").read_text())
    action = data["bridge_orig"]["action"]
    action["mask"][5], action["q01"][6], action["q99"][6] = False, 0.2, 0.9
    (folder / "dataset_statistics.json").write_text(json.dumps(data))
    stats = read_checkpoint_config(convert_openvla(folder, tmp_path / "out", "bridge_orig").output)
    q01, q99 = stats["preprocessing"]["action_stats"]["q01"], stats["preprocessing"]["action_stats"]["q99"]
    assert (q01[5], q99[5]) == (-1.0, 1.0) and (q01[6], q99[6]) == pytest.approx((0.1, 0.8))


def test_the_new_parts_start_as_the_model_initialises_them(converted):
    record = read_checkpoint_config(converted)
    out = _tensors(converted)
    from pixelvla_ros.model import PixelVLAConfig

    torch.manual_seed(0)  # the converter's seed
    fresh = PixelVLA(PixelVLAConfig.from_dict(record["model"]), load_pretrained=False, meta_backbones=True)
    own = fresh.state_dict()
    initialised = record["extra"]["openvla"]["initialised"]
    assert any(k.startswith("action_decoder.") for k in initialised)
    assert any(k.startswith("pixel_encoder.") for k in initialised) and "action_queries" in initialised
    for k in initialised:
        assert torch.equal(out[k], own[k].to(torch.bfloat16)), k


def test_the_checkpoint_loads_in_bfloat16_and_acts(converted):
    model, pre = load_checkpoint(converted, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    actions = model.predict(pre.batch([sample_input("all", proprio_dim=0)]))
    assert actions.shape == (1, 8, 7) and torch.isfinite(actions).all()
    assert pre.tokenizer.pad_token == "<PAD>" and len(pre.tokenizer) <= 32064


def test_streaming_cuts_the_output_into_shards_of_the_given_size(source, tmp_path):
    cap = 256 << 10
    result = convert_openvla(source, tmp_path / "ckpt", "bridge_orig", max_shard_bytes=cap)
    shards = sorted(result.output.glob("model-*.safetensors"))
    assert len(shards) > 5
    for shard in shards[:-1]:  # the last holds the parts OpenVLA lacks
        with safe_open(str(shard), "pt") as f:
            n = len(list(f.keys()))
        assert shard.stat().st_size < cap + 16 << 10 or n == 1  # one tensor larger than the cap stands alone
    model, _ = load_checkpoint(result.output, device="cpu")
    reference, _ = load_checkpoint(
        convert_openvla(source, tmp_path / "one", "bridge_orig").output, device="cpu"
    )
    for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_the_command_line_converts_and_reports_a_bad_folder_with_exit_code_2(source, tmp_path, capsys):
    assert (
        main(["--input", str(source), "--output", str(tmp_path / "ckpt"), "--unnorm-key", "bridge_orig"]) == 0
    )
    assert "tensors converted" in capsys.readouterr().out
    assert main(["--input", str(source), "--output", str(tmp_path / "ckpt2")]) == 2  # two datasets, no key
    err = capsys.readouterr().err
    assert "--unnorm-key" in err and "bridge_orig" in err and not (tmp_path / "ckpt2").exists()
    assert "modeling_prismatic" not in sys.modules  # the folder's own code raises if imported


def _edit_json(folder: Path, name: str, edit) -> None:
    data = json.loads((folder / name).read_text())
    edit(data)
    (folder / name).write_text(json.dumps(data))


def _edit_shard(folder: Path, key: str, value: torch.Tensor | None) -> None:
    """Replace (None: remove) tensor `key` in its shard, keeping the index consistent."""
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = folder / index["weight_map"][key]
    tensors = load_file(str(shard))
    if value is None:
        del tensors[key], index["weight_map"][key]
    else:
        tensors[key] = value
    save_file(tensors, str(shard), {"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def _add_tensor(folder: Path, key: str) -> None:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = "model-00001-of-00003.safetensors"
    tensors = load_file(str(folder / shard)) | {key: torch.zeros(4, dtype=torch.bfloat16)}
    save_file(tensors, str(folder / shard), {"format": "pt"})
    index["weight_map"][key] = shard
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def _truncate(folder: Path) -> None:
    shard = folder / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


BAD_FOLDERS = {
    "another vision backbone": (
        lambda f: _edit_json(f, "config.json", lambda c: c.update(vision_backbone_id="siglip-vit-so400m")),
        OpenVLAFolderError,
        r"config\.json: vision_backbone_id 'siglip-vit-so400m'",
    ),
    "an unknown timm tower": (
        lambda f: _edit_json(
            f, "config.json", lambda c: c.update(timm_model_ids=["vit_base_patch16_224", "x"])
        ),
        OpenVLAFolderError,
        r"config\.json: timm_model_ids \['vit_base_patch16_224'",
    ),
    "a missing tensor": (
        lambda f: _edit_shard(f, f"{DINO}blocks.1.ls1.scale_factor", None),
        OpenVLAFolderError,
        r"index\.json: the model needs tensors the folder has not: .*layer\.1\.layer_scale1",
    ),
    "an extra tensor": (
        lambda f: _add_tensor(f, f"{DINO}blocks.0.attn.q_norm.weight"),
        OpenVLAFolderError,
        r"tensor vision_backbone\.featurizer\.blocks\.0\.attn\.q_norm\.weight is not part of OpenVLA",
    ),
    "a tensor of the wrong shape": (
        lambda f: _edit_shard(
            f, f"{SIGLIP}blocks.1.mlp.fc2.weight", torch.zeros(80, 7, dtype=torch.bfloat16)
        ),
        OpenVLAFolderError,
        r"tensor vision_backbone\.fused_featurizer\.blocks\.1\.mlp\.fc2\.weight \(80, 7\) gives",
    ),
    "a truncated shard": (_truncate, OpenVLAFolderError, r"model-00002-of-00003\.safetensors cannot be read"),
    "no tokenizer": (
        lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
        OpenVLAFolderError,
        r"the tokenizer is missing",
    ),
    "an unknown unnorm key": (
        lambda f: None,
        OpenVLAFolderError,
        r"dataset_statistics\.json: no dataset 'libero_spatial'; known: bridge_orig, fractal20220817_data",
    ),
    "no statistics": (
        lambda f: [
            (f / "dataset_statistics.json").unlink(),
            _edit_json(f, "config.json", lambda c: c.pop("norm_stats")),
        ],
        OpenVLAFolderError,
        r"neither dataset_statistics\.json nor config\.json norm_stats",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_a_folder_that_is_not_openvlas_is_refused_naming_the_file_and_nothing_is_written(
    source, tmp_path, case
):
    edit, error, message = BAD_FOLDERS[case]
    folder = tmp_path / "src"
    shutil.copytree(source, folder)
    edit(folder)
    key = "libero_spatial" if case == "an unknown unnorm key" else "bridge_orig"
    out = tmp_path / "out" / "ckpt"
    with pytest.raises(error, match=message):
        convert_openvla(folder, out, key)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no partial folder


def test_an_existing_output_is_never_overwritten(source, converted):
    before = (converted / "pixelvla_checkpoint.json").read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        convert_openvla(source, converted, "bridge_orig")
    assert (converted / "pixelvla_checkpoint.json").read_bytes() == before
    load_checkpoint(converted, device="cpu")  # still whole


def test_a_converted_checkpoint_with_a_damaged_shard_is_refused_on_load(converted, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(converted, copy)
    shard = copy / "model-00001-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors is corrupted"):
        load_checkpoint(copy, device="cpu")
