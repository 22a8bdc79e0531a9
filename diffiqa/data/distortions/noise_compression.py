"""KADID-10k types 9-15: compression (JPEG 2000, JPEG), noises, and denoising.

Functions take float (H,W,3) in [0,1], the level's parameter and a numpy Generator, and
return float (H,W,3) in [0,1]. Noise variances are on the [0,1] scale, as MATLAB's imnoise.
"""

from __future__ import annotations

import numpy as np
from skimage import color, restoration

from diffiqa.data.distortions._common import clip01, pil_roundtrip


def jpeg2000(image: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG 2000 at compression ratio ``ratio``:1 (OpenJPEG through Pillow, in memory)."""
    # Very small crops cannot hold the default 6 wavelet levels; use what fits.
    levels = int(max(1, min(5, np.floor(np.log2(max(min(image.shape[:2]), 2))) - 2)))
    return pil_roundtrip(
        image, "JPEG2000", quality_mode="rates", quality_layers=[float(ratio)], num_resolutions=levels + 1
    )


def jpeg(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """Baseline JPEG at ``quality`` (libjpeg scale 1-100, 4:2:0 chroma as MATLAB's imwrite)."""
    return pil_roundtrip(image, "JPEG", quality=int(quality), subsampling=2)


def white_noise(image: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of variance ``var``, independent per RGB sample."""
    return clip01(image + rng.normal(0.0, np.sqrt(var), image.shape))


def white_noise_color_component(image: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of variance ``var`` in YCbCr (MATLAB's [0,1]-scaled YCbCr)."""
    ycbcr = color.rgb2ycbcr(image) / 255.0
    ycbcr = ycbcr + rng.normal(0.0, np.sqrt(var), ycbcr.shape)
    return clip01(color.ycbcr2rgb(ycbcr * 255.0))


def impulse_noise(image: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: a fraction ``density`` of the samples set to 0 or 1 (half each)."""
    u = rng.random(image.shape)
    out = image.copy()
    out[u < density / 2.0] = 0.0
    out[(u >= density / 2.0) & (u < density)] = 1.0
    return out


def multiplicative_noise(image: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    """Speckle: I + n*I with n uniform, zero mean, variance ``var`` (MATLAB imnoise 'speckle')."""
    half_width = np.sqrt(3.0 * var)
    return clip01(image * (1.0 + rng.uniform(-half_width, half_width, image.shape)))


def denoise(image: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    """Over-smoothing from denoising: Gaussian noise of variance ``var``, then a denoiser.

    KADID uses MATLAB's pre-trained DnCNN per channel. We use total-variation denoising
    (Chambolle) with a weight that follows the noise std, which leaves the same kind of
    artefact (lost texture, flat patches) without a network; ~30-60 ms at 256^2.
    """
    noisy = clip01(image + rng.normal(0.0, np.sqrt(var), image.shape)).astype(np.float32)
    return clip01(restoration.denoise_tv_chambolle(noisy, weight=0.9 * np.sqrt(var), channel_axis=-1))
