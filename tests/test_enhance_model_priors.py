"""Restoration-gap and diffiqa priors on stand-in networks (exact expectations by construction)."""

from types import SimpleNamespace

import torch
from torch import nn

from diffiqa.diffusion.chain import Chain
from diffiqa.enhance.priors.diffiqa_prior import DiffIQAPrior
from diffiqa.enhance.priors.restoration_gap import RestorationGapPrior
from diffiqa.restore import RestoreParams

torch.set_num_threads(1)


class TowardsTarget(nn.Module):
    """An oracle restorer whose clean-image estimate is always ``target`` (in [-1,1]):
    eps = (x - gamma * target) / sqrt(1 - gamma^2). Its restoration of anything is ``target``."""

    def __init__(self, target):
        super().__init__()
        self.register_buffer("target", target)
        self.scale = nn.Parameter(torch.ones(()))  # a weight, to check it stays frozen

    def forward(self, x, cond, gamma):
        g = gamma.view(-1, 1, 1, 1)
        return self.scale * (x - g * self.target) / (1 - g**2).clamp_min(1e-8).sqrt()


def test_restoration_gap_is_zero_at_the_restorers_fixed_point_and_negative_elsewhere():
    torch.manual_seed(0)
    clean = torch.rand(1, 3, 16, 16)
    prior = RestorationGapPrior(TowardsTarget(clean * 2 - 1), steps=3)
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1).requires_grad_(True)
    q_clean = prior(clean)
    q_noisy = prior(noisy)
    assert q_clean.shape == (1,) and abs(float(q_clean)) < 1e-4
    assert float(q_noisy.detach()) < -1e-3
    assert torch.allclose(prior(noisy), q_noisy)  # deterministic
    q_noisy.sum().backward()
    assert noisy.grad.abs().sum() > 0 and prior.net.scale.grad is None


class BrightnessScorer(nn.Module):
    """A stand-in dual-branch scorer: brighter distorted input = better; checks it gets 4 inputs."""

    def forward(self, distorted, restored, noisy_1, noisy_2):
        assert restored.shape == noisy_1.shape == noisy_2.shape == distorted.shape
        return distorted.mean((1, 2, 3))


def test_diffiqa_prior_scores_crops_and_passes_gradient_through_the_distorted_input():
    params = RestoreParams(crop_size=8, crops_per_image=3, seed=0, chain=Chain("ddim", 4), keep_steps=(5, 10))
    metric = SimpleNamespace(scorer=BrightnessScorer(), restorer=TowardsTarget(torch.zeros(1, 3, 8, 8)),
                             params=params, device=torch.device("cpu"))
    prior = DiffIQAPrior(metric=metric)
    dark, bright = torch.full((1, 3, 12, 12), 0.2), torch.full((1, 3, 12, 12), 0.8)
    x = torch.cat([dark, bright]).requires_grad_(True)
    q = prior(x)
    assert q.shape == (2,) and q[1] > q[0]
    assert torch.allclose(q, torch.tensor([0.2, 0.8]), atol=1e-6)
    q.sum().backward()
    assert x.grad.abs().sum() > 0


class DistortedOnlyScorer(nn.Module):
    """A whole-image scorer stand-in: one input, features without autograd while frozen (as the
    packaged cell-feature scorer does to cache them)."""

    def __init__(self):
        super().__init__()
        from dataclasses import dataclass

        @dataclass(frozen=True)
        class Cfg:
            freeze_backbones: bool = True

        self.cfg = Cfg()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, distorted):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_backbones):
            return self.w * distorted.mean((1, 2, 3))


def test_diffiqa_prior_with_a_distorted_only_scorer_passes_gradient_to_the_pixels():
    params = RestoreParams(crop_size=8, crops_per_image=0, seed=0, chain=Chain("ddim", 2), keep_steps=(5, 10))
    metric = SimpleNamespace(scorer=DistortedOnlyScorer(), restorer=None, params=params, device=torch.device("cpu"))
    prior = DiffIQAPrior(metric=metric)
    x = torch.cat([torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), 0.7)]).requires_grad_(True)
    q = prior(x)
    assert torch.allclose(q, torch.tensor([0.2, 0.7]), atol=1e-6)
    q.sum().backward()
    assert x.grad.abs().sum() > 0 and metric.scorer.w.grad is None  # pixels get the gradient, weights stay frozen
