"""Stacked regression: non-negative weights on out-of-fold predictions of base learners.

Breiman (1996, "Stacked regressions"): each base learner predicts every training row from a
fit that never saw it (k-fold, each fold's fit doing its own hyperparameter CV inside its
training part, so nothing is chosen on the rows it predicts); non-negative least squares on
those predictions (with a free intercept) gives the weights; the base learners are then refit
on all rows and combined with them. Non-negativity keeps the combination an average-like
blend of predictors that each track quality, which is what stops it overfitting the way
unconstrained weights on strongly correlated predictions do.

A *learner* here is ``fit(rows) -> model``: given the row ids to fit on, it returns an object
with ``predict(ids)``. It owns its features and targets (closures over the data), so learners
on different features (backbones, scales) stack side by side.

``oof="learner"`` is the cheap variant: a learner whose model carries ``oof`` (the
out-of-fold predictions of its own hyperparameter CV, e.g.
:class:`diffiqa.training.kernel_ridge.KernelRidgeFit`) is fitted once, and the weights are
fitted on those predictions. They are out-of-fold, but at the hyperparameters chosen on them,
so slightly optimistic, alike for every learner; it costs one fit per learner instead of
folds + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.optimize import nnls

from diffiqa.training.ridge import fold_ids


class Model(Protocol):
    def predict(self, ids: np.ndarray) -> np.ndarray: ...


Learner = Callable[[np.ndarray], Model]
OOF_MODES = ("nested", "learner")


def out_of_fold(learners: Mapping[str, Learner], rows: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """(len(rows), len(learners)) predictions of each row by each learner fitted on the other folds."""
    rows = np.asarray(rows, np.int64)
    fid = fold_ids(len(rows), folds, seed)
    P = np.zeros((len(rows), len(learners)))
    for f in range(folds):
        tr, va = rows[fid != f], rows[fid == f]
        for j, fit in enumerate(learners.values()):
            P[fid == f, j] = fit(tr).predict(va)
    return P


def nnls_weights(P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights w >= 0 and a free intercept b minimising |P w + b - y|² -> (w, b)."""
    P = np.asarray(P, np.float64)
    y = np.asarray(y, np.float64)
    if P.ndim != 2 or len(P) != len(y):
        raise ValueError(f"P must be (n, learners) with n = len(y); got {P.shape} and {y.shape}")
    pm, ym = P.mean(0), float(y.mean())
    w, _ = nnls(P - pm, y - ym)  # centring makes the intercept free
    return w, ym - float(pm @ w)


@dataclass
class StackFit:
    names: tuple[str, ...]
    weights: np.ndarray  # (learners,) >= 0
    intercept: float
    models: tuple[Model | None, ...]  # each base learner fitted on all rows (None: zero weight, not fitted)
    base_oof: np.ndarray  # (n, learners) the out-of-fold predictions the weights were fitted on

    def predict(self, ids: np.ndarray) -> np.ndarray:
        out = np.full(len(ids), self.intercept)
        for w, m in zip(self.weights, self.models):
            if w > 0:  # a zero-weight learner is not evaluated
                out += w * m.predict(ids)
        return out


def stack(learners: Mapping[str, Learner], y: np.ndarray, rows: np.ndarray, folds: int = 5, seed: int = 0,
          oof: str = "nested") -> StackFit:
    """Stack ``learners`` on ``rows`` (``y`` indexed by row id). ``oof="nested"``: weights on
    :func:`out_of_fold` predictions, zero-weight learners not refit; ``"learner"``: on each
    learner's own CV predictions (module docstring)."""
    if not learners:
        raise ValueError("stack: no base learners")
    if oof not in OOF_MODES:
        raise ValueError(f"stack: oof must be one of {OOF_MODES}, got {oof!r}")
    rows = np.asarray(rows, np.int64)
    target = np.asarray(y, np.float64)[rows]
    if oof == "learner":
        models = tuple(fit(rows) for fit in learners.values())
        missing = [n for n, m in zip(learners, models) if getattr(m, "oof", None) is None]
        if missing:
            raise ValueError(f"stack(oof='learner'): learners {missing} give no out-of-fold predictions")
        P = np.stack([m.oof for m in models], 1)
        w, b = nnls_weights(P, target)
        return StackFit(names=tuple(learners), weights=w, intercept=b, models=models, base_oof=P)
    P = out_of_fold(learners, rows, folds, seed)
    w, b = nnls_weights(P, target)
    models = tuple(fit(rows) if wj > 0 else None for wj, fit in zip(w, learners.values()))
    return StackFit(names=tuple(learners), weights=w, intercept=b, models=models, base_oof=P)


def stacked_learner(learners: Mapping[str, Learner], y: np.ndarray, folds: int = 5, seed: int = 0,
                    oof: str = "nested") -> Learner:
    """The stack itself as a learner (to be compared with others by :mod:`diffiqa.training.selection`)."""

    def fit(rows: np.ndarray) -> StackFit:
        return stack(learners, y, rows, folds, seed, oof)

    return fit


def kernel_learner(kernels, y: np.ndarray, alphas=None, folds: int = 5, seed: int = 0) -> Learner:
    """Kernel ridge on a grid of precomputed (N,N) ``kernels`` (:mod:`diffiqa.training.kernel_ridge`):
    kernel and strength by CV inside the rows it is fitted on. ``alphas`` default: the RBF grid."""
    from diffiqa.training.kernel_ridge import DEFAULT_ALPHAS, kernel_ridge_cv

    def fit(rows: np.ndarray):
        return kernel_ridge_cv(kernels, y, rows, DEFAULT_ALPHAS if alphas is None else alphas, folds, seed)

    return fit
