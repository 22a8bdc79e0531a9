"""Cache-backed datasets: the scorer trains and evaluates on cached crops only, never images.

Training draws ONE random cached crop per image per epoch and flips it horizontally (the W
axis, the same flip for all four kinds of a sample — the reference code flipped vertically).
All randomness of an epoch is a function of ``(seed, epoch)`` (:func:`epoch_plan`), so a run
resumed at an epoch boundary makes the same choices as an uninterrupted one.
Evaluation reads ALL of an image's deterministic cached crops (``diffiqa.cache.crops_by_row``,
``read_crops``; see ``diffiqa.prediction.predict_images``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from diffiqa.cache import IMAGE_KINDS, Cache, crops_by_row
from diffiqa.errors import DiffiqaError


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch does: visit ``rows[order]``; for each, crop ``crop_pick`` and ``flip``."""

    order: np.ndarray  # (n,) permutation of positions in the row list
    crop_pick: np.ndarray  # (n,) uint64 draws; crop = draw % crops of that image
    flip: np.ndarray  # (n,) bool, flip the W axis


def epoch_plan(seed: int, epoch: int, n: int) -> EpochPlan:
    """Shuffling, crop choice and flips of epoch ``epoch`` (0-based) for ``n`` images."""
    rng = np.random.default_rng([int(seed), int(epoch), 0x5C0E])
    order = rng.permutation(n)
    crop_pick = rng.integers(0, 2**62, size=n, dtype=np.int64).astype(np.uint64)
    flip = rng.random(n) < 0.5
    return EpochPlan(order=order, crop_pick=crop_pick, flip=flip)


class TrainCropDataset(Dataset):
    """One random cached crop per image for epoch ``epoch``, horizontally flipped at random.

    Item i → dict: the four kinds ``(3,S,S)`` float32 in [0,1], ``quality`` float32 scalar,
    ``row`` int64 (the index row). Items come in the epoch's shuffled order, so a DataLoader
    with ``shuffle=False`` reproduces the plan exactly (also with worker processes).
    """

    def __init__(self, cache: Cache, rows: Sequence[int], quality: Sequence[float], seed: int, epoch: int, flip: bool = True):
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.quality = np.asarray(quality, dtype=np.float32)
        if len(self.rows) != len(self.quality):
            raise DiffiqaError(f"{len(self.rows)} rows but {len(self.quality)} quality values")
        self.crops = crops_by_row(cache, self.rows)
        self.plan = epoch_plan(seed, epoch, len(self.rows))
        self.use_flip = flip

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        pos = int(self.plan.order[i])
        crops = self.crops[pos]
        crop = int(crops[int(self.plan.crop_pick[i] % np.uint64(len(crops)))])
        sample = {kind: torch.from_numpy(np.ascontiguousarray(self.cache.read(kind, crop))) for kind in IMAGE_KINDS}
        if self.use_flip and self.plan.flip[i]:
            # Horizontal = mirror left/right = the last (W) axis; identical for all four kinds
            # so the restored/noisy images stay aligned with the distorted one.
            sample = {k: torch.flip(v, dims=(-1,)) for k, v in sample.items()}
        sample["quality"] = torch.tensor(self.quality[pos])
        sample["row"] = torch.tensor(self.rows[pos])
        sample["crop"] = torch.tensor(crop)
        return sample
