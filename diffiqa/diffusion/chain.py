"""The restore chain: its settings (``Chain``), the one function that runs it to its end
(``run_chain``) and the paper's noisy states of its result (``noisy_states``).

Every caller that restores an image goes through ``run_chain``: the restore cache
(``restore.sample_crops``), ``diffiqa restore`` window by window (``restore_files``), the
restorer's evaluation, the restoration-gap prior, the enhancement's DDIM map and the restore
benchmark. They differ only in where their noise comes from (per-crop generators, noise fixed
by pixel position, one generator per batch, one fixed draw) and in whether gradients flow,
which are arguments here, not copies of the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from diffiqa.diffusion.samplers import REFERENCE_STEPS, SAMPLERS, noise_to, reference_time, run_and_keep, sample_chain
from diffiqa.errors import ConfigError

Noise = Callable[[], torch.Tensor] | torch.Tensor | None


@dataclass(frozen=True)
class Chain:
    """One restore chain: ``sampler`` (ddim | ddpm) with ``steps`` network calls from
    ``t_start`` (1 = from pure noise, the paper; < 1 = from the distorted image noised to
    t_start, SDEdit-style); ``eta`` is DDIM's stochasticity (0 = deterministic; DDPM ignores it)."""

    sampler: str = "ddim"
    steps: int = 10
    eta: float = 0.0
    t_start: float = 1.0

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler={self.sampler!r}: expected one of {SAMPLERS}")
        if int(self.steps) < 1 or not 0.0 < float(self.t_start) <= 1.0:
            raise ConfigError(f"chain steps={self.steps}, t_start={self.t_start}: need steps >= 1, t_start in (0, 1]")
        if float(self.eta) < 0:
            raise ConfigError(f"chain eta={self.eta}: must be >= 0")

    @property
    def stochastic(self) -> bool:
        """Whether the chain draws noise after its start state (DDPM, or DDIM with eta > 0)."""
        return self.sampler == "ddpm" or self.eta > 0

    def label(self) -> str:
        return f"{self.sampler}-{self.steps} from t={self.t_start:g}"


# The one fallback: the chain of checkpoints that record none. They predate recorded chains and
# were run (and measured best) with DDIM-3 from t 0.1.
LEGACY_CHAIN = Chain(sampler="ddim", steps=3, eta=0.0, t_start=0.1)


def chain_from_record(record: dict | None) -> Chain:
    """A recorded chain -> ``Chain``: a checkpoint config's ``chain`` (or ``sampler``, its key
    before eta was part of it), a cache spec's flat fields. None -> ``LEGACY_CHAIN``. Records
    without eta ran eta 0; without t_start (caches before format 2) from pure noise."""
    if record is None:
        return LEGACY_CHAIN
    return Chain(sampler=record["sampler"], steps=int(record["steps"]), eta=float(record.get("eta", 0.0)),
                 t_start=float(record.get("t_start", 1.0)))


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
    """Run ``chain`` on ``cond`` (N,3,H,W) in model space [-1,1] to its end -> the final state
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
