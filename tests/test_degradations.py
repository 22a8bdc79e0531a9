"""Camera degradations, pairs made on the fly, and the regression warm start (tiny shapes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from diffiqa.data.camera_pairs import CameraPairSource
from diffiqa.data.degradations import (
    MARGIN,
    NAMED_LEVELS,
    CameraMix,
    blur,
    disk_kernel,
    gaussian_kernel,
    jpeg,
    motion_kernel,
    named_degradation,
    random_degradation,
    sensor_noise,
)
from diffiqa.errors import ConfigError


def _photo(side: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth photo-like image with edges, float (H,W,3) in [0,1]."""
    y, x = np.mgrid[0:side, 0:side] / side
    rng = np.random.default_rng(seed)
    img = np.stack([0.5 + 0.3 * np.sin(6 * x + c) * np.cos(4 * y) for c in range(3)], -1)
    img[side // 4 : side // 2, side // 4 : side // 2] = rng.uniform(0.1, 0.9, 3)
    return img


@pytest.mark.parametrize("kernel", [gaussian_kernel(1.5, 1.5, 0), gaussian_kernel(3, 0.5, 1.0), disk_kernel(3.0), motion_kernel(9, 0.5)])
def test_kernels_sum_to_one_and_blur_removes_high_frequencies(kernel):
    assert kernel.shape == (21, 21) and kernel.min() >= 0 and kernel.sum() == pytest.approx(1.0)
    img = np.random.default_rng(0).uniform(0, 1, (48, 48, 3))  # texture: all frequencies
    out = blur(img, kernel)
    assert out.shape == img.shape
    # A blur keeps the mean and lowers the gradient energy.
    assert out.mean() == pytest.approx(img.mean(), abs=0.01)
    assert np.abs(np.diff(out, axis=1)).mean() < 0.7 * np.abs(np.diff(img, axis=1)).mean()


def test_motion_kernel_is_a_line_along_its_angle():
    k = motion_kernel(11, 0.0)
    assert k[10].sum() > 0.95  # horizontal: all weight on the centre row
    k = motion_kernel(11, np.pi / 2)
    assert k[:, 10].sum() > 0.95


def test_sensor_noise_grows_with_the_signal():
    rng = np.random.default_rng(0)
    dark, bright = np.full((64, 64, 3), 0.05), np.full((64, 64, 3), 0.9)
    shot = 0.02
    s_dark = (sensor_noise(dark, 0.01, shot, False, rng) - dark).std()
    s_bright = (sensor_noise(bright, 0.01, shot, False, rng) - bright).std()
    assert s_bright == pytest.approx(np.sqrt(shot * 0.9 + 1e-4), rel=0.1)
    assert s_bright > 2 * s_dark
    gray = sensor_noise(bright, 0.05, 0.0, True, rng) - bright
    assert np.allclose(gray[..., 0], gray[..., 1])  # luminance noise: one field for all channels


def test_jpeg_blocks_are_aligned_to_the_array_origin():
    img = (_photo(64) * 255).astype(np.uint8)
    out = jpeg(img, 10)
    err = np.abs(out.astype(float) - img).mean(-1)
    # Block edges (multiples of 8) carry more error jump than block interiors.
    jump = np.abs(np.diff(out.astype(float).mean(-1), axis=1))
    assert jump[:, 7::8].mean() > jump[:, 3::8].mean()
    assert err.mean() > 1.0


def test_random_degradation_is_deterministic_and_draws_every_stage():
    mix = CameraMix()
    patch = _photo(32 + 2 * MARGIN)
    a, rec_a = random_degradation(patch, mix, np.random.default_rng(5))
    b, rec_b = random_degradation(patch, mix, np.random.default_rng(5))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b) and rec_a == rec_b
    seen = {"identity": 0, "blur": 0, "noise": 0, "jpeg": 0, "exposure": 0}
    for s in range(300):
        _, rec = random_degradation(patch, mix, np.random.default_rng(s))
        for k in seen:
            seen[k] += bool(rec.get(k))
    assert 10 <= seen["identity"] <= 45  # 8 % of 300, present but not dominant
    assert seen["blur"] > 150 and seen["noise"] > 120 and seen["jpeg"] > 100 and seen["exposure"] > 10


def test_identity_samples_equal_the_clean_crop():
    patch = _photo(16 + 2 * MARGIN)
    out, rec = random_degradation(patch, dataclasses.replace(CameraMix(), identity=1.0), np.random.default_rng(0))
    assert rec["identity"]
    assert np.array_equal(out, np.clip(np.round(patch[MARGIN:-MARGIN, MARGIN:-MARGIN] * 255), 0, 255).astype(np.uint8))


def test_camera_mix_rejects_bad_ranges():
    with pytest.raises(ConfigError, match="noise"):
        CameraMix(noise=1.5)
    with pytest.raises(ConfigError, match="jpeg_quality"):
        CameraMix(jpeg_quality=(60, 10))


@pytest.mark.parametrize("family", sorted(NAMED_LEVELS))
def test_named_degradations_degrade_in_order_of_level(family):
    img = _photo(64)
    clean = np.round(img * 255)
    errs = [np.mean((named_degradation(img, family, lv, seed=1).astype(float) - clean) ** 2) for lv in range(1, len(NAMED_LEVELS[family]) + 1)]
    if family == "identity":
        assert errs == [0.0]
    elif family != "exposure":  # exposure gains go below and above 1
        assert all(b > a for a, b in zip(errs, errs[1:])), errs
    assert np.array_equal(named_degradation(img, family, 1, seed=3), named_degradation(img, family, 1, seed=3))


def test_named_degradation_names_unknown_family_and_level():
    with pytest.raises(ConfigError, match="fog"):
        named_degradation(_photo(), "fog", 1)
    with pytest.raises(ConfigError, match="level 9"):
        named_degradation(_photo(), "jpeg", 9)


@pytest.fixture
def pristine_folder(tmp_path):
    for i in range(3):
        Image.fromarray((_photo(80, i) * 255).astype(np.uint8)).save(tmp_path / f"p{i}.png")
    return tmp_path


def test_camera_pair_source_batches_are_a_function_of_the_generator(pristine_folder):
    src = CameraPairSource([pristine_folder], exclude={"p2"}, progress=False)
    assert len(src.files) == 2
    c1, x1 = src.batch(torch.Generator().manual_seed(3), 24, 4)
    c2, x2 = src.batch(torch.Generator().manual_seed(3), 24, 4)
    assert c1.shape == x1.shape == (4, 3, 24, 24) and torch.equal(c1, c2) and torch.equal(x1, x2)
    assert c1.min() >= -1 and c1.max() <= 1 and x1.min() >= -1 and x1.max() <= 1
    c3, _ = src.batch(torch.Generator().manual_seed(4), 24, 4)
    assert not torch.equal(c1, c3)
    assert (c1 - x1).abs().mean() > 0.005  # degraded


def test_regression_warm_start_then_diffusion_fine_tune(pristine_folder, tmp_path):
    """The two phases of benchmarks/train_camera_restorer.py at tiny shapes: the regression
    phase lowers the loss on on-the-fly pairs, and the diffusion phase starts from its weights."""
    from diffiqa.diffusion.chain import Chain
    from diffiqa.diffusion.checkpoint import RestorerConfig, load_restorer
    from diffiqa.diffusion.training import train_restorer
    from diffiqa.diffusion.unet import UNetConfig

    src = CameraPairSource([pristine_folder], mix=CameraMix(identity=0.0, blur=0.0, noise=1.0, jpeg=0.0, exposure=0.0,
                                                            read_noise=(0.1, 0.1)), progress=False)
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(), dropout=0.0, norm="group",
                      groups=4, prediction="residual")
    reg = RestorerConfig(unet=unet, crop_size=16, batch_size=8, lr=3e-3, steps=60, loss="l2", checkpoint_every=30,
                         t_max=1e-3, full_range_share=0.0, distorted_start=1.0, chain=Chain("ddim", 1, 0.0, 1e-3))
    out = train_restorer(None, tmp_path / "reg", reg, progress=False, source=src)
    losses = np.loadtxt(tmp_path / "reg" / "loss.csv", delimiter=",", skiprows=1)[:, 1]
    assert out["steps"] == 60 and losses[-10:].mean() < 0.7 * losses[:5].mean()
    fine = dataclasses.replace(reg, steps=4, t_max=0.3, distorted_start=0.8, mixed_start=0.2,
                               init=str(tmp_path / "reg" / "restorer.pt"))
    train_restorer(None, tmp_path / "diff", fine, progress=False, source=src)
    net, cfg, extra = load_restorer(tmp_path / "diff" / "restorer.pt")
    assert cfg.init.endswith("restorer.pt") and cfg.t_max == 0.3
