"""Stage `evaluate@<ds>`: split models + cache -> metrics/<ds>.json, plots/<ds>/, reports/<ds>.html.

Image score = mean over the image's deterministic cached crops; SRCC/KRCC/PLCC (after the
4-parameter logistic fit)/RMSE on each split's `test` rows, mean ± std over splits, per
distortion type. metrics/<ds>.json holds the summary (what `dvc metrics diff` compares);
reports/<ds>_metrics.json adds per split and per distortion type. Params group `evaluate`: `batch_size`.

`python -m pipeline.evaluate <test_ds> --trained-on <train_ds>` is stage `evaluate_cross`:
every split model of <train_ds> scores all of <test_ds> -> metrics/cross/<train>_to_<test>.json
(the top-level `cross` list in params.yaml names the pairs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

from diffiqa.errors import ConfigError
from diffiqa.io_utils import write_json_atomic
from pipeline.common import LAYOUT, check_dataset, group, main_guard, params

log = logging.getLogger("pipeline.evaluate")
SUMMARY_KEYS = ("srcc", "plcc", "krcc", "rmse", "n_splits", "n_test_images")


@dataclass
class EvaluateParams:
    batch_size: int = 32

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"evaluate.batch_size={self.batch_size}: must be at least 1")


def _table(metrics: dict) -> str:
    keys = ("srcc", "plcc", "krcc", "rmse")
    head = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"
    return head + "| " + " | ".join(f"{metrics[k]['mean']:.3f} ± {metrics[k]['std']:.3f}" for k in keys) + " |"


def run_evaluate(ds: str, all_params: dict | None = None, progress: bool = True) -> dict:
    from diffiqa.data.index import read_prepared
    from diffiqa.evaluation import evaluate_splits
    from diffiqa.report import dataset_report

    p = params() if all_params is None else all_params
    check_dataset(ds, p)
    cfg = group(EvaluateParams, p, "evaluate")
    index, splits = read_prepared(LAYOUT.prepared(ds))
    ckpts = [LAYOUT.scorer(ds, k) for k in range(len(splits["splits"]))]
    metrics = evaluate_splits(
        LAYOUT.cache(ds), index, splits, ckpts, metrics_path=LAYOUT.full_metrics(ds),
        plots_dir=LAYOUT.plots(ds), batch_size=cfg.batch_size, progress=progress,
    )
    # `dvc metrics show/diff` read the summary; per split and per distortion stay in reports/.
    write_json_atomic(LAYOUT.metrics(ds), {k: metrics[k] for k in SUMMARY_KEYS})
    dataset_report(LAYOUT, ds, metrics=metrics, index_df=index)
    print(f"\n{ds}: {metrics['n_splits']} splits, {metrics['n_test_images']} test images\n{_table(metrics)}")
    return metrics


def run_evaluate_cross(train_ds: str, test_ds: str, all_params: dict | None = None, progress: bool = True) -> dict:
    from diffiqa.data.index import read_prepared
    from diffiqa.evaluation import evaluate_cross

    p = params() if all_params is None else all_params
    check_dataset(train_ds, p)
    check_dataset(test_ds, p)
    cfg = group(EvaluateParams, p, "evaluate")
    index, _ = read_prepared(LAYOUT.prepared(test_ds))
    ckpts = sorted(LAYOUT.scorer_dir(train_ds).glob("split-*.pt"))
    metrics = evaluate_cross(ckpts, LAYOUT.cache(test_ds), index, metrics_path=LAYOUT.cross_metrics(train_ds, test_ds),
                             batch_size=cfg.batch_size, progress=progress)
    print(f"\ntrained on {train_ds}, tested on all of {test_ds}\n{_table(metrics)}")
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dataset")
    ap.add_argument("--trained-on", help="cross-dataset: use the models trained on this dataset")
    args = ap.parse_args()
    if args.trained_on:
        run_evaluate_cross(args.trained_on, args.dataset)
    else:
        run_evaluate(args.dataset)


if __name__ == "__main__":
    sys.exit(main_guard(main))
