"""Named restorer configurations (presets; a params *profile* picks one by name): ``demo``
(minutes on 2 CPU cores), ``cpu`` (hours on one thread, shipped pre-trained as
diffiqa/assets/default_restorer.pt), ``paper`` (SR3 sizes for a GPU worker), and ``prior_map``
(an *unconditional* denoiser of pristine crops: the enhancement's latent map), and
``camera`` (the cpu layout trained on camera degradations made on the fly: the packaged restorer)."""

from __future__ import annotations

import dataclasses

from diffiqa.diffusion.chain import Chain
from diffiqa.diffusion.checkpoint import RestorerConfig
from diffiqa.diffusion.unet import UNetConfig
from diffiqa.errors import ConfigError


def _demo() -> RestorerConfig:
    # ~0.1 s/step on 2 idle cores (measured): 400 steps in about a minute. Trained like the
    # cpu preset (residual prediction, levels and start states of the truncated chain).
    unet = UNetConfig(base_channels=16, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(16,),
                      attn_reference_size=32, dropout=0.0, norm="group", groups=8, prediction="residual")
    return RestorerConfig(unet=unet, crop_size=32, batch_size=16, lr=2e-4, steps=400, loss="l1",
                          ema_decay=0.0, checkpoint_every=100, seed=0, t_max=0.35, full_range_share=0.2,
                          distorted_start=0.5, mixed_start=0.25, rotate=True,
                          chain=Chain(sampler="ddim", steps=2, t_start=0.2))


def _cpu() -> RestorerConfig:
    # Sized for inference on one thread: a 500x500 image costs ~0.5 s per network call
    # (space-to-depth stem 2, no attention but the bottleneck's; measured, benchmarks/
    # RESULTS.md "Restorer"), ~0.2 s per training step of 8 crops of 64² on an idle core. The net predicts
    # the residual x0 - cond, so a 1-3 call chain from a lightly noised distorted image
    # restores; training draws the levels and start states that chain visits.
    # GroupNorm: without normalisation the net learns faster at first but diverges near step
    # 600 and ends predicting a constant (benchmarks/RESULTS.md "Restorer"); with it, 7395
    # steps (25 min on one thread) give the packaged restorer.
    unet = UNetConfig(base_channels=32, channel_mults=(1, 2, 2, 4), res_blocks=1, attn_resolutions=(),
                      attn_reference_size=64, dropout=0.0, norm="group", groups=8, stem=2, prediction="residual")
    # L2 on the residual: an L1 run (1400 steps, batch 16, lr 3e-4) collapsed to predicting
    # zero (the median residual), its loss equal to the identity map's (measured). Starts are
    # (almost) all from the distorted crop, the state the 1-2 call chain sees: with 20 %
    # pristine and 20 % mixed starts the noisy state leaked the answer in training, and after
    # 1000 steps the net still did not denoise from a distorted start (measured).
    # Levels up to t 0.1 (noise std <= 0.17 in [-1,1]): a larger start level buries the
    # distortion under noise the net must remove first, which costs PSNR. No full-range share:
    # a run with 5 % of t ~ U(0,1) spiked its loss to 90 near step 600 and by step 5000 output
    # a constant (cause not isolated; the paper profile trains its own full-chain restorer).
    # A batch whose loss is 10^3-10^4 x the usual wrecks the weights whether or not the gradient
    # is clipped, so a step whose loss is over 20 x the recent median is skipped (spike_guard).
    return RestorerConfig(unet=unet, crop_size=64, batch_size=8, lr=5e-4, steps=100_000, loss="l2",
                          ema_decay=0.999, checkpoint_every=200, seed=0, t_max=0.1, full_range_share=0.0,
                          distorted_start=0.9, mixed_start=0.1, rotate=True, grad_clip=0.0, spike_guard=20.0,
                          chain=Chain(sampler="ddim", steps=2, t_start=0.05))


def _paper() -> RestorerConfig:
    # SR3's layout; attention on the 16x16 level of a 128 reference reproduces the ~98 M
    # parameters the paper quotes (97,816,707; see UNetConfig). lr/loss are SR3's; the
    # step count is SR3's FFHQ order of magnitude, the paper does not state one.
    unet = UNetConfig(base_channels=64, channel_mults=(1, 2, 4, 8, 8), res_blocks=2, attn_resolutions=(16,),
                      attn_reference_size=128, dropout=0.2, norm="batch", groups=32)
    return RestorerConfig(unet=unet, crop_size=64, batch_size=16, lr=1e-4, steps=500_000, loss="l1",
                          ema_decay=0.9999, checkpoint_every=5000, seed=0,
                          chain=Chain(sampler="ddpm", steps=50, t_start=1.0))


def _prior_map() -> RestorerConfig:
    # The enhancement's latent map (diffiqa/enhance/latent_map.py): a denoiser of pristine
    # photographs with no condition (zeros), so its chain from a noised image removes
    # noise-like components and a latent move comes out as image structure, where the
    # conditional restorer (x0 ~ cond + f) passes it through as white pixel noise
    # (benchmarks/RESULTS.md "Enhancement"). The cpu preset's layout; it predicts x0 (with a
    # zero condition "residual" would be the same thing), L2, levels t ~ U(0, 0.5): the map's
    # chains start at t_start <= 0.5. Trained by benchmarks/train_prior_map.py.
    unet = dataclasses.replace(_cpu().unet, prediction="x0")
    return RestorerConfig(unet=unet, crop_size=64, batch_size=8, lr=5e-4, steps=100_000, loss="l2",
                          ema_decay=0.999, checkpoint_every=200, seed=0, t_max=0.5, full_range_share=0.0,
                          distorted_start=0.0, mixed_start=0.0, rotate=True, grad_clip=0.0, spike_guard=20.0,
                          conditional=False, chain=Chain(sampler="ddim", steps=3, t_start=0.3))


def _camera() -> RestorerConfig:
    # The packaged restorer: the cpu layout trained on camera degradations made on the fly
    # (diffiqa.data.camera_pairs; benchmarks/train_camera_restorer.py). 96² crops: wide enough
    # for 15 px motion blur and a few JPEG blocks; ~0.55 s per step of 8 on one loaded core.
    # Levels up to t 0.3 cover the cache's chain (t_start 0.05) and a conditional latent map's.
    # Mixed start states (a point between the degraded and the clean crop) are what a chain's
    # later steps see.
    return RestorerConfig(unet=_cpu().unet, crop_size=96, batch_size=8, lr=5e-4, steps=100_000, loss="l2",
                          ema_decay=0.999, checkpoint_every=200, seed=0, t_max=0.3, full_range_share=0.0,
                          distorted_start=0.8, mixed_start=0.2, rotate=True, grad_clip=0.0, spike_guard=20.0,
                          chain=Chain(sampler="ddim", steps=2, t_start=0.05))


PRESETS = {"demo": _demo, "cpu": _cpu, "paper": _paper, "prior_map": _prior_map, "camera": _camera}


def restorer_preset(name: str) -> RestorerConfig:
    """-> a fresh RestorerConfig for preset ``name`` (demo | cpu | paper | prior_map | camera)."""
    if name not in PRESETS:
        raise ConfigError(f"restorer preset {name!r}: known presets are {sorted(PRESETS)}")
    return PRESETS[name]()
