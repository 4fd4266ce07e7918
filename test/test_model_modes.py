"""Every input mode from one model: shapes, dtypes, padding/order invariance, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelvla_ros.model import PixelVLAInputError, build_model
from pixelvla_ros.model.testing import MODES, make_preprocessor, micro_config, sample_input
from pixelvla_ros.prompts import VisualPrompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = micro_config()
    model = build_model(cfg, device="cpu").eval()
    return model, make_preprocessor(cfg)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_gives_a_chunk(setup, mode):
    model, pre = setup
    x = pre.batch([sample_input(mode, seed=1)])
    out = model.predict(x)
    assert out.shape == (1, model.cfg.action.chunk_size, 7) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    actions = pre.postprocess(out)
    assert actions.shape == (1, 4, 7) and set(np.unique(actions[..., 6])) <= {0.0, 1.0}
    # training path: loss + gradient
    model.train()
    res = model(x, actions=torch.zeros_like(out))
    res.loss.backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    assert res.loss.ndim == 0 and torch.isfinite(res.loss)


def test_inputs_change_the_output(setup):
    model, pre = setup
    outs = {m: model.predict(pre.batch([sample_input(m, seed=2)])) for m in MODES}
    for a in MODES:
        for b in MODES:
            if a < b:
                assert not torch.allclose(outs[a], outs[b], atol=1e-6), (a, b)


def test_mixed_batch_equals_single_examples(setup):
    """Padding slots are invisible: a batch of mixed modes gives each example's own output."""
    model, pre = setup
    samples = [sample_input(m, seed=i) for i, m in enumerate(MODES)]
    batched = model.predict(pre.batch(samples))
    single = torch.cat([model.predict(pre.batch([s])) for s in samples])
    torch.testing.assert_close(batched, single, atol=2e-5, rtol=1e-4)


def test_point_order_invariance_and_line_direction(setup):
    model, pre = setup
    s = sample_input("text", seed=3)
    pts = [[10.0, 5.0], [30.0, 20.0], [50.0, 40.0]]
    a = model.predict(pre(s.image, s.task, prompts=[VisualPrompt.point(pts, [1, 0, 1])], proprio=s.proprio))
    perm = [pts[2], pts[0], pts[1]]
    b = model.predict(pre(s.image, s.task, prompts=[VisualPrompt.point(perm, [1, 1, 0])], proprio=s.proprio))
    split = [VisualPrompt.point(pts[1:], [0, 1]), VisualPrompt.point(pts[:1], [1])]
    c = model.predict(pre(s.image, s.task, prompts=split, proprio=s.proprio))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)
    # where order carries meaning it must not be ignored: a line's direction, a point's label
    line = [[5.0, 5.0], [40.0, 30.0]]
    d = model.predict(pre(s.image, s.task, prompts=[VisualPrompt.line(line)], proprio=s.proprio))
    e = model.predict(pre(s.image, s.task, prompts=[VisualPrompt.line(line[::-1])], proprio=s.proprio))
    assert not torch.allclose(d, e, atol=1e-6)
    f = model.predict(pre(s.image, s.task, prompts=[VisualPrompt.point(pts, [0, 1, 1])], proprio=s.proprio))
    assert not torch.allclose(a, f, atol=1e-6)


def test_eval_is_deterministic(setup):
    model, pre = setup
    x = pre.batch([sample_input("all", seed=4)])
    assert torch.equal(model.predict(x), model.predict(x))


def test_eager_and_sdpa_attention_agree():
    torch.manual_seed(0)
    sdpa = build_model(micro_config(attn="sdpa"), device="cpu").eval()
    eager = build_model(micro_config(attn="eager"), device="cpu").eval()
    eager.load_state_dict(sdpa.state_dict())
    pre = make_preprocessor(sdpa.cfg)
    x = pre.batch([sample_input(m, seed=5) for m in MODES])
    torch.testing.assert_close(sdpa.predict(x), eager.predict(x), atol=1e-5, rtol=1e-4)


def test_model_refuses_bad_tensors(setup):
    model, pre = setup
    x = pre.batch([sample_input("all")])
    x.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(PixelVLAInputError, match="NaN"):
        model.predict(x)
    x = pre.batch([sample_input("all")])
    x.images = x.images[:, :, :16]
    with pytest.raises(PixelVLAInputError, match="images"):
        model.predict(x)
    x = pre.batch([sample_input("all")])
    x.proprio = None
    with pytest.raises(PixelVLAInputError, match="proprio"):
        model.predict(x)


def test_the_mask_centroid_tells_the_pixel_encoder_where_the_object_is():
    from pixelvla_ros.model.pixel_encoder import PixelEncoder
    from pixelvla_ros.model.prompt_encoder import mask_centroid

    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, 2:4, 0:2] = 1.0  # left
    masks[1, 0, 2:4, 6:8] = 1.0  # right
    xy, present = mask_centroid(torch.cat([masks, torch.zeros(2, 1, 8, 8)], dim=1))
    torch.testing.assert_close(xy[:, 0], torch.tensor([[1.0 / 8, 3.0 / 8], [7.0 / 8, 3.0 / 8]]))
    assert present.tolist() == [[True, False], [True, False]]
    levels = [torch.ones(2, 16, 12)] * 2  # features that say nothing about position (4 x 4 grid)
    torch.manual_seed(0)
    plain = PixelEncoder(12, 16, 24, num_levels=2, grid=4)
    tokens = plain(levels, masks)
    torch.testing.assert_close(tokens[0], tokens[1])  # pooled features alone: both masks look the same
    torch.manual_seed(0)
    located = PixelEncoder(12, 16, 24, num_levels=2, grid=4, centroid_encoding=True)
    torch.nn.init.normal_(located.centroid_proj.weight)  # as after training (it starts at zero)
    tokens = located(levels, masks)
    assert (tokens[0] - tokens[1]).abs().max() > 1e-3
