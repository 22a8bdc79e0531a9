"""The gate: does the ascent enhance the photograph, or attack the prior?

Two parts:

- **The guard along the ascent** (``measure_change``, ``ChangeReport``): every step
  x_k - x_{k-1} that raises the objective, and the run's whole change x* - y, is judged by its
  spectrum and its locality; a change that is speckle (white-ish energy *added* above
  ``STEP_HF_CUTOFF``) or a local patch (most of its energy in the top 5 % of 8-px patches) is
  refused (``ascent.enhance``). This is what decides whether a run enhanced.
- **The map at the input** (``measure_gate``, ``MapReport``): ``round_trip_db`` = PSNR of
  G(G^-1(y)) to y (below ``MIN_ROUND_TRIP_DB`` the map cannot represent the input, and the run
  fails); ``hf_fraction`` / ``gain``: what a white-noise latent perturbation does to the image
  (share above half Nyquist; image rms per latent rms in model units). These describe the map;
  they do not guard: the ascent's own direction is not white noise (it is the prior's
  gradient), so only the guard above sees what the ascent does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

MIN_ROUND_TRIP_DB = 40.0
HF_CUTOFF = 0.25  # cycles per pixel (Nyquist = 0.5)
PROBE_SCALE = 0.05  # latent perturbation, model units ([-1, 1] images)


@dataclass
class MapReport:
    round_trip_db: float
    hf_fraction: float
    hf_white: float
    gain: float

    @property
    def represents(self) -> bool:
        """The map reproduces the input (G(G^-1(y)) within ``MIN_ROUND_TRIP_DB``)."""
        return self.round_trip_db >= MIN_ROUND_TRIP_DB

    def line(self) -> str:
        return (f"map: round trip {self.round_trip_db:.1f} dB (>= {MIN_ROUND_TRIP_DB:g}"
                f"{'' if self.represents else ': FAILS, the map cannot represent the input'}), "
                f"high-frequency share of a white latent perturbation {self.hf_fraction:.2f} (white noise "
                f"{self.hf_white:.2f}), gain {self.gain:.2f}")

    def as_dict(self) -> dict:
        return {**asdict(self), "represents": self.represents}


def high_frequency_fraction(x: torch.Tensor, cutoff: float = HF_CUTOFF) -> float:
    """Share of the energy of (N,C,H,W) (mean removed per channel) at radial frequency > cutoff."""
    x = x.double() - x.double().mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square()
    fy = torch.fft.fftfreq(x.shape[-2], dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64).view(1, -1)
    high = (fy.square() + fx.square()).sqrt() > cutoff
    total = float(power.sum())
    return float(power[..., high].sum()) / total if total > 0 else math.nan


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.double() - b.double()).square().mean())
    if not math.isfinite(mse):
        return math.nan  # a map that produced NaN/inf: fails every ">= threshold" test
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


@torch.no_grad()
def measure_gate(generate, z: torch.Tensor, y01: torch.Tensor, seed: int = 0, scale: float = PROBE_SCALE) -> MapReport:
    """Gate numbers for a map ``generate`` (latent -> image in [0,1]-ish) at latent ``z``, the
    inversion of ``y01`` (N,3,H,W in [0,1])."""
    base = generate(z)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = torch.randn(z.shape, generator=gen, dtype=torch.float32).to(z.device, z.dtype)
    delta = generate(z + scale * n) - base
    rms_in = float((scale * n).double().square().mean().sqrt())
    gain = float((2 * delta).double().square().mean().sqrt()) / rms_in
    return MapReport(round_trip_db=psnr_db(base.clamp(0, 1), y01), hf_fraction=high_frequency_fraction(delta),
                      hf_white=high_frequency_fraction(n), gain=gain)


T_START_CANDIDATES = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1)


@torch.no_grad()
def longest_chain(net, y01: torch.Tensor, steps: int, t_max: float = 1.0, method: str = "edict",
                  mix: float | None = None) -> tuple[float, list[tuple[float, MapReport]]]:
    """The largest t_start <= ``t_max`` (from ``T_START_CANDIDATES``, ``t_max`` first) whose
    round trip G(G^-1(y)) holds (>= MIN_ROUND_TRIP_DB): the longest chain the restorer
    supports on this image. ``mix`` None: ``quiet_mix`` for each chain.
    -> (t_start, [(t, gate report) for each t tried])."""
    from diffiqa.enhance.latent_map import DiffusionMap, quiet_mix

    candidates = [t_max] + [t for t in T_START_CANDIDATES if t < t_max]
    tried = []
    for t in candidates:
        g = DiffusionMap(net, y01, steps, method=method, t_start=t, mix=quiet_mix(steps, t) if mix is None else mix)
        rep = measure_gate(g.generate, g.invert(y01), y01)
        tried.append((t, rep))
        if rep.round_trip_db >= MIN_ROUND_TRIP_DB:
            return t, tried
    return candidates[-1], tried



# -- the guard along the ascent -------------------------------------------------------------
# A change the prior asks for is refused when it looks like an attack rather than a restoration
# of the photograph: white-ish speckle (most of its energy above ``STEP_HF_CUTOFF`` *and* it adds
# energy there; denoising takes such energy away, so it passes) or a local patch (most of its
# energy in a few patches). Thresholds from ideal restorations (clean - degraded) of the 24
# Kodak 128-px centre crops against speckle and a 16-px noise patch of the same size
# (benchmarks/RESULTS.md "Enhancement": the gate's numbers): share above 0.35 cycles/px
# <= 0.55 for blur / JPEG / noise / mixtures, >= 0.61 for speckle; top-5 % patch share
# <= 0.64 for restorations, 1.0 for the patch.
STEP_HF_CUTOFF = 0.35  # cycles per pixel: Gaussian blur of sigma 1.5 leaves ~nothing above it
MAX_STEP_HF = 0.58  # share of a change's energy above the cutoff (white noise: 1 - pi 0.35^2 = 0.62)
PATCH = 8  # px: the locality grid
TOP_FRACTION = 0.05  # the share of patches whose energy is summed
MAX_TOP_SHARE = 0.75  # share of a change's energy in its top 5 % of patches (even change: ~0.06)
NEGLIGIBLE_DB = 60.0  # a change this small (float rounding, the map's round trip) is no change


def high_frequency_energy(x: torch.Tensor, cutoff: float = STEP_HF_CUTOFF) -> torch.Tensor:
    """(N,C,H,W) -> (N,) sum of squares of the part of ``x`` above radial frequency ``cutoff``."""
    x = x.double()
    power = torch.fft.fft2(x).abs().square()
    fy = torch.fft.fftfreq(x.shape[-2], dtype=torch.float64, device=x.device).view(-1, 1)
    fx = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64, device=x.device).view(1, -1)
    high = (fy.square() + fx.square()).sqrt() > cutoff
    return (power * high).sum((1, 2, 3)) / (x.shape[-2] * x.shape[-1])  # Parseval


def top_patch_share(change: torch.Tensor, patch: int = PATCH, top: float = TOP_FRACTION) -> torch.Tensor:
    """(N,C,H,W) -> (N,) share of the change's energy in its ``top`` fraction of ``patch``-px
    patches (non-overlapping; an even change gives ~``top``, a single patch 1)."""
    energy = change.double().square().sum(1, keepdim=True)
    per_patch = torch.nn.functional.avg_pool2d(energy, patch, ceil_mode=True).flatten(1)
    k = max(1, math.ceil(top * per_patch.shape[1]))
    total = per_patch.sum(1)
    share = per_patch.topk(k, dim=1).values.sum(1) / total.clamp_min(1e-300)
    return torch.where(total > 0, share, torch.zeros_like(total))


@dataclass
class ChangeReport:
    """How a change ``after - before`` looks to the guard (batch worst case): ``hf_share``:
    its energy above ``STEP_HF_CUTOFF``; ``adds_hf``: whether ``after`` has more energy there
    than ``before``; ``top_share``: its energy in its top 5 % of 8-px patches; ``psnr_db``: its size."""

    hf_share: float
    adds_hf: bool
    top_share: float
    psnr_db: float

    @property
    def speckle(self) -> bool:
        return self.adds_hf and not self.hf_share <= MAX_STEP_HF

    @property
    def local(self) -> bool:
        return not self.top_share <= MAX_TOP_SHARE

    @property
    def passed(self) -> bool:
        return self.psnr_db >= NEGLIGIBLE_DB or not (self.speckle or self.local)

    def reason(self) -> str:
        why = []
        if self.speckle:
            why.append(f"speckle ({self.hf_share:.2f} of its energy above {STEP_HF_CUTOFF:g} cycles/px, "
                       f"added; > {MAX_STEP_HF:g})")
        if self.local:
            why.append(f"a local patch ({self.top_share:.2f} of its energy in {TOP_FRACTION:.0%} of the "
                       f"image; > {MAX_TOP_SHARE:g})")
        return " and ".join(why) or "restoration-like"

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@torch.no_grad()
def measure_change(before: torch.Tensor, after: torch.Tensor) -> ChangeReport:
    """The guard's numbers for the change ``before`` -> ``after`` ((N,3,H,W) in [0,1])."""
    d = (after - before).double()
    energy = d.square().sum((1, 2, 3))
    hf = high_frequency_energy(d) / energy.clamp_min(1e-300)
    added = high_frequency_energy(after) - high_frequency_energy(before)
    worst = int(torch.argmax(torch.where(added > 0, hf, torch.zeros_like(hf))))
    return ChangeReport(hf_share=float(hf[worst]), adds_hf=bool(added[worst] > 0),
                        top_share=float(top_patch_share(d).max()), psnr_db=psnr_db(after, before))
