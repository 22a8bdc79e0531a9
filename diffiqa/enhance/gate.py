"""The generativity gate: is the latent map G a generative map, or pixel space in disguise?

If white noise put into the latent comes out of G as white noise, any ascent on z is an
attack on the prior in pixel space (issue 13, item 4). Three numbers, per image:

- ``round_trip_db``: PSNR of G(G^-1(y)) to y. The enhancement starts there; below 40 dB the
  output has lost detail before the prior acts.
- ``hf_fraction``: of a small white-noise latent perturbation's effect on the image,
  delta = G(z + eps n) - G(z), the share of energy above half the Nyquist frequency (radial,
  > 0.25 cycles/pixel). White noise itself has ``hf_white`` (~0.80) there; a map that turns
  latent noise into image structure pushes it down; an identity-like map keeps it.
- ``gain``: rms(2 delta) / rms(eps n), the map's amplification in model units (identity = 1).

Pass = round trip >= ``MIN_ROUND_TRIP_DB`` and hf_fraction <= ``MAX_HF_SHARE`` * hf_white.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

MIN_ROUND_TRIP_DB = 40.0
MAX_HF_SHARE = 0.5  # at most half of white noise's high-frequency share
HF_CUTOFF = 0.25  # cycles per pixel (Nyquist = 0.5)
PROBE_SCALE = 0.05  # latent perturbation, model units ([-1, 1] images)


@dataclass
class GateReport:
    round_trip_db: float
    hf_fraction: float
    hf_white: float
    gain: float

    @property
    def passed(self) -> bool:
        return self.round_trip_db >= MIN_ROUND_TRIP_DB and self.hf_fraction <= MAX_HF_SHARE * self.hf_white

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL: ascent here is a pixel-space attack on the prior, not enhancement"
        return (f"generativity gate: round trip {self.round_trip_db:.1f} dB (>= {MIN_ROUND_TRIP_DB:g}), "
                f"high-frequency share of a latent perturbation {self.hf_fraction:.2f} (white noise "
                f"{self.hf_white:.2f}; <= {MAX_HF_SHARE * self.hf_white:.2f}), gain {self.gain:.2f} -> {verdict}")

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


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
def measure_gate(generate, z: torch.Tensor, y01: torch.Tensor, seed: int = 0, scale: float = PROBE_SCALE) -> GateReport:
    """Gate numbers for a map ``generate`` (latent -> image in [0,1]-ish) at latent ``z``, the
    inversion of ``y01`` (N,3,H,W in [0,1])."""
    base = generate(z)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = torch.randn(z.shape, generator=gen, dtype=torch.float32).to(z.device, z.dtype)
    delta = generate(z + scale * n) - base
    rms_in = float((scale * n).double().square().mean().sqrt())
    gain = float((2 * delta).double().square().mean().sqrt()) / rms_in
    return GateReport(round_trip_db=psnr_db(base.clamp(0, 1), y01), hf_fraction=high_frequency_fraction(delta),
                      hf_white=high_frequency_fraction(n), gain=gain)


T_START_CANDIDATES = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1)


@torch.no_grad()
def longest_chain(net, y01: torch.Tensor, steps: int, t_max: float = 1.0, method: str = "edict",
                  mix: float | None = None) -> tuple[float, list[tuple[float, GateReport]]]:
    """The largest t_start <= ``t_max`` (from ``T_START_CANDIDATES``, ``t_max`` first) whose
    round trip G(G^-1(y)) holds (>= MIN_ROUND_TRIP_DB): the longest chain the restorer
    supports on this image. ``mix`` None: ``quiet_mix`` for each chain.
    -> (t_start, [(t, gate report) for each t tried])."""
    from diffiqa.enhance.invertible import DiffusionMap, quiet_mix

    candidates = [t_max] + [t for t in T_START_CANDIDATES if t < t_max]
    tried = []
    for t in candidates:
        g = DiffusionMap(net, y01, steps, method=method, t_start=t, mix=quiet_mix(steps, t) if mix is None else mix)
        rep = measure_gate(g.generate, g.invert(y01), y01)
        tried.append((t, rep))
        if rep.round_trip_db >= MIN_ROUND_TRIP_DB:
            return t, tried
    return candidates[-1], tried
