"""The gate. The guard along the ascent: an attack-like change (speckle, a local patch) is
refused, a restoration-like one (deblurring, denoising) accepted, in the ascent too; a run that
fails is not written as enhanced. The map's report: round trip and what a white latent
perturbation does (descriptive numbers)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from diffiqa.enhance.gate import MIN_ROUND_TRIP_DB, high_frequency_fraction, measure_change, measure_gate

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


def test_an_identity_map_passes_white_noise_through():
    y = _photo()
    report = measure_gate(lambda z: (z + 1) / 2, 2 * y - 1, y)
    assert report.round_trip_db >= MIN_ROUND_TRIP_DB  # exact round trip...
    assert report.hf_fraction == pytest.approx(report.hf_white, abs=1e-6)  # ...but noise in = noise out
    assert report.gain == pytest.approx(1.0, abs=1e-4)
    assert report.represents and "FAILS" not in report.line()


def test_a_smoothing_map_turns_white_latent_noise_into_smooth_changes():
    y = _photo()
    z0 = torch.zeros_like(y)

    def generate(z):  # y plus a blurred version of the latent's displacement
        d = F.avg_pool2d(F.pad(z - z0, (3, 3, 3, 3), mode="replicate"), 7, stride=1)
        return y + d / 2

    report = measure_gate(generate, z0, y)
    assert report.represents, report.line()
    assert report.hf_fraction < 0.25 and 0 < report.gain < 1


def test_gate_numbers_on_the_packaged_restorer_map():
    from diffiqa.packaged import DEFAULT_RESTORER
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.enhance.latent_map import DiffusionMap

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
    assert report.as_dict()["represents"] == report.represents


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
    """The default map (the unconditional denoiser, its own chain, the quiet EDICT mix) turns a
    white latent perturbation into image structure; at the paper's p 0.93 it passes it through."""
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.enhance.chain import chain_settings
    from diffiqa.packaged import PRIOR_DENOISER
    from diffiqa.enhance.latent_map import DiffusionMap, quiet_mix

    net, cfg, extra = load_restorer(PRIOR_DENOISER)
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
    assert quiet.represents and quiet.round_trip_db >= MIN_ROUND_TRIP_DB and 0.05 < quiet.gain < 2
    assert quiet.hf_fraction < 0.5 * quiet.hf_white  # latent noise comes out as image structure
    assert paper.hf_fraction > quiet.hf_fraction + 0.2  # at p 0.93 the chain passes it through, white


# -- the guard along the ascent ---------------------------------------------------------------

def _blurred_and_clean(size=64):
    from scipy.ndimage import gaussian_filter

    clean = _photo(size)
    blurred = torch.from_numpy(gaussian_filter(clean[0].numpy(), sigma=(0, 1.5, 1.5))).unsqueeze(0)
    return blurred, clean


def test_attack_like_steps_are_refused():
    y, _ = _blurred_and_clean()
    gen = torch.Generator().manual_seed(0)
    speckle = measure_change(y, y + 0.01 * torch.randn(y.shape, generator=gen))
    assert not speckle.passed and speckle.speckle and "speckle" in speckle.reason()
    patch = torch.zeros_like(y)
    patch[..., 20:32, 30:42] = 0.03 * torch.randn(1, 3, 12, 12, generator=gen)
    local = measure_change(y, y + patch)
    assert not local.passed and local.local and local.top_share > 0.85 and "local patch" in local.reason()
    smooth_blob = F.avg_pool2d(F.pad(patch.abs(), (3, 3, 3, 3)), 7, stride=1)  # smooth, but in one place
    assert measure_change(y, y + smooth_blob).local


def test_restoration_like_steps_are_accepted():
    y, clean = _blurred_and_clean()
    for frac in (1.0, 0.3, 0.05):  # the whole deblurring, and small steps along it
        step = measure_change(y, y + frac * (clean - y))
        assert step.passed, (frac, step)
    gen = torch.Generator().manual_seed(1)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    denoise = measure_change(noisy, noisy + 0.5 * (clean - noisy))  # white, but it *removes* high frequencies
    assert denoise.hf_share > 0.5 and not denoise.adds_hf and denoise.passed


class _LocalBump(torch.nn.Module):
    """An attack-prone prior: it rewards brightness in one 8x8 corner only."""

    name = "bump"

    def forward(self, x):
        return 100 * x[..., :8, :8].mean((1, 2, 3))


def test_the_ascent_refuses_an_attack_and_keeps_the_image_clean_of_it():
    from diffiqa.enhance.ascent import EnhanceParams, enhance, psnr

    y, _ = _blurred_and_clean(32)
    params = EnhanceParams(prior=("bump",), sigma=1.0, min_psnr=0.0, step_db=40.0, iterations=4,
                           early_stop_patience=0, map="pixel")
    res = enhance(y, None, _LocalBump(), params, progress=False)
    assert all(r["refused"] for r in res.trajectory[1:])  # every step raised Q and was refused
    assert float(psnr(res.image, y)) > 100 and res.passed  # nothing attack-like was applied
    ungated = measure_change(y, (y + 0.05 * torch.nn.functional.pad(torch.ones(1, 3, 8, 8), (0, 24, 0, 24))))
    assert not ungated.passed  # what the prior asked for, applied, would have failed


def test_a_run_whose_map_cannot_represent_the_input_is_not_enhanced_and_not_written_as_such(tmp_path):
    from diffiqa.enhance.ascent import EnhanceParams, enhance
    from diffiqa.enhance.files import _write_run

    class Explodes(torch.nn.Module):
        conditional = False

        def forward(self, x, cond, gamma):
            return torch.full_like(x, float("nan"))

    y = _photo(16)
    params = EnhanceParams(prior=("bump",), iterations=2, steps=2, t_start=0.5, edict_mix=0.8)
    res = enhance(y, Explodes(), _LocalBump(), params, progress=False)
    assert not res.passed and "NOT enhanced" in res.verdict() and torch.equal(res.image, y)
    written = _write_run(tmp_path, "img", res, "bump")
    assert written.name == "img_kept.png" and not (tmp_path / "img_enhanced.png").exists()
