"""KADID-10k types 1-8: blurs (Gaussian, lens, motion) and colour distortions.

Functions take float (H,W,3) in [0,1], the level's parameter and a numpy Generator, and
return float (H,W,3) in [0,1]. Parameters follow KADID-10k's generator (Lin, Hosu, Saupe,
QoMEX 2019): the numbers in ``LEVELS`` of ``__init__`` are KADID's own.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.cluster import vq
from skimage import color, morphology

from diffiqa.data.distortions._common import (
    clip01,
    convolve_rgb,
    lab2rgb,
    rgb2lab,
    to_float,
    to_uint8,
)


def gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian low-pass of std ``sigma`` px; the kernel spans 2*ceil(2 sigma)+1 px (as KADID)."""
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="nearest", truncate=2.0)


def lens_blur(image: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Out-of-focus blur: convolution with a uniform disk of ``radius`` px (fspecial('disk'))."""
    disk = morphology.disk(int(round(radius))).astype(np.float64)
    return convolve_rgb(image, disk / disk.sum())


def motion_blur(image: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """Linear motion blur: a line of ``length`` px at a random angle in [0, 180) (as MATLAB's
    fspecial('motion')); the line is sampled densely and splatted bilinearly (anti-aliased)."""
    angle = rng.uniform(0.0, np.pi)
    half = (length - 1) / 2.0
    size = 2 * int(np.ceil(half)) + 1
    c = size // 2
    t = np.linspace(-half, half, max(2, int(8 * length)))
    ys, xs = c + t * np.sin(angle), c + t * np.cos(angle)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    kernel = np.zeros((size + 1, size + 1))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(kernel, (y0 + dy, x0 + dx), wy * wx)
    kernel = kernel[:size, :size]
    return convolve_rgb(image, kernel / kernel.sum())


def color_diffusion(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Colour bleeding: blur the Lab chroma (a, b) with sigma = 1.5*amount + 2 px, luminance
    untouched (KADID's ``imcolorblur(I, 1.5a+2, ...)``).

    The MATLAB generator we found also multiplies the blurred chroma by ``amount``; that
    turns every image into saturated red at levels 3-5 (it duplicates color_saturation_2),
    so only the blur is applied here.
    """
    lab = rgb2lab(image)
    sigma = 1.5 * amount + 2.0
    lab[..., 1:] = ndimage.gaussian_filter(lab[..., 1:], sigma=(sigma, sigma, 0), mode="nearest")
    return lab2rgb(lab)


def color_shift(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Misregistered green channel: shift it by ``amount`` px in a random direction and blend
    it in where edges are strong (KADID's ``imcolorshift``)."""
    gray = color.rgb2gray(image)
    gy, gx = np.gradient(gray)
    edges = ndimage.gaussian_filter(np.hypot(gx, gy), sigma=4.0, mode="nearest")
    edges = _minmax(np.clip(_minmax(edges), 0.1, 1.0))
    # Percentile stretch (1 % each side) so a few strong edges do not dominate the weights.
    lo, hi = np.percentile(edges, [1.0, 99.0])
    weight = _minmax(np.clip(edges, lo, hi))[..., None]
    direction = rng.random(2)
    shift = np.round(direction / max(np.linalg.norm(direction), 1e-12) * amount)
    out = image.copy()
    shifted = ndimage.shift(image[..., 1], shift, order=0, mode="nearest")
    out[..., 1] = shifted * weight[..., 0] + image[..., 1] * (1.0 - weight[..., 0])
    return out


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else x


def color_quantization(image: np.ndarray, n_colors: float, rng: np.random.Generator) -> np.ndarray:
    """Palette of ``n_colors`` colours with Floyd-Steinberg dithering (MATLAB ``rgb2ind``).

    MATLAB picks a minimum-variance palette; k-means on a sample of pixels minimises the
    same error and is much faster than Pillow's median cut (~250 ms at 256^2).
    """
    n = int(n_colors)
    pixels = image.reshape(-1, 3).astype(np.float64)
    sample = pixels[rng.choice(len(pixels), size=min(len(pixels), 2048), replace=False)]
    k = min(n, len(np.unique(sample, axis=0)))
    palette, _ = vq.kmeans2(sample, k, iter=10, minit="++", seed=rng)
    palette_img = Image.new("P", (1, 1))
    entries = to_uint8(np.clip(palette, 0, 1)).ravel().tolist()
    palette_img.putpalette(entries + entries[:3] * (256 - k))  # pad with a repeated colour
    pil = Image.fromarray(to_uint8(image)).quantize(palette=palette_img, dither=Image.Dither.FLOYDSTEINBERG)
    return to_float(np.asarray(pil.convert("RGB")))


def color_saturation_1(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """HSV saturation multiplied by ``factor`` (KADID: 0.4 ... 0, then -0.4 which inverts hue)."""
    hsv = color.rgb2hsv(image)
    hsv[..., 1] *= factor
    return clip01(color.hsv2rgb(hsv))


def color_saturation_2(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Lab chroma (a, b) multiplied by ``factor`` (over-saturation), result clipped to RGB."""
    lab = rgb2lab(image)
    lab[..., 1:] *= factor
    return lab2rgb(lab)
