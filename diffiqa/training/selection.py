"""Nested selection of a recipe: candidates compared by cross-validation inside the training rows.

The outer test part of a split is never read: each candidate learner (``fit(rows) ->
model``, :mod:`diffiqa.training.stacking`) predicts every training row from a fit on the
other inner folds (its own hyperparameter CV nested inside that), the candidates are ranked
by the SRCC of those out-of-fold predictions over all training rows (the benchmark's metric;
pooled, not averaged per fold, so small folds do not add rank noise), and the winner is refit
on all training rows. Ties go to the earlier candidate: list the simpler recipes first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from diffiqa.training.stacking import Learner, Model, out_of_fold


@dataclass
class Selection:
    name: str
    scores: dict[str, float]  # inner out-of-fold SRCC of every candidate
    model: Model  # the winner refit on all training rows

    def predict(self, ids: np.ndarray) -> np.ndarray:
        return self.model.predict(ids)


def nested_select(candidates: Mapping[str, Learner], y: np.ndarray, rows: np.ndarray, folds: int = 5,
                  seed: int = 0) -> Selection:
    """Pick the candidate with the highest inner out-of-fold SRCC on ``rows``; refit it there."""
    if not candidates:
        raise ValueError("nested_select: no candidates")
    rows = np.asarray(rows, np.int64)
    P = out_of_fold(candidates, rows, folds, seed)
    target = np.asarray(y, np.float64)[rows]
    scores = {n: float(stats.spearmanr(P[:, j], target)[0]) for j, n in enumerate(candidates)}
    name = max(scores, key=lambda n: (scores[n], -list(candidates).index(n)))
    return Selection(name=name, scores=scores, model=candidates[name](rows))
