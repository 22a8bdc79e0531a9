"""Partial fine-tuning at tiny shapes: the split, the zero start, the ranking loss, a short run."""

import math

import numpy as np
import pytest
import timm
import torch

from diffiqa.training.partial_finetune import (FinetuneParams, TailRegressor, finetune, predict, ranking_loss,
                                               split_efficientnet, trunk_maps)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()


def test_trunk_then_tail_is_the_network(net):
    x = torch.rand(2, 3, 64, 64)
    trunk, tail, channels = split_efficientnet(net, cut=5)
    maps = trunk_maps(trunk, x, (0.5,) * 3, (0.5,) * 3)
    assert maps.shape == (2, 112, 4, 4) and channels == 1280
    with torch.no_grad():
        assert torch.allclose(tail(maps), net.forward_features((x - 0.5) / 0.5), atol=1e-5)
    with pytest.raises(ValueError, match="cut"):
        split_efficientnet(net, cut=7)


def test_ranking_loss_by_hand():
    # one ordered pair (0 above 1) with a prediction gap of 1: softplus(-1) = log(1 + e^-1)
    assert float(ranking_loss(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0]))) == pytest.approx(math.log1p(math.exp(-1)))
    # ties carry no order
    assert float(ranking_loss(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))) == 0.0


def test_finetune_starts_at_the_base_keeps_bn_statistics_and_the_best_epoch(net):
    trunk, tail, channels = split_efficientnet(net, cut=6)
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(24, 3, 64, 64, generator=g) * torch.linspace(0.2, 1.0, 24).view(-1, 1, 1, 1)
    maps = trunk_maps(trunk, imgs, (0.5,) * 3, (0.5,) * 3)  # (24, 192, 2, 2)
    y = np.linspace(-1.5, 1.5, 24)  # quality follows brightness
    base = np.random.default_rng(0).normal(0, 0.01, 24)  # an uninformative frozen read-out
    model = TailRegressor(tail, channels)
    ids = np.arange(24)
    assert predict(model, maps, base, ids) == pytest.approx(base, abs=1e-6)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    stats_before = bn.running_mean.clone()
    train, val = ids[::2], ids[1::2]
    out = finetune(model, maps, y, base, train, val, FinetuneParams(epochs=3, batch_size=6, lr_tail=1e-3, lr_head=1e-2))
    assert len(out["val_srcc"]) == 4 and 0 <= out["best_epoch"] <= 3
    assert torch.equal(bn.running_mean, stats_before)
    from scipy import stats

    kept = stats.spearmanr(predict(model, maps, base, val), y[val])[0]
    assert kept == pytest.approx(max(out["val_srcc"])) and out["val_srcc"][out["best_epoch"]] == max(out["val_srcc"])
    assert kept > out["val_srcc"][0] + 0.3  # the tail learnt the brightness order the base lacks
