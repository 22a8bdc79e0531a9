"""Natural-scene-statistics features in torch, differentiable end to end (NIQE and BRISQUE share them).

Per scale (Mittal et al.): the MSCN image (mean-subtracted, contrast-normalised with a 7x7
Gaussian window, sigma 7/6) fitted by a generalised Gaussian (shape alpha, variance) = 2
numbers; its four paired products (horizontal, vertical, two diagonals) each fitted by an
asymmetric generalised Gaussian (shape, mean, left variance, right variance) = 16 numbers.
Two scales (the second at half size) give the 36 features.

The shape parameter is the inverse of the ratio function rho(a) = G(2/a)^2 / (G(1/a) G(3/a))
(monotone in a). The classic code picks the nearest entry of a table; here the table is
inverted by linear interpolation, so the shape is a piecewise-linear, differentiable function
of the moments and gradients reach the pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_FEATURES = 36  # 18 per scale, 2 scales
SIGN_WIDTH = 1e-3  # MSCN products are O(0.01-1); values within ~1e-3 of 0 count half on each side

_ALPHA_GRID = torch.arange(0.2, 10.0, 0.001, dtype=torch.float64)


def _rho(alpha: torch.Tensor) -> torch.Tensor:
    return torch.exp(2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha))


_RHO_GRID = _rho(_ALPHA_GRID)  # increasing in alpha


def inverse_rho(ratio: torch.Tensor) -> torch.Tensor:
    """Shape alpha with rho(alpha) = ratio, by linear interpolation in the table (any shape, differentiable)."""
    grid_r = _RHO_GRID.to(ratio.device, ratio.dtype)
    grid_a = _ALPHA_GRID.to(ratio.device, ratio.dtype)
    r = ratio.clamp(grid_r[0], grid_r[-1])
    hi = torch.searchsorted(grid_r, r.detach().contiguous()).clamp(1, len(grid_r) - 1)
    lo = hi - 1
    w = (r - grid_r[lo]) / (grid_r[hi] - grid_r[lo])
    return grid_a[lo] + w * (grid_a[hi] - grid_a[lo])


def to_luminance(images: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [0,1] -> (N,1,H,W) luma in [0,255] (ITU-R BT.601, as MATLAB's rgb2gray)."""
    weights = images.new_tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True) * 255.0


def _gaussian_window(device, dtype, size: int = 7, sigma: float = 7 / 6) -> torch.Tensor:
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    w = torch.outer(g, g)
    return (w / w.sum()).view(1, 1, size, size)


def mscn(gray: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """(N,1,H,W) luma in [0,255] -> MSCN coefficients (N,1,H,W); replicate padding keeps the size."""
    w = _gaussian_window(gray.device, gray.dtype)
    pad = w.shape[-1] // 2
    padded = F.pad(gray, (pad,) * 4, mode="replicate")
    mu = F.conv2d(padded, w)
    var = F.conv2d(padded * padded, w) - mu * mu
    sigma = torch.sqrt(var.clamp_min(0) + 1e-8)  # eps: sqrt has an infinite slope at 0 (flat areas)
    return (gray - mu) / (sigma + c)


def paired_products(m: torch.Tensor) -> list[torch.Tensor]:
    """Horizontal, vertical, main- and anti-diagonal neighbour products of MSCN maps (N,1,H,W)."""
    return [
        m[..., :, :-1] * m[..., :, 1:],
        m[..., :-1, :] * m[..., 1:, :],
        m[..., :-1, :-1] * m[..., 1:, 1:],
        m[..., 1:, :-1] * m[..., :-1, 1:],
    ]


def ggd_fit(x: torch.Tensor, dims) -> torch.Tensor:
    """Generalised Gaussian (alpha, variance) over ``dims`` -> (..., 2)."""
    var = (x * x).mean(dims)
    mean_abs = x.abs().mean(dims)
    alpha = inverse_rho(mean_abs**2 / (var + 1e-12))
    return torch.stack([alpha, var], -1)


def aggd_fit(x: torch.Tensor, dims) -> torch.Tensor:
    """Asymmetric generalised Gaussian (alpha, mean, left var, right var) over ``dims`` -> (..., 4)."""
    # Smooth sign counting: a hard (x < 0) / (x > 0) count drops exact zeros (flat areas,
    # JPEG blocks) from both sides, so noise of 1e-9 on a zero moved the features (and
    # BRISQUE by ~20 MOS points). A logistic weight of width SIGN_WIDTH makes every feature
    # continuous (and differentiable) in x, and equal to the hard count away from zero.
    pos = torch.sigmoid(x / SIGN_WIDTH)
    neg = 1 - pos
    eps = 1e-12
    left_var = (x * x * neg).sum(dims) / (neg.sum(dims) + eps)
    right_var = (x * x * pos).sum(dims) / (pos.sum(dims) + eps)
    left_std = torch.sqrt(left_var + eps)
    right_std = torch.sqrt(right_var + eps)
    gamma = left_std / right_std
    r_hat = x.abs().mean(dims) ** 2 / ((x * x).mean(dims) + eps)
    big_r = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    alpha = inverse_rho(big_r)
    g_ratio = torch.exp(torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha))
    beta_left = left_std * torch.sqrt(g_ratio)
    beta_right = right_std * torch.sqrt(g_ratio)
    mean = (beta_right - beta_left) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
    return torch.stack([alpha, mean, left_var, right_var], -1)


def _scale_features(m: torch.Tensor, dims) -> torch.Tensor:
    feats = [ggd_fit(m, dims)]
    feats += [aggd_fit(p, dims) for p in paired_products(m)]
    return torch.cat(feats, -1)


def downscale(gray: torch.Tensor) -> torch.Tensor:
    """Half size with an anti-aliased bicubic filter (MATLAB's imresize(0.5) in spirit)."""
    return F.interpolate(gray, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)


def image_features(images: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [0,1] -> (N,36) NSS features of the whole image (BRISQUE-style)."""
    gray = to_luminance(images)
    out = []
    for scale in range(2):
        out.append(_scale_features(mscn(gray), dims=(-3, -2, -1)))
        if scale == 0:
            gray = downscale(gray)
    return torch.cat(out, -1)


def _patches(m: torch.Tensor, size: int) -> torch.Tensor:
    """(N,1,H,W) -> (N,P,size,size) non-overlapping patches (the border that does not fit is dropped)."""
    n, _, h, w = m.shape
    ph, pw = h // size, w // size
    m = m[..., : ph * size, : pw * size]
    return m.reshape(n, ph, size, pw, size).permute(0, 1, 3, 2, 4).reshape(n, ph * pw, size, size)


def patch_features(images: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,3,H,W) in [0,1] -> (features (N,P,36), sharpness (N,P)) on a grid of patches (NIQE).

    The second scale uses patches of half the size at the same places. Sharpness is the mean
    local deviation (sigma of the MSCN normalisation) per patch, used to pick sharp patches
    when fitting the pristine model.
    """
    if min(images.shape[-2:]) < patch_size:
        raise ValueError(f"image {tuple(images.shape[-2:])} is smaller than the NIQE patch size {patch_size}")
    gray = to_luminance(images)
    w = _gaussian_window(gray.device, gray.dtype)
    padded = F.pad(gray, (3,) * 4, mode="replicate")
    mu = F.conv2d(padded, w)
    local_std = torch.sqrt((F.conv2d(padded * padded, w) - mu * mu).clamp_min(0) + 1e-8)
    sharpness = _patches(local_std, patch_size).mean((-2, -1))
    out = []
    size = patch_size
    for scale in range(2):
        m = _patches(mscn(gray), size)
        out.append(_scale_features(m, dims=(-2, -1)))
        if scale == 0:
            gray = downscale(gray)
            size = patch_size // 2
    n_common = min(o.shape[1] for o in out)
    return torch.cat([o[:, :n_common] for o in out], -1), sharpness[:, :n_common]
