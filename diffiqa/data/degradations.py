"""Camera degradations: what authentic photographs suffer from, for the restorer's training
pairs (drawn at random, on the fly) and for its held-out benchmark (fixed families and levels).

A camera blurs (defocus, shake, soft optics), sets an exposure, adds sensor noise whose
variance grows with the signal (Poisson shot noise plus Gaussian read noise), quantises to 8
bits and compresses to JPEG — in that order, which is the order used here (JPEG always last,
as in a camera; the stages are drawn independently, as in the second-order pipelines of BSRGAN
and Real-ESRGAN). Images are float (H, W, 3) in [0, 1] unless said otherwise.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import signal

from diffiqa.errors import ConfigError

# Blur kernels are cut to this side; the widest ones (motion 15 px, sigma 3) fit.
KERNEL_SIDE = 21
# Pixels around a training crop that are blurred with it and cut away (no border effects).
MARGIN = KERNEL_SIDE // 2


def gaussian_kernel(sigma_x: float, sigma_y: float, angle: float, side: int = KERNEL_SIDE) -> np.ndarray:
    """Anisotropic Gaussian (std ``sigma_x`` along ``angle`` radians, ``sigma_y`` across), sums to 1."""
    r = np.arange(side) - side // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def disk_kernel(radius: float, side: int = KERNEL_SIDE) -> np.ndarray:
    """Defocus: a uniform disk of ``radius`` px, anti-aliased by 8x supersampling, sums to 1."""
    fine = (np.arange(side * 8) + 0.5) / 8 - side / 2
    yy, xx = np.meshgrid(fine, fine, indexing="ij")
    inside = (xx**2 + yy**2 <= max(radius, 0.5) ** 2).astype(np.float64)
    k = inside.reshape(side, 8, side, 8).mean(axis=(1, 3))
    return k / k.sum()


def motion_kernel(length: float, angle: float, side: int = KERNEL_SIDE) -> np.ndarray:
    """Camera shake along a straight line of ``length`` px at ``angle`` radians, sums to 1."""
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, max(2, int(16 * length)))
    c = side // 2
    k = np.zeros((side + 1, side + 1))
    ys, xs = c + t * np.sin(angle), c + t * np.cos(angle)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, wy in ((0, 1 - fy), (1, fy)):  # bilinear splat: sub-pixel lines stay smooth
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(k, (np.clip(y0 + dy, 0, side), np.clip(x0 + dx, 0, side)), wy * wx)
    k = k[:side, :side]
    return k / k.sum()


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with ``kernel``; edges reflected; same size out."""
    p = kernel.shape[0] // 2
    padded = np.pad(image, ((p, p), (p, p), (0, 0)), mode="reflect")
    return signal.fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1))


def sensor_noise(image: np.ndarray, read_std: float, shot: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian noise: variance ``shot * x + read_std**2`` per pixel (x in [0,1]).
    ``gray``: one noise field for all channels (luminance noise), else per channel."""
    std = np.sqrt(shot * np.clip(image, 0.0, 1.0) + read_std**2)
    shape = image.shape[:2] + ((1,) if gray else (3,))
    return image + std * rng.standard_normal(shape)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def jpeg(image_u8: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at ``quality`` (Pillow, 4:2:0 chroma as cameras write): uint8 in and out.
    The block grid starts at the array's top-left corner."""
    buf = io.BytesIO()
    Image.fromarray(image_u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


@dataclass(frozen=True)
class CameraMix:
    """How random training degradations are drawn. Each stage is applied with its own
    probability; ``identity`` of the samples stay clean (a restorer must leave them alone),
    and a sample whose draws selected no stage gets blur (so identity has exactly its share).

    Ranges: Gaussian blur std (isotropic or not) ``blur_sigma``; defocus radius
    ``defocus_radius``; motion length ``motion_length`` px; read noise std ``read_noise``
    (log-uniform, in [0,1] units); shot-noise gain ``shot_noise`` (variance per unit signal);
    JPEG quality ``jpeg_quality`` (a share ``jpeg_high`` of the JPEG draws use 60-95 instead:
    mild compression must not be over-corrected); exposure gain ``exposure_gain`` (log-uniform).
    """

    identity: float = 0.08
    blur: float = 0.6
    noise: float = 0.55
    jpeg: float = 0.45
    exposure: float = 0.1
    blur_sigma: tuple[float, float] = (0.3, 3.0)
    defocus_radius: tuple[float, float] = (0.7, 4.0)
    motion_length: tuple[float, float] = (2.0, 15.0)
    read_noise: tuple[float, float] = (1.0 / 255, 40.0 / 255)
    shot_noise: tuple[float, float] = (0.0, 0.02)
    gray_noise: float = 0.3
    jpeg_quality: tuple[int, int] = (10, 60)
    jpeg_high: float = 0.25
    exposure_gain: tuple[float, float] = (0.6, 1.5)

    def __post_init__(self):
        for name in ("identity", "blur", "noise", "jpeg", "exposure", "gray_noise", "jpeg_high"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"CameraMix.{name}={getattr(self, name)!r}: expected a probability in [0, 1]")
        for name in ("blur_sigma", "defocus_radius", "motion_length", "read_noise", "shot_noise", "jpeg_quality", "exposure_gain"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConfigError(f"CameraMix.{name}={getattr(self, name)!r}: expected 0 <= low <= high")


def random_kernel(mix: CameraMix, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One blur kernel drawn from the four families of camera blur -> (kernel, family)."""
    family = rng.choice(["gaussian", "anisotropic", "defocus", "motion"], p=[0.3, 0.2, 0.25, 0.25])
    angle = rng.uniform(0, np.pi)
    if family == "gaussian":
        s = rng.uniform(*mix.blur_sigma)
        return gaussian_kernel(s, s, 0.0), family
    if family == "anisotropic":
        return gaussian_kernel(rng.uniform(*mix.blur_sigma), rng.uniform(*mix.blur_sigma), angle), family
    if family == "defocus":
        return disk_kernel(rng.uniform(*mix.defocus_radius)), family
    return motion_kernel(rng.uniform(*mix.motion_length), angle), family


def _log_uniform(lo: float, hi: float, rng: np.random.Generator) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if lo > 0 else float(rng.uniform(lo, hi))


def random_degradation(patch: np.ndarray, mix: CameraMix, rng: np.random.Generator, margin: int = MARGIN) -> tuple[np.ndarray, dict]:
    """Degrade the centre of ``patch`` like a camera would.

    patch: (S + 2 margin, S + 2 margin, 3) float in [0,1] (the margin is blurred with the crop and
    cut away, so the crop has no border effects) -> (uint8 (S, S, 3) degraded crop, record of the
    draws). The clean target is ``patch[margin:-margin, margin:-margin]``.
    """
    stages = {k: rng.random() < getattr(mix, k) for k in ("blur", "noise", "jpeg", "exposure")}
    clean = rng.random() < mix.identity
    if not clean and not any(stages.values()):
        stages["blur"] = True
    record: dict = {"identity": bool(clean)}
    x = patch
    if not clean and stages["blur"]:
        kernel, record["blur"] = random_kernel(mix, rng)
        x = blur(x, kernel)
    x = x[margin : x.shape[0] - margin, margin : x.shape[1] - margin] if margin else x
    if clean:
        return to_uint8(x), record
    if stages["exposure"]:
        record["exposure"] = _log_uniform(*mix.exposure_gain, rng)
        x = x * record["exposure"]
    if stages["noise"]:
        read, shot = _log_uniform(*mix.read_noise, rng), float(rng.uniform(*mix.shot_noise))
        record["noise"] = (read, shot)
        x = sensor_noise(x, read, shot, bool(rng.random() < mix.gray_noise), rng)
    out = to_uint8(x)
    if stages["jpeg"]:
        lo, hi = (60, 95) if rng.random() < mix.jpeg_high else mix.jpeg_quality
        record["jpeg"] = int(rng.integers(lo, hi + 1))
        out = jpeg(out, record["jpeg"])
    return out, record


# The benchmark's fixed families and levels (parameter per level). "mixture" is a camera at
# dusk: mild defocus, then noise, then JPEG.
NAMED_LEVELS: dict[str, tuple] = {
    "identity": (None,),
    "gaussian_blur": (0.5, 1.0, 1.5, 2.0, 3.0),  # sigma px
    "defocus_blur": (1.0, 2.0, 3.0),  # disk radius px
    "motion_blur": (5.0, 9.0, 15.0),  # length px
    "awgn": (5.0, 15.0, 25.0, 50.0),  # sigma of 255
    "poisson_gaussian": (0.002, 0.006, 0.015),  # shot gain, with read noise 3/255
    "jpeg": (60, 40, 30, 20, 10),  # quality (levels go from mild to severe, as every family)
    "exposure": (0.6, 0.8, 1.25),  # gain
    "mixture": (1, 2, 3),
}


def named_degradation(image: np.ndarray, family: str, level: int, seed: int = 0) -> np.ndarray:
    """Degrade a whole image (float (H,W,3) in [0,1]) by benchmark ``family`` at ``level``
    (1-based index into NAMED_LEVELS[family]) -> uint8 (H,W,3). Deterministic in ``seed``.
    Crops of the result should start at multiples of 8 so JPEG blocks stay aligned."""
    if family not in NAMED_LEVELS:
        raise ConfigError(f"degradation family {family!r}: known families are {sorted(NAMED_LEVELS)}")
    values = NAMED_LEVELS[family]
    if not 1 <= level <= len(values):
        raise ConfigError(f"{family} level {level}: expected 1..{len(values)}")
    v, rng = values[level - 1], np.random.default_rng([seed, level])
    if family == "identity":
        return to_uint8(image)
    if family == "gaussian_blur":
        return to_uint8(blur(image, gaussian_kernel(v, v, 0.0)))
    if family == "defocus_blur":
        return to_uint8(blur(image, disk_kernel(v)))
    if family == "motion_blur":
        return to_uint8(blur(image, motion_kernel(v, np.pi / 6)))
    if family == "awgn":
        return to_uint8(image + v / 255.0 * rng.standard_normal(image.shape))
    if family == "poisson_gaussian":
        return to_uint8(sensor_noise(image, 3.0 / 255, v, False, rng))
    if family == "jpeg":
        return jpeg(to_uint8(image), v)
    if family == "exposure":
        return to_uint8(image * v)
    radius, noise, quality = {1: (1.0, 4.0, 60), 2: (1.5, 8.0, 40), 3: (2.0, 12.0, 25)}[v]
    x = blur(image, disk_kernel(radius)) + noise / 255.0 * rng.standard_normal(image.shape)
    return jpeg(to_uint8(x), quality)
