"""One restore chain: every caller runs ``diffusion.samplers.run_chain`` and gets the same image
for the same network, chain and noise."""

import numpy as np
import pytest
import torch

from diffiqa.diffusion.chain import LEGACY_CHAIN, Chain, chain_from_record
from diffiqa.diffusion.samplers import noisy_states, run_chain, start_state, to_model_space
from diffiqa.errors import ConfigError

S = 16


class SmallResidualNet(torch.nn.Module):
    """A conditional network with a real Jacobian whose x0 stays inside [-1, 1] on inputs in
    [-0.5, 0.5], so chains with and without x0 clipping (restoration vs the invertible map)
    must agree exactly."""

    prediction = "residual"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(7, 3, 3, padding=1)

    def forward(self, x, cond, gamma):
        g = gamma.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return 0.1 * torch.tanh(self.conv(torch.cat([x, cond, g], 1)))


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    image_u8 = rng.integers(64, 192, (S, S, 3), dtype=np.uint8)  # model space within [-0.5, 0.5]
    cond = to_model_space(torch.from_numpy(image_u8.transpose(2, 0, 1)[None].copy()).float() / 255)
    return SmallResidualNet().eval(), image_u8, cond, Chain("ddim", 3, 0.0, 0.4)


def test_the_six_callers_give_the_same_restoration_for_one_seed(setup):
    from diffiqa.diffusion.evaluation import evaluate_restorer, restore_batch
    from diffiqa.enhance.latent_map import DiffusionMap
    from diffiqa.enhance.priors.restoration_gap import RestorationGapPrior
    from diffiqa.restore import RestoreParams, crop_seed, sample_crops
    from diffiqa.restore_files import restore_bands, restore_window

    net, image_u8, cond, chain = setup
    params = RestoreParams(crop_size=S, crops_per_image=1, seed=3, chain=chain)
    key = 5
    seed = crop_seed(params.seed, key)  # the seed of crop `key`'s noise: every path below draws from it
    eps = torch.randn(cond.shape, generator=torch.Generator().manual_seed(seed))
    want = (run_chain(net, cond, chain, eps) + 1) / 2  # image space, unclamped
    outputs = {
        "restore.sample_crops": torch.from_numpy(
            sample_crops(net, image_u8.transpose(2, 0, 1)[None].copy(), [key], params, "cpu")["restored"]),
        "restore_files.restore_bands": torch.from_numpy(
            next(restore_bands(net, image_u8, key, params, "cpu"))["restored"].transpose(2, 0, 1)[None] / 255.0),
        "restore_files.restore_window": (restore_window(net, image_u8.transpose(2, 0, 1), lambda: eps, params, "cpu") + 1) / 2,
        "evaluation.restore_batch": restore_batch(net, (cond + 1) / 2, chain, torch.Generator().manual_seed(seed)),
        "RestorationGapPrior.restore": RestorationGapPrior(net, chain.steps, seed, chain.t_start).restore((cond + 1) / 2),
        "DiffusionMap.generate": DiffusionMap(net, (cond + 1) / 2, chain.steps, "ddim", chain.t_start).generate(
            start_state(cond, eps, chain.t_start)),
    }
    for name, got in outputs.items():
        tol = 0.5 / 255 + 1e-6 if name == "restore_files.restore_bands" else 1e-6  # that one is written as uint8
        torch.testing.assert_close(got.float(), want.clamp(0, 1) if name != "DiffusionMap.generate" else want,
                                   rtol=0, atol=tol, msg=name)

    # benchmarks/restore.py measures through evaluate_restorer: its batch 0 draws from seed 0
    pristine = np.full((1, 3, S, S), 128, np.uint8)
    import pandas as pd

    res = evaluate_restorer(net, image_u8.transpose(2, 0, 1)[None].copy(), pristine, pd.DataFrame({"distortion": ["x"]}),
                            chain, seed=0, progress=False)
    restored = run_chain(net, cond, chain, torch.randn(cond.shape, generator=torch.Generator().manual_seed(0)))
    u8 = (((restored + 1) / 2).clamp(0, 1) * 255).round()
    mse = float(((u8 - 128.0) ** 2).mean())
    assert res["overall"]["psnr_restored"] == pytest.approx(10 * np.log10(255.0**2 / mse), abs=1e-6)


def test_gradients_flow_through_the_chain_and_match_without_checkpointing(setup):
    net, _, cond, chain = setup
    eps = torch.randn(cond.shape, generator=torch.Generator().manual_seed(1))
    grads = []
    for checkpoint in (True, False):
        c = cond.clone().requires_grad_(True)
        run_chain(net, c, chain, eps, grad=True, checkpoint=checkpoint).square().sum().backward()
        grads.append(c.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])
    assert not run_chain(net, cond.clone().requires_grad_(True), chain, eps).requires_grad


def test_noisy_states_and_kept_chain_states(setup):
    from diffiqa.diffusion.schedule import cosine_alpha_bar

    net, _, cond, chain = setup
    final = run_chain(net, cond, chain, torch.zeros_like(cond))
    z = [torch.randn(cond.shape, generator=torch.Generator().manual_seed(i)) for i in (1, 2)]
    got = noisy_states(final, (5, 10), z)
    for (k, t), e in zip(((5, 0.1), (10, 0.2)), z):
        ab = float(cosine_alpha_bar(t))
        torch.testing.assert_close(got[k], ab**0.5 * final.clamp(-1, 1) + (1 - ab) ** 0.5 * e)
    draws = iter(z)
    assert all(torch.equal(got[k], v) for k, v in noisy_states(final, (5, 10), lambda: next(draws)).items())
    last, kept = run_chain(net, cond, Chain("ddim", 4, 0.0, 1.0), torch.zeros_like(cond), keep=(5, 10))
    assert set(kept) == {5, 10} and torch.equal(last, run_chain(net, cond, Chain("ddim", 4), torch.zeros_like(cond)))


def test_chain_settings_are_checked_and_old_records_read():
    with pytest.raises(ConfigError, match="sampler"):
        Chain("euler")
    with pytest.raises(ConfigError, match="t_start"):
        Chain("ddim", 2, 0.0, 1.5)
    with pytest.raises(ConfigError, match="callable"):
        run_chain(SmallResidualNet(), torch.zeros(1, 3, 4, 4), Chain("ddpm", 2), torch.zeros(1, 3, 4, 4))
    assert chain_from_record(None) == LEGACY_CHAIN
    assert chain_from_record({"sampler": "ddim", "steps": 2, "t_start": 0.05}) == Chain("ddim", 2, 0.0, 0.05)
