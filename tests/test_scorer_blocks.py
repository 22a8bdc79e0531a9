"""TAB, RTAB, Swin stage and the score/weight head at tiny shapes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffiqa.scorer.blocks import RTAB, TAB, ScoreWeightHead, SwinStage, channel_attention, weighted_score


def test_channel_attention_is_across_channels():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 8, 3, 5).unbind(0)
    out = channel_attention(q, k, v, heads=2, temperature=torch.ones(2, 1, 1), attn_drop=nn.Identity())
    assert out.shape == (2, 8, 3, 5)
    # head 0 mixes only channels 0..3, with a (4 x 4) channel-attention map
    qh, kh, vh = (t[:, :4].flatten(2) for t in (q, k, v))
    attn = (F.normalize(qh, dim=-1) @ F.normalize(kh, dim=-1).transpose(1, 2)).softmax(-1)
    assert torch.allclose(out[:, :4].flatten(2), attn @ vh, atol=1e-6)


def test_tab_shapes_residual_and_gradients():
    torch.manual_seed(0)
    tab = TAB(dim=8, heads=2)
    x = torch.randn(2, 8, 5, 3, requires_grad=True)
    y = tab(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.sum().backward()
    assert x.grad is not None and tab.qkv.weight.grad is not None
    nn.init.zeros_(tab.proj.weight), nn.init.zeros_(tab.proj.bias)
    assert torch.equal(tab(x), x)  # the block is residual


def test_rtab_uses_its_three_sources():
    torch.manual_seed(0)
    rtab = RTAB(dim=8, heads=2)
    res, a, b, c = torch.randn(4, 2, 8, 4, 4).unbind(0)
    base = rtab(res, a, b, c)
    assert base.shape == res.shape
    noise = torch.randn(2, 8, 4, 4)
    for changed in ((res, a + noise, b, c), (res, a, b + noise, c), (res, a, b, c + noise)):
        assert not torch.allclose(rtab(*changed), base, atol=1e-4)
    # V is not normalised: a larger difference gives a larger attention output
    assert not torch.allclose(rtab(res, a, b, 2 * c), base, atol=1e-4)
    nn.init.zeros_(rtab.proj.weight), nn.init.zeros_(rtab.proj.bias)
    assert torch.equal(rtab(res, a, b, c), res)  # residual on the first argument


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (9, 7)])
def test_swin_stage_any_grid(size):
    torch.manual_seed(0)
    stage = SwinStage(dim=8, depth=2, heads=2, window_size=4)
    x = torch.randn(2, 8, *size, requires_grad=True)
    y = stage(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad.abs().sum() > 0
    # window attention: with a grid larger than a window, a far token does not affect a corner
    # token in the first (unshifted) block alone
    if size == (9, 7):
        block = stage.stage.blocks[0]
        z = torch.randn(1, 9, 7, 8)
        z2 = z.clone()
        z2[0, 8, 6] += 5.0
        assert torch.allclose(block(z)[0, 0, 0], block(z2)[0, 0, 0])


def test_weighted_score_hand_made():
    scores = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 8.0]])
    weights = torch.tensor([[1.0, 3.0, 0.0], [0.5, 0.5, 1.0]])
    expected = torch.tensor([(1 + 9) / 4, (1 + 1 + 8) / 2])
    assert torch.allclose(weighted_score(scores, weights), expected)


def test_score_weight_head():
    torch.manual_seed(0)
    head = ScoreWeightHead(dim=6, hidden=5)
    x = torch.randn(3, 6, 2, 4, requires_grad=True)
    s, w = head.token_outputs(x)
    assert s.shape == w.shape == (3, 8)
    assert (w > 0).all() and (w < 1).all()
    out = head(x)
    assert out.shape == (3,)
    assert torch.allclose(out, (w * s).sum(1) / w.sum(1), atol=1e-6)
    out.sum().backward()
    assert head.weight[0].weight.grad is not None and head.score[-1].weight.grad is not None
