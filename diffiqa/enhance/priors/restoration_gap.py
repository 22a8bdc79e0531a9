"""Restoration gap (training-free): how far our restorer wants to move the image.

Q(x) = -||R(x) - x||^2 / (H W), R = one deterministic DDIM restoration (eta 0, ``steps``
steps, a fixed seeded start noise so Q is a function of x alone) conditioned on x. A pristine
image is a fixed point of a good restorer (gap ~ 0); a degraded one is moved. Gradients flow
through the condition of every sampler step (each step checkpointed).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as checkpoint_step

from diffiqa.diffusion.samplers import ddim_step, to_image_space, to_model_space
from diffiqa.diffusion.schedule import sampling_timesteps


class RestorationGapPrior(nn.Module):
    """``forward((N,3,H,W) in [0,1]) -> (N,)`` = -||R(x)-x||^2/(HW), higher (closer to 0) = better."""

    lower_better = False
    name = "restoration_gap"

    def __init__(self, net: nn.Module, steps: int = 4, seed: int = 0):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.steps = int(steps)
        self.seed = int(seed)

    def restore(self, images: torch.Tensor) -> torch.Tensor:
        """R(x): (N,3,H,W) in [0,1] -> (N,3,H,W) in [0,1]."""
        cond = to_model_space(images)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        x = torch.randn(images.shape, generator=gen, dtype=torch.float32).to(images.device, images.dtype)
        ts = sampling_timesteps(self.steps).tolist() + [0.0]

        def step(x, cond, i):
            return ddim_step(self.net, cond, x, ts[i], ts[i + 1], eta=0.0)[0]

        for i in range(self.steps):
            x = checkpoint_step(step, x, cond, i, use_reentrant=False) if torch.is_grad_enabled() else step(x, cond, i)
        return to_image_space(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        gap = (self.restore(images) - images).square().sum(1).mean((-2, -1))
        return -gap
