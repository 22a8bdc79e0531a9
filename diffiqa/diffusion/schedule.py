"""Cosine noise schedule over continuous time (Nichol & Dhariwal 2021, s = 0.008).

Time ``t`` runs over [0, 1]: ``t = 0`` is the clean image, ``t = 1`` (almost) pure noise.
``x_t = sqrt(alpha_bar(t)) * x_0 + sqrt(1 - alpha_bar(t)) * eps``. The network is
conditioned on the continuous noise level ``gamma = sqrt(alpha_bar(t))`` (SR3), not on a
step index, so one checkpoint serves a 50-step DDPM chain, a k-step DDIM chain and DDIM
inversion alike.
"""

from __future__ import annotations

import math

import torch

COSINE_OFFSET = 0.008
# alpha_bar(1) would be exactly 0 (x_0 unrecoverable, gamma = 0 divides by zero);
# Nichol & Dhariwal clip the per-step beta at 0.999, the continuous analogue is a floor.
ALPHA_BAR_MIN = 1e-5


def cosine_alpha_bar(t: torch.Tensor | float) -> torch.Tensor:
    """alpha_bar(t) for ``t`` in [0, 1] (any shape, float) -> same shape, float32.

    Decreasing in t; ``alpha_bar(0) = 1`` exactly, ``alpha_bar(t)`` in [1e-5, 1) for t > 0.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    s = COSINE_OFFSET
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return (f / f0).clamp(ALPHA_BAR_MIN, 1.0).to(torch.float32)


def noise_level(t: torch.Tensor | float) -> torch.Tensor:
    """gamma = sqrt(alpha_bar(t)), the network's conditioning input; same shape as t."""
    return cosine_alpha_bar(t).sqrt()


def sampling_timesteps(num_steps: int, t_start: float = 1.0) -> torch.Tensor:
    """Descending grid ``t_start * [1, (n-1)/n, ..., 1/n]`` of shape (num_steps,), in (0, 1].

    Step i of a sampler goes from ``t[i]`` to ``t[i+1]`` (with ``t[num_steps] = 0``), so a
    chain of n steps ends on the clean image and the state m steps before the end has
    ``t = t_start * m / n`` whatever n is. ``t_start`` < 1 is a truncated chain (SDEdit):
    it starts from the condition noised to level ``t_start`` instead of pure noise.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start must be in (0, 1], got {t_start}")
    return torch.linspace(1.0, 0.0, num_steps + 1)[:-1] * t_start


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Forward process q(x_t | x_0): x0, noise (N,C,H,W), t (N,) in [0,1] -> x_t (N,C,H,W)."""
    ab = cosine_alpha_bar(t).to(x0.device, x0.dtype).view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
