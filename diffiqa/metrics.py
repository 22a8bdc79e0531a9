"""IQA agreement metrics: SRCC, KRCC, PLCC and RMSE after the VQEG 4-parameter logistic fit.

Predictions and MOS are 1-D arrays of equal length (at least 4 finite values, neither
constant). PLCC and RMSE are computed between the *fitted* predictions
``f(pred) = (b1 - b2) / (1 + exp(-(pred - b3) / |b4|)) + b2`` and the MOS, so RMSE is on the
MOS scale. If the fit fails, the fitted values fall back to a linear fit (and PLCC to the
linear PLCC) with a logged warning.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.special import expit
from scipy import optimize, stats

from diffiqa.errors import DiffiqaError

log = logging.getLogger(__name__)


def _check(pred, mos) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    mos = np.asarray(mos, dtype=np.float64).ravel()
    if pred.shape != mos.shape:
        raise DiffiqaError(f"metrics: {pred.size} predictions for {mos.size} MOS values")
    if pred.size < 4:
        raise DiffiqaError(f"metrics: need at least 4 (prediction, MOS) pairs, got {pred.size}")
    for name, a in (("predictions", pred), ("MOS", mos)):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise DiffiqaError(f"metrics: {name} contain NaN/inf at positions {bad[:5].tolist()}")
        if np.ptp(a) == 0:
            raise DiffiqaError(f"metrics: {name} are constant ({a[0]}); correlations are undefined")
    return pred, mos


def logistic4(x, b1, b2, b3, b4):
    """VQEG 4-parameter logistic: ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    # expit is the same function without exp overflow warnings for far-out x during the fit
    return (b1 - b2) * expit((x - b3) / np.abs(b4)) + b2


def logistic4_fit(pred, mos) -> tuple[np.ndarray | None, np.ndarray]:
    """Fit :func:`logistic4` from ``pred`` to ``mos`` -> ``(params b1..b4, fitted (n,))``.

    Initial values: b1/b2 at the MOS max/min (swapped for a decreasing relation), b3 at the
    mean prediction, b4 at the prediction std. On failure ``params`` is None and ``fitted``
    is the least-squares linear fit (a warning is logged).
    """
    pred, mos = _check(pred, mos)
    increasing = stats.pearsonr(pred, mos)[0] >= 0
    hi, lo = (mos.max(), mos.min()) if increasing else (mos.min(), mos.max())
    p0 = [hi, lo, pred.mean(), pred.std() or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow in exp for far-out points is harmless
            params, _ = optimize.curve_fit(logistic4, pred, mos, p0=p0, maxfev=20000)
        fitted = logistic4(pred, *params)
        if not np.all(np.isfinite(fitted)) or np.ptp(fitted) == 0:
            raise RuntimeError("degenerate fit")
        return params, fitted
    except (RuntimeError, ValueError, optimize.OptimizeWarning) as exc:
        log.warning("logistic fit failed (%s); using a linear fit for PLCC/RMSE", exc)
        slope, intercept = np.polyfit(pred, mos, 1)
        return None, slope * pred + intercept


def srcc(pred, mos) -> float:
    """Spearman rank correlation."""
    pred, mos = _check(pred, mos)
    return float(stats.spearmanr(pred, mos)[0])


def krcc(pred, mos) -> float:
    """Kendall rank correlation (tau-b)."""
    pred, mos = _check(pred, mos)
    return float(stats.kendalltau(pred, mos)[0])


def plcc(pred, mos) -> float:
    """Pearson correlation between the logistic-fitted predictions and the MOS."""
    _, fitted = logistic4_fit(pred, mos)
    return float(stats.pearsonr(fitted, np.asarray(mos, dtype=np.float64).ravel())[0])


def rmse(pred, mos) -> float:
    """Root-mean-square error between the logistic-fitted predictions and the MOS (MOS scale)."""
    _, fitted = logistic4_fit(pred, mos)
    return float(np.sqrt(np.mean((fitted - np.asarray(mos, dtype=np.float64).ravel()) ** 2)))


def all_metrics(pred, mos) -> dict[str, float]:
    """``{"srcc", "krcc", "plcc", "rmse"}`` (one logistic fit shared by PLCC and RMSE)."""
    pred, mos = _check(pred, mos)
    _, fitted = logistic4_fit(pred, mos)
    return {
        "srcc": float(stats.spearmanr(pred, mos)[0]),
        "krcc": float(stats.kendalltau(pred, mos)[0]),
        "plcc": float(stats.pearsonr(fitted, mos)[0]),
        "rmse": float(np.sqrt(np.mean((fitted - mos) ** 2))),
    }


def summarize(results: Iterable[dict[str, float]], keys: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Per-split metric dicts -> ``{metric: {"mean", "std"}}`` (population std; 0 for one split)."""
    results = list(results)
    if not results:
        raise DiffiqaError("metrics: nothing to summarize (no splits)")
    keys = list(keys or results[0].keys())
    out = {}
    for k in keys:
        values = np.array([r[k] for r in results], dtype=np.float64)
        out[k] = {"mean": float(values.mean()), "std": float(values.std())}
    return out
