"""Matched budgets: each prior's strength set by bisection so that its output ends at a given
distance from the input (PSNR to the input, e.g. 40 and 35 dB), so priors are compared at
equal change.

The strength is the prior weight ``lam`` (the fidelity weight 1/(2 sigma^2) stays fixed); its
effect on the final distance is monotone in practice but not in closed form, so it is searched:
from ``lam_start``, up or down by ``EXPAND`` until the target band is bracketed, then bisected
in log(lam). Every run uses the same fidelity floor (the lowest target minus the tolerance),
so one run can serve several targets: ``match_budgets`` shares its runs across them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

EXPAND = 10.0  # factor on lam while the target is not bracketed
LAM_RANGE = (1e-4, 1e6)
SATURATED_DB = 0.05  # a lam EXPAND x larger that moves the end by less than this has saturated


@dataclass
class Run:
    lam: float
    psnr_db: float  # PSNR of the run's output to the input
    result: object  # the EnhanceResult (or whatever ``run`` returns)


@dataclass
class Matched:
    """The run chosen for ``target_db``: ``matched`` when its PSNR to the input is within
    ``tol_db`` of the target (else the closest run, flagged)."""

    target_db: float
    run: Run
    matched: bool
    runs_used: int


def _next_lam(runs: list[Run], target: float, tol: float, start: float) -> float | None:
    """The next strength to try for ``target`` given the runs so far; None when the search
    cannot continue (the range is exhausted)."""
    if not runs:
        return start
    weak = [r.lam for r in runs if r.psnr_db > target + tol]  # too little change: raise lam
    strong = [r.lam for r in runs if r.psnr_db < target - tol]  # too much change: lower lam
    if weak and strong and max(weak) < min(strong):
        lo, hi = max(weak), min(strong)
        return math.sqrt(lo * hi) if hi / lo > 1.01 else None
    if weak and not strong:
        lam = max(weak) * EXPAND
        return lam if lam <= LAM_RANGE[1] else None
    if strong and not weak:
        lam = min(strong) / EXPAND
        return lam if lam >= LAM_RANGE[0] else None
    return None  # not monotone here: stop with the closest


def match_budgets(run: Callable[[float], tuple[float, object]], targets_db: Sequence[float], tol_db: float = 0.5,
                  lam_start: float = 1.0, max_runs: int = 8, stuck: Callable[[object], bool] | None = None
                  ) -> dict[float, Matched]:
    """For each target (dB to the input), the run whose output ends within ``tol_db`` of it.

    ``run(lam) -> (psnr_to_input_db, result)``; runs are shared across targets (at most
    ``max_runs`` calls per target, fewer when earlier ones already serve it). ``stuck(result)``
    True: a stronger prior cannot move further (e.g. the gate refused the prior's very first
    direction, which does not depend on lam), so no larger lam is tried."""
    runs: list[Run] = []
    out = {}
    ceiling = math.inf  # no lam at or above this is worth running
    for target in sorted(targets_db, reverse=True):  # the smallest change first: lam grows along
        used = 0
        while not any(abs(r.psnr_db - target) <= tol_db for r in runs) and used < max_runs:
            lam = _next_lam(runs, target, tol_db, lam_start)
            if lam is None or lam >= ceiling or any(abs(math.log(lam / r.lam)) < 1e-9 for r in runs):
                break
            psnr_db, result = run(lam)
            runs.append(Run(lam, float(psnr_db), result))
            used += 1
            if stuck is not None and stuck(result):
                ceiling = min(ceiling, lam)
            below = [r for r in runs[:-1] if r.lam < lam]
            if below and abs(max(below, key=lambda r: r.lam).psnr_db - psnr_db) < SATURATED_DB:
                ceiling = min(ceiling, lam)  # a stronger prior ended at the same place: saturated
        best = min(runs, key=lambda r: (abs(r.psnr_db - target), r.lam))
        out[target] = Matched(target, best, abs(best.psnr_db - target) <= tol_db, used)
    return out
