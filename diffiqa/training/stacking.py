"""Stacked regression: non-negative weights on out-of-fold predictions of base learners.

Breiman (1996, "Stacked regressions"): each base learner predicts every training row from a
fit that never saw it (k-fold, each fold's fit doing its own hyperparameter CV inside its
training part, so nothing is chosen on the rows it predicts); non-negative least squares on
those predictions (with a free intercept) gives the weights; the base learners are then refit
on all rows and combined with them. Non-negativity keeps the combination an average-like
blend of predictors that each track quality, which is what stops it overfitting the way
unconstrained weights on strongly correlated predictions do.

A *learner* here is ``fit(rows) -> predict``: given the row ids to fit on, it returns a
function from row ids to predictions. It owns its features and targets (closures over the
data), so learners on different features (backbones, scales) stack side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from diffiqa.training.ridge import fold_ids

Predict = Callable[[np.ndarray], np.ndarray]
Learner = Callable[[np.ndarray], Predict]


def out_of_fold(learners: Mapping[str, Learner], rows: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """(len(rows), len(learners)) predictions of each row by each learner fitted on the other folds."""
    rows = np.asarray(rows, np.int64)
    fid = fold_ids(len(rows), folds, seed)
    P = np.zeros((len(rows), len(learners)))
    for f in range(folds):
        tr, va = rows[fid != f], rows[fid == f]
        for j, fit in enumerate(learners.values()):
            P[fid == f, j] = fit(tr)(va)
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
    predictors: tuple[Predict, ...]  # each base learner refit on all rows
    oof: np.ndarray  # (n, learners) the out-of-fold predictions the weights were fitted on

    def predict(self, rows: np.ndarray) -> np.ndarray:
        out = np.full(len(rows), self.intercept)
        for w, p in zip(self.weights, self.predictors):
            if w > 0:  # a zero-weight learner is not evaluated
                out += w * p(rows)
        return out


def stack(learners: Mapping[str, Learner], y: np.ndarray, rows: np.ndarray, folds: int = 5, seed: int = 0) -> StackFit:
    """Stack ``learners`` on ``rows`` (``y`` indexed by row id); zero-weight learners are not refit."""
    if not learners:
        raise ValueError("stack: no base learners")
    rows = np.asarray(rows, np.int64)
    P = out_of_fold(learners, rows, folds, seed)
    w, b = nnls_weights(P, np.asarray(y, np.float64)[rows])
    preds = tuple(fit(rows) if wj > 0 else _unused for wj, fit in zip(w, learners.values()))
    return StackFit(names=tuple(learners), weights=w, intercept=b, predictors=preds, oof=P)


def _unused(rows: np.ndarray) -> np.ndarray:
    raise RuntimeError("a zero-weight learner is not refit")


def stacked_learner(learners: Mapping[str, Learner], y: np.ndarray, folds: int = 5, seed: int = 0) -> Learner:
    """The stack itself as a learner (to be compared with others by :mod:`diffiqa.training.selection`)."""

    def fit(rows: np.ndarray) -> Predict:
        return stack(learners, y, rows, folds, seed).predict

    return fit


def ridge_learner(X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> Learner:
    """Ridge on ``X`` (rows = row ids), strength by CV inside the rows it is fitted on."""
    from diffiqa.training.ridge import ridge_cv

    def fit(rows: np.ndarray) -> Predict:
        f = ridge_cv(X[rows], y[rows], folds=folds, seed=seed)
        return lambda r: f.predict(X[r])

    return fit


def kernel_ridge_learner(X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0, **grid) -> Learner:
    """RBF kernel ridge on ``X``, width and strength by CV inside the rows it is fitted on."""
    from diffiqa.training.kernel_ridge import kernel_ridge_cv

    def fit(rows: np.ndarray) -> Predict:
        f = kernel_ridge_cv(X[rows], y[rows], folds=folds, seed=seed, **grid)
        return lambda r: f.predict(X[r])

    return fit
