"""Kernel ridge CV, stacking and the nested selection at tiny shapes."""

import numpy as np
import pytest
from scipy import stats

from diffiqa.training.kernel_ridge import kernel_ridge_cv
from diffiqa.training.ridge import fold_ids
from diffiqa.training.selection import nested_select
from diffiqa.training.stacking import (kernel_ridge_learner, nnls_weights, out_of_fold, ridge_learner, stack,
                                       stacked_learner)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n = 60
    x = rng.uniform(-1, 1, (n, 2))
    y = np.sin(3 * x[:, 0]) + 0.5 * x[:, 1] + rng.normal(0, 0.05, n)
    noise = rng.normal(size=(n, 3))
    return x, y, noise


def test_kernel_ridge_eigen_cv_equals_direct_solves(data):
    x, y, _ = data
    gammas, alphas = (0.5, 2.0), (1e-3, 1e-1, 1.0)
    fit = kernel_ridge_cv(x, y, gammas, alphas, folds=4, seed=1)
    Z = (x - x.mean(0)) / x.std(0)
    D = ((Z[:, None] - Z[None]) ** 2).sum(-1) / 2
    fid = fold_ids(len(y), 4, 1)
    for gi, g in enumerate(gammas):
        K = np.exp(-g * D)
        for ai, a in enumerate(alphas):
            err = 0.0
            for f in range(4):
                tr, va = fid != f, fid == f
                c = np.linalg.solve(K[np.ix_(tr, tr)] + a * np.eye(tr.sum()), y[tr] - y[tr].mean())
                err += ((K[np.ix_(va, tr)] @ c + y[tr].mean() - y[va]) ** 2).sum()
            assert fit.cv_mse[gi, ai] == pytest.approx(err / len(y), rel=1e-6)
    gi, ai = np.unravel_index(np.argmin(fit.cv_mse), fit.cv_mse.shape)
    assert (fit.gamma, fit.alpha) == (gammas[gi], alphas[ai])
    # the nonlinear target is learnt: fitted predictions track it closely
    assert stats.pearsonr(fit.predict(x), y)[0] > 0.95


def test_nnls_weights_recover_a_scaled_learner_and_drop_the_rest(data):
    _, y, noise = data
    P = np.stack([2 * y + 3, noise[:, 0], -y], 1)
    w, b = nnls_weights(P, y)
    assert w == pytest.approx([0.5, 0.0, 0.0], abs=1e-9)
    assert b == pytest.approx(-1.5)
    with pytest.raises(ValueError, match="learners"):
        nnls_weights(P[:5], y)


def test_out_of_fold_never_predicts_a_row_it_was_fitted_on(data):
    _, y, _ = data
    seen = []

    def spy(rows):
        seen.append(set(rows.tolist()))
        return lambda r: (seen.append(("predict", set(r.tolist()))), np.zeros(len(r)))[1]

    rows = np.arange(10, 40)
    P = out_of_fold({"spy": spy}, rows, folds=3)
    assert P.shape == (30, 1)
    fitted = [s for s in seen if not isinstance(s, tuple)]
    predicted = [s[1] for s in seen if isinstance(s, tuple)]
    assert len(fitted) == 3 and all(not (f & p) for f, p in zip(fitted, predicted))
    assert set().union(*predicted) == set(rows.tolist())


def test_stack_weights_the_informative_learner_and_skips_zero_weights(data):
    x, y, noise = data
    learners = {"krr": kernel_ridge_learner(x, y, gammas=(0.5, 2.0), alphas=(1e-2, 1e-1)),
                "noise": ridge_learner(noise, y)}
    rows = np.arange(50)
    fit = stack(learners, y, rows, folds=3)
    assert fit.names == ("krr", "noise") and fit.oof.shape == (50, 2)
    assert fit.weights[0] > 0.8 and np.all(fit.weights >= 0)
    test = np.arange(50, 60)
    assert stats.pearsonr(fit.predict(test), y[test])[0] > 0.9
    # a learner whose weight is zero is never refit (its predictor raises if called)
    const = {"krr": learners["krr"], "const": lambda r: (lambda q: np.zeros(len(q)))}
    fit = stack(const, y, rows, folds=3)
    assert fit.weights[1] == 0 and fit.predict(test).shape == (10,)


def test_nested_select_picks_by_inner_cv_and_never_reads_test_rows(data):
    x, y, noise = data
    touched = set()

    def watched(learner):
        def fit(rows):
            touched.update(rows.tolist())
            p = learner(rows)
            return lambda r: (touched.update(r.tolist()), p(r))[1]
        return fit

    candidates = {"noise": watched(ridge_learner(noise, y)),
                  "stack": watched(stacked_learner({"krr": kernel_ridge_learner(x, y, gammas=(1.0,), alphas=(1e-2,)),
                                                    "lin": ridge_learner(x, y)}, y, folds=3))}
    train = np.arange(45)
    sel = nested_select(candidates, y, train, folds=3)
    assert sel.name == "stack" and sel.scores["stack"] > sel.scores["noise"]
    assert touched <= set(train.tolist())
    test = np.arange(45, 60)
    assert stats.spearmanr(sel.predict(test), y[test])[0] > 0.8
