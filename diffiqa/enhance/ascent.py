"""MAP enhancement in the latent of an invertible diffusion map (DESIGN §6).

    x* = G(z*),  z* = argmax_z  lam * Q(G(z)) - ||G(z) - y||^2 / (2 sigma^2),
         subject to PSNR(G(z), y) >= min_psnr,  z_0 = G^-1(y)

Q is a prior on the bounded 0-100 MOS scale (one model or a ``FusedPrior``; see
``priors.calibration``), G the latent map (``latent_map``): a deterministic EDICT / DDIM chain of
the unconditional prior denoiser (``map`` "denoiser", the default) or of the conditional
restorer (``map`` "restorer"), or the identity (``map`` "pixel": ascent in pixel space, the
control); the network's weights are frozen and each sampler step is checkpointed, so memory
does not grow with ``steps``.

Steps in image units (issue 13, item 1): Adam's first step moved every latent value by lr,
which the map amplified into an image ~20 dB away from the input, far outside where the
gradient says anything. Here each step is *normalised-gradient ascent with a trust region*:
the latent moves along g / rms(g) by the amount that changes the image by ``radius`` (rms,
pixels in [0,1]; the first radius is ``step_db`` as a PSNR, 46 dB = 0.005), using the map's
measured gain. A step is accepted only if the objective rises and the fidelity floor holds;
then the radius grows x1.5, else it halves. A step that moved the image more than
``OVERSHOOT`` x the radius is refused too, keeping the radius: the gain it was sized with was
off (a generative map amplifies the gradient's direction more than the gate's white probe, by
~6x at the first step on a real photo; measured), and the next step uses the gain it measured. After ``early_stop_patience`` rejections in a row
the loop stops. Accepted iterates only ever raise the objective, so the last one is the best.

The guard (``gate.measure_change``): a step that raises the objective is still refused when the
change x_k - x_{k-1} looks like an attack on the prior (speckle, or a local patch), and the
run's whole change x* - y is judged the same way. A run whose whole change fails (or whose map
cannot represent the input: round trip under 40 dB) has *failed*: its result keeps the last
iterate whose whole change passed (the input when none did), and callers do not call it
enhanced.

Meaning of sigma (and lam): ||.||^2 here is the mean squared pixel error per image (pixels in
[0,1]), so sigma is a per-pixel noise level in those units. The fidelity weight is
1/(2 sigma^2): a SMALL sigma (or lam -> 0) lets fidelity dominate and the output stays at y;
a LARGE sigma weakens fidelity and lets the prior pull the image away. Both limits are tested.
With Q in MOS points, sigma = 0.02 prices the step from 45 dB to 35 dB to the input at ~0.4
MOS points.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from diffiqa.enhance.gate import ChangeReport, MapReport, measure_change, measure_gate
from diffiqa.enhance.latent_map import build_map
from diffiqa.errors import ConfigError

log = logging.getLogger(__name__)

GROW, SHRINK = 1.5, 0.5
OVERSHOOT = 2.0  # a step that moves the image more than this x the radius left the trust region


@dataclass
class EnhanceParams:
    """The ``enhance`` params group. ``prior``: names (two or more = fusion with ``weights``);
    ``lam``: prior weight (Q in MOS points 0-100); ``sigma``: per-pixel fidelity noise level
    (see module doc); ``min_psnr``: fidelity floor, dB to the input (0 = none); ``step_db``:
    the first step's image change as a PSNR; ``iterations``: trust-region steps;
    ``early_stop_patience``: rejections in a row that stop the loop (0 = never);
    ``steps`` / ``t_start``: the map's chain (null = the restorer's own settings, see
    ``chain.chain_settings``); ``inversion``: "ddim" | "edict"; ``edict_mix``: EDICT's p (null = ``invertible.quiet_mix``,
    the p whose chain passes the least latent noise straight through: ~0.8; the paper's 0.93
    passes 0.22 of it on 3 steps from t 0.3, benchmarks/RESULTS.md "Enhancement");
    ``max_side``: downscale so the longer side is at most this (0 = full size); ``map``: what G
    is: "denoiser" (the unconditional prior denoiser, diffiqa/assets/enhance_map.pt),
    "restorer" (the conditional restorer), "pixel" (the identity: pixel-space ascent) or a
    checkpoint path (``files.find_map_checkpoint``)."""

    prior: tuple[str, ...] = ("niqe",)
    weights: tuple[float, ...] = (1.0,)
    lam: float = 1.0
    sigma: float = 0.02
    min_psnr: float = 30.0
    step_db: float = 46.0
    iterations: int = 20
    early_stop_patience: int = 4
    steps: int | None = None
    t_start: float | None = None
    inversion: str = "edict"
    edict_mix: float | None = None
    seed: int = 0
    gap_steps: int = 4
    max_side: int = 0
    map: str = "pixel"  # the map that did least harm in the comparison (benchmarks/RESULTS.md "Enhancement")

    def __post_init__(self) -> None:  # checked where it is built: params.yaml, the CLI, code
        self.prior, self.weights = tuple(self.prior), tuple(self.weights)
        if len(self.prior) == 0:
            raise ConfigError("enhance.prior: give at least one prior")
        if len(self.weights) != len(self.prior):
            raise ConfigError(f"enhance.weights: {len(self.weights)} weights for {len(self.prior)} priors {list(self.prior)}")
        if any(not math.isfinite(w) or w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ConfigError(f"enhance.weights must be finite, >= 0 and not all 0, got {list(self.weights)}")
        for name in ("lam", "sigma", "min_psnr", "step_db"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"enhance.{name} must be a finite number, got {v!r}")
        if self.sigma <= 0:
            raise ConfigError(f"enhance.sigma must be > 0, got {self.sigma}")
        if self.lam < 0:
            raise ConfigError(f"enhance.lam must be >= 0, got {self.lam}")
        if self.step_db <= 0 or self.min_psnr < 0:
            raise ConfigError(f"enhance.step_db must be > 0 and min_psnr >= 0, got {self.step_db}, {self.min_psnr}")
        if self.iterations < 0 or self.early_stop_patience < 0:
            raise ConfigError(f"enhance.iterations and early_stop_patience must be >= 0, got "
                              f"{self.iterations}, {self.early_stop_patience}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"enhance.steps must be >= 1, got {self.steps}")
        if self.t_start is not None and not (isinstance(self.t_start, (int, float)) and 0 < self.t_start <= 1):
            raise ConfigError(f"enhance.t_start must be in (0, 1], got {self.t_start!r}")
        if self.edict_mix is not None and not (isinstance(self.edict_mix, (int, float)) and 0.5 < self.edict_mix < 1):
            raise ConfigError(f"enhance.edict_mix must be in (0.5, 1) or null (the quietest), got {self.edict_mix!r}")
        if self.max_side < 0:
            raise ConfigError(f"enhance.max_side must be >= 0 (0 = full size), got {self.max_side}")
        if not isinstance(self.map, str) or not self.map.strip():
            raise ConfigError(f"enhance.map must be 'denoiser', 'restorer', 'pixel' or a checkpoint path, got {self.map!r}")


@dataclass
class EnhanceResult:
    """``image`` (N,3,H,W) in [0,1]: the last accepted iterate whose whole change passed the
    guard (the input when none did); ``trajectory``: one dict per evaluation (``iteration, Q,
    fidelity, objective, psnr_to_input, accepted, refused, radius``; batch means; ``refused``:
    the guard's verdict on a step that raised the objective); ``map_report``: the map at the
    input (round trip, white-noise probe); ``change``: the guard's numbers for the whole change
    x* - y of the last accepted iterate; ``passed``: the run enhanced (the map represents the
    input and the whole change passed); ``within``: for each budget (dB) asked for, the passing
    accepted iterate with the highest Q whose PSNR to the input is at least the budget."""

    image: torch.Tensor
    trajectory: list[dict] = field(default_factory=list)
    map_report: MapReport | None = None
    change: ChangeReport | None = None
    passed: bool = True
    within: dict = field(default_factory=dict)

    @property
    def round_trip_psnr(self) -> float:
        return self.map_report.round_trip_db if self.map_report else math.nan

    def verdict(self) -> str:
        """One line: enhanced, or why not."""
        if self.passed:
            return f"enhanced ({self.change.psnr_db:.1f} dB from the input; the change is {self.change.reason()})"
        if self.map_report is not None and not self.map_report.represents:
            return f"NOT enhanced: the map does not represent the input ({self.map_report.round_trip_db:.1f} dB round trip)"
        return f"NOT enhanced: the change is {self.change.reason()}"


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [0,1] -> (N,) PSNR in dB."""
    mse = (a - b).square().mean((1, 2, 3)).clamp_min(1e-12)
    return 10 * torch.log10(1 / mse)


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().square().mean().sqrt())


def _objective(g, prior, y: torch.Tensor, params: EnhanceParams):
    """-> evaluate(z) = (record, image, gradient of lam Q - fidelity with respect to z) for map ``g``."""
    fid_weight = 1.0 / (2 * params.sigma**2)

    def evaluate(zz):
        zz = zz.detach().requires_grad_(True)
        x = g.generate(zz).clamp(0, 1)
        q = prior(x)
        fid = (x - y).square().mean((1, 2, 3)) * fid_weight
        objective = params.lam * q - fid  # (N,)
        grad = None
        if objective.requires_grad:
            (grad,) = torch.autograd.grad(objective.sum(), zz)  # per-image objectives are independent
        rec = {"Q": float(q.detach().mean()), "fidelity": float(fid.detach().mean()),
               "objective": float(objective.detach().mean()), "psnr_to_input": float(psnr(x.detach(), y).mean())}
        return rec, x.detach(), grad

    return evaluate


def enhance(y: torch.Tensor, net: torch.nn.Module | None, prior: torch.nn.Module, params: EnhanceParams,
            progress: bool = True, budgets=(), steps: int | None = None, t_start: float | None = None,
            use_checkpoint: bool = True) -> EnhanceResult:
    """Enhance a batch y (N,3,H,W) in [0,1] (one image, or crops of one size) -> EnhanceResult.

    ``net``: the map's network (None for ``map`` "pixel"); ``steps`` / ``t_start``: the chain
    when ``params`` leaves them null (the caller reads the network's own settings);
    ``budgets``: PSNR floors (dB) whose best iterate to keep; ``use_checkpoint`` False trades
    memory for ~1/3 less compute (small images)."""
    torch.manual_seed(params.seed)
    if net is not None:
        net.eval().requires_grad_(False)  # frozen: only z moves
    g = build_map(net, y, params.steps or steps or 4, params.t_start or t_start or 0.3, params.inversion,
                  params.edict_mix, use_checkpoint)
    z = g.invert(y).detach()
    map_report = measure_gate(g.generate, z, y, seed=params.seed)
    log.debug("%s (%s)", map_report.line(), g.describe())  # callers print it
    evaluate = _objective(g, prior, y, params)
    rec, x, grad = evaluate(z)
    radius = 10 ** (-params.step_db / 20)
    gain = max(map_report.gain / 2, 1e-3)  # image rms per latent rms (the probe's gain is in model units)
    trajectory = [{"iteration": 0, **rec, "accepted": True, "refused": False, "radius": radius}]
    kept, change = x.clone(), measure_change(y, x)
    within = {b: (rec["Q"], x.clone()) for b in budgets if rec["psnr_to_input"] >= b}
    rejected = 0
    # One loop, not split into helpers: the trust region's state (z, radius, the map's local gain,
    # the kept iterate and the best iterate per budget) changes together at every step.
    bar = tqdm(range(1, params.iterations + 1), desc="enhance", unit="it", disable=not progress, leave=False)
    for it in bar:
        if grad is None or not torch.isfinite(grad).all() or _rms(grad) == 0:
            log.info("iteration %d: the objective has no usable gradient; stopping", it)
            break
        dz = grad / _rms(grad) * (radius / gain)
        rec_try, x_try, grad_try = evaluate(z + dz)
        moved = _rms(x_try - x)
        if moved > 0 and math.isfinite(moved):
            gain = moved / _rms(dz)  # the map's local gain, for sizing the next step
        overshot = not moved <= OVERSHOOT * radius  # NaN counts as overshot
        ok = (math.isfinite(rec_try["objective"]) and rec_try["objective"] > rec["objective"]
              and rec_try["psnr_to_input"] >= params.min_psnr and not overshot)
        refused = ok and not measure_change(x, x_try).passed  # the step looks like an attack
        ok = ok and not refused
        trajectory.append({"iteration": it, **rec_try, "accepted": ok, "refused": refused, "radius": radius})
        if ok:
            z, rec, x, grad = (z + dz).detach(), rec_try, x_try, grad_try
            rejected, radius = 0, radius * GROW
            change = measure_change(y, x)
            if change.passed:
                kept = x.clone()
                for b in budgets:
                    if rec["psnr_to_input"] >= b and (b not in within or rec["Q"] > within[b][0]):
                        within[b] = (rec["Q"], x.clone())
        else:
            rejected, radius = rejected + 1, radius * (1.0 if overshot and math.isfinite(moved) else SHRINK)
        bar.set_postfix(Q=f"{rec['Q']:.3g}", psnr=f"{rec['psnr_to_input']:.1f}")
        if params.early_stop_patience and rejected >= params.early_stop_patience:
            log.info("stopped at iteration %d: %d rejected steps in a row", it, rejected)
            break
    passed = map_report.represents and change.passed
    if not map_report.represents:
        kept, within = y.clone(), {}
    return EnhanceResult(kept, trajectory, map_report, change, passed, {b: v[1] for b, v in within.items()})
