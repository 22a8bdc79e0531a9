"""Scores of cached images, and the quality <-> MOS mapping: what training and evaluation share.

Kept apart from :mod:`diffiqa.evaluation` (metrics, reports) so that the trainer uses it
without importing the evaluation; it reads the cache only (``diffiqa.cache``), never the
training package.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from diffiqa.cache import IMAGE_KINDS, Cache, crops_by_row, read_crops


def mos_mapping(index_df: pd.DataFrame) -> dict:
    """How ``quality`` in [0,1] maps back to the dataset's MOS: ``{"lo","hi","higher_better"}``.

    ``quality`` is one min–max over the whole dataset, inverted for DMOS (DESIGN §2), so
    lo/hi are the dataset's MOS extremes and the direction is read off the index itself.
    """
    mos = index_df["mos"].to_numpy(dtype=np.float64)
    quality = index_df["quality"].to_numpy(dtype=np.float64)
    lo, hi = float(np.nanmin(mos)), float(np.nanmax(mos))
    # The row with the highest quality has the highest MOS unless the scale is inverted.
    higher_better = bool(mos[int(np.nanargmax(quality))] >= mos[int(np.nanargmin(quality))])
    return {"lo": lo, "hi": hi, "higher_better": higher_better}


def quality_to_mos(quality: np.ndarray, mapping: dict) -> np.ndarray:
    """Predicted quality (higher = better, ~[0,1]) → the dataset's MOS scale (its own direction)."""
    q = np.asarray(quality, dtype=np.float64)
    span = mapping["hi"] - mapping["lo"]
    return mapping["lo"] + q * span if mapping["higher_better"] else mapping["hi"] - q * span


@torch.no_grad()
def predict_crops(model: torch.nn.Module, batch: dict, device) -> torch.Tensor:
    """Scorer on a batch dict of the four kinds (n,3,S,S) in [0,1] → (n,) scores on CPU."""
    args = [batch[kind].to(device, non_blocking=True) for kind in IMAGE_KINDS]
    return model(*args).reshape(-1).float().cpu()


def predict_images(
    model: torch.nn.Module,
    cache: Cache,
    rows: Sequence[int],
    batch_size: int = 32,
    device=None,
    progress: bool = False,
) -> np.ndarray:
    """(len(rows),) float64: each image's score = mean over all its cached crops.

    The model is put in eval mode for the call and restored to its previous mode after.
    Crops are read in batches of ``batch_size`` (in crop order, which is shard order);
    ``device=None`` scores on the model's device.
    """
    if device is None:  # score where the model lives
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    per_row = crops_by_row(cache, rows)
    if not per_row:
        return np.zeros(0, dtype=np.float64)
    crop_ids = np.concatenate(per_row)
    position = np.concatenate([np.full(len(c), i) for i, c in enumerate(per_row)])
    sums = np.zeros(len(per_row), dtype=np.float64)
    counts = np.array([len(c) for c in per_row], dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(crop_ids), batch_size)
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress, leave=False):
            ids = crop_ids[start : start + batch_size]
            scores = predict_crops(model, read_crops(cache, ids), device).double().numpy()
            np.add.at(sums, position[start : start + batch_size], scores)
    finally:
        model.train(was_training)
    return sums / counts
