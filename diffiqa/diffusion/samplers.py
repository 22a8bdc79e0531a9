"""Samplers, apart from the network (diffusers / guided-diffusion style).

Each sampler is a generator taking ``net`` as an argument: ``net(x_t, cond, gamma)`` returns
eps, x0 or x0 - cond as ``net.prediction`` says (``predict`` converts; ``EpsNet`` wraps a net
for code that wants eps). ``time_grid`` and ``sample_chain`` are the one time grid and the one
loop; ``run_chain`` (below) runs a restore chain (``diffusion.chain.Chain``) to its end for every
caller (cache, files, evaluation, priors, the enhancement's map, benchmarks).
The loop yields a ``SamplerState`` after every step, so the caller writes what it keeps
(``run_and_keep``: the final image and the states k steps before the end). Everything is
in model space [-1, 1]: ``cond``, ``x`` and ``x0_pred``; convert with ``to_model_space`` /
``to_image_space`` at the edges.

The single steps (``ddpm_step``, ``ddim_step``, ``ddim_invert_step``) are plain functions
that keep autograd on, so gradient-based enhancement can differentiate through one DDIM
step; ``sample_chain`` wraps them in ``torch.no_grad()`` unless asked for gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as checkpoint_step

from diffiqa.diffusion.chain import REFERENCE_STEPS, SAMPLERS, Chain
from diffiqa.diffusion.schedule import add_noise, cosine_alpha_bar, sampling_timesteps
from diffiqa.errors import ConfigError

log = logging.getLogger(__name__)

Noise = Callable[[], torch.Tensor] | torch.Tensor | None


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


def predict(net, cond, x, t, clip_x0: bool = False):
    """The network's output as (eps, x0_pred, alpha_bar(t)), whatever it predicts.

    ``t``: a scalar or an (N,) tensor of times; ``net.prediction`` ("eps" by default, "x0"
    or "residual" = x0 - cond; see UNetConfig) says what ``net(x, cond, gamma)`` returns,
    and the other quantity follows from x = sqrt(ab) x0 + sqrt(1-ab) eps. With clipping, x0 is
    clamped to [-1,1] and eps re-derived from it (as guided-diffusion does), so a step stays
    consistent with what it reports. alpha_bar is a 0-d tensor for scalar t, else (N,1,1,1).
    """
    t = torch.as_tensor(t, dtype=torch.float32)
    ab = cosine_alpha_bar(t).to(x.device, x.dtype)
    if ab.ndim:
        ab = ab.view(-1, 1, 1, 1)
    gamma = ab.sqrt().reshape(-1).expand(x.shape[0]) if ab.numel() == 1 else ab.sqrt().reshape(-1)
    out = net(x, cond, gamma)
    kind = getattr(net, "prediction", "eps")
    if kind == "eps":
        eps, x0 = out, (x - (1 - ab).sqrt() * out) / ab.sqrt()
    else:
        x0 = out if kind == "x0" else cond + out
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt().clamp_min(1e-6)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt().clamp_min(1e-6)
    return eps, x0, ab



class EpsNet(torch.nn.Module):
    """Any restorer seen as an eps-network: ``EpsNet(net)(x_t, cond, gamma) -> eps``.

    For code written against SR3's eps-parameterisation (EDICT coupling, DDIM inversion by
    hand): with an x0- or residual-network it converts through gamma**2 = alpha_bar."""

    prediction = "eps"

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, cond, gamma):
        kind = getattr(self.net, "prediction", "eps")
        out = self.net(x, cond, gamma)
        if kind == "eps":
            return out
        ab = (gamma.to(x.dtype) ** 2).view(-1, 1, 1, 1)
        x0 = out if kind == "x0" else cond + out
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt().clamp_min(1e-6)


def ddim_step(net, cond, x, t, t_next, eta: float = 0.0, noise=None, clip_x0: bool = True):
    """One DDIM step from time t to t_next < t (scalars). -> (x_next, x0_pred), (N,3,H,W).

    ``eta`` = 0 is deterministic; ``eta`` = 1 matches the DDPM posterior variance. ``noise``
    (N,3,H,W) is used when eta > 0 (drawn with ``torch.randn_like`` if None).
    """
    eps, x0, ab = predict(net, cond, x, t, clip_x0)
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
    _, x0, ab = predict(net, cond, x, t, clip_x0)
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
    eps, x0, ab = predict(net, cond, x, t, clip_x0)
    ab_next = cosine_alpha_bar(t_next).to(x.device, x.dtype)
    x_next = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    for _ in range(refine_iters):
        eps = predict(net, cond, x_next, t_next)[0]
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        x_next = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    return x_next, x0


def time_grid(num_steps: int, t_start: float = 1.0) -> list[float]:
    """The chain's times, num_steps + 1 of them: ``t_start * [1, (n-1)/n, ..., 1/n]`` then 0.
    Step i goes from ``grid[i]`` to ``grid[i+1]``; the one grid every sampler and every
    caller (cache, enhancement, inversion: reverse it) uses."""
    return sampling_timesteps(num_steps, t_start).tolist() + [0.0]



def start_state(cond: torch.Tensor, noise: torch.Tensor, t_start: float = 1.0) -> torch.Tensor:
    """The chain's first state: pure noise for the full chain (t_start = 1, the paper), else
    the condition (the distorted image) noised to level t_start (a truncated, SDEdit-style
    chain: a restorer trained briefly, as on a CPU, is only reliable at moderate noise)."""
    if t_start >= 1.0:
        return noise
    return add_noise(cond, noise, torch.full((cond.shape[0],), float(t_start), device=cond.device))


def sample_chain(
    net, cond, num_steps: int, sampler: str = "ddim", t_start: float = 1.0, eta: float = 0.0, draw=None,
    x_T=None, clip_x0: bool = True, grad: bool = False, checkpoint: bool = True,
) -> Iterator[SamplerState]:
    """The sampler loop: ``num_steps`` states of a DDPM or DDIM chain on ``time_grid``.

    cond (N,3,H,W) in [-1,1]. ``draw()`` -> (N,3,H,W) standard normal noise, called first for
    the start state (unless ``x_T`` is given) and then once per step of a stochastic chain
    (DDPM, or DDIM with eta > 0), in that order; callers that need per-crop streams pass
    their own (``diffiqa.restore``). Default: ``torch.randn_like``. ``grad`` False runs each
    step under ``torch.no_grad()``; True keeps autograd, with each step checkpointed
    (``torch.utils.checkpoint``) when ``checkpoint`` and autograd is enabled.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    draw = draw or (lambda: torch.randn_like(cond))
    ts = time_grid(num_steps, t_start)
    if x_T is not None:
        if x_T.shape != cond.shape:
            raise ValueError(f"x_T {tuple(x_T.shape)} must have the shape of cond {tuple(cond.shape)}")
        x = x_T
    else:
        x = start_state(cond, draw(), t_start)
    stochastic = sampler == "ddpm" or eta > 0

    def step(x, i, noise):  # cond by closure: checkpointing saves only x per step
        if sampler == "ddpm":
            return ddpm_step(net, cond, x, ts[i], ts[i + 1], noise=noise, clip_x0=clip_x0)
        return ddim_step(net, cond, x, ts[i], ts[i + 1], eta=eta, noise=noise, clip_x0=clip_x0)

    for i in range(num_steps):
        noise = draw() if stochastic else None
        if not grad:
            with torch.no_grad():
                x, x0 = step(x, i, noise)
        elif checkpoint and torch.is_grad_enabled():
            x, x0 = checkpoint_step(step, x, i, noise, use_reentrant=False)
        else:
            x, x0 = step(x, i, noise)
        yield SamplerState(i, ts[i + 1], x, x0)


def generator_noise(cond, generator):
    """``draw()`` for ``sample_chain`` / ``run_chain``: noise of cond's shape from ``generator``."""
    return lambda: torch.randn(cond.shape, generator=generator, device=cond.device, dtype=cond.dtype)


def ddpm_sample(
    net, cond, num_steps: int = 50, generator=None, x_T=None, clip_x0: bool = True, t_start: float = 1.0
) -> Iterator[SamplerState]:
    """Ancestral sampling, num_steps states; cond (N,3,H,W) in [-1,1]; x_T default N(0,I)
    (or, with ``t_start`` < 1, the condition noised to ``t_start``: see ``start_state``)."""
    return sample_chain(net, cond, num_steps, "ddpm", t_start, 0.0, generator_noise(cond, generator), x_T, clip_x0)


def ddim_sample(
    net, cond, num_steps: int, eta: float = 0.0, generator=None, x_T=None, clip_x0: bool = True,
    t_start: float = 1.0,
) -> Iterator[SamplerState]:
    """DDIM sampling on the ``time_grid(num_steps, t_start)`` grid, num_steps states."""
    return sample_chain(net, cond, num_steps, "ddim", t_start, eta, generator_noise(cond, generator), x_T, clip_x0)


def noise_to(x0: torch.Tensor, t: float, noise: torch.Tensor) -> torch.Tensor:
    """q(x_t | x0) at one scalar time t: the paper's noisy state of a restoration x0 (N,3,H,W)."""
    return add_noise(x0, noise, torch.full((x0.shape[0],), float(t), device=x0.device))


def reference_time(steps_before_end: int, reference_steps: int = REFERENCE_STEPS) -> float:
    """t of the state k steps before the end of a ``reference_steps`` chain from t = 1: k/n."""
    if not 0 < steps_before_end < reference_steps:
        raise ValueError(f"steps before the end must be in 1..{reference_steps - 1}, got {steps_before_end}")
    return steps_before_end / reference_steps


def ddim_invert(
    net, cond, x0, num_steps: int, clip_x0: bool = False, refine_iters: int = 0
) -> Iterator[SamplerState]:
    """Deterministic inversion x0 (N,3,H,W) in [-1,1] -> x_T along the reversed grid;
    yields num_steps states, the last at t = 1. ``ddim_sample(..., x_T=last.x)`` on the
    same num_steps (and ``clip_x0=False``) retraces the path back to approximately x0;
    ``refine_iters`` > 0 makes each step the exact inverse of the DDIM step, up to the
    fixed-point tolerance (see ``ddim_invert_step``)."""
    ts = time_grid(num_steps)[::-1]
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


# --- a restore chain to its end -------------------------------------------------------------
def _draw(noise: Noise, cond: torch.Tensor, chain: Chain):
    if noise is None:
        return lambda: torch.randn_like(cond)
    if callable(noise):
        return noise
    if chain.stochastic:
        raise ConfigError(f"chain {chain.label()} draws noise at every step: pass a callable, not one tensor")
    return lambda: noise


def run_chain(net, cond: torch.Tensor, chain: Chain, noise: Noise = None, grad: bool = False, *,
              start: torch.Tensor | None = None, clip_x0: bool = True, checkpoint: bool = True,
              keep: Sequence[int] = ()):
    """The one way a restore chain runs to its end (the cache, ``diffiqa restore`` window by
    window, the restorer's evaluation, the restoration-gap prior, the enhancement's DDIM map, the
    restore benchmark: they differ only in their noise and whether gradients flow).

    Run ``chain`` on ``cond`` (N,3,H,W) in model space [-1,1] to its end -> the final state
    (N,3,H,W), model space, unclamped.

    ``noise``: ``draw() -> (N,3,H,W)`` standard normal, called for the start state and then once
    per step of a stochastic chain, in that order (``samplers.sample_chain``); or one tensor,
    the start noise of a deterministic chain; None = ``torch.randn_like``. ``start``: the first
    state itself (a latent, as the enhancement's map has), instead of ``cond`` noised to
    t_start. ``grad``: keep autograd (each step under ``torch.utils.checkpoint`` when
    ``checkpoint``, so a backward pass holds one step's activations); else no graph is built.
    ``clip_x0``: clamp each step's x0 estimate to [-1,1] (restoration does; an invertible map
    must not). ``keep``: steps before the end of a 50-step chain whose nearest chain states to
    return as well: then -> (final, {k: state}) (``samplers.keep_positions``).
    """
    states = sample_chain(net, cond, chain.steps, chain.sampler, chain.t_start, float(chain.eta),
                          draw=_draw(noise, cond, chain), x_T=start, clip_x0=clip_x0, grad=grad, checkpoint=checkpoint)
    if keep:
        return run_and_keep(states, keep, chain.steps, chain.t_start)
    final = None
    for state in states:
        final = state.x
    return final


def noisy_states(final: torch.Tensor, keep_steps: Sequence[int],
                 noise: Callable[[], torch.Tensor] | Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
    """The paper's noisy states of a restoration: {k: q(x_t | restored) at t = k/50} for k in
    ``keep_steps`` (steps before the end of the 50-step reference chain), restored = ``final``
    (a chain's last state, model space) clamped to [-1,1]. ``noise``: a ``draw()`` called once
    per k in order, or one (N,3,H,W) tensor per k."""
    restored = final.clamp(-1, 1)
    draws = [noise() for _ in keep_steps] if callable(noise) else list(noise)
    if len(draws) != len(keep_steps):
        raise ConfigError(f"noisy_states: {len(draws)} noise tensors for keep_steps {list(keep_steps)}")
    return {k: noise_to(restored, reference_time(k, REFERENCE_STEPS), eps) for k, eps in zip(keep_steps, draws)}
