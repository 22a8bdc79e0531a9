"""The latent map G: latent z <-> image x, deterministic and invertible.

``build_map`` picks one: ``PixelMap`` (the identity: the ascent runs in pixel space, the
control every latent map must beat) or ``DiffusionMap`` built from a diffusion network
(``EnhanceParams.map``): by default the *unconditional prior denoiser* of pristine photos (the
``prior_map`` preset, shipped as diffiqa/assets/enhance_map.pt; it sees a zero condition); or
the *conditional restorer*, conditioned on y. The first version argued for the restorer: the condition
would keep G near y and an unconditional model "would not know which image to stay near". The
measurements say otherwise (benchmarks/RESULTS.md "Enhancement", 2026-12-01): the exact
inversion already pins the start (G(G^-1(y)) = y to > 140 dB with either network) and the
fidelity term keeps the output near y, while the restorer's output hardly depends on x_t
(x0 ~ cond + f): on the 3-step chain from t 0.1-0.5 a latent perturbation moves its image by
0.02-0.03 of the perturbation (gain), against 0.14-0.3 for the unconditional denoiser, whose
Jacobian is a learned denoising filter, so the move is image structure, not white noise.

EDICT's mixing weight p matters as much as the network: with the tied pair, the chain passes
a share of any latent perturbation straight to the output whatever the network does
(``passthrough``: 0.22 per unit on 3 steps from t 0.3 at the paper's p 0.93), and that share
is white. Where the network's own response is small, it is all the gate sees: the restorer's
gain on that chain is 0.22 too, with a high-frequency share of 0.84, white noise's.
``quiet_mix`` picks the p (~0.8) that cancels it.

Two forms, on samplers' time grid ``time_grid(steps, t_start)`` (t_start ... 0; ``t_start``
< 1 starts the chain partly noised, SDEdit-like; 1 is the full chain):
- ``"ddim"``: deterministic DDIM (eta = 0, no x0 clipping) sampling, and its first-order
  inversion (``ddim_invert_step``). The latent is (N,3,H,W). Inversion is approximate: eps is
  evaluated at the wrong end of each step, so the round trip loses a little (measured PSNR);
  with an x0-predicting net its first inversion step (from t 0) divides by ~0: round trip
  8 dB on the unconditional map (measured), so that map is for EDICT only.
- ``"edict"``: EDICT (Wallace, Gokul & Naik, CVPR 2023): two coupled sequences (x, y) updated
  in turn, each from the other's noise prediction, then mixed with weight p (the paper's
  0.93; see above). Every
  update is an affine map whose inverse is written out, so inversion is exact up to float
  rounding. The inverted pair is stored as (x_T, d = y_T - x_T) and the *tied* pair
  (z, z + d) is generated: the optimiser moves one latent z of shape (N,3,H,W), both
  sequences move together, as in the paper. (Moving x_T and y_T independently pushes the
  two sequences apart, and EDICT's mixing layer amplifies that difference into
  high-frequency noise: the "pixel space in disguise" of issue 13.)

The sampler's grid and single steps come from ``diffiqa.diffusion.samplers`` through
``enhance.chain`` (samplers' own loop runs without autograd). ``generate`` keeps autograd on,
with ``torch.utils.checkpoint`` around each sampler step so the memory held for the backward
pass is one step's activations (+ the step inputs), whatever the number of steps. The
network's weights are never changed here.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint as checkpoint_step

from diffiqa.diffusion.chain import Chain
from diffiqa.diffusion.checkpoint import condition_for
from diffiqa.diffusion.samplers import run_chain, to_model_space
from diffiqa.enhance.chain import affine_down, affine_up, ddim_up, eps_at, time_grid
from diffiqa.errors import ConfigError

METHODS = ("ddim", "edict")


class DiffusionMap:
    """G and G^-1 for one conditioning batch.

    net: the map's network (``net(x_t, cond, gamma)``, any of samplers' prediction kinds); cond01:
    (N,3,H,W) in [0,1] (the image y being enhanced; an unconditional net, ``net.conditional``
    False, sees zeros instead); steps: number of sampler steps k;
    method: "ddim" | "edict"; mix: EDICT's p; t_start in (0,1]; use_checkpoint: checkpoint
    each step of ``generate``. The latent is (N,3,H,W) for both methods (EDICT: tied pair).
    """

    def __init__(self, net, cond01: torch.Tensor, steps: int, method: str = "ddim", t_start: float = 1.0,
                 mix: float = 0.93, use_checkpoint: bool = True, invert_refine: int = 0):
        if method not in METHODS:
            raise ConfigError(f"inversion {method!r}: choose one of {list(METHODS)}")
        if not 0 < t_start <= 1:
            raise ConfigError(f"t_start must be in (0, 1], got {t_start}")
        if not 0.5 < mix < 1:
            raise ConfigError(f"EDICT mixing p must be in (0.5, 1), got {mix}")
        if int(steps) < 1:
            raise ConfigError(f"the map needs at least 1 sampler step, got {steps}")
        self.net = net
        self.cond = condition_for(net, to_model_space(cond01))
        self.steps = int(steps)
        self.method = method
        self.mix = float(mix)
        self.use_checkpoint = use_checkpoint
        self.invert_refine = invert_refine
        self.t_start = float(t_start)
        # descending: ts[0] = t_start (noisiest) ... ts[steps] = 0 (clean)
        self.ts = time_grid(self.steps, t_start)
        self.tie = None  # EDICT: d = y_T - x_T of the inverted pair

    # -- one step each way -------------------------------------------------------------
    def _edict_down(self, pair, i):
        x, y = pair[0], pair[1]
        t, t_next, p = self.ts[i], self.ts[i + 1], self.mix
        x_mid = affine_down(eps_at(self.net, self.cond, y, t), self.cond, x, t, t_next)
        y_mid = affine_down(eps_at(self.net, self.cond, x_mid, t), self.cond, y, t, t_next)
        x_new = p * x_mid + (1 - p) * y_mid
        y_new = p * y_mid + (1 - p) * x_new
        return torch.stack([x_new, y_new])

    def _edict_up(self, pair, i):
        """Exact inverse of ``_edict_down(., i)``."""
        x_new, y_new = pair[0], pair[1]
        t, t_next, p = self.ts[i], self.ts[i + 1], self.mix
        y_mid = (y_new - (1 - p) * x_new) / p
        x_mid = (x_new - (1 - p) * y_mid) / p
        y = affine_up(eps_at(self.net, self.cond, x_mid, t), self.cond, y_mid, t, t_next)
        x = affine_up(eps_at(self.net, self.cond, y, t), self.cond, x_mid, t, t_next)
        return torch.stack([x, y])

    # -- the map ---------------------------------------------------------------------------
    @torch.no_grad()
    def invert(self, image01: torch.Tensor) -> torch.Tensor:
        """G^-1: (N,3,H,W) in [0,1] -> latent z (N,3,H,W) (EDICT: x_T; y_T - x_T kept as the tie)."""
        x = to_model_space(image01)
        if self.method == "ddim":
            for i in reversed(range(self.steps)):
                x = ddim_up(self.net, self.cond, x, self.ts[i + 1], self.ts[i], refine_iters=self.invert_refine)
            return x
        pair = torch.stack([x, x])
        for i in reversed(range(self.steps)):
            pair = self._edict_up(pair, i)
        self.tie = (pair[1] - pair[0]).detach()
        return pair[0]

    def _start(self, z: torch.Tensor) -> torch.Tensor:
        if self.tie is None:
            raise ConfigError("EDICT map: call invert() first (it fixes the tie between the pair)")
        return torch.stack([z, z + self.tie])

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G: latent (N,3,H,W) -> (N,3,H,W) image space, (x+1)/2 *unclamped* (clamp where pixels are needed)."""
        if self.method == "ddim":  # the restore chain from the latent, x0 unclipped (invertible)
            chain = Chain(sampler="ddim", steps=self.steps, eta=0.0, t_start=self.t_start)
            x = run_chain(self.net, self.cond, chain, grad=True, start=z, clip_x0=False, checkpoint=self.use_checkpoint)
            return (x + 1) / 2
        step = self._edict_down
        state = self._start(z)
        for i in range(self.steps):
            if self.use_checkpoint and torch.is_grad_enabled():
                state = checkpoint_step(step, state, i, use_reentrant=False)
            else:
                state = step(state, i)
        return (state[0] + 1) / 2


    def describe(self) -> str:
        kind = "conditional" if getattr(self.net, "conditional", True) else "unconditional"
        return f"{self.method.upper()} (p {self.mix:g}), {self.steps} steps from t {self.t_start:g}, {kind} network"


class PixelMap:
    """G = identity in model units: z = 2y - 1, G(z) = (z + 1) / 2. The ascent then moves the
    pixels themselves (the pixel-space control)."""

    def invert(self, image01: torch.Tensor) -> torch.Tensor:
        return to_model_space(image01)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return (z + 1) / 2

    def describe(self) -> str:
        return "pixel space (identity)"


def build_map(net, y01: torch.Tensor, steps: int, t_start: float, method: str = "edict", mix: float | None = None,
              use_checkpoint: bool = True):
    """``PixelMap`` when ``net`` is None, else the ``DiffusionMap`` of ``net`` for the input
    ``y01`` (``mix`` None: ``quiet_mix(steps, t_start)``)."""
    if net is None:
        return PixelMap()
    mix = quiet_mix(steps, t_start) if mix is None else mix
    return DiffusionMap(net, y01, steps, method=method, t_start=t_start, mix=mix, use_checkpoint=use_checkpoint)


class _ConstantX0(torch.nn.Module):
    """A network whose x0 estimate ignores its input (zero Jacobian): what is left of the chain's
    response to its latent is the pass-through of the sampler steps and EDICT's mixing."""

    prediction = "x0"
    conditional = False

    def forward(self, x, cond, gamma):
        return torch.zeros_like(x)


@torch.no_grad()
def passthrough(steps: int, t_start: float, mix: float) -> float:
    """How much of a latent perturbation the tied EDICT chain (``steps`` from ``t_start``,
    mixing ``mix``) passes straight to its output when the network's x0 does not depend on its
    input: d output / d z (signed, model units), the same for every pixel (the chain is then
    affine in z). A
    perturbation passed through keeps its white spectrum, so this is the part of G's response
    that no network can make structured (measured: -0.22 at the paper's p 0.93 on 3 steps from
    t 0.3; ~0 near p 0.8)."""
    y = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    g = DiffusionMap(_ConstantX0(), y, steps, method="edict", t_start=t_start, mix=mix, use_checkpoint=False)
    z = g.invert(y)
    return 2 * float(g.generate(z + 1.0) - g.generate(z))  # model units out per model unit in, like the gate's gain


MIX_GRID = tuple(round(0.55 + 0.01 * i, 2) for i in range(45))  # 0.55 ... 0.99


@functools.lru_cache(maxsize=64)  # pure in (steps, t_start); asked again for every image and chain
def quiet_mix(steps: int, t_start: float) -> float:
    """EDICT's p in ``MIX_GRID`` whose chain passes the least latent noise straight through
    (``passthrough`` closest to 0): then what a latent move does to the image is what the
    network's Jacobian makes of it. Ties go to the larger p (closer to the paper's 0.93)."""
    return min(reversed(MIX_GRID), key=lambda p: abs(passthrough(steps, t_start, p)))
