"""The MAP loop: the objective rises, sigma/lam limits mean what the docs say, memory is flat in steps."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffiqa.enhance.ascent import EnhanceParams, enhance, psnr
from diffiqa.enhance.latent_map import DiffusionMap

torch.set_num_threads(1)


class TinyEps(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(7, hidden, 3, padding=1), nn.Tanh(), nn.Conv2d(hidden, hidden, 3, padding=1),
                                  nn.Tanh(), nn.Conv2d(hidden, 3, 3, padding=1))

    def forward(self, x, cond, gamma):
        g = gamma.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return 0.3 * self.body(torch.cat([x, cond, g], 1))


class Contrast(nn.Module):
    """A toy prior: higher standard deviation of the pixels = "better"."""

    lower_better = False
    name = "contrast"

    def forward(self, x):
        return x.std((1, 2, 3))


def _setup(seed=0):
    """A tiny net and a smooth 12x12 image (a photo-like change; the guard refuses white ones)."""
    torch.manual_seed(seed)
    coarse = torch.rand(1, 3, 3, 3) * 0.5 + 0.25
    return TinyEps().eval(), F.interpolate(coarse, size=(12, 12), mode="bilinear", align_corners=False)


def _params(**kw):
    base = dict(prior=("contrast",), weights=(1.0,), lam=1.0, sigma=0.05, step_db=30.0, min_psnr=0.0, iterations=12,
                steps=3, early_stop_patience=0, inversion="edict", t_start=0.5)
    base.update(kw)
    return EnhanceParams(**base)


def test_objective_improves_and_trajectory_is_recorded():
    net, y = _setup()
    res = enhance(y, net, Contrast(), _params(sigma=0.2), progress=False)
    traj = res.trajectory
    assert [r["iteration"] for r in traj] == list(range(13))
    assert set(traj[0]) == {"iteration", "Q", "fidelity", "objective", "psnr_to_input", "accepted", "refused", "radius"}
    accepted = [r for r in traj if r["accepted"]]
    assert len(accepted) > 1 and accepted[-1]["objective"] > traj[0]["objective"]
    # only rises are accepted: the accepted objectives are strictly increasing
    assert all(b["objective"] > a["objective"] for a, b in zip(accepted, accepted[1:]))
    assert accepted[-1]["Q"] > traj[0]["Q"]
    assert res.map_report is not None and res.map_report.round_trip_db > 40
    assert res.passed and res.change.passed and "enhanced" in res.verdict()
    assert res.image.shape == y.shape and 0 <= res.image.min() and res.image.max() <= 1
    assert all(p.grad is None for p in net.parameters())  # weights frozen


def test_fidelity_dominating_keeps_the_output_at_the_input_and_weak_fidelity_lets_it_move():
    net, y = _setup()
    strong = enhance(y, net, Contrast(), _params(sigma=0.002), progress=False)  # small sigma: fidelity wins
    no_prior = enhance(y, net, Contrast(), _params(lam=0.0, sigma=0.05), progress=False)  # lam -> 0
    weak = enhance(y, net, Contrast(), _params(sigma=5.0), progress=False)  # large sigma: prior wins
    p_strong, p_none, p_weak = (float(psnr(r.image, y)) for r in (strong, no_prior, weak))
    round_trip = min(strong.round_trip_psnr, 100.0)  # psnr() caps at 120 dB
    assert p_strong >= round_trip - 0.5 and p_none >= round_trip - 0.5
    assert p_weak < p_strong - 3, (p_weak, p_strong)
    assert float(weak.image.std()) > float(y.std())  # the prior (contrast) got its way


def test_early_stop_cuts_the_loop_after_rejections():
    net, y = _setup()
    # lam 0: only fidelity counts, and the start (the round trip of y) is its maximum, so every step is rejected
    res = enhance(y, net, Contrast(), _params(lam=0.0, early_stop_patience=2, iterations=20), progress=False)
    assert len(res.trajectory) == 3 and not any(r["accepted"] for r in res.trajectory[1:])
    assert res.trajectory[2]["radius"] == pytest.approx(res.trajectory[1]["radius"] / 2)


def test_first_step_is_sized_in_image_units_and_the_fidelity_floor_holds():
    net, y = _setup()
    res = enhance(y, net, Contrast(), _params(sigma=5.0, step_db=40.0, iterations=1), progress=False)
    first = res.trajectory[1]
    # the first step changes the image by ~ -40 dB rms (the gain is estimated from the gate's probe)
    assert 30 < first["psnr_to_input"] < 55, first
    floor = enhance(y, net, Contrast(), _params(sigma=5.0, min_psnr=35.0, iterations=12), progress=False)
    assert all(r["psnr_to_input"] >= 35.0 for r in floor.trajectory if r["accepted"])
    assert float(psnr(floor.image, y)) >= 35.0


def test_budgets_keep_the_best_iterate_within_each_floor():
    net, y = _setup()
    res = enhance(y, net, Contrast(), _params(sigma=5.0, iterations=12), budgets=(40.0, 25.0), progress=False)
    assert set(res.within) <= {40.0, 25.0} and 40.0 in res.within
    for b, img in res.within.items():
        assert float(psnr(img, y)) >= b


@pytest.mark.parametrize("field,value", [("sigma", math.nan), ("sigma", 0.0), ("lam", math.inf), ("max_side", -1),
                                         ("t_start", 1.5), ("min_psnr", math.nan)])
def test_bad_params_are_refused(field, value):
    from diffiqa.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        _params(**{field: value})


def _saved_bytes(steps: int, use_checkpoint: bool) -> int:
    """Bytes of tensors autograd holds for the backward pass of one objective evaluation."""
    net, y = _setup()
    net.requires_grad_(False)
    y = torch.rand(1, 3, 32, 32)
    g = DiffusionMap(net, y, steps, method="ddim", t_start=0.5, use_checkpoint=use_checkpoint)
    z = g.invert(y).requires_grad_(True)
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = (g.generate(z) - y).square().mean()
    loss.backward()
    assert z.grad.abs().sum() > 0
    return total


def test_checkpointing_keeps_memory_flat_in_the_number_of_steps():
    plain2, plain8 = _saved_bytes(2, False), _saved_bytes(8, False)
    ckpt2, ckpt8 = _saved_bytes(2, True), _saved_bytes(8, True)
    print(f"saved-for-backward bytes: no checkpoint 2 steps {plain2}, 8 steps {plain8}; "
          f"checkpointed 2 steps {ckpt2}, 8 steps {ckpt8}")
    assert plain8 > 3 * plain2  # the measure sees growth when there is growth
    assert ckpt8 <= 1.5 * max(ckpt2, 1) + 8 * 3 * 32 * 32 * 4  # at most one latent per step more
    assert ckpt8 < plain8 / 4
