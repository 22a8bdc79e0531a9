"""Fusion of several priors: a weighted mean of their bounded (0-100 MOS) scores.

Every prior is first put on one scale, predicted MOS fitted on CLIVE's human-rated training
part (``calibration``), so a plain weighted mean is meaningful and stays in 0-100; nothing is
calibrated on the images being enhanced. (The earlier z-scores were computed on the very
photos the comparison enhanced, and on raw scales a -NIQE distance ~ -10 and a restoration
gap ~ 1e-3 met.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffiqa.errors import ConfigError


class FusedPrior(nn.Module):
    """``forward((N,3,H,W) in [0,1]) -> (N,)`` = sum_i w_i Q_i(x) / sum_i w_i; higher = better.

    Members must be higher-better and on the same scale (``build_prior(..., bounded=True)``);
    priors with weight 0 are not run."""

    lower_better = False

    def __init__(self, priors: Sequence[nn.Module], weights: Sequence[float]):
        super().__init__()
        if len(priors) != len(weights) or not priors:
            raise ConfigError(f"fusion needs one weight per prior: {len(priors)} priors, {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"fusion weights must be >= 0 and not all 0, got {list(weights)}")
        for p in priors:
            if getattr(p, "lower_better", False):
                raise ConfigError(f"prior {p.name!r} is lower-better; wrap it so that higher is better first")
        self.priors = nn.ModuleList(priors)
        total = float(sum(weights))
        self.register_buffer("weights", torch.tensor([float(w) / total for w in weights], dtype=torch.float64))
        self.name = "fusion(" + "+".join(f"{p.name}:{w:g}" for p, w in zip(priors, weights)) + ")"

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> (N, n_priors) member scores (0 where the weight is 0)."""
        cols = []
        for i, prior in enumerate(self.priors):
            if self.weights[i] == 0:
                cols.append(images.new_zeros(images.shape[0], dtype=torch.float64))
            else:
                cols.append(prior(images).double())
        return torch.stack(cols, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.scores(images) * self.weights).sum(1).to(images.dtype)
