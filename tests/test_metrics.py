"""diffiqa.metrics: against scipy, known values, the logistic fit, bad inputs."""

import logging

import numpy as np
import pytest
from scipy import stats

from diffiqa import metrics
from diffiqa.errors import DiffiqaError


@pytest.fixture
def noisy_pair():
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 60)
    pred = 0.3 * mos + rng.normal(0, 0.2, 60)
    return pred, mos


def test_rank_metrics_match_scipy(noisy_pair):
    pred, mos = noisy_pair
    assert metrics.srcc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos)[0])
    assert metrics.krcc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos)[0])


def test_plcc_and_rmse_use_the_logistic_fit(noisy_pair):
    pred, mos = noisy_pair
    params, fitted = metrics.logistic4_fit(pred, mos)
    assert params is not None and params.shape == (4,)
    np.testing.assert_allclose(fitted, metrics.logistic4(pred, *params))
    assert metrics.plcc(pred, mos) == pytest.approx(stats.pearsonr(fitted, mos)[0])
    assert metrics.rmse(pred, mos) == pytest.approx(np.sqrt(np.mean((fitted - mos) ** 2)))
    # the fit maps predictions onto the MOS scale: far better than the raw predictions
    assert metrics.rmse(pred, mos) < np.sqrt(np.mean((pred - mos) ** 2)) / 2


def test_perfect_and_reversed_monotone():
    x = np.linspace(0, 1, 20)
    mos = np.exp(3 * x)  # monotone but not linear
    for name in ("srcc", "krcc"):
        assert getattr(metrics, name)(x, mos) == pytest.approx(1.0)
        assert getattr(metrics, name)(-x, mos) == pytest.approx(-1.0)
    linear_mos = 1 + 4 * x
    assert metrics.plcc(x, linear_mos) == pytest.approx(1.0, abs=1e-4)
    # a decreasing prediction is fitted by a decreasing curve: PLCC measures the fit quality
    assert metrics.plcc(-x, linear_mos) == pytest.approx(1.0, abs=1e-4)


def test_logistic_plcc_beats_linear_on_a_sigmoid():
    rng = np.random.default_rng(1)
    pred = np.sort(rng.uniform(-6, 6, 80))
    mos = 1 + 4 / (1 + np.exp(-1.5 * pred)) + rng.normal(0, 0.02, 80)
    linear = stats.pearsonr(pred, mos)[0]
    fitted = metrics.plcc(pred, mos)
    assert fitted > 0.99 > linear + 0.03


def test_all_metrics_and_summarize(noisy_pair):
    pred, mos = noisy_pair
    m = metrics.all_metrics(pred, mos)
    assert set(m) == {"srcc", "krcc", "plcc", "rmse"}
    assert m["plcc"] == pytest.approx(metrics.plcc(pred, mos))
    s = metrics.summarize([m, {k: v + 0.1 for k, v in m.items()}])
    assert s["srcc"]["mean"] == pytest.approx(m["srcc"] + 0.05)
    assert s["srcc"]["std"] == pytest.approx(0.05)
    with pytest.raises(DiffiqaError):
        metrics.summarize([])


def test_fit_failure_falls_back_to_linear(monkeypatch, caplog, noisy_pair):
    pred, mos = noisy_pair

    def fail(*a, **k):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics.optimize, "curve_fit", fail)
    with caplog.at_level(logging.WARNING, logger="diffiqa.metrics"):
        params, _ = metrics.logistic4_fit(pred, mos)
        value = metrics.plcc(pred, mos)
    assert params is None
    assert value == pytest.approx(stats.pearsonr(pred, mos)[0])
    assert "linear" in caplog.text


@pytest.mark.parametrize(
    "pred, mos, message",
    [
        ([1, 2, np.nan, 4, 5], [1, 2, 3, 4, 5], "NaN"),
        ([1, 2, 3, 4, 5], [2, 2, 2, 2, 2], "constant"),
        ([3, 3, 3, 3, 3], [1, 2, 3, 4, 5], "constant"),
        ([1, 2, 3], [1, 2, 3], "at least 4"),
        ([1, 2, 3, 4], [1, 2, 3, 4, 5], "predictions for"),
    ],
)
def test_bad_inputs_raise_clear_errors(pred, mos, message):
    for fn in (metrics.srcc, metrics.plcc, metrics.all_metrics):
        with pytest.raises(DiffiqaError, match=message):
            fn(pred, mos)
