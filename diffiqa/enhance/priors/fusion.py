"""Fusion of several priors: z-score each on a reference set, then a weighted sum.

Priors live on unrelated scales (-NIQE distance ~ -3..-20, predicted MOS 0..100, a squared
restoration gap ~ 1e-3), so a raw sum would be ruled by whichever is largest. Each prior's
mean and standard deviation over one reference set of images are computed once (``calibrate``)
and stored as buffers (saved with the module's state_dict, or as JSON via ``normalisation``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from diffiqa.errors import ConfigError


class FusedPrior(nn.Module):
    """``forward((N,3,H,W) in [0,1]) -> (N,)`` = sum_i w_i (Q_i(x) - mean_i) / std_i; higher = better.

    Every member must have ``lower_better = False``. Call ``calibrate`` (or
    ``load_normalisation``) before scoring.
    """

    lower_better = False

    def __init__(self, priors: Sequence[nn.Module], weights: Sequence[float]):
        super().__init__()
        if len(priors) != len(weights) or not priors:
            raise ConfigError(f"fusion needs one weight per prior: {len(priors)} priors, {len(weights)} weights")
        for p in priors:
            if getattr(p, "lower_better", False):
                raise ConfigError(f"prior {p.name!r} is lower-better; wrap it so that higher is better first")
        self.priors = nn.ModuleList(priors)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights], dtype=torch.float64))
        self.register_buffer("mean", torch.full((len(priors),), float("nan"), dtype=torch.float64))
        self.register_buffer("std", torch.full((len(priors),), float("nan"), dtype=torch.float64))
        self.name = "fusion(" + "+".join(f"{p.name}:{w:g}" for p, w in zip(priors, weights)) + ")"

    @torch.no_grad()
    def calibrate(self, reference: torch.Tensor, batch_size: int = 4) -> dict:
        """Mean/std of each prior over ``reference`` (M,3,H,W) in [0,1], M >= 2. -> ``normalisation()``."""
        if reference.shape[0] < 2:
            raise ConfigError("fusion calibration needs at least 2 reference images")
        for i, prior in enumerate(self.priors):
            scores = torch.cat([prior(reference[s:s + batch_size]).double() for s in range(0, len(reference), batch_size)])
            std = scores.std()
            if not torch.isfinite(std) or std <= 0:
                raise ConfigError(f"prior {prior.name!r} gives the same score to every reference image; cannot normalise")
            self.mean[i], self.std[i] = scores.mean(), std
        return self.normalisation()

    def normalisation(self) -> dict:
        return {p.name: {"mean": float(m), "std": float(s)} for p, m, s in zip(self.priors, self.mean, self.std)}

    def load_normalisation(self, table: dict) -> None:
        for i, p in enumerate(self.priors):
            if p.name not in table:
                raise ConfigError(f"normalisation table has no entry for prior {p.name!r}")
            self.mean[i], self.std[i] = table[p.name]["mean"], table[p.name]["std"]

    def normalised_scores(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> (N, n_priors) z-scores (weights not applied); priors with weight 0 are not run."""
        if torch.isnan(self.mean).any():
            raise ConfigError(f"{self.name}: not calibrated; call calibrate(reference_images) first")
        cols = []
        for i, prior in enumerate(self.priors):
            if self.weights[i] == 0:
                cols.append(images.new_zeros(images.shape[0], dtype=torch.float64))
            else:
                cols.append((prior(images).double() - self.mean[i]) / self.std[i])
        return torch.stack(cols, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.normalised_scores(images) * self.weights).sum(1).to(images.dtype)


def reference_images(size: int = 128, seed: int = 0) -> torch.Tensor:
    """A reference set that ships with scikit-image: centre crops of its colour photographs,
    each clean, blurred and noisy (so scores spread) -> (M,3,size,size) float32 in [0,1]."""
    from scipy.ndimage import gaussian_filter
    from skimage import data
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        img = np.asarray(getattr(data, name)())[..., :3].astype(np.float64) / 255.0
        s = min(img.shape[:2])
        top, left = (img.shape[0] - s) // 2, (img.shape[1] - s) // 2
        img = resize(img[top:top + s, left:left + s], (size, size), anti_aliasing=True)
        out += [img, gaussian_filter(img, sigma=(1.5, 1.5, 0)), np.clip(img + rng.normal(0, 0.06, img.shape), 0, 1)]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().contiguous()
