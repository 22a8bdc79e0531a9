"""How much of the branches to add to the skip path, chosen without test data.

On a few hundred images the branches trained on the ridge residual can subtract accuracy
(benchmarks/RESULTS.md, "Accuracy (CLIVE)"), so the model's score is
``skip + g * branches`` with ``g`` picked from a small grid by k-fold cross-validation on the
rows it is trained on: each fold trains the branches on the other folds (with their own
ridge skip path) and predicts its held-out rows; ``g`` minimises the mean squared error of
``skip + g * branches`` over all held-out rows (every training image is scored once, by a
model that never saw it). The final model is then trained on all rows and scaled by ``g``;
``g = 0`` is the skip path exactly.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from diffiqa.errors import ConfigError
from diffiqa.training.ridge import fold_ids

# fit_predict(inner rows, held-out rows) -> (skip prediction, branch part) of the held-out rows
FitPredict = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def gain_errors(skip: np.ndarray, branches: np.ndarray, target: np.ndarray, gains: Sequence[float]) -> dict[float, float]:
    """Mean squared error of ``skip + g * branches`` against ``target`` for every ``g``."""
    skip, branches, target = (np.asarray(a, np.float64) for a in (skip, branches, target))
    return {float(g): float(((skip + g * branches - target) ** 2).mean()) for g in gains}


def pick_gain(errors: dict[float, float]) -> float:
    """The gain of least error; ties go to the smaller gain (the simpler model)."""
    return min(errors, key=lambda g: (errors[g], g))


def choose_head_gain(rows: np.ndarray, target: np.ndarray, gains: Sequence[float], folds: int, seed: int,
                     fit_predict: FitPredict) -> dict:
    """k-fold choice of ``g`` among ``gains`` on ``rows`` (``target``: their quality).

    -> ``{"gain", "errors": {g: held-out MSE}, "skip", "branches"}`` (held-out predictions in
    ``rows`` order). One candidate: no folds are trained.
    """
    gains = [float(g) for g in gains]
    if not gains or any(not g >= 0 for g in gains):
        raise ConfigError(f"train.head_gains must be numbers >= 0, got {gains}")
    rows = np.asarray(rows, dtype=np.int64)
    target = np.asarray(target, np.float64)
    if len(gains) == 1:
        return {"gain": gains[0], "errors": {}, "skip": None, "branches": None}
    fid = fold_ids(len(rows), folds, seed)
    skip, branches = np.zeros(len(rows)), np.zeros(len(rows))
    for f in range(folds):
        held = fid == f
        s, b = fit_predict(rows[~held], rows[held])
        skip[held], branches[held] = s, b
    errors = gain_errors(skip, branches, target, gains)
    return {"gain": pick_gain(errors), "errors": errors, "skip": skip, "branches": branches}
