"""BRISQUE-style prior: the 36 NSS features of the whole image -> a small MLP -> quality.

Trained on human opinion scores (the shipped asset ``brisque_clive.npz``: crops of CLIVE's
split-1 training images at the size the enhancement uses, MOS 0-100; see
``benchmarks/fit_nss_priors.py`` for the held-out SRCC on the split's test images). The MLP
is trained *through* ``100 * sigmoid(.)`` so its MOS prediction is bounded (an unbounded MLP
was pushed to absurd scores by adversarial noise); ``forward`` returns the logit (the raw
score) and ``build_prior`` applies the sigmoid (calibration entry a = 0, b = 1). The original
BRISQUE uses an SVR; an MLP in torch keeps the prior differentiable with respect to the pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffiqa.enhance.priors import nss
from diffiqa.packaged import asset_path
from diffiqa.errors import ConfigError

DEFAULT_ASSET = "brisque_clive.npz"


def make_regressor(hidden: int = 32) -> nn.Sequential:
    """36 standardised features -> 1 score (the MLP the asset stores)."""
    return nn.Sequential(nn.Linear(nss.NUM_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, 1))


def regressor_to_arrays(reg: nn.Sequential, feat_mean, feat_std, extra: dict) -> dict:
    """Everything the asset holds, as numpy arrays (npz: no pickle, loads safely)."""
    arrays = {f"w{i}_{k}": v.detach().cpu().numpy() for i, layer in enumerate(reg) if isinstance(layer, nn.Linear)
              for k, v in layer.state_dict().items()}
    arrays.update(feat_mean=np.asarray(feat_mean), feat_std=np.asarray(feat_std))
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    return arrays


class BRISQUEPrior(nn.Module):
    """The MLP's logit of MOS/100 (higher = better). ``forward((N,3,H,W) in [0,1]) -> (N,)``."""

    lower_better = False
    name = "brisque"

    def __init__(self, asset: str | Path | None = None):
        super().__init__()
        path = Path(asset) if asset is not None else asset_path(DEFAULT_ASSET)
        if not path.exists():
            raise ConfigError(f"{path}: BRISQUE regressor not found; run benchmarks/fit_nss_priors.py")
        data = np.load(path)
        hidden = data["w0_weight"].shape[0]
        self.regressor = make_regressor(hidden).double()
        for i in (0, 2):
            self.regressor[i].weight.data = torch.from_numpy(data[f"w{i}_weight"]).double()
            self.regressor[i].bias.data = torch.from_numpy(data[f"w{i}_bias"]).double()
        self.regressor.requires_grad_(False)
        self.register_buffer("feat_mean", torch.from_numpy(data["feat_mean"]).double())
        self.register_buffer("feat_std", torch.from_numpy(data["feat_std"]).double())
        self.trained_on = str(data["trained_on"]) if "trained_on" in data else "unknown"
        self.crop_size = int(data["crop_size"]) if "crop_size" in data else 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = nss.image_features(images.double())
        z = (feats - self.feat_mean) / self.feat_std
        return self.regressor(z)[:, 0].to(images.dtype)
