"""The generativity gate: an identity map fails it, a smoothing map passes, the real map's numbers are finite."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from diffiqa.enhance.gate import MIN_ROUND_TRIP_DB, high_frequency_fraction, measure_gate

torch.set_num_threads(1)


def _photo(size=64):
    img = data.astronaut()[100:100 + size, 180:180 + size].astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]


def test_white_noise_has_the_expected_high_frequency_share():
    n = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # radial frequency > 0.25 of the [-0.5, 0.5]^2 square: 1 - pi/16 of the area
    assert high_frequency_fraction(n) == pytest.approx(1 - math.pi / 16, abs=0.02)
    smooth = F.avg_pool2d(F.pad(n, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    assert high_frequency_fraction(smooth) < 0.25  # a box filter leaks a little through its side lobes


def test_an_identity_map_is_pixel_space_and_fails_the_gate():
    y = _photo()
    report = measure_gate(lambda z: (z + 1) / 2, 2 * y - 1, y)
    assert report.round_trip_db >= MIN_ROUND_TRIP_DB  # exact round trip...
    assert report.hf_fraction == pytest.approx(report.hf_white, abs=1e-6)  # ...but noise in = noise out
    assert report.gain == pytest.approx(1.0, abs=1e-4)
    assert not report.passed and "pixel-space attack" in report.line()


def test_a_smoothing_map_passes_the_gate():
    y = _photo()
    z0 = torch.zeros_like(y)

    def generate(z):  # y plus a blurred version of the latent's displacement
        d = F.avg_pool2d(F.pad(z - z0, (3, 3, 3, 3), mode="replicate"), 7, stride=1)
        return y + d / 2

    report = measure_gate(generate, z0, y)
    assert report.passed, report.line()
    assert report.hf_fraction < 0.25 and 0 < report.gain < 1


def test_gate_numbers_on_the_packaged_restorer_map():
    from diffiqa.api import DEFAULT_RESTORER
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.enhance.invertible import DiffusionMap

    if not DEFAULT_RESTORER.is_file():
        pytest.skip("no packaged restorer")
    net = load_restorer(DEFAULT_RESTORER)[0].eval().requires_grad_(False)
    y = _photo(32)
    g = DiffusionMap(net, y, steps=2, method="edict", t_start=0.3)
    report = measure_gate(g.generate, g.invert(y), y)
    print(report.line())
    assert report.round_trip_db >= MIN_ROUND_TRIP_DB  # EDICT inverts exactly (float rounding only)
    assert 0 <= report.hf_fraction <= 1 and 0.7 < report.hf_white < 0.9
    assert math.isfinite(report.gain) and report.gain > 0
    assert report.as_dict()["passed"] == report.passed


def test_longest_chain_starts_from_the_restorers_own_and_stops_at_the_first_that_inverts():
    from diffiqa.enhance.gate import longest_chain

    class Zero(torch.nn.Module):  # eps = 0: every chain inverts exactly
        def forward(self, x, cond, gamma):
            return torch.zeros_like(x)

    y = _photo(16)
    t, tried = longest_chain(Zero(), y, steps=2, t_max=0.5)
    assert t == 0.5 and [tt for tt, _ in tried] == [0.5]

    class Explodes(torch.nn.Module):  # NaN above t 0.25 (gamma^2 = alpha_bar < ~0.85): only short chains invert
        def forward(self, x, cond, gamma):
            bad = (gamma.view(-1, 1, 1, 1) ** 2 < 0.85).expand_as(x)
            return torch.where(bad, torch.full_like(x, float("nan")), torch.zeros_like(x))

    t, tried = longest_chain(Explodes(), y, steps=2, t_max=1.0)
    assert [tt for tt, _ in tried][:2] == [1.0, 0.7] and t < 0.5
    assert tried[-1][1].round_trip_db >= MIN_ROUND_TRIP_DB


def test_gate_numbers_on_the_packaged_enhance_map():
    """The default map (the unconditional denoiser, its own chain, the quiet EDICT mix) is
    generative on a real photo; with the paper's p 0.93 the chain's pass-through makes it fail."""
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.enhance.chain import chain_settings
    from diffiqa.enhance.images import PACKAGED_MAP
    from diffiqa.enhance.invertible import DiffusionMap, quiet_mix

    net, cfg, extra = load_restorer(PACKAGED_MAP)
    net = net.eval().requires_grad_(False)
    assert net.conditional is False
    t, n = chain_settings(cfg, extra)
    y = _photo(64)
    reports = {}
    for p in (quiet_mix(n, t), 0.93):
        g = DiffusionMap(net, y, steps=n, method="edict", t_start=t, mix=p)
        reports[p] = measure_gate(g.generate, g.invert(y), y)
        print(f"p {p}: {reports[p].line()}")
    quiet, paper = reports[quiet_mix(n, t)], reports[0.93]
    assert quiet.passed and quiet.round_trip_db >= MIN_ROUND_TRIP_DB and 0.05 < quiet.gain < 2
    assert not paper.passed and paper.hf_fraction > quiet.hf_fraction + 0.2
