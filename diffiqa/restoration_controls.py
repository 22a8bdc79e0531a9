"""Restorations that need no restorer, run through the restorer's own cache path: the controls
that say what diffusion guidance adds (DESIGN §5: the guidance counts only for what it adds over
the same Gaussian noise on the distorted image, and over a classical restoration)."""

from __future__ import annotations

import numpy as np
import torch


class FixedRestoration(torch.nn.Module):
    """A "restorer" whose answer does not depend on the noisy state: it predicts the residual
    ``fn(cond) - cond``, so any chain of a residual net ends at ``fn(cond)`` exactly.
    ``fn``: (N,3,H,W) in [-1,1] -> the same shape."""

    prediction = "residual"
    conditional = True

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, cond, gamma):
        return self.fn(cond) - cond


def identity(cond: torch.Tensor) -> torch.Tensor:
    return cond


def wavelet_denoise(cond: torch.Tensor) -> torch.Tensor:
    """BayesShrink wavelet denoising in YCbCr, sigma estimated per image (scikit-image)."""
    from skimage.restoration import denoise_wavelet

    out = []
    for x in ((cond.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy().astype(np.float64):
        out.append(denoise_wavelet(x, channel_axis=-1, convert2ycbcr=True, method="BayesShrink", mode="soft",
                                   rescale_sigma=True))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().clamp(0, 1) * 2 - 1


CONTROLS = {"none": identity, "wavelet": wavelet_denoise}
