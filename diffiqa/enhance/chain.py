"""The few pieces of the sampler the enhancement needs *with autograd on*, taken from
``diffiqa.diffusion.samplers`` (the one place for the time grid and the DDIM step).

samplers' chain loop (``sample_chain`` / ``ddim_sample``) runs under ``torch.no_grad()``, and
the enhancement differentiates through the chain, so the loop over steps is written here; the
grid, the single steps and the network-output conversion all come from samplers.
"""

from __future__ import annotations

import torch

from diffiqa.diffusion import samplers
from diffiqa.diffusion.chain import LEGACY_CHAIN



def time_grid(steps: int, t_start: float = 1.0) -> list[float]:
    """Descending times t_start ... 0 (steps + 1 of them), samplers' grid."""
    return list(samplers.time_grid(steps, t_start))


def eps_at(net, cond: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
    """The network's noise estimate at (x, t), whatever it predicts (eps, x0 or residual)."""
    return samplers.predict(net, cond, x, t, False)[0]


class FixedEps:
    """A stand-in network that returns a given eps: turns samplers' DDIM step / inversion step
    into the affine update x -> a x + b eps that EDICT applies with the *other* sequence's eps."""

    prediction = "eps"

    def __init__(self, eps: torch.Tensor):
        self.eps = eps

    def __call__(self, x, cond, gamma):
        return self.eps


def ddim_down(net, cond, x, t, t_next):
    """One deterministic DDIM step t -> t_next < t (eta 0, no clipping), autograd on."""
    return samplers.ddim_step(net, cond, x, t, t_next, eta=0.0, clip_x0=False)[0]


def ddim_up(net, cond, x, t, t_next, refine_iters: int = 0):
    """One DDIM inversion step t -> t_next > t."""
    return samplers.ddim_invert_step(net, cond, x, t, t_next, clip_x0=False, refine_iters=refine_iters)[0]


def affine_down(eps, cond, x, t, t_next):
    """x -> a x + b eps: the DDIM update of x with a given eps (EDICT's half step)."""
    return ddim_down(FixedEps(eps), cond, x, t, t_next)


def affine_up(eps, cond, x_next, t, t_next):
    """Exact inverse of ``affine_down(eps, cond, ., t, t_next)`` (t > t_next): x_next -> x."""
    return ddim_up(FixedEps(eps), cond, x_next, t_next, t)


def chain_settings(cfg=None, extra: dict | None = None) -> tuple[float, int]:
    """(t_start, steps) of the restorer's own chain, ``cfg.chain`` (``load_restorer`` gives a
    checkpoint that records none ``LEGACY_CHAIN``, the one fallback, as it does without
    ``cfg``). ``extra`` is not read: its ``steps`` is the *training* step count."""
    chain = getattr(cfg, "chain", None) or LEGACY_CHAIN
    return chain.t_start, chain.steps
