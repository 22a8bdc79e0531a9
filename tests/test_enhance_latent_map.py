"""The invertible diffusion map: EDICT is exact, DDIM is approximate (its PSNR is reported)."""

import logging

import torch
from torch import nn

from diffiqa.enhance.latent_map import DiffusionMap

log = logging.getLogger(__name__)
torch.set_num_threads(1)


class TinyEps(nn.Module):
    """A stand-in noise predictor with the restorer's signature: (x_t, cond, gamma) -> eps."""

    def __init__(self, hidden=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(7, hidden, 3, padding=1), nn.Tanh(), nn.Conv2d(hidden, 3, 3, padding=1))

    def forward(self, x, cond, gamma):
        g = gamma.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return 0.3 * self.body(torch.cat([x, cond, g], 1))


def _psnr(a, b):
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_edict_round_trip_is_exact_in_float64():
    torch.manual_seed(0)
    net = TinyEps().double().eval()
    y = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    g = DiffusionMap(net, y, steps=4, method="edict", t_start=0.8)
    z = g.invert(y)
    assert z.shape == (2, 3, 16, 16) and g.tie.shape == z.shape  # the tied pair: one latent + a fixed offset
    assert not torch.allclose(z, 2 * y - 1)  # the latent really moved away from the image
    back = g.generate(z)
    assert (back - y).abs().max() < 1e-4


def test_ddim_round_trip_psnr_is_reported_and_finite():
    torch.manual_seed(0)
    net = TinyEps().eval()
    y = torch.rand(1, 3, 16, 16)
    for method in ("ddim", "edict"):
        g = DiffusionMap(net, y, steps=4, method=method, t_start=0.8)
        with torch.no_grad():
            psnr = _psnr(g.generate(g.invert(y)), y)
        print(f"{method} round-trip PSNR (float32, 4 steps, t_start 0.8): {psnr:.1f} dB")
        log.info("%s round-trip PSNR %.1f dB", method, psnr)
        assert psnr > 10  # a sanity floor, not an exactness claim


def test_generate_is_differentiable_in_z_and_leaves_weights_alone():
    net = TinyEps().eval()
    net.requires_grad_(False)
    y = torch.rand(1, 3, 8, 8)
    for method in ("ddim", "edict"):
        g = DiffusionMap(net, y, steps=3, method=method)
        z = g.invert(y).requires_grad_(True)
        g.generate(z).square().sum().backward()
        assert z.grad is not None and z.grad.abs().sum() > 0
        assert all(p.grad is None for p in net.parameters())


def test_edict_tied_pair_moves_both_sequences_together():
    """Perturbing the tied latent changes the output smoothly: a small latent change gives a
    small image change (the untied pair let EDICT's mixing amplify a difference)."""
    torch.manual_seed(0)
    net = TinyEps().double().eval()
    y = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    g = DiffusionMap(net, y, steps=4, method="edict", t_start=0.5)
    z = g.invert(y)
    with torch.no_grad():
        d = 1e-3 * torch.randn_like(z)
        change = (g.generate(z + d) - g.generate(z)).square().mean().sqrt() / d.square().mean().sqrt()
    assert 0 < float(change) < 5


def test_generate_needs_invert_first_for_edict():
    import pytest

    from diffiqa.errors import ConfigError

    g = DiffusionMap(TinyEps().eval(), torch.rand(1, 3, 8, 8), steps=2, method="edict")
    with pytest.raises(ConfigError, match="invert"):
        g.generate(torch.zeros(1, 3, 8, 8))
