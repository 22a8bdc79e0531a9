"""RBF kernel ridge regression with width and strength chosen by k-fold cross-validation.

The strongest frozen read-out of pooled backbone features on CLIVE (``benchmarks/accuracy.py``
row ``lite012_krr``), and a base learner of :mod:`diffiqa.training.stacking`. Features are
standardised on the training rows; the kernel is ``k(x, z) = exp(-g |x - z|² / p)`` (``p``
features, so ``g`` is a width on the scale of one standardised feature). ``(g, alpha)`` come
from a grid scored by the k-fold mean squared error of the out-of-fold predictions (the
intercept is the training mean, as for :mod:`diffiqa.training.ridge`). One eigendecomposition
of each fold's kernel serves every ``alpha`` of the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffiqa.training.ridge import fold_ids

DEFAULT_GAMMAS = tuple(float(g) for g in 2.0 ** np.arange(-6, 2))
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-8, 1, 19))


def _sq_dist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(n,m) squared Euclidean distances divided by the number of features."""
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d, 0.0) / A.shape[1]


@dataclass
class KernelRidgeFit:
    """``predict(X) = exp(-gamma D(Z(X), Z_train)) @ dual + intercept``, Z standardised with
    the training rows' ``mean`` / ``scale``; ``cv_mse`` is (len(gammas), len(alphas))."""

    gamma: float
    alpha: float
    train: np.ndarray  # (n, p) standardised training features
    dual: np.ndarray  # (n,)
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    cv_mse: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, np.float64) - self.mean) / self.scale
        return np.exp(-self.gamma * _sq_dist(Z, self.train)) @ self.dual + self.intercept


def _solve_all(evals, evecs, y_centred, alphas) -> np.ndarray:
    """Dual coefficients ``(K + a I)^-1 y`` for every alpha -> (A, n), from K = V diag(evals) V'."""
    proj = evecs.T @ y_centred  # (n,)
    return (proj[None, :] / (np.maximum(evals, 0.0)[None, :] + np.asarray(alphas)[:, None])) @ evecs.T


def kernel_ridge_cv(X: np.ndarray, y: np.ndarray, gammas=DEFAULT_GAMMAS, alphas=DEFAULT_ALPHAS, folds: int = 5,
                    seed: int = 0) -> KernelRidgeFit:
    """Fit on ``X (n,p)``, ``y (n,)`` with ``(gamma, alpha)`` by ``folds``-fold CV MSE (first of ties);
    refit on all rows."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n,p) with n = len(y); got {X.shape} and {y.shape}")
    mean, scale = X.mean(0), X.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = (X - mean) / scale
    # folds see the all-rows standardisation: a per-fold one would cost a distance matrix per fold
    # and per gamma, and it shifts the features by far less than their spread at these sizes
    D = _sq_dist(Z, Z)
    fid = fold_ids(len(y), folds, seed)
    sse = np.zeros((len(gammas), len(alphas)))
    for gi, g in enumerate(gammas):
        K = np.exp(-g * D)
        for f in range(folds):
            tr, va = np.flatnonzero(fid != f), np.flatnonzero(fid == f)
            ym = y[tr].mean()
            evals, evecs = np.linalg.eigh(K[np.ix_(tr, tr)])
            duals = _solve_all(evals, evecs, y[tr] - ym, alphas)  # (A, n_tr)
            pred = duals @ K[np.ix_(tr, va)] + ym  # (A, n_va)
            sse[gi] += ((pred - y[va][None, :]) ** 2).sum(1)
    gi, ai = np.unravel_index(int(np.argmin(sse)), sse.shape)
    g, a = float(gammas[gi]), float(alphas[ai])
    ym = float(y.mean())
    dual = np.linalg.solve(np.exp(-g * D) + a * np.eye(len(y)), y - ym)
    return KernelRidgeFit(gamma=g, alpha=a, train=Z, dual=dual, intercept=ym, mean=mean, scale=scale,
                          cv_mse=sse / len(y))
