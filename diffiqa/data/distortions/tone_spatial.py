"""KADID-10k types 16-25: brightness and contrast, sharpening, and spatial distortions.

Functions take float (H,W,3) in [0,1], the level's parameter and a numpy Generator, and
return float (H,W,3) in [0,1].
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import filters

from diffiqa.data.distortions._common import (
    clip01,
    contrast_curve,
    lab2rgb,
    patch_side,
    quadratic_curve,
    rgb2lab,
    to_float,
    to_uint8,
)


def _tone(image: np.ndarray, mid: float) -> np.ndarray:
    """KADID's ``imbrighten``: the tone curve applied to RGB (weight 2) and to Lab lightness
    (weight 1), so colours do not wash out as they would with RGB alone."""
    lab = rgb2lab(image)
    lab[..., 0] = quadratic_curve(lab[..., 0] / 100.0, mid) * 100.0
    return (2.0 * quadratic_curve(image, mid) + lab2rgb(lab)) / 3.0


def brighten(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Brightening tone curve through (0.5, 0.5 + amount/2)."""
    return _tone(image, 0.5 + amount / 2.0)


def darken(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Darkening tone curve through (0.5, 0.5 - amount/2)."""
    return _tone(image, 0.5 - amount / 2.0)


def _random_sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def mean_shift(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``amount`` to every sample, up or down at random, then clip.

    KADID lists signed shifts (+0.15, +0.08, 0, -0.08, -0.15), so its middle level is the
    pristine image and its levels are not ordered by severity. We keep KADID's range but
    order the levels by magnitude and draw the direction from ``rng``, so both brighter and
    darker shifts occur and severity grows with the level.
    """
    return clip01(image + _random_sign(rng) * amount)


def contrast_change(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast raised or lowered at random by ``amount`` with KADID's curve
    (0.25, 0.25-a/4), (0.75, 0.75+a/4). KADID's signed levels (0.3, 0.15, 0, -0.4, -0.6)
    have the pristine image in the middle; as for ``mean_shift`` we order by magnitude."""
    return contrast_curve(image, _random_sign(rng) * amount)


def high_sharpen(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Over-sharpening: unsharp mask (Gaussian radius 3 px, strength ``amount``) on Lab
    lightness, as MATLAB's ``imsharpen``."""
    lab = rgb2lab(image)
    lightness = filters.unsharp_mask(lab[..., 0] / 100.0, radius=3.0, amount=amount, preserve_range=True)
    lab[..., 0] = np.clip(lightness, 0.0, 1.0) * 100.0
    return lab2rgb(lab)


def jitter(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Pixel jitter: 5 rounds of warping by independent per-pixel Gaussian displacements of
    std ``amount`` px with bicubic resampling (KADID's ``imscatter(I, [], amount, 5)``).

    torch's ``grid_sample`` does the bicubic warp ~10x faster than scipy's map_coordinates.
    """
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for _ in range(5):
        shifts = torch.from_numpy(rng.normal(0.0, amount, (2, h, w)).astype(np.float32))
        # grid_sample wants (x, y) in [-1, 1] with align_corners=True mapping to pixel centres.
        gx = (xs + shifts[1]) / max(w - 1, 1) * 2.0 - 1.0
        gy = (ys + shifts[0]) / max(h - 1, 1) * 2.0 - 1.0
        grid = torch.stack([gx, gy], dim=-1)[None]
        x = F.grid_sample(x, grid, mode="bicubic", padding_mode="reflection", align_corners=True)
    return clip01(x[0].permute(1, 2, 0).numpy())


def non_eccentricity_patch(image: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` 16x16 patches each copied to a random spot at most 8 px away (KADID's
    ``imnoneccentricity``: patches taken at least 16 px from the border)."""
    out = image.copy()
    h, w = image.shape[:2]
    side = patch_side(image, 16)
    margin = side  # KADID: radius 16 = patch side
    top_lo, left_lo = min(margin, h - side), min(margin, w - side)
    top_hi, left_hi = max(top_lo, h - side - margin), max(left_lo, w - side - margin)
    for _ in range(int(count)):
        top = int(rng.integers(top_lo, top_hi + 1))
        left = int(rng.integers(left_lo, left_hi + 1))
        patch = out[top : top + side, left : left + side].copy()
        dst_top = int(np.clip(round(top + (rng.random() - 0.5) * margin), 0, h - side))
        dst_left = int(np.clip(round(left + (rng.random() - 0.5) * margin), 0, w - side))
        out[dst_top : dst_top + side, dst_left : dst_left + side] = patch
    return out


def pixelate(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Nearest-neighbour down-scaling by z = 0.95 - strength^0.6 and back up."""
    h, w = image.shape[:2]
    z = 0.95 - strength**0.6
    small = Image.fromarray(to_uint8(image)).resize((max(1, int(w * z)), max(1, int(h * z))), Image.Resampling.NEAREST)
    return to_float(np.asarray(small.resize((w, h), Image.Resampling.NEAREST)))


def quantization(image: np.ndarray, n_thresholds: float, rng: np.random.Generator) -> np.ndarray:
    """Intensity quantisation with ``n_thresholds`` thresholds shared by R, G and B.

    KADID uses MATLAB's ``multithresh`` (multi-level Otsu) and maps each class to its upper
    threshold (lowest class to 0, highest to 1). Exhaustive multi-Otsu over 20 thresholds is
    intractable, so the thresholds come from Lloyd-Max iterations on the 256-bin histogram,
    which minimise the same within-class variance.
    """
    n = int(n_thresholds)
    values = np.arange(256, dtype=np.float64)
    hist = np.bincount(to_uint8(image).ravel(), minlength=256).astype(np.float64)
    cdf = np.cumsum(hist) / hist.sum()
    centres = np.interp((np.arange(n + 1) + 0.5) / (n + 1), cdf, values)  # start at quantiles
    for _ in range(30):
        thresholds = (centres[:-1] + centres[1:]) / 2.0
        cls = np.searchsorted(thresholds, values, side="right")
        mass = np.bincount(cls, weights=hist, minlength=n + 1)
        sums = np.bincount(cls, weights=hist * values, minlength=n + 1)
        centres = np.where(mass > 0, sums / np.maximum(mass, 1e-12), centres)
        centres = np.maximum.accumulate(centres)
    thresholds = (centres[:-1] + centres[1:]) / 2.0 / 255.0
    levels = np.concatenate([[0.0], thresholds[1:], [1.0]])
    return levels[np.searchsorted(thresholds, image, side="right")].astype(image.dtype)


def color_block(image: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` 32x32 blocks of uniform random colour pasted at random positions."""
    out = image.copy()
    h, w = image.shape[:2]
    side = patch_side(image, 32)
    for _ in range(int(count)):
        rgb = rng.random(3)
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        out[top : top + side, left : left + side] = rgb
    return out
