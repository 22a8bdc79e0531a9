"""A deterministic, invertible map G: latent z <-> image x, built from the restorer.

Why the restorer, conditioned on the input y: it is the one diffusion model the project
already trains (degraded -> pristine pairs), so no second model is needed; and with the
condition fixed to y, the deterministic chain started from G^-1(y) retraces a path that ends
at y itself (G(G^-1(y)) ~ y), while moving z moves the output along images the restorer finds
plausible for that input. The alternative, an unconditional model of pristine crops, would be
a second network to train and would not know which image it is meant to stay near.

Two forms, on the time grid ``t_start * sampling_timesteps(steps)`` followed by t = 0
(``t_start`` < 1 starts the chain partly noised, SDEdit-like, and keeps the latent close to
the image; 1 is the full chain):
- ``"ddim"``: deterministic DDIM (eta = 0, no x0 clipping) sampling, and its first-order
  inversion (``ddim_invert_step``). The latent is (N,3,H,W). Inversion is approximate: eps is
  evaluated at the wrong end of each step, so the round trip loses a little (measured PSNR).
- ``"edict"``: EDICT (Wallace, Gokul & Naik, CVPR 2023): two coupled sequences (x, y) updated
  in turn, each from the other's noise prediction, then mixed with weight p (0.93). Every
  update is an affine map whose inverse is written out, so inversion is exact up to float
  rounding. The latent is the pair, stacked: (2,N,3,H,W).

``generate`` keeps autograd on, with ``torch.utils.checkpoint`` around each sampler step so the
memory held for the backward pass is one step's activations (+ the step inputs), whatever
the number of steps. The network's weights are never changed here.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint as checkpoint_step

from diffiqa.diffusion.samplers import ddim_invert_step, ddim_step, to_model_space
from diffiqa.diffusion.schedule import cosine_alpha_bar, sampling_timesteps
from diffiqa.errors import ConfigError

METHODS = ("ddim", "edict")


class DiffusionMap:
    """G and G^-1 for one conditioning batch.

    net: ``net(x_t, cond, gamma) -> eps``; cond01: (N,3,H,W) in [0,1] (the image y being
    enhanced); steps: number of sampler steps k; method: "ddim" | "edict"; mix: EDICT's p;
    t_start in (0,1]; use_checkpoint: checkpoint each step of ``generate``.
    """

    def __init__(self, net, cond01: torch.Tensor, steps: int, method: str = "ddim", t_start: float = 1.0,
                 mix: float = 0.93, use_checkpoint: bool = True, invert_refine: int = 0):
        if method not in METHODS:
            raise ConfigError(f"inversion {method!r}: choose one of {list(METHODS)}")
        if not 0 < t_start <= 1:
            raise ConfigError(f"t_start must be in (0, 1], got {t_start}")
        if not 0.5 < mix < 1:
            raise ConfigError(f"EDICT mixing p must be in (0.5, 1), got {mix}")
        self.net = net
        self.cond = to_model_space(cond01)
        self.steps = int(steps)
        self.method = method
        self.mix = float(mix)
        self.use_checkpoint = use_checkpoint
        self.invert_refine = invert_refine
        # descending: ts[0] = t_start (noisiest) ... ts[steps] = 0 (clean)
        self.ts = (sampling_timesteps(self.steps) * t_start).tolist() + [0.0]

    # -- one step each way -------------------------------------------------------------
    def _ddim_down(self, x, i):
        return ddim_step(self.net, self.cond, x, self.ts[i], self.ts[i + 1], eta=0.0, clip_x0=False)[0]

    def _edict_coeffs(self, i, like):
        ab = cosine_alpha_bar(self.ts[i]).to(like.device, like.dtype)
        ab_next = cosine_alpha_bar(self.ts[i + 1]).to(like.device, like.dtype)
        a = (ab_next / ab).sqrt()
        b = (1 - ab_next).sqrt() - (ab_next * (1 - ab) / ab).sqrt()
        return a, b, ab.sqrt().expand(like.shape[1])

    def _edict_down(self, pair, i):
        x, y = pair[0], pair[1]
        a, b, gamma = self._edict_coeffs(i, pair)
        p = self.mix
        x_mid = a * x + b * self.net(y, self.cond, gamma)
        y_mid = a * y + b * self.net(x_mid, self.cond, gamma)
        x_new = p * x_mid + (1 - p) * y_mid
        y_new = p * y_mid + (1 - p) * x_new
        return torch.stack([x_new, y_new])

    def _edict_up(self, pair, i):
        """Exact inverse of ``_edict_down(., i)``."""
        x_new, y_new = pair[0], pair[1]
        a, b, gamma = self._edict_coeffs(i, pair)
        p = self.mix
        y_mid = (y_new - (1 - p) * x_new) / p
        x_mid = (x_new - (1 - p) * y_mid) / p
        y = (y_mid - b * self.net(x_mid, self.cond, gamma)) / a
        x = (x_mid - b * self.net(y, self.cond, gamma)) / a
        return torch.stack([x, y])

    # -- the map ---------------------------------------------------------------------------
    @torch.no_grad()
    def invert(self, image01: torch.Tensor) -> torch.Tensor:
        """G^-1: (N,3,H,W) in [0,1] -> latent z ((N,3,H,W) for ddim, (2,N,3,H,W) for edict)."""
        x = to_model_space(image01)
        if self.method == "ddim":
            for i in reversed(range(self.steps)):
                x = ddim_invert_step(self.net, self.cond, x, self.ts[i + 1], self.ts[i], clip_x0=False,
                                     refine_iters=self.invert_refine)[0]
            return x
        pair = torch.stack([x, x])
        for i in reversed(range(self.steps)):
            pair = self._edict_up(pair, i)
        return pair

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G: latent -> (N,3,H,W) image space, (x+1)/2 *unclamped* (clamp where pixels are needed)."""
        step = self._ddim_down if self.method == "ddim" else self._edict_down
        state = z
        for i in range(self.steps):
            if self.use_checkpoint and torch.is_grad_enabled():
                state = checkpoint_step(step, state, i, use_reentrant=False)
            else:
                state = step(state, i)
        x = state if self.method == "ddim" else state[0]
        return (x + 1) / 2
