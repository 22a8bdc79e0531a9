"""diffiqa.comparison: the corrected resampled t-test on inputs checked by hand."""

import math

import pytest

from diffiqa.comparison import corrected_resampled_ttest, paired_comparison, split_sizes
from diffiqa.errors import DiffiqaError


def test_three_splits_by_hand():
    # d = [1, 2, 3]: mean 2, s² = 1; n_test/n_train = 25/75 = 1/3, so var = (1/3 + 1/3)·1 = 2/3
    # and t = 2 / sqrt(2/3) = sqrt(6). With df = 2 Student's t has the closed form
    # p = 1 - |t| / sqrt(2 + t²) = 1 - sqrt(6/8).
    a, b = {0: 3.0, 1: 5.0, 2: 4.0, 7: 9.0}, {0: 2.0, 1: 3.0, 2: 1.0}  # split 7 only in a: ignored
    c = paired_comparison(a, b, n_train=75, n_test=25)
    assert (c.n, c.won, c.lost) == (3, 3, 0)
    assert c.mean == pytest.approx(2.0)
    assert c.se == pytest.approx(1 / math.sqrt(3))
    assert c.se_corrected == pytest.approx(math.sqrt(2 / 3))
    assert c.t == pytest.approx(math.sqrt(6))
    assert c.p == pytest.approx(1 - math.sqrt(6 / 8))


def test_correction_widens_the_ordinary_paired_test():
    # ratio 0 is the ordinary paired t-test: t = 2 / (1/sqrt(3)) = 2·sqrt(3), p = 1 - t/sqrt(2 + t²)
    t0, p0, _ = corrected_resampled_ttest([1.0, 2.0, 3.0], 0.0)
    assert t0 == pytest.approx(2 * math.sqrt(3))
    assert p0 == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14))
    t1, p1, _ = corrected_resampled_ttest([1.0, 2.0, 3.0], 0.25)
    assert t1 < t0 and p1 > p0


def test_signs_ties_and_degenerate_variance():
    c = paired_comparison({0: 1.0, 1: 1.0, 2: 0.0}, {0: 0.5, 1: 1.0, 2: 0.5}, n_train=4, n_test=1)
    assert (c.won, c.lost, c.mean) == (1, 1, 0.0)
    assert c.t == 0.0 and c.p == pytest.approx(1.0)
    t, p, se = corrected_resampled_ttest([0.1, 0.1, 0.1], 0.2)
    assert (t, p, se) == (math.inf, 0.0, 0.0)
    assert corrected_resampled_ttest([0.0, 0.0], 0.2)[1] == 1.0


def test_bad_inputs_raise():
    with pytest.raises(DiffiqaError, match="at least 2"):
        paired_comparison({0: 1.0}, {0: 0.0}, 10, 2)
    with pytest.raises(DiffiqaError, match="NaN"):
        corrected_resampled_ttest([0.1, float("nan")], 0.2)
    with pytest.raises(DiffiqaError, match="positive"):
        paired_comparison({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}, 0, 2)


def test_split_sizes_count_val_as_training():
    splits = [{"train": [0, 1, 2], "val": [3], "test": [4]}, {"train": [0, 1], "val": [2, 3], "test": [4, 5]}]
    assert split_sizes(splits) == (4.0, 1.5)
    assert split_sizes(splits, [1]) == (4.0, 2.0)
