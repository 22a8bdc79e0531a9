"""Paired comparison of two models scored on the same repeated train/test splits.

Per split j the two models give scores a_j and b_j (e.g. test SRCC); the differences
d_j = a_j - b_j are summarised as mean ± standard error, the number of splits won, and the
**corrected resampled t-test** of Nadeau & Bengio (2003, "Inference for the generalization
error"). The splits are random resamplings of one data set, so their training sets (and
often their test sets) overlap and the d_j are positively correlated: the ordinary paired
t-test, with variance s²/J, then grossly overstates certainty. Nadeau & Bengio inflate it to

    var = (1/J + n_test/n_train) · s²,   t = mean(d) / sqrt(var),   df = J - 1,

where s² is the sample variance of the d_j (ddof = 1), J the number of splits and
n_test/n_train the ratio of test to training set sizes of one split. The p-value is two-sided
from Student's t (``scipy.stats.t``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from diffiqa.errors import DiffiqaError


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Differences a - b over ``n`` splits.

    ``se`` is the naive standard error s/sqrt(J) (what "mean ± s.e." has always meant in the
    tables); ``se_corrected`` the Nadeau-Bengio one behind ``t`` and ``p``. ``won`` counts
    splits with a > b, ``lost`` those with a < b (ties count as neither).
    """

    n: int
    mean: float
    se: float
    se_corrected: float
    won: int
    lost: int
    t: float
    p: float
    test_train_ratio: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def row(self, digits: int = 3) -> str:
        """``+0.009 ± 0.003 | 8/10 | t = 1.41, p = 0.19`` for a markdown table."""
        return (f"{self.mean:+.{digits}f} ± {self.se:.{digits}f} | {self.won}/{self.n} | "
                f"t = {self.t:.2f}, p = {self.p:.3g}")


def corrected_resampled_ttest(diffs: Sequence[float], test_train_ratio: float) -> tuple[float, float, float]:
    """Nadeau-Bengio corrected resampled t-test of ``mean(diffs) = 0`` -> ``(t, two-sided p, corrected s.e.)``.

    ``test_train_ratio`` is n_test / n_train of one split (0 gives the ordinary paired t-test).
    A zero variance gives t = ±inf, p = 0 for a nonzero mean and t = 0, p = 1 for a zero one.
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size < 2:
        raise DiffiqaError(f"comparison: the corrected t-test needs at least 2 splits, got {d.size}")
    if not np.all(np.isfinite(d)):
        raise DiffiqaError("comparison: per-split differences contain NaN/inf")
    if not test_train_ratio >= 0:
        raise DiffiqaError(f"comparison: n_test/n_train must be >= 0, got {test_train_ratio}")
    j, mean = d.size, float(d.mean())
    # equal differences have zero variance; d.var() can leave rounding dust (0.1 * 3 / 3 != 0.1)
    se = 0.0 if np.ptp(d) == 0 else math.sqrt((1.0 / j + test_train_ratio) * float(d.var(ddof=1)))
    if se == 0.0:
        return (math.copysign(math.inf, mean), 0.0, 0.0) if mean != 0.0 else (0.0, 1.0, 0.0)
    t = mean / se
    return t, float(2.0 * stats.t.sf(abs(t), df=j - 1)), se


def paired_comparison(a: Mapping[int, float], b: Mapping[int, float], n_train: float, n_test: float) -> PairedComparison:
    """Compare per-split scores ``a`` and ``b`` (``{split id: score}``) on the splits both have.

    ``n_train`` / ``n_test``: the sizes of one split's fitting and test parts (means over the
    splits where they differ slightly).
    """
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise DiffiqaError(f"comparison: {len(common)} splits in common (need at least 2)")
    if n_train <= 0 or n_test <= 0:
        raise DiffiqaError(f"comparison: split sizes must be positive (n_train={n_train}, n_test={n_test})")
    d = np.array([a[k] - b[k] for k in common], dtype=np.float64)
    ratio = float(n_test) / float(n_train)
    t, p, se_c = corrected_resampled_ttest(d, ratio)
    return PairedComparison(n=len(d), mean=float(d.mean()), se=float(d.std(ddof=1) / math.sqrt(len(d))),
                            se_corrected=se_c, won=int((d > 0).sum()), lost=int((d < 0).sum()), t=t, p=p,
                            test_train_ratio=ratio)


def split_sizes(splits: Sequence[Mapping], ids: Sequence[int] | None = None) -> tuple[float, float]:
    """Mean (n_train, n_test) of ``splits`` (``splits.json`` entries; train = train + val, the
    rows every row of the benchmarks fits on), over ``ids`` if given."""
    chosen = [splits[k] for k in ids] if ids is not None else list(splits)
    if not chosen:
        raise DiffiqaError("comparison: no splits to size")
    n_train = np.mean([len(s["train"]) + len(s.get("val", [])) for s in chosen])
    n_test = np.mean([len(s["test"]) for s in chosen])
    return float(n_train), float(n_test)
