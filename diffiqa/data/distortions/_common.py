"""Helpers shared by the distortion families: colour spaces, tone curves, convolution.

Every distortion function works on float images ``(H, W, 3)`` in [0, 1] (float32 or
float64) and returns the same layout; ``distort`` converts from and to uint8 once.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image
from scipy import signal
from scipy.interpolate import PchipInterpolator
from skimage import color


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float (H,W,3) in [0,1] -> uint8, rounded and clipped."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 (H,W,3) -> float32 in [0,1]."""
    return image.astype(np.float32) / 255.0


def clip01(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 1.0)


def rgb2lab(image: np.ndarray) -> np.ndarray:
    """RGB in [0,1] -> CIELAB (L in [0,100]); skimage's D65 conversion, as MATLAB's rgb2lab."""
    return color.rgb2lab(image)


def lab2rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB -> RGB clipped to [0,1] (MATLAB's ``truncate(lab2rgb(...))``)."""
    # Out-of-gamut colours (over-saturation) are expected here; clipping is the intent.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return clip01(color.lab2rgb(lab))


def quadratic_curve(x: np.ndarray, mid: float) -> np.ndarray:
    """Tone curve through (0,0), (0.5, mid), (1,1), clipped to [0,1].

    KADID's ``curves(I, c)`` with one control point fits a degree-2 spline through these
    three points, which is exactly this parabola: y = (2-4c)x^2 + (4c-1)x.
    """
    return clip01((2.0 - 4.0 * mid) * x * x + (4.0 * mid - 1.0) * x)


def contrast_curve(x: np.ndarray, amount: float) -> np.ndarray:
    """Tone curve through (0,0), (0.25, 0.25-a/4), (0.75, 0.75+a/4), (1,1).

    ``amount`` > 0 steepens the mid-tones (more contrast), < 0 flattens them. A monotone
    cubic (PCHIP) keeps the curve from overshooting, so the result stays in [0,1].
    """
    xs = [0.0, 0.25, 0.75, 1.0]
    ys = [0.0, 0.25 - amount / 4.0, 0.75 + amount / 4.0, 1.0]
    # A 256-entry lookup on the 8-bit grid is exact for 8-bit input and fast.
    grid = np.linspace(0.0, 1.0, 256)
    lut = clip01(PchipInterpolator(xs, ys)(grid))
    return np.interp(x, grid, lut).astype(x.dtype, copy=False)


def convolve_rgb(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with a 2-D ``kernel`` (odd sides), edges replicated.

    FFT convolution keeps large kernels (lens blur r=8, motion blur) fast.
    """
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    padded = np.pad(image, ((ph, ph), (pw, pw), (0, 0)), mode="edge")
    out = signal.fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1))
    return clip01(out)


def pil_roundtrip(image: np.ndarray, fmt: str, **save_kwargs) -> np.ndarray:
    """Encode float RGB with Pillow in memory and decode it again (JPEG, JPEG 2000)."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format=fmt, **save_kwargs)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return to_float(np.asarray(decoded.convert("RGB")))


def patch_side(image: np.ndarray, kadid_side: int) -> int:
    """KADID's patch size in pixels, shrunk for crops too small to hold it (>= 4 per side)."""
    return max(2, min(kadid_side, min(image.shape[:2]) // 4))
