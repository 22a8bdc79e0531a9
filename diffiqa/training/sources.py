"""Batch sources for the scorer's training loop: cached frozen features, or pixels.

Both serve the same three things to :func:`diffiqa.training.trainer.train_split`:

- ``batches(epoch)``: the epoch's training batches, ``{"inputs", "quality", "rows"}``, where
  ``inputs`` goes to :meth:`forward` (the choice of crop per image and of the flip is
  :func:`diffiqa.training.datasets.epoch_plan`'s, a function of ``(seed, epoch)``);
- ``predict(model, rows)``: image scores (mean over the image's crops or tiles, whole grid,
  no flip, eval mode); ``predict_parts``: the same for the skip and branch parts;
- ``pooled(model, rows)``: the skip path's input per image (mean over its crops), for the
  ridge fit.

:class:`FeatureSource` (frozen backbones) encodes each crop once
(:mod:`diffiqa.training.features`) and, for training, cuts a random window of the feature
grid (``window`` cells a side) and mirrors the grid along W: the whole-image view at test
time, random views during training. :class:`PixelSource` reads crops from the cache and
runs the whole model (backbones being trained).
"""

from __future__ import annotations

import numpy as np
import torch

from diffiqa.cache import IMAGE_KINDS, Cache
from diffiqa.prediction import predict_images
from diffiqa.cache import crops_by_row, read_crops
from diffiqa.training.datasets import TrainCropDataset
from diffiqa.training.features import FeatureStore, epoch_samples, predict_images_from_features


def take(inputs, sl: slice):
    """Rows ``sl`` of every tensor in a (nested) batch: one rank's part of a global batch."""
    if isinstance(inputs, torch.Tensor):
        return inputs[sl]
    if isinstance(inputs, dict):
        return {k: take(v, sl) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(take(v, sl) for v in inputs)
    return inputs[sl]


def window_and_flip(feats: dict, flips: np.ndarray, window: int, rng: np.random.Generator) -> dict:
    """One random ``window``×``window`` cell window (same for the batch) + a W mirror per sample.

    ``feats``: ``{kind: {key: [(n,C,h,w), ...]}}`` with every level on one grid (cell
    statistics), or levels of different grids (then each is cut at the same relative place).
    ``window <= 0`` or a grid no larger than the window keeps the whole grid.
    """
    first = next(iter(next(iter(feats.values())).values()))[0]
    h, w = first.shape[-2:]
    top = left = 0
    wh, ww = h, w
    if window > 0 and (h > window or w > window):
        wh, ww = min(window, h), min(window, w)
        top, left = int(rng.integers(0, h - wh + 1)), int(rng.integers(0, w - ww + 1))
    flip = torch.from_numpy(np.asarray(flips, dtype=bool))

    def cut(f):
        fh, fw = f.shape[-2:]
        t, l = top * fh // h, left * fw // w
        f = f[..., t : t + max(1, wh * fh // h), l : l + max(1, ww * fw // w)]
        return torch.where(flip.view(-1, 1, 1, 1).to(f.device), torch.flip(f, dims=(-1,)), f)

    return {kind: {key: [cut(f) for f in levels] for key, levels in by_key.items()} for kind, by_key in feats.items()}


class FeatureSource:
    """Training batches and predictions from frozen features of a cache's crops."""

    def __init__(self, store: FeatureStore, cache: Cache, model, rows, quality, seed: int, batch_size: int,
                 window: int = 0, device=None):
        self.store, self.cache, self.model = store, cache, model
        self.rows = np.asarray(rows, dtype=np.int64)
        self.quality = np.asarray(quality, dtype=np.float32)
        self.seed, self.batch_size, self.window, self.device = int(seed), int(batch_size), int(window), device
        store.ensure(model, np.concatenate(crops_by_row(cache, self.rows)), flips=(False,), device=device)

    def forward(self, model, inputs, skip_offset=None):
        """Scores ``(n,)`` of a batch's ``inputs`` (``model`` may be a DDP wrapper)."""
        return model(feats=inputs, skip_offset=skip_offset)

    def batches(self, epoch: int):
        data = TrainCropDataset(self.cache, self.rows, self.quality, self.seed, epoch)
        crops, flips, quality = epoch_samples(data)
        rows = self.rows[data.plan.order]
        rng = np.random.default_rng([self.seed, epoch, 0x3D1])  # window positions
        for start in range(0, len(crops), self.batch_size):
            sl = slice(start, start + self.batch_size)
            feats = self.store.batch(crops[sl], device=self.device)
            yield {"inputs": window_and_flip(feats, flips[sl], self.window, rng),
                   "quality": torch.from_numpy(quality[sl]), "rows": rows[sl]}

    def predict(self, model, rows) -> np.ndarray:
        return predict_images_from_features(model, self.store, rows, self.batch_size, self.device)

    def predict_parts(self, model, rows) -> np.ndarray:
        """(len(rows), 2): each image's mean skip part and branch part (``forward_parts``)."""
        return predict_images_from_features(model, self.store, rows, self.batch_size, self.device, parts=True)

    @torch.no_grad()
    def pooled(self, model, rows) -> np.ndarray:
        per_row = crops_by_row(self.cache, rows)
        self.store.ensure(model, np.concatenate(per_row), flips=(False,), device=self.device)
        out = []
        for crops in per_row:
            out.append(model.pooled_features(self.store.batch(crops, device=self.device)).double().mean(0).cpu().numpy())
        return np.stack(out)


class PixelSource:
    """Training batches and predictions from cached crops, through the whole model."""

    def __init__(self, cache: Cache, rows, quality, seed: int, batch_size: int, device=None):
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.quality = np.asarray(quality, dtype=np.float32)
        self.seed, self.batch_size, self.device = int(seed), int(batch_size), device

    def forward(self, model, inputs, skip_offset=None):
        """Scores ``(n,)`` of a batch's ``inputs`` (``model`` may be a DDP wrapper)."""
        return model(**inputs, skip_offset=skip_offset)

    def batches(self, epoch: int):
        data = TrainCropDataset(self.cache, self.rows, self.quality, self.seed, epoch)
        crops, flips, quality = epoch_samples(data)
        rows = self.rows[data.plan.order]
        for start in range(0, len(crops), self.batch_size):
            sl = slice(start, start + self.batch_size)
            pixels = read_crops(self.cache, crops[sl])
            flip = torch.from_numpy(flips[sl]).view(-1, 1, 1, 1)
            inputs = {k: torch.where(flip, torch.flip(pixels[k], dims=(-1,)), pixels[k]).to(self.device)
                      for k in IMAGE_KINDS}
            yield {"inputs": inputs, "quality": torch.from_numpy(quality[sl]), "rows": rows[sl]}

    def predict(self, model, rows) -> np.ndarray:
        return predict_images(model, self.cache, rows, self.batch_size, self.device)

    @torch.no_grad()
    def predict_parts(self, model, rows) -> np.ndarray:
        """(len(rows), 2): each image's mean skip part and branch part (``forward_parts``), eval mode."""
        was_training = model.training
        model.eval()
        try:
            out = []
            for crops in crops_by_row(self.cache, rows):
                pixels = {k: v.to(self.device) for k, v in read_crops(self.cache, crops).items()}
                got = model.forward_parts(model.encode(pixels))
                out.append([float(got[k].double().mean()) if k in got else 0.0 for k in ("skip", "branches")])
        finally:
            model.train(was_training)
        return np.asarray(out, dtype=np.float64).reshape(-1, 2)

    @torch.no_grad()
    def pooled(self, model, rows) -> np.ndarray:
        out = []
        for crops in crops_by_row(self.cache, rows):
            pixels = {k: v.to(self.device) for k, v in read_crops(self.cache, crops).items()}
            out.append(model.pooled_features(model.encode(pixels)).double().mean(0).cpu().numpy())
        return np.stack(out)
