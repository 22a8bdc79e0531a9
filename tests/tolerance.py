"""Tolerances for results computed two ways in floating point (issue 24: no test may pass or
fail by the machine it runs on).

A float32 result computed along two paths (another batch size, thread count, conv algorithm
or BLAS kernel) differs by rounding that depends on the summation order, so an absolute
``atol=1e-4`` passes on one machine and fails on another. The tolerances here scale with what
the rounding acts on: the magnitude of the terms that are summed, and the precision of the
dtype they are stored in.
"""

from __future__ import annotations

import numpy as np
import torch

# Relative error of float32 features between two computations of the same network on the same
# pixels when the batch composition, thread count or machine changes the conv/GEMM algorithm:
# measured up to ~1e-4 (tests/test_head_gain.py on two 2-core machines); 10x margin.
REORDER_RTOL = 1e-3


def eps(dtype) -> float:
    """Machine epsilon of a torch or numpy floating dtype (float16: ~1e-3, float32: ~1.2e-7)."""
    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype).eps)
    return float(np.finfo(dtype).eps)


def ridge_tol(coef, X, scale, rel: float) -> np.ndarray:
    """Per row, the change a relative error ``rel`` in every feature (or in each product of the
    sum) makes in ``((X - mean) / scale) @ coef``: ``rel * sum_j |coef_j| |X_ij| / scale_j``.
    The features enter before centring, so their rounding is relative to |X|, not |X - mean|."""
    X = np.asarray(X, np.float64)
    return rel * (np.abs(np.asarray(coef, np.float64)) * np.abs(X) / np.asarray(scale, np.float64)).sum(1)


def sum_rtol(n_terms: int, dtype) -> float:
    """Relative rounding of a length-``n_terms`` sum in ``dtype``, with orders that differ:
    a few epsilons per term, growing like sqrt(n) (random-walk rounding), times a margin of 16."""
    return 16.0 * np.sqrt(n_terms) * eps(dtype)


def assert_within(got, want, tol, what: str = "") -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    gap = np.abs(got - want)
    assert (gap <= tol).all(), f"{what}: |got - want| {gap.max():.3g} > tolerance {np.min(tol):.3g}"
