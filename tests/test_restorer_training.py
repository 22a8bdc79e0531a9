import csv

import numpy as np
import pytest
import torch

from diffiqa.diffusion.chain import Chain
from diffiqa.diffusion.checkpoint import RestorerConfig, load_restorer, save_restorer
from diffiqa.diffusion.presets import restorer_preset
from diffiqa.diffusion.training import crop_batch, diffusion_loss, train_restorer
from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig
from diffiqa.errors import ConfigError, DiffiqaError, ProvenanceError


def tiny_cfg(**kw) -> RestorerConfig:
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(8,),
                      attn_reference_size=16, dropout=0.1, norm="batch")
    fields = dict(unet=unet, crop_size=16, batch_size=4, lr=1e-3, steps=6, ema_decay=0.9, checkpoint_every=3, seed=3)
    return RestorerConfig(**{**fields, **kw})


def tiny_pairs(n=6, size=20, seed=0):
    rng = np.random.default_rng(seed)
    pristine = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    noise = rng.integers(-30, 31, pristine.shape)
    distorted = np.clip(pristine.astype(int) + noise, 0, 255).astype(np.uint8)
    return distorted, pristine


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    net = ConditionalUNet(tiny_cfg().unet)
    cond, x0 = crop_batch(*tiny_pairs(), 16, 4, torch.Generator().manual_seed(0))
    assert cond.shape == x0.shape == (4, 3, 16, 16) and x0.min() >= -1 and x0.max() <= 1
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = diffusion_loss(net, x0, cond, "l2", generator=torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_crop_batch_flips_horizontally():
    d = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    seen_flip = False
    for s in range(20):
        cond, x0 = crop_batch(d, d, 4, 1, torch.Generator().manual_seed(s))
        row = cond[0, 0, 0]
        assert torch.equal(cond, x0)
        if row[0] > row[-1]:
            seen_flip = True
            assert torch.all(cond[0, 0, :, 0] > cond[0, 0, :, -1])  # every row reversed, not the columns
    assert seen_flip


def test_resume_is_exact(tmp_path):
    pairs = tiny_pairs()
    full = train_restorer(None, tmp_path / "full", tiny_cfg(), progress=False, pairs=pairs)
    part = train_restorer(None, tmp_path / "part", tiny_cfg(steps=3), progress=False, pairs=pairs)
    assert part["steps"] == 3 and (tmp_path / "part" / "last.pt").exists()
    with open(tmp_path / "part" / "loss.csv", "a") as f:
        f.write("4,9.9\n")  # a killed run logged a step it never checkpointed
    resumed = train_restorer(None, tmp_path / "part", tiny_cfg(), progress=False, pairs=pairs)
    assert resumed["resumed_from"] == 3 and full["resumed_from"] == 0

    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for part_name in ("model", "ema"):
        assert a[part_name].keys() == b[part_name].keys()
        for k in a[part_name]:
            assert torch.equal(a[part_name][k], b[part_name][k]), (part_name, k)
    net_a, cfg_a, extra_a = load_restorer(tmp_path / "full" / "restorer.pt")
    net_b, _, _ = load_restorer(tmp_path / "part" / "restorer.pt")
    assert all(torch.equal(x, y) for x, y in zip(net_a.state_dict().values(), net_b.state_dict().values()))
    assert cfg_a == tiny_cfg() and extra_a["ema"] is True
    with open(tmp_path / "part" / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "full" / "loss.csv") as f:
        rows_full = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 7)) and rows == rows_full


def test_time_budget_stops_resumably(tmp_path):
    pairs = tiny_pairs()
    first = train_restorer(None, tmp_path, tiny_cfg(steps=4), progress=False, pairs=pairs, max_seconds=0)
    assert first["stopped_early"] and first["steps"] == 1
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1
    rest = train_restorer(None, tmp_path, tiny_cfg(steps=4), progress=False, pairs=pairs)
    assert rest["resumed_from"] == 1 and rest["steps"] == 4 and not rest["stopped_early"]


def test_resume_with_other_params_is_refused(tmp_path):
    pairs = tiny_pairs()
    train_restorer(None, tmp_path, tiny_cfg(steps=1, checkpoint_every=1), progress=False, pairs=pairs)
    with pytest.raises(ProvenanceError, match="lr"):
        train_restorer(None, tmp_path, tiny_cfg(steps=2, lr=5e-4), progress=False, pairs=pairs)
    with pytest.raises(ConfigError, match="crop_size"):
        train_restorer(None, tmp_path / "x", tiny_cfg(crop_size=32), progress=False, pairs=pairs)


def test_checkpoint_round_trip_and_errors(tmp_path):
    cfg = tiny_cfg()
    net = ConditionalUNet(cfg.unet)
    save_restorer(tmp_path / "r.pt", net, cfg, {"note": "x"})
    loaded, cfg2, extra = load_restorer(tmp_path / "r.pt")
    assert cfg2 == cfg and extra == {"note": "x"} and not loaded.training
    assert all(torch.equal(x, y) for x, y in zip(net.state_dict().values(), loaded.state_dict().values()))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DiffiqaError, match="bad.pt"):
        load_restorer(tmp_path / "bad.pt")
    with pytest.raises(DiffiqaError, match="not found"):
        load_restorer(tmp_path / "missing.pt")


def test_presets_build():
    for name in ("demo", "cpu"):
        cfg = restorer_preset(name)
        net = ConditionalUNet(cfg.unet).eval()
        x = torch.zeros(1, 3, cfg.crop_size, cfg.crop_size)
        assert net(x, x, torch.tensor([0.5])).shape == x.shape
    assert restorer_preset("paper").unet.channel_mults == (1, 2, 4, 8, 8)
    with pytest.raises(ConfigError, match="known presets"):
        restorer_preset("huge")


class OracleRestorer(torch.nn.Module):
    """Predicts the exact noise that leads back to known clean images: a perfect restorer."""

    def __init__(self, clean):
        super().__init__()
        self.clean = clean
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, cond, gamma):
        ab = (gamma**2).view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * self.clean[: len(x_t)]) / (1 - ab).clamp_min(1e-6).sqrt()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_evaluate_restorer_reports_gain_per_type(sampler):
    import pandas as pd

    from diffiqa.diffusion.evaluation import evaluate_restorer

    distorted, pristine = tiny_pairs(n=4, size=16)
    meta = pd.DataFrame({"distortion": ["noise", "blur", "noise", "blur"]})
    net = OracleRestorer(torch.from_numpy(pristine).float() / 127.5 - 1)
    res = evaluate_restorer(net, distorted, pristine, meta, Chain(sampler, 4), batch_size=4, progress=False)
    assert set(res["per_distortion"]) == {"noise", "blur"} and res["overall"]["n"] == 4
    assert res["overall"]["psnr_gain"] > 10 and res["overall"]["ssim_gain"] > 0
    assert res["per_distortion"]["noise"]["psnr_restored"] > 40
    assert res["crops_per_s"] > 0
    with pytest.raises(ConfigError, match="sampler"):
        evaluate_restorer(net, distorted, pristine, meta, Chain("euler"), progress=False)


def test_noise_levels_and_start_states_follow_the_config():
    from diffiqa.diffusion.training import draw_levels_and_bases

    x0, cond = torch.ones(4000, 1, 1, 1), -torch.ones(4000, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    t, base = draw_levels_and_bases(x0, cond, gen, t_max=0.3, full_range_share=0.2, distorted_start=0.5, mixed_start=0.25)
    assert 0.2 * 0.7 - 0.03 < (t > 0.3).float().mean() < 0.2 * 0.7 + 0.03  # only the full-range share exceeds t_max
    b = base.flatten()
    assert abs((b == -1).float().mean() - 0.5) < 0.03 and abs((b == 1).float().mean() - 0.25) < 0.03
    t, base = draw_levels_and_bases(x0, cond, gen)  # defaults: SR3, t ~ U(0,1) on the pristine image
    assert (base == 1).all() and t.max() > 0.9


def test_x0_net_learns_to_restore_from_the_distorted_start(tmp_path):
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(), attn_reference_size=16,
                      dropout=0.0, norm="group", stem=2, prediction="residual")
    cfg = tiny_cfg(unet=unet, steps=4, t_max=0.3, full_range_share=0.2, distorted_start=0.5, mixed_start=0.25,
                   rotate=True)
    out = train_restorer(None, tmp_path / "a", cfg, progress=False, pairs=tiny_pairs())
    assert out["steps"] == 4 and np.isfinite(out["final_loss"])
    # init from that checkpoint; a mismatching resume state restarts under on_mismatch="restart"
    ckpt = tmp_path / "a" / "restorer.pt"
    cfg2 = tiny_cfg(unet=unet, steps=1, init=str(ckpt), lr=5e-4)
    out2 = train_restorer(None, tmp_path / "a", cfg2, progress=False, pairs=tiny_pairs(), on_mismatch="restart")
    assert out2["resumed_from"] == 0 and out2["init"] == str(ckpt)
    with pytest.raises(ConfigError, match="network shape"):
        train_restorer(None, tmp_path / "b", tiny_cfg(init=str(ckpt)), progress=False, pairs=tiny_pairs())


def test_rotations_are_aligned():
    d, p = tiny_pairs(n=3)
    cond, x0 = crop_batch(p, p, 16, 12, torch.Generator().manual_seed(1), rotate=True)
    assert torch.equal(cond, x0)
    plain, _ = crop_batch(p, p, 16, 12, torch.Generator().manual_seed(1))
    assert not torch.equal(cond, plain)


def test_package_restorer_from_a_train_state_is_float16_with_provenance(tmp_path):
    from diffiqa.diffusion.checkpoint import package_restorer

    cfg = tiny_cfg(steps=3, checkpoint_every=3)
    train_restorer(None, tmp_path / "run", cfg, progress=False, pairs=tiny_pairs())
    extra = package_restorer(tmp_path / "run" / "last.pt", tmp_path / "pkg.pt", Chain("ddim", 2, t_start=0.2),
                             {"data": {"n_train": 6}})
    assert extra["steps"] == 3 and extra["ema"] and extra["data"] == {"n_train": 6}
    raw = torch.load(tmp_path / "pkg.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    net, got, _ = load_restorer(tmp_path / "pkg.pt")
    assert got.chain == Chain("ddim", 2, t_start=0.2)
    ema, _, _ = load_restorer(tmp_path / "run" / "restorer.pt")  # the EMA weights training wrote
    for (k, a), b in zip(net.state_dict().items(), ema.state_dict().values()):
        if a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-2, rtol=1e-2), k
    with pytest.raises(DiffiqaError, match="not a diffiqa restorer"):
        torch.save({"kind": "other"}, tmp_path / "bad.pt")
        package_restorer(tmp_path / "bad.pt", tmp_path / "x.pt")


def test_zero_steps_from_init_reproduces_the_init_weights(tmp_path):
    cfg = tiny_cfg(steps=2, ema_decay=0.0)
    train_restorer(None, tmp_path / "a", cfg, progress=False, pairs=tiny_pairs())
    src = tmp_path / "a" / "restorer.pt"
    out = train_restorer(None, tmp_path / "b", tiny_cfg(steps=0, init=str(src)), progress=False, pairs=tiny_pairs())
    assert out["steps"] == 0 and out["init"] == str(src)
    a, _, _ = load_restorer(src)
    b, _, _ = load_restorer(tmp_path / "b" / "restorer.pt")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


def test_checkpoints_without_a_recorded_chain_get_the_legacy_one(tmp_path):
    from diffiqa.diffusion.chain import LEGACY_CHAIN
    from diffiqa.diffusion.checkpoint import PACKAGED_RESTORER

    cfg = tiny_cfg()
    save_restorer(tmp_path / "r.pt", ConditionalUNet(cfg.unet), cfg)
    raw = torch.load(tmp_path / "r.pt", weights_only=True)
    del raw["config"]["chain"]
    torch.save(raw, tmp_path / "old.pt")
    assert load_restorer(tmp_path / "old.pt")[1].chain == LEGACY_CHAIN
    assert load_restorer(tmp_path / "r.pt")[1].chain == cfg.chain
    assert PACKAGED_RESTORER.is_file()


def test_spike_guard_skips_isolated_spikes_only():
    from diffiqa.diffusion.training import SPIKE_WINDOW, spiked

    calm = [0.01] * SPIKE_WINDOW
    assert not spiked(0.5, calm[:-1], 20.0)            # no full window yet
    assert spiked(0.5, calm, 20.0) and not spiked(0.15, calm, 20.0)
    assert spiked(float("nan"), calm, 20.0)
    assert not spiked(0.5, calm, 0.0)                  # off
    risen = [0.01] * (SPIKE_WINDOW // 2 - 1) + [0.5] * (SPIKE_WINDOW // 2 + 1)
    assert not spiked(0.5, risen, 20.0)                # a lasting rise is not a spike


def test_spike_guard_is_validated():
    import pytest

    from diffiqa.diffusion.checkpoint import RestorerConfig
    from diffiqa.errors import ConfigError

    with pytest.raises(ConfigError, match="spike_guard"):
        RestorerConfig(spike_guard=0.5)
