"""Samplers, apart from the network (diffusers / guided-diffusion style).

Each sampler is a generator taking ``net`` as an argument: ``net(x_t, cond, gamma) -> eps``.
It yields a ``SamplerState`` after every step, so the caller writes what it keeps
(``run_and_keep``: the final image and the states k steps before the end). Everything is
in model space [-1, 1]: ``cond``, ``x`` and ``x0_pred``; convert with ``to_model_space`` /
``to_image_space`` at the edges.

The single steps (``ddpm_step``, ``ddim_step``, ``ddim_invert_step``) are plain functions
that keep autograd on, so gradient-based enhancement can differentiate through one DDIM
step; the generators wrap them in ``torch.no_grad()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from diffiqa.diffusion.schedule import add_noise, cosine_alpha_bar, sampling_timesteps

log = logging.getLogger(__name__)

# keep_steps are given as positions in the paper's 50-step DDPM chain.
REFERENCE_STEPS = 50


@dataclass(frozen=True)
class SamplerState:
    """One step's result: ``index`` (0 = first step), ``t`` (the time of ``x``, in [0,1]),
    ``x`` (N,3,H,W) the state after the step, ``x0_pred`` (N,3,H,W) the clean-image
    estimate of that step; both in [-1,1] space (x0_pred clamped when clipping is on)."""

    index: int
    t: float
    x: torch.Tensor
    x0_pred: torch.Tensor


def to_model_space(img01: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) float in [0,1] -> [-1,1]."""
    return img01 * 2 - 1


def to_image_space(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [-1,1]-ish -> float in [0,1] (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


def _predict(net, cond, x, t, clip_x0: bool):
    """-> (eps, x0_pred, alpha_bar(t)). With clipping, eps is re-derived from the clamped x0
    (as guided-diffusion does) so the step stays consistent with what it reports."""
    ab = cosine_alpha_bar(t).to(x.device, x.dtype)
    gamma = ab.sqrt().expand(x.shape[0])
    eps = net(x, cond, gamma)
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt().clamp_min(1e-12)
    return eps, x0, ab


def ddim_step(net, cond, x, t, t_next, eta: float = 0.0, noise=None, clip_x0: bool = True):
    """One DDIM step from time t to t_next < t (scalars). -> (x_next, x0_pred), (N,3,H,W).

    ``eta`` = 0 is deterministic; ``eta`` = 1 matches the DDPM posterior variance. ``noise``
    (N,3,H,W) is used when eta > 0 (drawn with ``torch.randn_like`` if None).
    """
    eps, x0, ab = _predict(net, cond, x, t, clip_x0)
    ab_next = cosine_alpha_bar(t_next).to(x.device, x.dtype)
    sigma = eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).clamp_min(0).sqrt()
    x_next = ab_next.sqrt() * x0 + (1 - ab_next - sigma**2).clamp_min(0).sqrt() * eps
    if eta > 0:
        x_next = x_next + sigma * (torch.randn_like(x) if noise is None else noise)
    return x_next, x0


def ddpm_step(net, cond, x, t, t_next, noise=None, clip_x0: bool = True):
    """Ancestral step: sample q(x_{t_next} | x_t, x0_pred) (posterior mean and variance).

    -> (x_next, x0_pred). At ``t_next = 0`` the variance is 0 and x_next = x0_pred.
    """
    _, x0, ab = _predict(net, cond, x, t, clip_x0)
    ab_next = cosine_alpha_bar(t_next).to(x.device, x.dtype)
    alpha = ab / ab_next  # the one-step alpha between the two grid points
    beta = 1 - alpha
    mean = (ab_next.sqrt() * beta * x0 + alpha.sqrt() * (1 - ab_next) * x) / (1 - ab)
    var = beta * (1 - ab_next) / (1 - ab)
    if float(var) > 0:
        mean = mean + var.sqrt() * (torch.randn_like(x) if noise is None else noise)
    return mean, x0


def ddim_invert_step(net, cond, x, t, t_next, clip_x0: bool = False, refine_iters: int = 0):
    """Deterministic DDIM step *up* in noise, t -> t_next > t. -> (x_next, x0_pred).

    With ``refine_iters`` = 0 it uses eps at time t (the usual first-order inversion).
    Each refinement is a fixed-point iteration that re-evaluates eps at (x_next, t_next),
    converging to the exact inverse of ``ddim_step(x_next, t_next -> t)`` for a smooth net
    (one extra network call per iteration).
    """
    eps, x0, ab = _predict(net, cond, x, t, clip_x0)
    ab_next = cosine_alpha_bar(t_next).to(x.device, x.dtype)
    x_next = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    for _ in range(refine_iters):
        gamma_next = ab_next.sqrt().expand(x.shape[0])
        eps = net(x_next, cond, gamma_next)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        x_next = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    return x_next, x0


def _grid(num_steps: int, t_start: float = 1.0) -> list[float]:
    return sampling_timesteps(num_steps, t_start).tolist() + [0.0]


def start_state(cond: torch.Tensor, noise: torch.Tensor, t_start: float = 1.0) -> torch.Tensor:
    """The chain's first state: pure noise for the full chain (t_start = 1, the paper), else
    the condition (the distorted image) noised to level t_start (a truncated, SDEdit-style
    chain: a restorer trained briefly, as on a CPU, is only reliable at moderate noise)."""
    if t_start >= 1.0:
        return noise
    return add_noise(cond, noise, torch.full((cond.shape[0],), float(t_start), device=cond.device))


def _start_noise(cond, generator, x_T, t_start: float = 1.0):
    if x_T is not None:
        if x_T.shape != cond.shape:
            raise ValueError(f"x_T {tuple(x_T.shape)} must have the shape of cond {tuple(cond.shape)}")
        return x_T
    noise = torch.randn(cond.shape, generator=generator, device=cond.device, dtype=cond.dtype)
    return start_state(cond, noise, t_start)


def ddpm_sample(
    net, cond, num_steps: int = 50, generator=None, x_T=None, clip_x0: bool = True, t_start: float = 1.0
) -> Iterator[SamplerState]:
    """Ancestral sampling, num_steps states; cond (N,3,H,W) in [-1,1]; x_T default N(0,I)
    (or, with ``t_start`` < 1, the condition noised to ``t_start``: see ``start_state``)."""
    ts = _grid(num_steps, t_start)
    x = _start_noise(cond, generator, x_T, t_start)
    for i in range(num_steps):
        with torch.no_grad():
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x, x0 = ddpm_step(net, cond, x, ts[i], ts[i + 1], noise=noise, clip_x0=clip_x0)
        yield SamplerState(i, ts[i + 1], x, x0)


def ddim_sample(
    net, cond, num_steps: int, eta: float = 0.0, generator=None, x_T=None, clip_x0: bool = True,
    t_start: float = 1.0,
) -> Iterator[SamplerState]:
    """DDIM sampling on the ``sampling_timesteps(num_steps, t_start)`` grid, num_steps states."""
    ts = _grid(num_steps, t_start)
    x = _start_noise(cond, generator, x_T, t_start)
    for i in range(num_steps):
        with torch.no_grad():
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if eta > 0 else None
            x, x0 = ddim_step(net, cond, x, ts[i], ts[i + 1], eta=eta, noise=noise, clip_x0=clip_x0)
        yield SamplerState(i, ts[i + 1], x, x0)


def ddim_invert(
    net, cond, x0, num_steps: int, clip_x0: bool = False, refine_iters: int = 0
) -> Iterator[SamplerState]:
    """Deterministic inversion x0 (N,3,H,W) in [-1,1] -> x_T along the reversed grid;
    yields num_steps states, the last at t = 1. ``ddim_sample(..., x_T=last.x)`` on the
    same num_steps (and ``clip_x0=False``) retraces the path back to approximately x0;
    ``refine_iters`` > 0 makes each step the exact inverse of the DDIM step, up to the
    fixed-point tolerance (see ``ddim_invert_step``)."""
    ts = _grid(num_steps)[::-1]
    x = x0
    for i in range(num_steps):
        with torch.no_grad():
            x, x0_pred = ddim_invert_step(net, cond, x, ts[i], ts[i + 1], clip_x0=clip_x0, refine_iters=refine_iters)
        yield SamplerState(i, ts[i + 1], x, x0_pred)


def keep_positions(keep_steps: Sequence[int], num_steps: int, t_start: float = 1.0) -> dict[int, int]:
    """Map each k of ``keep_steps`` (steps before the end of a 50-step chain) to the state
    index of an ``num_steps`` chain with the closest noise level.

    Rule: the 50-step state k steps before the end has t = k/50; in an n-step chain starting
    at ``t_start`` the state m steps before the end has t = t_start*m/n; so
    m = round(k*n/(50*t_start)) (halves up), kept in [1, n-1] so a kept state is never the
    final image nor missing. Returns {k: index}.
    """
    out = {}
    for k in keep_steps:
        if k < 1:
            raise ValueError(f"keep_steps must be >= 1 (steps before the end), got {k}")
        if num_steps < 2:
            raise ValueError(f"keeping intermediate states needs num_steps >= 2, got {num_steps}")
        m = int(k * num_steps / (REFERENCE_STEPS * t_start) + 0.5)
        m = min(max(m, 1), num_steps - 1)
        out[k] = num_steps - 1 - m
    if len(set(out.values())) < len(out):
        log.warning("keep_steps %s collide on a %d-step chain (state indices %s)", list(keep_steps), num_steps, out)
    return out


def run_and_keep(
    states: Iterator[SamplerState], keep_steps: Sequence[int], num_steps: int, t_start: float = 1.0
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Exhaust a sampler; -> (final x, {k: x of the state kept for k}) (see ``keep_positions``)."""
    wanted = keep_positions(keep_steps, num_steps, t_start)
    kept: dict[int, torch.Tensor] = {}
    final, count = None, 0
    for state in states:
        count += 1
        final = state.x
        for k, i in wanted.items():
            if state.index == i:
                kept[k] = state.x
    if count != num_steps:
        raise ValueError(f"sampler yielded {count} states, expected num_steps={num_steps}")
    return final, kept
