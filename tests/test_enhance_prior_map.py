"""The unconditional map network (``RestorerConfig.conditional`` False, the ``prior_map`` preset):
training ignores the condition, old checkpoints load as conditional, DiffusionMap feeds it zeros
and round-trips, and ``enhance.map`` picks the network."""

import numpy as np
import pytest
import torch

from diffiqa.config import to_dict
from diffiqa.diffusion.checkpoint import RestorerConfig, load_restorer, save_restorer
from diffiqa.diffusion.presets import restorer_preset
from diffiqa.diffusion.training import diffusion_loss, train_restorer
from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig
from diffiqa.errors import ConfigError

torch.set_num_threads(1)


def tiny_unet(prediction="x0"):
    return UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(), attn_reference_size=16,
                      dropout=0.0, norm="group", groups=4, prediction=prediction)


def tiny_cfg(**kw):
    fields = dict(unet=tiny_unet(), crop_size=16, batch_size=4, lr=1e-3, steps=2, checkpoint_every=1, seed=1,
                  t_max=0.5, full_range_share=0.0, conditional=False)
    return RestorerConfig(**{**fields, **kw})


def _images(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_unconditional_loss_ignores_the_condition():
    torch.manual_seed(0)
    net = ConditionalUNet(tiny_unet())
    x0, cond_a, cond_b = _images(seed=0), _images(seed=1), _images(seed=2)

    @torch.no_grad()
    def loss(cond, conditional):
        return float(diffusion_loss(net, x0, cond, "l2", generator=torch.Generator().manual_seed(5), t_max=0.5,
                                    full_range_share=0.0, distorted_start=0.9, conditional=conditional))

    assert loss(cond_a, False) == loss(cond_b, False)  # zeros replace any condition, pristine starts only
    assert loss(cond_a, True) != loss(cond_b, True)  # the conditional path does see it


def test_unconditional_training_runs_and_its_checkpoint_says_so(tmp_path):
    rng = np.random.default_rng(0)
    pristine = rng.integers(0, 256, (6, 3, 20, 20), dtype=np.uint8)
    other = rng.integers(0, 256, pristine.shape, dtype=np.uint8)
    a = train_restorer(None, tmp_path / "a", tiny_cfg(), progress=False, pairs=(pristine, pristine))
    b = train_restorer(None, tmp_path / "b", tiny_cfg(), progress=False, pairs=(other, pristine))
    net_a, cfg_a, _ = load_restorer(a["restorer"])
    net_b, _, _ = load_restorer(b["restorer"])
    assert cfg_a.conditional is False and net_a.conditional is False
    for k, v in net_a.state_dict().items():  # the "distorted" side of the pairs never reaches the net
        assert torch.equal(v, net_b.state_dict()[k]), k


def test_old_checkpoints_load_as_conditional_and_presets_are_unchanged(tmp_path):
    cfg = RestorerConfig(unet=tiny_unet("eps"), crop_size=16)
    net = ConditionalUNet(cfg.unet)
    save_restorer(tmp_path / "r.pt", net, cfg)
    ckpt = torch.load(tmp_path / "r.pt", weights_only=True)
    del ckpt["config"]["conditional"]  # as written before the field existed
    torch.save(ckpt, tmp_path / "old.pt")
    loaded, cfg_old, _ = load_restorer(tmp_path / "old.pt")
    assert cfg_old.conditional is True and loaded.conditional is True
    for name in ("demo", "cpu", "paper"):
        assert restorer_preset(name).conditional is True
    pm = restorer_preset("prior_map")
    assert pm.conditional is False and pm.distorted_start == 0 and pm.mixed_start == 0 and pm.t_max == 0.5
    with pytest.raises(ConfigError, match="conditional=False"):
        RestorerConfig(conditional=False, distorted_start=0.5)


def test_resume_of_a_state_written_before_the_field(tmp_path):
    from diffiqa.diffusion.training import _resume_view

    cfg = to_dict(RestorerConfig())
    old = {k: v for k, v in cfg.items() if k != "conditional"}
    assert _resume_view(old) == _resume_view(cfg)


def test_diffusion_map_with_an_unconditional_net_round_trips_and_ignores_the_image():
    from diffiqa.enhance.latent_map import DiffusionMap

    torch.manual_seed(0)
    net = ConditionalUNet(tiny_unet()).eval().requires_grad_(False)
    net.conditional = False
    y = (_images(1, seed=3) + 1) / 2
    other = (_images(1, seed=4) + 1) / 2
    g = DiffusionMap(net, y, steps=3, method="edict", t_start=0.5)
    assert torch.count_nonzero(g.cond) == 0
    z = g.invert(y)
    back = g.generate(z)
    assert float(10 * torch.log10(1 / (back - y).square().mean())) > 60
    g2 = DiffusionMap(net, other, steps=3, method="edict", t_start=0.5)  # another "condition": same map
    assert torch.equal(g2.invert(y), z)


def test_map_choice(tmp_path):
    from diffiqa.enhance.ascent import EnhanceParams
    from diffiqa.enhance.files import find_map_checkpoint
    from diffiqa.packaged import PRIOR_DENOISER

    p = tmp_path / "m.pt"
    p.write_bytes(b"x")
    assert find_map_checkpoint(str(p)) == p
    assert find_map_checkpoint("restorer", p) == p
    with pytest.raises(ConfigError, match="not found"):
        find_map_checkpoint(str(tmp_path / "missing.pt"))
    assert find_map_checkpoint("pixel") is None  # the identity map has no network
    if PRIOR_DENOISER.is_file():
        assert find_map_checkpoint("denoiser") == PRIOR_DENOISER
    with pytest.raises(ConfigError, match="packaged"):  # the old name says nothing of which network it is
        find_map_checkpoint("packaged")
    with pytest.raises(ConfigError, match="enhance.map"):
        EnhanceParams(map="")


def test_the_quiet_mix_stops_the_tied_chain_passing_latent_noise_through():
    from diffiqa.enhance.latent_map import MIX_GRID, passthrough, quiet_mix

    loud = passthrough(3, 0.3, 0.93)  # the paper's p: a share of any latent move reaches the image as it is
    assert abs(loud) > 0.03
    for steps, t in ((2, 0.1), (3, 0.3), (4, 0.5)):
        p = quiet_mix(steps, t)
        assert p in MIX_GRID and 0.7 < p < 0.9
        assert abs(passthrough(steps, t, p)) < 0.1 * abs(passthrough(steps, t, 0.93))


def test_the_gate_sees_the_pass_through_on_a_network_that_ignores_its_input():
    """A constant-x0 net: at p 0.93 the whole response is passed-through white noise (fails);
    at the quiet p almost nothing reaches the image (gain ~0)."""
    from diffiqa.enhance.gate import measure_gate
    from diffiqa.enhance.latent_map import DiffusionMap, _ConstantX0, quiet_mix

    y = (_images(1, size=32, seed=5) + 1) / 2
    g = DiffusionMap(_ConstantX0(), y, 3, method="edict", t_start=0.3, mix=0.93)
    loud = measure_gate(g.generate, g.invert(y), y)
    assert abs(loud.hf_fraction - loud.hf_white) < 0.02 and loud.gain > 0.05
    g = DiffusionMap(_ConstantX0(), y, 3, method="edict", t_start=0.3, mix=quiet_mix(3, 0.3))
    assert measure_gate(g.generate, g.invert(y), y).gain < 0.01
