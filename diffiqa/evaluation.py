"""Evaluate trained scorers like a reviewer: test split only, all crops, mean ± std over splits.

- An image's score is the mean of the scorer over ALL of its deterministic cached crops
  (never one random crop: the reference code's test scores changed from run to run).
- Predictions (quality, higher = better) are mapped back to the dataset's MOS scale with the
  one dataset-wide min–max of the index, then SRCC/KRCC/PLCC (after the 4-parameter logistic
  fit)/RMSE are computed against the published MOS on each split's ``test`` rows.
- Per distortion type: the metrics of each split's test images of that type, then mean ± std
  over splits (not pooled: pooling would mix the predictions of different models).
- Cross-dataset: models trained on dataset A (one per split) scored on every image of B.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from diffiqa.cache import IMAGE_KINDS, Cache, read_cache
from diffiqa.errors import ConfigError, DiffiqaError, ProvenanceError
from diffiqa.io_utils import write_json_atomic, write_text_atomic
from diffiqa.devices import resolve_device
from diffiqa.prediction import mos_mapping, predict_images, quality_to_mos

log = logging.getLogger(__name__)


METRIC_KEYS = ("srcc", "krcc", "plcc", "rmse")
MIN_IMAGES_PER_GROUP = 4  # diffiqa.metrics needs 4 pairs for the 4-parameter logistic fit


def _finite_or_none(obj):
    """JSON has no NaN: non-finite numbers become null, numpy scalars plain Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def _metrics(pred: np.ndarray, mos: np.ndarray) -> dict:
    from diffiqa import metrics

    got = metrics.all_metrics(np.asarray(pred, np.float64), np.asarray(mos, np.float64))
    return {k: float(got[k]) for k in METRIC_KEYS}


def _summarize(dicts: list[dict]) -> dict:
    """{metric: {"mean", "std"}} over ``dicts`` (population std)."""
    from diffiqa import metrics

    return metrics.summarize(dicts, keys=METRIC_KEYS)


def load_model_for_cache(checkpoint, cache: Cache, device=None):
    """``load_scorer(checkpoint)`` → (model on ``device`` in eval mode, cfg, extra).

    Raises ``ProvenanceError`` when the checkpoint was trained on crops of another restorer
    than the one that filled ``cache`` (its features would not match).
    """
    from diffiqa.scorer import load_scorer

    model, cfg, extra = load_scorer(checkpoint)
    trained_on = (extra or {}).get("restorer_sha256")
    if trained_on and trained_on != cache.spec.restorer_sha256:
        raise ProvenanceError(
            f"{checkpoint}: trained on crops restored by {trained_on[:12]}… but {cache.path} was "
            f"restored by {cache.spec.restorer_sha256[:12]}…; retrain or restore with the same restorer"
        )
    return model.to(resolve_device(device)).eval(), cfg, extra or {}


def _per_distortion(distortion: np.ndarray, pred: np.ndarray, mos: np.ndarray) -> dict:
    out = {}
    for kind in sorted(set(distortion.tolist())):
        sel = distortion == kind
        if sel.sum() < MIN_IMAGES_PER_GROUP:
            continue
        try:
            out[kind] = {**_metrics(pred[sel], mos[sel]), "n": int(sel.sum())}
        except DiffiqaError as e:  # e.g. all MOS of that type equal: no correlation to report
            log.warning("distortion %s: no metrics (%s)", kind, e)
    return out


def _split_list(splits) -> list[dict]:
    return list(splits["splits"]) if isinstance(splits, dict) else list(splits)


def evaluate_splits(
    cache_path,
    index_df: pd.DataFrame,
    splits,
    checkpoints: Sequence,
    metrics_path=None,
    plots_dir=None,
    batch_size: int = 32,
    device=None,
    progress: bool = True,
) -> dict:
    """Score each split's ``test`` rows with that split's checkpoint; summarize.

    ``splits``: the ``splits.json`` object (or its ``splits`` list); ``checkpoints[k]`` is the
    model of split k. Returns (and writes to ``metrics_path`` when given) a dict with
    ``srcc``/``plcc``/``krcc``/``rmse`` each ``{"mean","std"}`` over splits, ``per_split``,
    ``per_distortion`` (``{type: {metric: {"mean","std"}, "n_splits"}}``, mean over splits),
    ``n_splits``, ``n_test_images`` (test images summed over splits). With ``plots_dir``:
    ``scatter.csv`` (image, mos, predicted, split) and ``scatter.png``, ``per_distortion.png``.
    """
    cache = read_cache(cache_path)
    split_list = _split_list(splits)
    checkpoints = list(checkpoints)
    if len(checkpoints) != len(split_list):
        raise ConfigError(f"{len(checkpoints)} checkpoints for {len(split_list)} splits; train every split first")
    mapping = mos_mapping(index_df)
    mos_all = index_df["mos"].to_numpy(np.float64)
    distortion_all = index_df["distortion"].astype(str).to_numpy()
    per_split, per_dist_runs, scatter = [], [], []
    for k, (split, ckpt) in enumerate(zip(split_list, checkpoints)):
        test = np.asarray(split["test"], dtype=np.int64)
        if len(test) < MIN_IMAGES_PER_GROUP:
            raise ConfigError(f"split {k}: only {len(test)} test images; cannot compute correlations")
        model, _cfg, extra = load_model_for_cache(ckpt, cache, device)
        if "split_id" in extra and int(extra["split_id"]) != k:
            raise ConfigError(f"{ckpt}: is the model of split {extra['split_id']}, not of split {k}")
        quality = _predict(model, cache, test, batch_size, device, progress)
        pred = quality_to_mos(quality, mapping)
        m = _metrics(pred, mos_all[test])
        per_split.append({"split": k, **m, "n_test": int(len(test)), "best_epoch": extra.get("best_epoch"),
                          "checkpoint": str(ckpt)})
        per_dist_runs.append(_per_distortion(distortion_all[test], pred, mos_all[test]))
        scatter.append(pd.DataFrame({"image": index_df["image"].iloc[test].astype(str).to_numpy(),
                                     "mos": mos_all[test], "predicted": pred, "split": k}))
        log.info("split %d: SRCC %.4f PLCC %.4f on %d test images", k, m["srcc"], m["plcc"], len(test))
    result = {
        **_summarize(per_split),
        "per_split": per_split,
        "per_distortion": _over_splits(per_dist_runs),
        "per_distortion_aggregation": "mean over splits of each split's test images of that type",
        "n_splits": len(split_list),
        "n_test_images": int(sum(s["n_test"] for s in per_split)),
        "mos_mapping": mapping,
    }
    result = _finite_or_none(result)
    if metrics_path is not None:
        write_json_atomic(metrics_path, result)
    if plots_dir is not None:
        write_plots(pd.concat(scatter, ignore_index=True), result, plots_dir)
    return result


def _over_splits(per_dist_runs: list[dict]) -> dict:
    """{type: metrics mean/std over the splits that have it, n_splits, n_images_per_split}."""
    out = {}
    for kind in sorted({d for run in per_dist_runs for d in run}):
        runs = [run[kind] for run in per_dist_runs if kind in run]
        out[kind] = {**_summarize(runs), "n_splits": len(runs), "n_images_per_split": float(np.mean([r["n"] for r in runs]))}
    return out


def _predict(model, cache, rows, batch_size, device, progress) -> np.ndarray:
    """Image scores; with frozen backbones through the per-process feature store, so the
    splits' models (same frozen backbones) encode each crop once in all, not once per split."""
    from diffiqa.training.features import can_cache_features, feature_store, predict_images_from_features

    if can_cache_features(model):
        store = feature_store(cache, model, "float32", progress=progress)
        return predict_images_from_features(model, store, rows, batch_size, device)
    return predict_images(model, cache, rows, batch_size, device, progress)


def write_plots(scatter_df: pd.DataFrame, result: dict, plots_dir) -> dict:
    """``scatter.csv`` + ``scatter.png`` (with the logistic fit) + ``per_distortion.png``."""
    from diffiqa.report import plot_distortion_bars, plot_scatter

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(plots_dir / "scatter.csv", scatter_df.to_csv(index=False))
    paths = {"scatter_csv": plots_dir / "scatter.csv", "scatter_png": plots_dir / "scatter.png"}
    plot_scatter(scatter_df, paths["scatter_png"])
    if result.get("per_distortion"):
        paths["per_distortion_png"] = plots_dir / "per_distortion.png"
        plot_distortion_bars(result["per_distortion"], paths["per_distortion_png"])
    return paths


def evaluate_cross(
    train_ds_checkpoints: Sequence,
    test_cache_path,
    test_index_df: pd.DataFrame,
    metrics_path=None,
    batch_size: int = 32,
    device=None,
    progress: bool = True,
) -> dict:
    """Models trained on dataset A (one per split) scored on ALL images of dataset B.

    Predictions are mapped to B's MOS scale with B's index (the models predict quality in
    [0,1]); SRCC/PLCC are invariant to that, RMSE is in B's units after the logistic fit.
    The checkpoints must have been trained on crops from the restorer that filled B's cache.
    Returns ``srcc``/``plcc``/``krcc``/``rmse`` ``{"mean","std"}`` over the checkpoints,
    ``per_checkpoint``, ``ensemble`` (metrics of the mean prediction of all checkpoints),
    ``n_checkpoints``, ``n_test_images``.
    """
    cache = read_cache(test_cache_path)
    rows = np.arange(len(test_index_df), dtype=np.int64)
    mapping = mos_mapping(test_index_df)
    mos = test_index_df["mos"].to_numpy(np.float64)
    per_ckpt, preds = [], []
    for ckpt in train_ds_checkpoints:
        model, _cfg, extra = load_model_for_cache(ckpt, cache, device)
        pred = quality_to_mos(_predict(model, cache, rows, batch_size, device, progress), mapping)
        preds.append(pred)
        per_ckpt.append({"checkpoint": str(ckpt), "split": extra.get("split_id"), **_metrics(pred, mos)})
    if not preds:
        raise ConfigError("evaluate_cross: no checkpoints given")
    result = {
        **_summarize(per_ckpt),
        "per_checkpoint": per_ckpt,
        "ensemble": _metrics(np.mean(preds, axis=0), mos),
        "n_checkpoints": len(per_ckpt),
        "n_test_images": int(len(rows)),
    }
    result = _finite_or_none(result)
    if metrics_path is not None:
        write_json_atomic(metrics_path, result)
    return result
