"""Conditional U-Net in the SR3 manner (Saharia et al. 2021; paper §III-B).

Input: the noisy state ``x_t`` concatenated with the distorted image (6 channels); output:
the predicted noise ``eps`` (3 channels), same H x W as the input. The noise level
``gamma = sqrt(alpha_bar(t))`` is embedded sinusoidally, passed through an MLP and added
(per channel) inside every residual block, as SR3's FeatureWiseAffine does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffiqa.errors import ConfigError

log = logging.getLogger(__name__)
PREDICTIONS = ("eps", "x0", "residual")


@dataclass
class UNetConfig:
    """Shape of the conditional U-Net.

    ``channel_mults[i] * base_channels`` channels at level i; level i has feature size
    ``attn_reference_size / 2**i`` for an input of ``attn_reference_size``, and gets
    self-attention when that size is in ``attn_resolutions``. Attention is decided per level,
    not by the runtime size, so the same net runs on 64² training crops and 224² crops.
    Any H, W works: the input is padded to a multiple of ``2**(len(channel_mults)-1)`` and
    the output cropped back.

    Parameter counts of SR3's layout (base 64, mults (1,2,4,8,8), 2 res blocks, 1 head,
    noise embedding of width base; either norm): attention at the 16² level of a 64
    reference (level 2, 256 ch) gives 93,876,867; attention at the 16² level of a 128
    reference (level 3, 512 ch; SR3's own FFHQ config, i.e. 8² on 64² crops) gives
    97,816,707, the ~98 M the paper quotes, so the ``paper`` preset uses
    ``attn_reference_size=128`` (see diffiqa.diffusion.presets). Heads add no parameters.

    ``norm``: "batch" (the paper) or "group" (SR3); ``groups`` is reduced to the largest
    divisor of the channel count when there are fewer channels. ``noise_embedding_scale``
    multiplies gamma in [0,1] before the sinusoidal embedding so nearby levels differ.

    ``stem``: space-to-depth factor of the input (pixel-unshuffle before, pixel-shuffle
    after the U-Net): 2 runs every level at half the resolution, ~3x faster on CPU at the
    same width (the full-resolution level dominates the cost of a small net). 1 = SR3.
    ``prediction``: what the output means, "eps" (SR3: the noise), "x0" (the clean image)
    or "residual" (clean image minus the condition). Samplers and the loss read it through
    ``diffiqa.diffusion.samplers.predict``, so every parameterisation serves every chain.
    """

    image_channels: int = 3
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4, 8, 8)
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    attn_reference_size: int = 64
    attn_heads: int = 1
    dropout: float = 0.2
    norm: str = "batch"
    groups: int = 32
    noise_embedding_scale: float = 1000.0
    stem: int = 1
    prediction: str = "eps"

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ConfigError(f"UNetConfig.prediction: expected one of {PREDICTIONS}, got {self.prediction!r}")
        if self.stem < 1:
            raise ConfigError(f"UNetConfig.stem: must be >= 1, got {self.stem}")
        if self.norm not in ("batch", "group", "none"):
            raise ConfigError(f"UNetConfig.norm: expected 'batch', 'group' or 'none', got {self.norm!r}")
        if not self.channel_mults:
            raise ConfigError("UNetConfig.channel_mults: must not be empty")
        if self.attn_reference_size % 2 ** (len(self.channel_mults) - 1):
            raise ConfigError(
                f"UNetConfig.attn_reference_size={self.attn_reference_size} is not divisible by "
                f"2**{len(self.channel_mults) - 1} (one halving per level)"
            )


def make_norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    g = math.gcd(channels, groups)  # fewer channels than groups: largest group count that divides
    return nn.GroupNorm(g, channels)


def sinusoidal_embedding(level: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """level (N,) float -> (N, dim) [sin | cos] features at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=level.device, dtype=torch.float32) / half)
    angles = (level.float() * scale)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """norm-SiLU-conv, + noise embedding, norm-SiLU-dropout-conv, residual (1x1 if widths differ)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, cfg: UNetConfig):
        super().__init__()
        self.block1 = nn.Sequential(make_norm(cfg.norm, c_in, cfg.groups), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.noise_proj = nn.Linear(emb_dim, c_out)
        self.block2 = nn.Sequential(
            make_norm(cfg.norm, c_out, cfg.groups), nn.SiLU(), nn.Dropout(cfg.dropout), nn.Conv2d(c_out, c_out, 3, padding=1)
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        if cfg.norm == "none":
            # Without normalisation the residual branches add up their variance with depth.
            # Starting each branch at zero (SkipInit/Fixup) makes every block the identity at
            # first, so the activations keep their scale however deep the net is.
            nn.init.zeros_(self.block2[-1].weight)
            nn.init.zeros_(self.block2[-1].bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.noise_proj(emb)[:, :, None, None]
        return self.block2(h) + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, cfg: UNetConfig):
        super().__init__()
        if channels % cfg.attn_heads:
            raise ConfigError(f"UNetConfig.attn_heads={cfg.attn_heads} does not divide {channels} channels")
        self.heads = cfg.attn_heads
        self.norm = make_norm(cfg.norm, channels, cfg.groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)  # (n, heads, hw, c/heads)
        return x + self.out(a.transpose(-1, -2).reshape(n, c, h, w))


class ResAttnBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, cfg: UNetConfig, with_attn: bool):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, cfg)
        self.attn = SelfAttention(c_out, cfg) if with_attn else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class ConditionalUNet(nn.Module):
    """eps-predicting U-Net conditioned on a distorted image and the noise level gamma."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        base, n_levels = cfg.base_channels, len(cfg.channel_mults)
        self.stem = cfg.stem
        self.prediction = cfg.prediction
        self.multiple = cfg.stem * 2 ** (n_levels - 1)
        emb_dim = base
        io_channels = cfg.image_channels * cfg.stem**2
        self.noise_mlp = nn.Sequential(nn.Linear(base, 4 * base), nn.SiLU(), nn.Linear(4 * base, emb_dim))
        self.conv_in = nn.Conv2d(2 * io_channels, base, 3, padding=1)

        attn_levels = {i for i in range(n_levels) if cfg.attn_reference_size // 2**i in cfg.attn_resolutions}
        skips = [base]
        ch = base
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.res_blocks):
                self.down.append(ResAttnBlock(ch, base * mult, emb_dim, cfg, i in attn_levels))
                ch = base * mult
                skips.append(ch)
            if i < n_levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList(
            [ResAttnBlock(ch, ch, emb_dim, cfg, with_attn=True), ResAttnBlock(ch, ch, emb_dim, cfg, with_attn=False)]
        )
        self.up = nn.ModuleList()
        for i in reversed(range(n_levels)):
            mult = cfg.channel_mults[i]
            for _ in range(cfg.res_blocks + 1):
                self.up.append(ResAttnBlock(ch + skips.pop(), base * mult, emb_dim, cfg, i in attn_levels))
                ch = base * mult
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
        self.conv_out = nn.Sequential(
            make_norm(cfg.norm, ch, cfg.groups), nn.SiLU(), nn.Conv2d(ch, io_channels, 3, padding=1)
        )

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """x_t (N,3,H,W) in [-1,1]-ish, cond (N,3,H,W) in [-1,1], gamma (N,) in [0,1] -> (N,3,H,W):
        eps, x0 or x0 - cond as ``cfg.prediction`` says."""
        if x_t.shape != cond.shape:
            raise ValueError(f"x_t {tuple(x_t.shape)} and cond {tuple(cond.shape)} must have the same shape")
        if gamma.ndim != 1 or gamma.shape[0] != x_t.shape[0]:
            raise ValueError(f"gamma must have shape ({x_t.shape[0]},), got {tuple(gamma.shape)}")
        h_in, w_in = x_t.shape[-2:]
        pad_h, pad_w = -h_in % self.multiple, -w_in % self.multiple
        x = torch.cat([x_t, cond], dim=1)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        emb = self.noise_mlp(sinusoidal_embedding(gamma, self.cfg.base_channels, self.cfg.noise_embedding_scale))
        if self.stem > 1:
            x = F.pixel_unshuffle(x, self.stem)
        h = self.conv_in(x)
        feats = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResAttnBlock) else layer(h)
            feats.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResAttnBlock):
                h = layer(torch.cat([h, feats.pop()], dim=1), emb)
            else:
                h = layer(h)
        out = self.conv_out(h)
        if self.stem > 1:
            out = F.pixel_shuffle(out, self.stem)
        return out[..., :h_in, :w_in]


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
