"""One bounded scale for every prior: predicted MOS on 0-100 (issue 13, item 2).

Raw prior scores live on unrelated scales (-NIQE distance ~ -3..-40, a squared restoration gap
~ -1e-3..-0.3, the scorer's quality ~ 0..1), so lambda, sigma and fusion weights meant
different things for each. Each prior is mapped by a logistic fitted to human opinion scores:

    Q(x) = 100 * sigmoid((raw(x) - a) / b)

with (a, b) fitted by least squares on CLIVE's human-rated *training* part (split 1 of the
prepared CLIVE splits, the split of the packaged scorer), at the crop size the comparison uses
(``benchmarks/fit_nss_priors.py``). The comparison only enhances images outside that part, so
fusion (a weighted mean of bounded scores) is calibrated on images it never enhances. The
table ships as ``diffiqa/assets/prior_calibration.json``; an entry that names a model file
(the restorer of the restoration gap, the scorer) records its sha256, and a mismatch is
logged: the logistic then still bounds the prior but its MOS units are approximate.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffiqa.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_ASSET = "prior_calibration.json"
SCALE = 100.0


def calibration_path() -> Path:
    from diffiqa.packaged import asset_path

    return asset_path(DEFAULT_ASSET)


def load_table(path: str | Path | None = None) -> dict:
    """The calibration table ({prior name: {"a", "b", ...}, "_meta": {...}}); {} if absent."""
    p = Path(path) if path is not None else calibration_path()
    if not p.exists():
        return {}
    with open(p) as f:
        return json.load(f)


def fit_logistic(raw: np.ndarray, mos: np.ndarray) -> dict:
    """Least-squares (a, b) of ``100 sigmoid((raw - a)/b)`` to MOS (0-100). -> {"a", "b", "rmse", "srcc", "n"}."""
    from scipy.optimize import least_squares
    from scipy.stats import spearmanr

    raw, mos = np.asarray(raw, np.float64), np.asarray(mos, np.float64)
    if len(raw) < 3 or not np.isfinite(raw).all() or raw.std() == 0:
        raise ConfigError(f"cannot fit a logistic to {len(raw)} raw scores (need >= 3 finite, not all equal)")
    srcc = float(spearmanr(raw, mos)[0])
    sign = 1.0 if srcc >= 0 else -1.0

    def resid(p):
        return SCALE / (1 + np.exp(-np.clip((raw - p[0]) / p[1], -60, 60))) - mos

    best = None
    for a0 in np.quantile(raw, [0.25, 0.5, 0.75]):
        for scale in (0.5, 1.0, 3.0):
            fit = least_squares(resid, x0=[a0, sign * scale * raw.std()])
            if best is None or fit.cost < best.cost:
                best = fit
    a, b = (float(v) for v in best.x)
    return {"a": a, "b": b, "rmse": float(np.sqrt(np.mean(resid(best.x) ** 2))), "srcc": srcc, "n": int(len(raw))}


class BoundedPrior(nn.Module):
    """``100 * sigmoid((raw(x) - a) / b)``: predicted MOS in (0, 100), higher = better.

    ``raw``: a prior module (higher = better, any scale); its ``name`` is kept.
    """

    lower_better = False

    def __init__(self, raw: nn.Module, a: float, b: float):
        super().__init__()
        if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
            raise ConfigError(f"calibration of {getattr(raw, 'name', 'prior')!r}: a={a}, b={b} are not usable")
        self.raw = raw
        self.name = getattr(raw, "name", "prior")
        self.a, self.b = float(a), float(b)
        self.patch_size = getattr(raw, "patch_size", 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return SCALE * torch.sigmoid((self.raw(images) - self.a) / self.b)


def bound(raw: nn.Module, table: dict | None = None, model_sha256: str | None = None) -> BoundedPrior:
    """Wrap ``raw`` with its fitted logistic from ``table`` (default: the shipped asset)."""
    table = load_table() if table is None else table
    name = getattr(raw, "name", "prior")
    entry = table.get(name)
    if entry is None:
        raise ConfigError(f"prior {name!r} has no entry in the calibration table {calibration_path()}; "
                          "run benchmarks/fit_nss_priors.py --calibrate")
    want = entry.get("model_sha256")
    if want and model_sha256 and want != model_sha256:
        log.warning("calibration of prior %r was fitted for model %s... but this one is %s...: the 0-100 "
                    "scale is approximate; refit with benchmarks/fit_nss_priors.py --calibrate",
                    name, want[:12], model_sha256[:12])
    return BoundedPrior(raw, entry["a"], entry["b"])
