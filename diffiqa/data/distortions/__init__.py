"""KADID-10k's 25 distortion types x 5 levels, for synthesising (distorted, pristine) pairs.

``distort(image, kind, level, rng)`` applies type ``kind`` (name or 1-based KADID id) at
``level`` 1..5 to an (H,W,3) uint8 image and returns (H,W,3) uint8 of the same shape. All
randomness comes from ``rng``: the same seed gives the same output.

Level parameters are KADID-10k's (Lin, Hosu, Saupe, QoMEX 2019, MATLAB generator), with
these deliberate differences (each explained at its function):
- ``denoise``: total-variation denoising stands in for MATLAB's DnCNN.
- ``mean_shift`` and ``contrast_change``: KADID's signed levels have the pristine image as
  level 3; here levels grow in magnitude and the direction is drawn from ``rng``.
- ``quantization``: Lloyd-Max thresholds instead of multi-level Otsu (same criterion).
- ``color_quantization``: Pillow's median cut instead of MATLAB's minimum-variance palette.
- patch-based types shrink their 16/32 px patches on crops smaller than 4 patches a side.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from diffiqa.data.distortions import blur_color as _bc
from diffiqa.data.distortions import noise_compression as _nc
from diffiqa.data.distortions import tone_spatial as _ts
from diffiqa.data.distortions._common import to_float, to_uint8
from diffiqa.errors import ConfigError

# (name, function, parameter per level 1..5, what the parameter is), in KADID-10k's order.
_TABLE: list[tuple[str, Callable, tuple[float, ...], str]] = [
    ("gaussian_blur", _bc.gaussian_blur, (0.1, 0.5, 1, 2, 5), "sigma (px)"),
    ("lens_blur", _bc.lens_blur, (1, 2, 4, 6, 8), "disk radius (px)"),
    ("motion_blur", _bc.motion_blur, (1, 2, 4, 6, 10), "line length (px), random angle"),
    ("color_diffusion", _bc.color_diffusion, (1, 3, 6, 8, 12), "chroma blur amount"),
    ("color_shift", _bc.color_shift, (1, 3, 6, 8, 12), "green shift (px)"),
    ("color_quantization", _bc.color_quantization, (64, 48, 32, 16, 8), "palette colours"),
    ("color_saturation_1", _bc.color_saturation_1, (0.4, 0.2, 0.1, 0, -0.4), "HSV saturation factor"),
    ("color_saturation_2", _bc.color_saturation_2, (1, 2, 3, 6, 9), "Lab chroma factor"),
    ("jpeg2000", _nc.jpeg2000, (16, 32, 45, 120, 400), "compression ratio"),
    ("jpeg", _nc.jpeg, (43, 36, 24, 7, 4), "JPEG quality"),
    ("white_noise", _nc.white_noise, (0.001, 0.002, 0.003, 0.005, 0.01), "RGB noise variance"),
    ("white_noise_color_component", _nc.white_noise_color_component,
     (0.0001, 0.0005, 0.001, 0.002, 0.003), "YCbCr noise variance"),
    ("impulse_noise", _nc.impulse_noise, (0.001, 0.005, 0.01, 0.02, 0.03), "salt & pepper density"),
    ("multiplicative_noise", _nc.multiplicative_noise, (0.001, 0.005, 0.01, 0.02, 0.05), "speckle variance"),
    ("denoise", _nc.denoise, (0.01, 0.03, 0.05, 0.1, 0.15), "noise variance before TV denoising"),
    ("brighten", _ts.brighten, (0.1, 0.2, 0.4, 0.7, 1.1), "tone curve amount"),
    ("darken", _ts.darken, (0.05, 0.1, 0.2, 0.4, 0.8), "tone curve amount"),
    ("mean_shift", _ts.mean_shift, (0.03, 0.06, 0.09, 0.12, 0.15), "|shift|, random sign"),
    ("jitter", _ts.jitter, (0.05, 0.1, 0.2, 0.5, 1), "displacement std (px)"),
    ("non_eccentricity_patch", _ts.non_eccentricity_patch, (20, 40, 60, 80, 100), "moved 16x16 patches"),
    ("pixelate", _ts.pixelate, (0.01, 0.05, 0.1, 0.2, 0.5), "strength (scale 0.95-s^0.6)"),
    ("quantization", _ts.quantization, (20, 16, 13, 10, 7), "intensity thresholds"),
    ("color_block", _ts.color_block, (2, 4, 6, 8, 10), "32x32 colour blocks"),
    ("high_sharpen", _ts.high_sharpen, (1, 2, 3, 6, 12), "unsharp-mask amount"),
    ("contrast_change", _ts.contrast_change, (0.12, 0.24, 0.36, 0.48, 0.6), "|curve amount|, random sign"),
]

DISTORTION_TYPES: list[str] = [row[0] for row in _TABLE]
LEVELS: dict[str, tuple[float, ...]] = {row[0]: row[2] for row in _TABLE}
_BY_NAME = {row[0]: row for row in _TABLE}


def resolve_kind(kind: str | int) -> str:
    """Type name for a name or a 1-based KADID id; ``ConfigError`` naming the allowed values."""
    if isinstance(kind, (int, np.integer)) and not isinstance(kind, bool):
        if 1 <= int(kind) <= len(_TABLE):
            return _TABLE[int(kind) - 1][0]
    elif isinstance(kind, str) and kind in _BY_NAME:
        return kind
    raise ConfigError(
        f"unknown distortion type {kind!r}; allowed: ids 1..{len(_TABLE)} or names {DISTORTION_TYPES}"
    )


def check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= int(level) <= 5:
        raise ConfigError(f"distortion level {level!r} is not allowed; allowed levels: 1, 2, 3, 4, 5")
    return int(level)


def distort(image: np.ndarray, kind: str | int, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply KADID-10k distortion ``kind`` at ``level`` (1 = mildest .. 5 = strongest).

    image: (H,W,3) uint8. kind: name from ``DISTORTION_TYPES`` or 1-based KADID id.
    rng: ``np.random.Generator``; the only source of randomness. Returns (H,W,3) uint8.
    """
    name = resolve_kind(kind)
    level = check_level(level)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ConfigError(f"distort expects an (H,W,3) uint8 image, got {arr.shape} {arr.dtype}")
    _, func, params, _ = _BY_NAME[name]
    out = func(to_float(arr), params[level - 1], rng)
    return to_uint8(out)


def describe() -> list[dict]:
    """The type table: ``[{"id", "name", "parameter", "levels"}]`` in KADID order."""
    return [
        {"id": i + 1, "name": name, "parameter": what, "levels": list(params)}
        for i, (name, _, params, what) in enumerate(_TABLE)
    ]


def contact_sheet(image: np.ndarray, path, cell_px: int = 96, seed: int = 0) -> None:
    """Draw the 25x5 sheet (rows = types, columns = pristine + levels 1..5) to a PNG ``path``."""
    from diffiqa.data.distortions.sheet import draw_contact_sheet

    draw_contact_sheet(image, path, cell_px=cell_px, seed=seed)


__all__ = ["DISTORTION_TYPES", "LEVELS", "distort", "describe", "resolve_kind", "check_level", "contact_sheet"]
