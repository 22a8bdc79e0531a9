"""NIQE (Mittal, Soundararajan & Bovik 2013) in torch: opinion-unaware and differentiable.

The natural-scene model is a multivariate Gaussian (mean, covariance) of the 36 NSS features
of sharp patches of pristine photographs (``diffiqa/assets/niqe_pristine.npz``, fitted by
``benchmarks/fit_nss_priors.py`` on Kodak24 + CQ100). An image's quality is the distance
between that model and the Gaussian of its own patches' features:
    D = sqrt((mu_p - mu_x)^T ((S_p + S_x)/2)^+ (mu_p - mu_x)),
and the prior returns -D so that higher is better.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffiqa.enhance.priors import nss
from diffiqa.errors import ConfigError
from diffiqa.packaged import asset_path

DEFAULT_ASSET = "niqe_pristine.npz"


def fit_pristine_model(images, patch_size: int = 96, sharpness_fraction: float = 0.75) -> dict:
    """Fit the pristine MVG from an iterable of (H,W,3) uint8 images.

    Keeps, per image, the patches whose sharpness exceeds ``sharpness_fraction`` of that
    image's sharpest patch (as the original NIQE). Returns a dict of numpy arrays ready for
    ``np.savez``: ``mu`` (36,), ``cov`` (36,36), ``patch_size``, ``sharpness_fraction``, ``n_patches``.
    """
    feats = []
    with torch.no_grad():
        for img in images:
            x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].double() / 255.0
            f, sharp = nss.patch_features(x, patch_size)
            keep = sharp[0] > sharpness_fraction * sharp[0].max()
            feats.append(f[0][keep])
    allf = torch.cat(feats).numpy()
    if len(allf) < 2:
        raise ConfigError("fit_pristine_model: fewer than 2 sharp patches; give more or larger images")
    return {
        "mu": allf.mean(0),
        "cov": np.cov(allf, rowvar=False),
        "patch_size": np.int64(patch_size),
        "sharpness_fraction": np.float64(sharpness_fraction),
        "n_patches": np.int64(len(allf)),
    }


class NIQEPrior(nn.Module):
    """-NIQE. ``forward((N,3,H,W) in [0,1]) -> (N,)``, higher = better (0 is a perfect match).

    Each side of the image must be at least ``patch_size`` pixels (96 for the shipped model,
    unless another asset is given).
    """

    lower_better = False
    name = "niqe"

    def __init__(self, asset: str | Path | None = None):
        super().__init__()
        path = Path(asset) if asset is not None else asset_path(DEFAULT_ASSET)
        if not path.exists():
            raise ConfigError(f"{path}: NIQE pristine model not found; run benchmarks/fit_nss_priors.py")
        data = np.load(path)
        self.patch_size = int(data["patch_size"])
        self.register_buffer("mu", torch.from_numpy(data["mu"]).double())
        self.register_buffer("cov", torch.from_numpy(data["cov"]).double())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # float64: the covariance is ill-conditioned; single precision makes the distance noisy.
        feats, _ = nss.patch_features(images.double(), self.patch_size)
        out = []
        for f in feats:  # (P,36)
            mu_x = f.mean(0)
            cov_x = torch.cov(f.T) if f.shape[0] > 1 else torch.zeros_like(self.cov)
            diff = self.mu - mu_x
            pooled = (self.cov + cov_x) / 2
            dist2 = diff @ torch.linalg.pinv(pooled, hermitian=True) @ diff
            out.append(-torch.sqrt(dist2.clamp_min(1e-12)))
        return torch.stack(out).to(images.dtype)
