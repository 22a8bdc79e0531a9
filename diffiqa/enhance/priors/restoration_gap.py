"""Restoration gap (training-free): how far our restorer wants to move the image.

Q(x) = -||R(x) - x||^2 / (H W), R = one deterministic DDIM restoration (eta 0, ``steps``
steps) conditioned on x, on the restorer's own chain: from x noised to ``t_start`` with a
fixed seeded noise (so Q is a function of x alone), or from that noise alone at t_start = 1.
A pristine image is a fixed point of a good restorer (gap ~ 0); a degraded one is moved.
Gradients flow through the start state and the condition of every sampler step (each step
checkpointed). The chain is ``diffusion.samplers.run_chain``, the one every restoration runs.
"""

from __future__ import annotations

import torch
from torch import nn

from diffiqa.diffusion.chain import Chain
from diffiqa.diffusion.samplers import run_chain, to_image_space, to_model_space


class RestorationGapPrior(nn.Module):
    """``forward((N,3,H,W) in [0,1]) -> (N,)`` = -||R(x)-x||^2/(HW), higher (closer to 0) = better."""

    lower_better = False
    name = "restoration_gap"

    def __init__(self, net: nn.Module, steps: int = 4, seed: int = 0, t_start: float = 1.0):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.steps = int(steps)
        self.seed = int(seed)
        self.t_start = float(t_start)

    def restore(self, images: torch.Tensor) -> torch.Tensor:
        """R(x): (N,3,H,W) in [0,1] -> (N,3,H,W) in [0,1]."""
        cond = to_model_space(images)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        noise = torch.randn(images.shape, generator=gen, dtype=torch.float32).to(images.device, images.dtype)
        chain = Chain(sampler="ddim", steps=self.steps, eta=0.0, t_start=self.t_start)
        return to_image_space(run_chain(self.net, cond, chain, noise, grad=True))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        gap = (self.restore(images) - images).square().sum(1).mean((-2, -1))
        return -gap
