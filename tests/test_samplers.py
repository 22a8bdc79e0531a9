import pytest
import torch

from diffiqa.diffusion.samplers import (
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddpm_sample,
    keep_positions,
    run_and_keep,
    to_image_space,
    to_model_space,
)
from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(8,),
                     attn_reference_size=16, dropout=0.0, norm="group")
    return ConditionalUNet(cfg).eval()


class GaussianDenoiser:
    """The optimal eps-predictor when each pixel's clean value ~ N(mu, s^2): a smooth 'net'
    whose probability-flow ODE DDIM integrates, so inversion errors are the sampler's own."""

    def __init__(self, mu, s):
        self.mu, self.s = mu, s

    def __call__(self, x, cond, gamma):
        ab = (gamma**2).view(-1, 1, 1, 1)
        x0 = self.mu + ab.sqrt() * self.s**2 / (ab * self.s**2 + 1 - ab) * (x - ab.sqrt() * self.mu)
        return (x - ab.sqrt() * x0) / (1 - ab).clamp_min(1e-6).sqrt()


def _sampler(kind, net, cond, n, gen):
    if kind == "ddpm":
        return ddpm_sample(net, cond, num_steps=n, generator=gen)
    if kind == "ddim":
        return ddim_sample(net, cond, num_steps=n, generator=gen)
    return ddim_sample(net, cond, num_steps=n, eta=0.5, generator=gen)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "ddim_eta"])
def test_sampler_contract(kind, tiny_net):
    n = 10
    cond = to_model_space(torch.rand(2, 3, 16, 16))
    states = list(_sampler(kind, tiny_net, cond, n, torch.Generator().manual_seed(1)))
    assert len(states) == n
    assert [s.index for s in states] == list(range(n))
    assert all(states[i].t > states[i + 1].t for i in range(n - 1)) and states[-1].t == 0.0
    assert all(s.x.shape == cond.shape and s.x0_pred.shape == cond.shape for s in states)
    final = states[-1].x
    assert final.min() >= -1 and final.max() <= 1
    assert torch.is_grad_enabled()  # no_grad inside the generator must not leak out

    again = list(_sampler(kind, tiny_net, cond, n, torch.Generator().manual_seed(1)))
    assert all(torch.equal(a.x, b.x) for a, b in zip(states, again))
    other = list(_sampler(kind, tiny_net, cond, n, torch.Generator().manual_seed(2)))
    assert not torch.equal(other[-1].x, final)

    kept_final, kept = run_and_keep(iter(again), keep_steps=(5, 10), num_steps=n)
    assert torch.equal(kept_final, final)
    # 10-step chain: 5 and 10 steps before the end of 50 are t=0.1, 0.2 -> 1 and 2 before the end
    assert torch.equal(kept[5], states[n - 2].x) and torch.equal(kept[10], states[n - 3].x)
    assert states[n - 2].t == pytest.approx(5 / 50) and states[n - 3].t == pytest.approx(10 / 50)


def test_keep_positions_match_noise_levels_across_step_counts():
    assert keep_positions((5, 10), 50) == {5: 44, 10: 39}
    for n in (5, 10, 20, 50):
        pos = keep_positions((5, 10), n)
        for k, i in pos.items():
            t_kept = (n - 1 - i) / n
            assert t_kept > 0  # never the final image
            assert abs(t_kept - k / 50) <= 0.5 / n + 1e-9 or t_kept == 1 / n
    with pytest.raises(ValueError, match="yielded"):
        run_and_keep(ddim_sample(lambda x, c, g: torch.zeros_like(x), torch.zeros(1, 3, 4, 4), 3), (5,), 4)


def test_ddim_step_keeps_autograd(tiny_net):
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    x_next, _ = ddim_step(tiny_net, torch.zeros(1, 3, 16, 16), x, 0.5, 0.4)
    x_next.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("refine_iters, tol", [(0, 0.2), (10, 0.005)])
def test_ddim_inversion_round_trip(refine_iters, tol):
    torch.manual_seed(0)
    cond = torch.rand(2, 3, 8, 8) * 1.2 - 0.6
    net = GaussianDenoiser(cond, 0.3)
    x0 = cond + 0.3 * torch.randn_like(cond)
    n = 10
    inverted = list(ddim_invert(net, cond, x0, n, refine_iters=refine_iters))
    assert len(inverted) == n and inverted[-1].t == 1.0
    x_T = inverted[-1].x
    assert 0.5 < x_T.std() < 1.5  # looks like noise, not like the image
    *_, back = ddim_sample(net, cond, n, x_T=x_T, clip_x0=False)
    err = (back.x - x0).abs().mean().item()
    assert err < tol, f"round-trip mean abs error {err:.4f} (refine_iters={refine_iters})"


def test_space_conversions_round_trip():
    img = torch.rand(1, 3, 4, 4)
    assert torch.allclose(to_image_space(to_model_space(img)), img)
    assert to_image_space(torch.full((1, 3, 2, 2), 3.0)).max() == 1


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_truncated_chain_starts_from_noised_condition(kind, tiny_net):
    """t_start < 1: the grid is scaled, the start is the condition noised to t_start, and
    keep_steps still pick the states nearest the 50-step chain's noise levels."""
    from diffiqa.diffusion.samplers import ddim_sample, ddpm_sample, keep_positions, run_and_keep, start_state
    from diffiqa.diffusion.schedule import cosine_alpha_bar

    cond = torch.rand(2, 3, 16, 16) * 2 - 1
    sample = ddpm_sample if kind == "ddpm" else ddim_sample
    states = list(sample(tiny_net, cond, 10, generator=torch.Generator().manual_seed(0), t_start=0.5))
    assert len(states) == 10
    assert states[0].t == pytest.approx(0.45) and states[-1].t == 0.0
    # the start state correlates with the condition (pure noise would not)
    noise = torch.randn(cond.shape, generator=torch.Generator().manual_seed(1))
    x_start = start_state(cond, noise, 0.5)
    ab = float(cosine_alpha_bar(0.5))
    torch.testing.assert_close(x_start, ab**0.5 * cond + (1 - ab) ** 0.5 * noise)
    assert torch.equal(start_state(cond, noise, 1.0), noise)
    # 5 and 10 of 50 steps are t = 0.1, 0.2: on a 10-step chain from 0.5 that is 2 and 4 steps before the end
    assert keep_positions((5, 10), 10, t_start=0.5) == {5: 7, 10: 5}
    final, kept = run_and_keep(iter(states), (5, 10), 10, t_start=0.5)
    assert torch.equal(kept[5], states[7].x) and torch.equal(final, states[-1].x)


class AsX0:
    """The Gaussian denoiser re-expressed as an x0- or residual-network."""

    def __init__(self, eps_net, kind):
        self.eps_net, self.prediction = eps_net, kind

    def __call__(self, x, cond, gamma):
        ab = (gamma**2).view(-1, 1, 1, 1)
        x0 = (x - (1 - ab).sqrt() * self.eps_net(x, cond, gamma)) / ab.sqrt()
        return x0 if self.prediction == "x0" else x0 - cond


@pytest.mark.parametrize("kind", ["x0", "residual"])
def test_parameterisations_give_the_same_chain(kind):
    from diffiqa.diffusion.samplers import EpsNet, predict

    eps_net = GaussianDenoiser(0.1, 0.5)
    other = AsX0(eps_net, kind)
    cond = torch.rand(2, 3, 8, 8) * 2 - 1
    x = torch.randn(2, 3, 8, 8)
    for t in (0.05, 0.3, torch.tensor([0.2, 0.9])):
        e1, x1, _ = predict(eps_net, cond, x, t)
        e2, x2, _ = predict(other, cond, x, t)
        assert torch.allclose(x1, x2, atol=1e-4) and torch.allclose(e1, e2, atol=1e-3)
    gamma = torch.tensor([0.9, 0.5])
    assert torch.allclose(EpsNet(other)(x, cond, gamma), eps_net(x, cond, gamma), atol=1e-3)
    a = list(ddim_sample(eps_net, cond, 4, x_T=x, t_start=0.5))[-1].x
    b = list(ddim_sample(other, cond, 4, x_T=x, t_start=0.5))[-1].x
    assert torch.allclose(a, b, atol=1e-3)


def test_time_grid_and_sample_chain_draw_order():
    from diffiqa.diffusion.samplers import noise_to, reference_time, sample_chain, time_grid

    assert time_grid(4, 0.2) == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])
    assert reference_time(5) == pytest.approx(0.1) and reference_time(10) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        reference_time(50)
    net = GaussianDenoiser(0.0, 0.5)
    cond = torch.zeros(1, 3, 4, 4)
    calls = []

    def draw():
        calls.append(1)
        return torch.randn(1, 3, 4, 4)

    list(sample_chain(net, cond, 3, "ddpm", 0.5, draw=draw))
    assert len(calls) == 4  # start + one per step
    calls.clear()
    list(sample_chain(net, cond, 3, "ddim", 0.5, draw=draw))
    assert len(calls) == 1  # deterministic DDIM: the start only
    x0 = torch.ones(2, 3, 4, 4)
    assert torch.allclose(noise_to(x0, 0.0, torch.randn(2, 3, 4, 4)), x0)


def test_stem_net_keeps_shape_and_predicts_residual():
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(), attn_reference_size=16,
                     dropout=0.0, norm="group", stem=2, prediction="residual")
    net = ConditionalUNet(cfg).eval()
    assert net.multiple == 4 and net.prediction == "residual"
    x = torch.zeros(1, 3, 13, 22)
    assert net(x, x, torch.tensor([0.5])).shape == x.shape
    with pytest.raises(Exception, match="prediction"):
        UNetConfig(prediction="v2")
