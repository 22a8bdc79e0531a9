"""Kernel ridge regression with the kernel and strength chosen by k-fold cross-validation.

The strongest frozen read-out of pooled backbone features on CLIVE (``benchmarks/accuracy.py``
row ``lite012_krr``), and the base learner of :mod:`diffiqa.training.stacking`.

The fit takes a *grid of precomputed kernels* over a fixed set of items (e.g. every image of
a data set) and the row ids to fit on: ``(kernel, alpha)`` come from the grid, scored by the
k-fold mean squared error of the out-of-fold predictions (intercept = the training mean, as in
:mod:`diffiqa.training.ridge`); one eigendecomposition of each fold's kernel serves every
``alpha``. Precomputing lets nested cross-validation (stacking, recipe selection) reuse one
kernel matrix per split instead of a distance matrix per inner fit. Two kernels of pooled
features ``X`` standardised on the split's training rows (``standardise``):

- RBF ``exp(-g |x - z|² / p)`` for a grid of widths ``g`` (``rbf_kernels``);
- linear ``Z Z'`` (``linear_kernel``): kernel ridge with it is ridge regression on ``Z``
  (the dual of :func:`diffiqa.training.ridge.ridge_cv` with the same strengths).

Standardising on all training rows (not per inner fold) reads no targets, only features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diffiqa.training.ridge import DEFAULT_ALPHAS as RIDGE_ALPHAS
from diffiqa.training.ridge import fold_ids

DEFAULT_GAMMAS = tuple(float(g) for g in 2.0 ** np.arange(-6, 2))
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-8, 1, 19))  # for the RBF kernels (values in (0, 1])


def standardise(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """All of ``X (N,p)`` standardised with the mean and std of ``rows`` (constant columns: scale 1)."""
    X = np.asarray(X, np.float64)
    mean, scale = X[rows].mean(0), X[rows].std(0)
    return (X - mean) / np.where(scale > 1e-12, scale, 1.0)


def sq_distances(Z: np.ndarray) -> np.ndarray:
    """(N,N) squared Euclidean distances of the rows of ``Z (N,p)`` divided by ``p``."""
    sq = (Z * Z).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * Z @ Z.T, 0.0) / Z.shape[1]


def rbf_kernels(Z: np.ndarray, gammas=DEFAULT_GAMMAS) -> list[np.ndarray]:
    D = sq_distances(Z)
    return [np.exp(-g * D) for g in gammas]


def linear_kernel(Z: np.ndarray) -> list[np.ndarray]:
    return [Z @ Z.T]


@dataclass
class KernelRidgeFit:
    """``predict(ids) = kernels[kernel][ids, rows] @ dual + intercept``; ``cv_mse`` is
    (len(kernels), len(alphas)); ``oof`` the out-of-fold predictions of the chosen pair."""

    kernel: int
    alpha: float
    rows: np.ndarray
    dual: np.ndarray
    intercept: float
    cv_mse: np.ndarray
    oof: np.ndarray
    K: np.ndarray  # (N, N) the chosen kernel (a reference, not a copy)

    def predict(self, ids: np.ndarray) -> np.ndarray:
        return self.K[np.ix_(np.asarray(ids, np.int64), self.rows)] @ self.dual + self.intercept


def kernel_ridge_cv(kernels: Sequence[np.ndarray], y: np.ndarray, rows: np.ndarray, alphas=DEFAULT_ALPHAS,
                    folds: int = 5, seed: int = 0) -> KernelRidgeFit:
    """Fit on ``rows`` of ``y (N,)`` with ``(kernel, alpha)`` by ``folds``-fold CV MSE (the first of
    ties); refit on all ``rows``. ``kernels``: (N,N) symmetric PSD matrices over the same items."""
    rows = np.asarray(rows, np.int64)
    y = np.asarray(y, np.float64)
    alphas = np.asarray(alphas, np.float64)
    if not kernels or any(K.shape != (len(y), len(y)) for K in kernels):
        raise ValueError(f"kernels must be a non-empty list of ({len(y)},{len(y)}) matrices")
    fid = fold_ids(len(rows), folds, seed)
    oof = np.zeros((len(kernels), len(alphas), len(rows)))
    for ki, K in enumerate(kernels):
        for f in range(folds):
            tr, va = rows[fid != f], rows[fid == f]
            ym = y[tr].mean()
            evals, evecs = np.linalg.eigh(K[np.ix_(tr, tr)])
            proj = evecs.T @ (y[tr] - ym)
            duals = (proj[None, :] / (np.maximum(evals, 0.0)[None, :] + alphas[:, None])) @ evecs.T  # (A, n_tr)
            oof[ki][:, fid == f] = duals @ K[np.ix_(tr, va)] + ym
    cv_mse = ((oof - y[rows]) ** 2).mean(-1)
    ki, ai = np.unravel_index(int(np.argmin(cv_mse)), cv_mse.shape)
    K, a, ym = kernels[ki], float(alphas[ai]), float(y[rows].mean())
    dual = np.linalg.solve(K[np.ix_(rows, rows)] + a * np.eye(len(rows)), y[rows] - ym)
    return KernelRidgeFit(kernel=int(ki), alpha=a, rows=rows, dual=dual, intercept=ym, cv_mse=cv_mse,
                          oof=oof[ki, ai], K=K)


def rbf_ridge_cv(X: np.ndarray, y: np.ndarray, rows: np.ndarray, gammas=DEFAULT_GAMMAS, alphas=DEFAULT_ALPHAS,
                 folds: int = 5, seed: int = 0) -> tuple[KernelRidgeFit, float]:
    """RBF kernel ridge on features ``X (N,p)`` standardised on ``rows`` -> (fit, chosen width)."""
    fit = kernel_ridge_cv(rbf_kernels(standardise(X, rows), gammas), y, rows, alphas, folds, seed)
    return fit, float(gammas[fit.kernel])


__all__ = ["DEFAULT_ALPHAS", "DEFAULT_GAMMAS", "RIDGE_ALPHAS", "KernelRidgeFit", "kernel_ridge_cv", "linear_kernel",
           "rbf_kernels", "rbf_ridge_cv", "sq_distances", "standardise"]
