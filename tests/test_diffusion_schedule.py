import torch

from diffiqa.diffusion.schedule import ALPHA_BAR_MIN, add_noise, cosine_alpha_bar, noise_level, sampling_timesteps


def test_alpha_bar_decreasing_in_range_with_endpoints():
    t = torch.linspace(0, 1, 1001)
    ab = cosine_alpha_bar(t)
    assert torch.all(ab[1:] <= ab[:-1])
    above_floor = ab[1:] > ALPHA_BAR_MIN
    assert torch.all((ab[1:] < ab[:-1])[above_floor])  # strictly decreasing until the floor
    assert above_floor.float().mean() > 0.99
    assert ab[0] == 1.0
    assert torch.all((ab[1:] >= ALPHA_BAR_MIN) & (ab[1:] < 1))
    assert ab[-1] == torch.tensor(ALPHA_BAR_MIN)
    assert torch.allclose(noise_level(t), ab.sqrt())


def test_sampling_timesteps_descending_grid():
    for n in (1, 5, 50):
        ts = sampling_timesteps(n)
        assert ts.shape == (n,)
        assert ts[0] == 1.0 and ts[-1] > 0
        assert torch.all(ts[1:] < ts[:-1])
        assert torch.allclose(ts[-1], torch.tensor(1.0 / n))


def test_add_noise_endpoints():
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    assert torch.allclose(add_noise(x0, noise, torch.zeros(2)), x0)
    xt = add_noise(x0, noise, torch.ones(2))
    assert torch.allclose(xt, noise, atol=1e-2)
