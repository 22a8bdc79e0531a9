"""MAP enhancement in the latent of an invertible diffusion map (DESIGN §6).

    x* = G(z*),  z* = argmax_z  lam * Q(G(z)) - ||G(z) - y||^2 / (2 sigma^2),  z_0 = G^-1(y)

Q is a prior (higher = better; one model or a ``FusedPrior``), G the restorer's deterministic
DDIM / EDICT chain conditioned on y (``invertible.DiffusionMap``), optimised with Adam on z;
the network's weights are frozen and each sampler step is checkpointed, so memory does not
grow with ``steps``.

Meaning of sigma (and lam): ||.||^2 here is the mean squared pixel error per image (pixels in
[0,1]), so sigma is a per-pixel noise level in those units. The fidelity weight is
1/(2 sigma^2): a SMALL sigma (or lam -> 0) lets fidelity dominate and the output stays at y;
a LARGE sigma weakens fidelity and lets the prior pull the image away. Both limits are tested.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from diffiqa.enhance.invertible import DiffusionMap
from diffiqa.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class EnhanceParams:
    """The ``enhance`` params group. ``prior``: names (two or more = fusion with ``weights``);
    ``lam``: prior weight; ``sigma``: per-pixel fidelity noise level (see module doc);
    ``steps``: sampler steps of G; ``inversion``: "ddim" | "edict"; ``t_start``: noise level
    the chain starts from (1 = full chain); ``edict_mix``: EDICT's p; early stopping when the
    objective has not risen by more than ``early_stop_tol`` for ``early_stop_patience``
    iterations (0 = off); ``reference_size``: side of the fusion reference crops."""

    prior: tuple[str, ...] = ("niqe",)
    weights: tuple[float, ...] = (1.0,)
    lam: float = 1.0
    sigma: float = 0.05
    lr: float = 0.02
    iterations: int = 30
    steps: int = 4
    early_stop_patience: int = 10
    early_stop_tol: float = 1e-4
    inversion: str = "edict"
    t_start: float = 0.5
    edict_mix: float = 0.93
    seed: int = 0
    reference_size: int = 128
    gap_steps: int = 4
    max_side: int = 0  # 0 = full size; else images are downscaled so the longer side is at most this

    def validate(self) -> None:
        if len(self.prior) == 0:
            raise ConfigError("enhance.prior: give at least one prior")
        if len(self.weights) != len(self.prior):
            raise ConfigError(f"enhance.weights: {len(self.weights)} weights for {len(self.prior)} priors {list(self.prior)}")
        if self.sigma <= 0:
            raise ConfigError(f"enhance.sigma must be > 0, got {self.sigma}")
        if self.iterations < 0 or self.steps < 1:
            raise ConfigError(f"enhance: iterations >= 0 and steps >= 1 needed, got {self.iterations}, {self.steps}")


@dataclass
class EnhanceResult:
    """``image`` (N,3,H,W) in [0,1] (the best-objective iterate); ``trajectory``: one dict per
    iteration with ``iteration, Q, fidelity, objective, psnr_to_input`` (batch means);
    ``round_trip_psnr``: PSNR of G(G^-1(y)) to y (how faithful the map is before optimising)."""

    image: torch.Tensor
    trajectory: list[dict] = field(default_factory=list)
    round_trip_psnr: float = float("nan")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [0,1] -> (N,) PSNR in dB."""
    mse = (a - b).square().mean((1, 2, 3)).clamp_min(1e-12)
    return 10 * torch.log10(1 / mse)


def enhance(y: torch.Tensor, net: torch.nn.Module, prior: torch.nn.Module, params: EnhanceParams,
            progress: bool = True) -> EnhanceResult:
    """Enhance a batch y (N,3,H,W) in [0,1] (one image, or crops of one size) -> EnhanceResult."""
    params.validate()
    torch.manual_seed(params.seed)
    net.eval().requires_grad_(False)  # frozen: only z moves
    g = DiffusionMap(net, y, params.steps, method=params.inversion, t_start=params.t_start, mix=params.edict_mix)
    z = g.invert(y).detach().requires_grad_(True)
    with torch.no_grad():
        rt = float(psnr(g.generate(z).clamp(0, 1), y).mean())
    log.info("G(G^-1(y)) round trip: %.2f dB (%s, %d steps)", rt, params.inversion, params.steps)
    opt = torch.optim.Adam([z], lr=params.lr)
    fid_weight = 1.0 / (2 * params.sigma**2)
    best_obj, best_img, since_best = -math.inf, y.clone(), 0
    trajectory: list[dict] = []
    bar = tqdm(range(params.iterations + 1), desc="enhance", unit="it", disable=not progress, leave=False)
    for it in bar:
        x = g.generate(z).clamp(0, 1)
        q = prior(x)
        fid = (x - y).square().mean((1, 2, 3)) * fid_weight
        objective = params.lam * q - fid  # (N,)
        obj = float(objective.detach().mean())
        trajectory.append({"iteration": it, "Q": float(q.detach().mean()), "fidelity": float(fid.detach().mean()),
                           "objective": obj, "psnr_to_input": float(psnr(x.detach(), y).mean())})
        if obj > best_obj + params.early_stop_tol:
            best_obj, best_img, since_best = obj, x.detach().clone(), 0
        else:
            since_best += 1
        bar.set_postfix(Q=f"{trajectory[-1]['Q']:.3g}", obj=f"{obj:.3g}")
        if it == params.iterations or (params.early_stop_patience and since_best >= params.early_stop_patience):
            if it < params.iterations:
                log.info("early stop at iteration %d (no gain > %g for %d iterations)", it,
                         params.early_stop_tol, params.early_stop_patience)
            break
        opt.zero_grad()
        (-objective.sum()).backward()  # per-image objectives are independent: the sum ascends each
        opt.step()
    return EnhanceResult(best_img, trajectory, rt)
