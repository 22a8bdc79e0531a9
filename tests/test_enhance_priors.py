"""Priors: NIQE ranks like classic NIQE, gradients flow, BRISQUE asset loads, fusion normalises."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data
from torch import nn

from diffiqa.enhance.priors import build_prior
from diffiqa.enhance.priors.fusion import FusedPrior

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def photo():
    img = data.astronaut()[100:292, 150:342].astype(np.float64) / 255.0  # 192x192 crop
    return img


def _t(img):
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def test_niqe_ranks_blur_and_noise_below_the_original(photo):
    niqe = build_prior("niqe")
    blurred = [gaussian_filter(photo, sigma=(s, s, 0)) for s in (1.0, 2.0, 3.0)]
    noisy = np.clip(photo + np.random.default_rng(0).normal(0, 0.08, photo.shape), 0, 1)
    with torch.no_grad():
        q = niqe(torch.cat([_t(photo)] + [_t(b) for b in blurred] + [_t(noisy)]))
    assert q.shape == (5,)
    assert (q[1:] < q[0]).all(), q  # higher = better: every distortion scores worse
    assert q[1] > q[2] > q[3], q  # monotone in blur level


def test_niqe_and_brisque_gradients_reach_the_pixels(photo):
    x = _t(photo[:96, :96]).requires_grad_(True)
    for name in ("niqe", "brisque"):
        x.grad = None
        prior = build_prior(name)
        assert prior.lower_better is False and prior.name == name
        q = prior(x)
        assert q.shape == (1,) and torch.isfinite(q).all()
        q.sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_brisque_prefers_the_original_to_a_heavy_blur(photo):
    brisque = build_prior("brisque")
    with torch.no_grad():
        q = brisque(torch.cat([_t(photo), _t(gaussian_filter(photo, sigma=(4, 4, 0)))]))
    assert q[0] > q[1]


class _Linear(nn.Module):
    """A toy prior: a fixed affine function of mean brightness."""

    lower_better = False

    def __init__(self, name, scale, offset):
        super().__init__()
        self.name, self.scale, self.offset = name, scale, offset

    def forward(self, x):
        return self.scale * x.mean((1, 2, 3)) + self.offset


def _reference():
    return torch.rand(12, 3, 8, 8) * torch.linspace(0.2, 1.0, 12).view(-1, 1, 1, 1)


def test_fusion_normalisation_is_zero_mean_unit_std_on_the_reference():
    ref = _reference()
    fused = FusedPrior([_Linear("a", 100.0, 5.0), _Linear("b", -0.01, 0.0)], [1.0, 1.0])
    table = fused.calibrate(ref)
    assert set(table) == {"a", "b"}
    z = fused.normalised_scores(ref)
    assert torch.allclose(z.mean(0), torch.zeros(2, dtype=z.dtype), atol=1e-9)
    assert torch.allclose(z.std(0), torch.ones(2, dtype=z.dtype), atol=1e-9)


def test_fusion_weights_behave():
    ref = _reference()
    x = torch.rand(3, 3, 8, 8)
    a, b = _Linear("a", 100.0, 5.0), _Linear("b", -3.0, 1.0)
    only_a = FusedPrior([a, b], [1.0, 0.0])
    only_a.calibrate(ref)
    alone = FusedPrior([a], [1.0])
    alone.calibrate(ref)
    assert torch.allclose(only_a(x), alone(x), atol=1e-6)  # weight 0 ignores a prior
    mixed = FusedPrior([a, b], [0.7, 0.3])
    mixed.calibrate(ref)
    tripled = FusedPrior([a, b], [2.1, 0.9])
    tripled.load_normalisation(mixed.normalisation())
    assert torch.allclose(tripled(x), 3 * mixed(x), atol=1e-5)  # scaling all weights scales the score
    with pytest.raises(Exception, match="not calibrated"):
        FusedPrior([a], [1.0])(x)
