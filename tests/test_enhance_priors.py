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


def test_fusion_is_the_weighted_mean_of_its_members():
    x = torch.rand(3, 3, 8, 8)
    a, b = _Linear("a", 100.0, 5.0), _Linear("b", -3.0, 1.0)
    assert torch.allclose(FusedPrior([a, b], [1.0, 0.0])(x), a(x), atol=1e-5)  # weight 0 ignores a prior
    mixed = FusedPrior([a, b], [0.7, 0.3])
    assert torch.allclose(mixed(x), 0.7 * a(x) + 0.3 * b(x), atol=1e-5)
    assert torch.allclose(FusedPrior([a, b], [2.1, 0.9])(x), mixed(x), atol=1e-5)  # only the ratio matters
    with pytest.raises(Exception, match="weights"):
        FusedPrior([a, b], [0.0, 0.0])


def test_every_shipped_prior_is_bounded_0_100_and_ranks_blur_below_the_original(photo):
    from diffiqa.enhance.priors.calibration import BoundedPrior

    blurred = gaussian_filter(photo, sigma=(3, 3, 0))
    for name in ("niqe", "brisque"):
        prior = build_prior(name)
        assert isinstance(prior, BoundedPrior) and prior.name == name
        with torch.no_grad():
            q = prior(torch.cat([_t(photo), _t(blurred)]))
        assert ((q > 0) & (q < 100)).all(), (name, q)
        assert q[0] > q[1], (name, q)


def test_bounded_prior_stays_bounded_under_adversarial_raw_scores():
    from diffiqa.enhance.priors.calibration import BoundedPrior, fit_logistic

    wild = BoundedPrior(_Linear("w", 1e6, 0.0), a=0.0, b=1.0)
    q = wild(torch.rand(4, 3, 8, 8))
    assert ((q >= 0) & (q <= 100)).all()
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1, 200)
    mos = 100 / (1 + np.exp(-(raw - 0.3) / 0.5)) + rng.normal(0, 2, 200)
    fit = fit_logistic(raw, mos)
    assert abs(fit["a"] - 0.3) < 0.1 and abs(fit["b"] - 0.5) < 0.1 and fit["srcc"] > 0.9


def test_nss_features_are_continuous_at_exact_zeros():
    """Flat areas give exact zeros; 1e-9 of noise must not move the features (it moved BRISQUE by ~20)."""
    from diffiqa.enhance.priors import nss

    img = torch.full((1, 3, 64, 64), 0.5, dtype=torch.float64)
    img[..., 20:40, 20:40] = torch.rand(1, 3, 20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    nudged = img + 1e-9 * torch.randn(img.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f0, f1 = nss.image_features(img), nss.image_features(nudged)
    assert torch.allclose(f0, f1, rtol=1e-5, atol=1e-6), (f0 - f1).abs().max()
