"""Kernel ridge CV, stacking and the nested selection at tiny shapes."""

import numpy as np
import pytest
from scipy import stats

from diffiqa.training.kernel_ridge import (RIDGE_ALPHAS, kernel_ridge_cv, linear_kernel, rbf_kernels, rbf_ridge_cv,
                                           standardise)
from diffiqa.training.ridge import fold_ids, ridge_cv
from diffiqa.training.selection import nested_select
from diffiqa.training.stacking import kernel_learner, nnls_weights, out_of_fold, stack, stacked_learner


def krr(x, y, gammas=(0.5, 2.0), alphas=(1e-2, 1e-1), rows=None):
    return kernel_learner(rbf_kernels(standardise(x, np.arange(len(y)) if rows is None else rows), gammas), y, alphas,
                          folds=3)


def lin(x, y):
    return kernel_learner(linear_kernel(standardise(x, np.arange(len(y)))), y, RIDGE_ALPHAS, folds=3)


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
    rows = np.arange(len(y))
    fit, width = rbf_ridge_cv(x, y, rows, gammas, alphas, folds=4, seed=1)
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
    assert (width, fit.alpha) == (gammas[gi], alphas[ai])
    # the nonlinear target is learnt: fitted predictions track it closely
    assert stats.pearsonr(fit.predict(rows), y)[0] > 0.95


def test_linear_kernel_ridge_is_ridge_regression(data):
    x, y, noise = data
    X = np.concatenate([x, noise], 1)
    rows = np.arange(40)
    fit = kernel_ridge_cv(linear_kernel(standardise(X, rows)), y, rows, RIDGE_ALPHAS, folds=5, seed=0)
    ref = ridge_cv(X[rows], y[rows], RIDGE_ALPHAS, folds=5, seed=0)
    assert fit.alpha == ref.alpha
    test = np.arange(40, 60)
    assert fit.predict(test) == pytest.approx(ref.predict(X[test]), abs=1e-8)
    with pytest.raises(ValueError, match="matrices"):
        kernel_ridge_cv([np.eye(3)], y, rows)


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

    class Spy:
        def predict(self, r):
            seen.append(("predict", set(r.tolist())))
            return np.zeros(len(r))

    def spy(rows):
        seen.append(set(rows.tolist()))
        return Spy()

    rows = np.arange(10, 40)
    P = out_of_fold({"spy": spy}, rows, folds=3)
    assert P.shape == (30, 1)
    fitted = [s for s in seen if not isinstance(s, tuple)]
    predicted = [s[1] for s in seen if isinstance(s, tuple)]
    assert len(fitted) == 3 and all(not (f & p) for f, p in zip(fitted, predicted))
    assert set().union(*predicted) == set(rows.tolist())


def test_stack_weights_the_informative_learner_and_skips_zero_weights(data):
    x, y, noise = data
    learners = {"krr": krr(x, y), "noise": lin(noise, y)}
    rows = np.arange(50)
    fit = stack(learners, y, rows, folds=3)
    assert fit.names == ("krr", "noise") and fit.base_oof.shape == (50, 2)
    assert fit.weights[0] > 0.8 and np.all(fit.weights >= 0)
    test = np.arange(50, 60)
    assert stats.pearsonr(fit.predict(test), y[test])[0] > 0.9
    # a learner whose weight is zero is never refit
    fits = []

    class Zero:
        def predict(self, q):
            return np.zeros(len(q))

    const = {"krr": learners["krr"], "const": lambda r: (fits.append(len(r)), Zero())[1]}
    fit = stack(const, y, rows, folds=3)
    assert fit.weights[1] == 0 and fit.models[1] is None and sorted(fits) == [33, 33, 34]
    assert fit.predict(test).shape == (10,)


def test_stack_on_the_learners_own_cv_predictions(data):
    x, y, noise = data
    rows = np.arange(50)
    learners = {"krr": krr(x, y), "noise": lin(noise, y)}
    fit = stack(learners, y, rows, oof="learner")
    # the weights sit on each learner's own CV predictions, and each learner is fitted once
    ref = [learners[n](rows) for n in learners]
    assert fit.base_oof == pytest.approx(np.stack([m.oof for m in ref], 1))
    assert fit.predict(np.arange(50, 60)) == pytest.approx(
        fit.intercept + sum(w * m.predict(np.arange(50, 60)) for w, m in zip(fit.weights, ref)))
    assert fit.weights[0] > 0.8

    class NoOOF:
        def predict(self, q):
            return np.zeros(len(q))

    with pytest.raises(ValueError, match="no out-of-fold"):
        stack({"a": lambda r: NoOOF()}, y, rows, oof="learner")
    with pytest.raises(ValueError, match="oof must be"):
        stack(learners, y, rows, oof="both")


def test_nested_select_picks_by_inner_cv_and_never_reads_test_rows(data):
    x, y, noise = data
    touched = set()

    class Watched:
        def __init__(self, model):
            self.model = model

        def predict(self, r):
            touched.update(r.tolist())
            return self.model.predict(r)

    def watched(learner):
        def fit(rows):
            touched.update(rows.tolist())
            return Watched(learner(rows))
        return fit

    train = np.arange(45)
    candidates = {"noise": watched(lin(noise, y)),
                  "stack": watched(stacked_learner({"krr": krr(x, y, (1.0,), (1e-2,), rows=train), "lin": lin(x, y)},
                                                   y, folds=3))}
    sel = nested_select(candidates, y, train, folds=3)
    assert sel.name == "stack" and sel.scores["stack"] > sel.scores["noise"]
    assert touched <= set(train.tolist())
    test = np.arange(45, 60)
    assert stats.spearmanr(sel.predict(test), y[test])[0] > 0.8
