"""Stage `train@<ds>`: the cache (only the cache) -> models/scorer/<ds>/split-<k>.pt.

Params: `scorer` (`preset` + overrides of `ScorerConfig`: ablation switches, backbones)
and `train` (`TrainParams`: the small-data recipe — lr, weight decay, warm-up + cosine, EMA,
epochs, training window, `refit` on train + val or selection on val). One model per split;
resumes after `kill -9` from data/resume/train/<ds>/ (the trainer discards resume state
made with other config, splits or cache).
"""

from __future__ import annotations

import argparse
import shutil
import sys

from diffiqa.config import from_preset
from pipeline.common import LAYOUT, PARAMS_FILE, check_dataset, group, main_guard, params


def scorer_config(all_params: dict):
    from diffiqa.scorer import scorer_preset

    return from_preset(scorer_preset, all_params.get("scorer"), f"{PARAMS_FILE}: scorer")


def run_train(ds: str, all_params: dict | None = None, progress: bool = True) -> dict:
    from diffiqa.data.index import read_prepared
    from diffiqa.training.trainer import TrainParams, train_split

    p = params() if all_params is None else all_params
    check_dataset(ds, p)
    cfg = scorer_config(p)
    tp = group(TrainParams, p, "train")
    index, splits = read_prepared(LAYOUT.prepared(ds))
    work = LAYOUT.resume("train", ds)
    shutil.rmtree(LAYOUT.curves_dir(ds), ignore_errors=True)
    results = {}
    for k, split in enumerate(splits["splits"]):
        results[k] = train_split(
            LAYOUT.cache(ds), index, split, k, cfg, tp,
            out_path=LAYOUT.scorer(ds, k), work_dir=work, progress=progress,
            restorer_path=str(LAYOUT.restorer), curves_path=LAYOUT.curves(ds, k),
        )
    return {k: {"best_epoch": r["best_epoch"], "val": r["val"], "skip_alpha": r["skip_alpha"]} for k, r in results.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dataset")
    run_train(ap.parse_args().dataset)


if __name__ == "__main__":
    sys.exit(main_guard(main))
