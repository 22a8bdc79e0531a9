"""Matched budgets: each prior's strength is bisected so its output ends at the same PSNR from the input."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffiqa.enhance.ascent import EnhanceParams, enhance, psnr
from diffiqa.enhance.budget import match_budgets

torch.set_num_threads(1)


class Contrast(torch.nn.Module):
    name = "contrast"

    def forward(self, x):
        return 100 * x.std((1, 2, 3))


class Saturation(torch.nn.Module):  # a second prior that wants a different change
    name = "saturation"

    def forward(self, x):
        return 100 * (x - x.mean(1, keepdim=True)).abs().mean((1, 2, 3))


def _image():
    torch.manual_seed(0)
    coarse = torch.rand(1, 3, 3, 3) * 0.4 + 0.3
    return F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("prior", [Contrast(), Saturation()])
def test_every_prior_ends_at_the_same_distance_from_the_input(prior):
    y = _image()
    calls = []

    def run(lam):
        params = EnhanceParams(prior=(prior.name,), lam=lam, sigma=0.01, min_psnr=34.5, step_db=45.0,
                               iterations=25, early_stop_patience=4, map="pixel")
        res = enhance(y, None, prior, params, progress=False)
        calls.append(lam)
        return float(psnr(res.image, y)), res

    got = match_budgets(run, (40.0, 35.0), tol_db=0.5, lam_start=0.01, max_runs=12)
    for target in (40.0, 35.0):
        m = got[target]
        assert m.matched, (target, m.run.psnr_db, calls)
        assert abs(float(psnr(m.run.result.image, y)) - target) <= 0.5
    assert got[35.0].run.lam > got[40.0].run.lam  # a larger change needs a stronger prior
    assert len(calls) == len(set(calls))  # no strength is run twice


def test_an_unreachable_budget_is_flagged_not_faked():
    def run(lam):  # a prior that can move the image at most to 45 dB
        return 45.0 + 10.0 / (1.0 + lam), None

    got = match_budgets(run, (35.0,), tol_db=0.5, max_runs=5)
    assert not got[35.0].matched and got[35.0].runs_used == 5
    assert math.isclose(got[35.0].run.psnr_db, min(45.0 + 10.0 / (1.0 + r) for r in (1, 10, 100, 1e3, 1e4)))


def test_a_stuck_prior_is_not_run_at_ever_larger_strengths():
    calls = []

    def run(lam):  # the gate refused the prior's first direction: no lam moves the image
        calls.append(lam)
        return 120.0, "stuck"

    got = match_budgets(run, (40.0, 35.0), max_runs=6, stuck=lambda r: r == "stuck")
    assert calls == [1.0] and not got[40.0].matched and not got[35.0].matched


def test_a_saturated_prior_stops_the_search():
    calls = []

    def run(lam):  # beyond lam 10 the ascent ends at 41.6 dB whatever lam is (e.g. out of iterations)
        calls.append(lam)
        return (45.0 if lam < 10 else 41.6), None

    got = match_budgets(run, (35.0,), max_runs=8)
    assert calls == [1.0, 10.0, 100.0] and not got[35.0].matched and got[35.0].run.psnr_db == 41.6
