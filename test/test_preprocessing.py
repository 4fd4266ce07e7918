"""The one preprocessing path: images, prompts, masks, text, action normalization, chunk timing."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelvla_ros.model import ByteWordTokenizer, PixelVLAConfig
from pixelvla_ros.model.inputs import collate_prompts
from pixelvla_ros.model.testing import (
    default_stats,
    make_preprocessor,
    micro_config,
    oblique_camera,
    sample_input,
)
from pixelvla_ros.preprocessing import (
    ANCHOR_SCALE_M,
    NormStats,
    PolicyInput,
    PreprocessConfig,
    Preprocessor,
)
from pixelvla_ros.prompts import (
    PixelVLAInputError,
    PromptSlots,
    VisualPrompt,
    resample_polyline,
)


@pytest.fixture(scope="module")
def pre():
    return make_preprocessor(micro_config())


def test_image_resize_and_range(pre):
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[..., 0] = 255
    t = pre.image_tensor(img)
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    assert torch.allclose(t[0], torch.ones(32, 32)) and torch.allclose(t[1:], torch.zeros(2, 32, 32))


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((48, 64, 3), dtype=np.float32), "uint8"),
        (np.zeros((48, 64), dtype=np.uint8), r"\(H, W, 3\)"),
        (np.zeros((48, 64, 4), dtype=np.uint8), r"\(H, W, 3\)"),
        ([[0, 0, 0]], "numpy"),
    ],
)
def test_bad_images(pre, image, match):
    with pytest.raises(PixelVLAInputError, match=match):
        pre.batch([PolicyInput(image, "pick up the can")])


def test_prompt_coordinates_are_normalized():
    # Pixel-centre convention (OpenCV, CameraInfo): an image of width 100 spans -0.5 <= x <= 99.5.
    slots = PromptSlots(max_points=2, max_lines=1, line_points=3, max_boxes=1, max_masks=1)
    mask = np.zeros((50, 100), dtype=bool)
    mask[:25, :50] = True
    prompts = [
        VisualPrompt.point([[49.5, 24.5]], 0),
        VisualPrompt.box(79.5, 39.5, 19.5, 9.5),
        VisualPrompt.line([[-0.5, -0.5], [99.5, 49.5]]),
        VisualPrompt.from_mask(mask),
    ]
    p = collate_prompts([prompts], [(50, 100)], slots, (10, 10))
    torch.testing.assert_close(p.point_xy[0, 0], torch.tensor([0.5, 0.5]))
    assert p.point_valid.tolist() == [[True, False]] and p.point_label[0, 0] == 0
    torch.testing.assert_close(p.box_xy[0, 0], torch.tensor([[0.2, 0.2], [0.8, 0.8]]))  # corners sorted
    torch.testing.assert_close(p.line_xy[0, 0], torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]))
    assert p.mask.shape == (1, 1, 10, 10)
    torch.testing.assert_close(p.mask[0, 0, :5, :5], torch.ones(5, 5))
    assert p.mask[0, 0, 5:, :].sum() == 0 and p.mask_valid.all()


def test_line_resampling_is_even():
    pts = resample_polyline(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]), 5)
    np.testing.assert_allclose(pts, [[0, 0], [5, 0], [10, 0], [10, 5], [10, 10]])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: VisualPrompt.point([[70.0, 10.0]]), "outside the image"),
        (lambda: VisualPrompt.point([[-1.0, 10.0]]), "outside the image"),
        (lambda: VisualPrompt.point([[np.nan, 10.0]]), "NaN"),
        (lambda: VisualPrompt.box(1, 1, 1, 5), "positive width"),
        (lambda: VisualPrompt.from_mask(np.zeros((48, 64), dtype=bool)), "empty"),
        (lambda: VisualPrompt.from_mask(np.ones((10, 10), dtype=bool)), "image size"),
        (lambda: VisualPrompt.point([[1.0, 1.0]] * 4), "at most 3 points"),
        (lambda: VisualPrompt.point([[1.0, 1.0]], labels=[2]), "0 or 1"),
        (lambda: VisualPrompt.line([[1.0, 1.0]]), ">= 2 points"),
        (lambda: VisualPrompt("circle", points=np.zeros((1, 2))), "kind"),
    ],
)
def test_bad_prompts(pre, make, match):
    with pytest.raises(PixelVLAInputError, match=match):
        pre.batch([PolicyInput(np.zeros((48, 64, 3), np.uint8), "go", prompts=[make()], proprio=np.zeros(7))])


def test_bad_object_masks_and_proprio(pre):
    img = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(PixelVLAInputError, match="empty"):
        pre.batch([PolicyInput(img, "go", object_mask=np.zeros((48, 64), bool), proprio=np.zeros(7))])
    with pytest.raises(PixelVLAInputError, match="expected the image size"):
        pre.batch([PolicyInput(img, "go", object_mask=np.ones((32, 32), bool), proprio=np.zeros(7))])
    with pytest.raises(PixelVLAInputError, match="NaN"):
        pre.batch([PolicyInput(img, "go", object_mask=np.full((48, 64), np.nan), proprio=np.zeros(7))])
    with pytest.raises(PixelVLAInputError, match="NaN"):
        pre.batch([PolicyInput(img, "go", proprio=np.array([np.nan] * 7))])
    with pytest.raises(PixelVLAInputError, match="shape"):
        pre.batch([PolicyInput(img, "go", proprio=np.zeros(3))])
    with pytest.raises(PixelVLAInputError, match="nothing to act on"):
        pre.batch([PolicyInput(img, None, proprio=np.zeros(7))])


def test_text_template(pre):
    s = sample_input("all")
    assert pre.build_text("pick up the can.", False, []) == "What should the robot do to pick up the can?"
    assert (pre.build_text("pick up the can", True, s.prompts)
            == "What should the robot do to pick up the can, refer to the object mask and the points and "
            "the line and the box and the mask?")  # fmt: skip
    assert pre.build_text(None, False, s.prompts[:1]) == "What should the robot do, refer to the points?"
    x = pre.batch([sample_input("text")])
    assert x.input_ids.shape == (1, 24) and x.text_mask[0, 0] and x.text_mask.dtype == torch.bool


def test_tokenizer_roundtrip_and_fallback():
    tok = ByteWordTokenizer()
    ids = tok.encode("Pick up the Zyx-42 block")
    assert ids[0] == tok.bos_token_id and tok.decode(ids[1:]).replace(" ", "") == "pickupthezyx-42block"
    assert max(ids) < len(tok)
    out = tok(["a", "pick up the red block"], padding="max_length", truncation=True, max_length=6)
    assert out["input_ids"].shape == (2, 6) and out["attention_mask"][0].tolist() == [1, 1, 0, 0, 0, 0]


def test_action_normalization(pre):
    a = np.array([[0.02, -0.02, 0.0, 0.1, -0.1, 0.05, 0.7], [0.5, -0.5, 0.01, 0.0, 0.0, 0.0, 0.2]])
    n = pre.normalize_actions(a)
    np.testing.assert_allclose(n[0], [1, -1, 0, 1, -1, 0.5, 0.7], atol=1e-6)
    np.testing.assert_allclose(n[1, :2], [1, -1])  # clipped
    back = pre.unnormalize_actions(n)
    np.testing.assert_allclose(back[0, :6], a[0, :6], atol=1e-7)
    assert back[0, 6] == 1.0 and back[1, 6] == 0.0  # gripper binarized at 0.5
    with pytest.raises(PixelVLAInputError, match="NaN"):
        pre.unnormalize_actions(np.full((1, 4, 7), np.nan))
    with pytest.raises(PixelVLAInputError, match="finite"):
        pre.normalize_actions(np.full((4, 7), np.inf))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6))
def test_normalization_roundtrip_inside_bounds(frac):
    stats = default_stats()
    pre = Preprocessor(PreprocessConfig.for_model(micro_config(proprio_dim=0), stats), ByteWordTokenizer())
    lo, hi = np.array(stats.q01[:6]), np.array(stats.q99[:6])
    a = np.concatenate([lo + np.array(frac) * (hi - lo), [1.0]])
    back = pre.unnormalize_actions(pre.normalize_actions(a))
    np.testing.assert_allclose(back, a, atol=1e-6)


def test_stats_and_chunk_times(pre):
    data = np.random.default_rng(0).normal(size=(1000, 7))
    s = NormStats.from_actions(data)
    assert len(s.q01) == 7 and all(a < b for a, b in zip(s.q01, s.q99, strict=True))
    np.testing.assert_allclose(pre.chunk_times(), [0.0, 0.1, 0.2, 0.3])


def test_config_travels_as_json(pre):
    again = PreprocessConfig.from_dict(json.loads(json.dumps(pre.config.to_dict())))
    assert again.to_dict() == pre.config.to_dict() and again.action_space == pre.config.action_space
    again.check_matches(micro_config())
    other = micro_config().to_dict()
    other["image_size"] = 64
    other["vision"][0]["hf_config"]["image_size"] = 64
    with pytest.raises(ValueError, match="image_size"):
        again.check_matches(PixelVLAConfig.from_dict(other))


def _anchor_preprocessor() -> Preprocessor:
    return make_preprocessor(replace(micro_config(proprio_dim=4), prompt_anchor=True))


def test_the_prompt_anchor_is_the_prompt_cast_onto_the_work_plane_relative_to_the_tcp():
    pre = _anchor_preprocessor()
    camera = oblique_camera(96, 96)
    target, tcp = np.array([0.5, 0.1, pre.config.anchor_plane_z]), np.array([0.4, -0.1, 0.3])
    uv = camera.project(target)[0][0]
    truth = np.r_[(target - tcp) / ANCHOR_SCALE_M, 1.0]
    image, proprio = np.zeros((96, 96, 3), np.uint8), np.r_[tcp, 0.0]

    def anchor(prompts=(), object_mask=None, camera=camera, image=image, task=None):
        x = pre.batch([PolicyInput(image, task, object_mask, list(prompts), proprio, camera)])
        return x.anchor[0].numpy()

    np.testing.assert_allclose(anchor([VisualPrompt.point([uv])]), truth, atol=1e-5)
    np.testing.assert_allclose(anchor([VisualPrompt.box(*(uv - 3), *(uv + 3))]), truth, atol=1e-5)
    # the same camera calibrated at another resolution is scaled to the image's
    np.testing.assert_allclose(
        anchor([VisualPrompt.point([uv])], camera=oblique_camera(192, 192)), truth, atol=1e-5
    )
    # masks: their centroid (a 5 x 5 block around the pixel holding the target, so within half a pixel)
    block = np.zeros((96, 96), bool)
    col, row = np.round(uv).astype(int)
    block[row - 2 : row + 3, col - 2 : col + 3] = True
    np.testing.assert_allclose(anchor([VisualPrompt.from_mask(block)]), truth, atol=0.2)
    # the object mask comes first, a negative point never anchors
    elsewhere = VisualPrompt.point([[10.0, 80.0]])
    np.testing.assert_allclose(anchor([elsewhere], object_mask=block), truth, atol=0.2)
    assert not np.allclose(anchor([elsewhere]), truth, atol=0.2)
    none = np.zeros(4)
    np.testing.assert_array_equal(anchor([VisualPrompt.point([uv], labels=0)], task="pick"), none)
    # absent: without a camera, for text or a line alone, for a pixel whose ray lands beyond ANCHOR_MAX_M
    np.testing.assert_array_equal(anchor([VisualPrompt.point([uv])], camera=None), none)
    np.testing.assert_array_equal(anchor(task="pick up the cube"), none)
    np.testing.assert_array_equal(anchor([VisualPrompt.line([uv, uv + 5])]), none)
    np.testing.assert_array_equal(anchor([VisualPrompt.point([[48.0, 0.0]])]), none)  # near the horizon
    with pytest.raises(PixelVLAInputError, match="CameraModel"):
        anchor([VisualPrompt.point([uv])], camera=camera.to_camera_info_dict())


def test_shifting_image_prompt_and_camera_together_keeps_the_anchor():
    """Training's shift augmentation moves the camera's principal point with the image (data.py)."""
    pre = _anchor_preprocessor()
    camera = oblique_camera(96, 96)
    uv, proprio, image = (
        camera.project(np.array([0.45, -0.05, 0.02]))[0][0],
        np.r_[0.4, 0.0, 0.2, 1.0],
        np.zeros((96, 96, 3), np.uint8),
    )
    before = pre.batch(
        [PolicyInput(image, None, prompts=[VisualPrompt.point([uv])], proprio=proprio, camera=camera)]
    )
    after = pre.batch(
        [
            PolicyInput(
                image,
                None,
                prompts=[VisualPrompt.point([uv + [3, -2]])],
                proprio=proprio,
                camera=camera.shifted(3, -2),
            )
        ]
    )
    torch.testing.assert_close(after.anchor, before.anchor)
    assert before.anchor[0, 3] == 1.0
