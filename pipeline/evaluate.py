"""Stage `evaluate@<ds>`: split models + cache -> metrics/<ds>.json, plots/<ds>/, reports/<ds>.html.

Image score = mean over the image's deterministic cached crops; SRCC/KRCC/PLCC (after the
4-parameter logistic fit)/RMSE on each split's `test` rows, mean ± std over splits, per
distortion type. Params group `evaluate`: `batch_size`, `cross` (datasets whose models to
test on this dataset: cross-dataset evaluation, written to metrics/cross/<train>_to_<ds>.json).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from diffiqa.config import from_dict
from pipeline.common import cache_path, main_guard, params, prepared_dir, scorer_dir

log = logging.getLogger("pipeline.evaluate")


@dataclass
class EvaluateParams:
    batch_size: int = 32
    cross: list[str] = field(default_factory=list)  # train datasets whose models score this one


def _table(metrics: dict) -> str:
    keys = ("srcc", "plcc", "krcc", "rmse")
    head = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
    return head + "| " + " | ".join(f"{metrics[k]['mean']:.3f} ± {metrics[k]['std']:.3f}" for k in keys) + " |"


def run_evaluate(ds: str, all_params: dict | None = None, progress: bool = True) -> dict:
    from diffiqa.data.index import read_prepared
    from diffiqa.evaluation import evaluate_cross, evaluate_splits
    from diffiqa.report import write_report

    p = all_params or params()
    cfg = from_dict(EvaluateParams, p.get("evaluate"), "evaluate")
    index, splits = read_prepared(prepared_dir(ds))
    ckpts = [scorer_dir(ds) / f"split-{k}.pt" for k in range(len(splits["splits"]))]
    metrics = evaluate_splits(
        cache_path(ds), index, splits, ckpts, metrics_path=Path("metrics") / f"{ds}.json",
        plots_dir=Path("plots") / ds, batch_size=cfg.batch_size, progress=progress,
    )
    for train_ds in cfg.cross:
        cross = sorted(scorer_dir(train_ds).glob("split-*.pt"))
        evaluate_cross(cross, cache_path(ds), index, metrics_path=Path("metrics/cross") / f"{train_ds}_to_{ds}.json",
                       batch_size=cfg.batch_size, progress=progress)
    write_report(ds, index, cache_path(ds), metrics, sorted((Path("plots") / ds / "curves").glob("*.csv")),
                 Path("reports") / f"{ds}.html")
    print(f"\n{ds}: {metrics['n_splits']} splits, {metrics['n_test_images']} test images\n{_table(metrics)}")
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dataset")
    run_evaluate(ap.parse_args().dataset)


if __name__ == "__main__":
    sys.exit(main_guard(main))
