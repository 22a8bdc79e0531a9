"""Frozen-backbone features of cached crops, computed once: the fast path of scorer training.

With ``freeze_backbones`` the scorer's backbones are fixed functions of the pixels, so
``model.forward(...)`` = ``model.forward_features(model.encode(...))`` can run the (costly)
``encode`` once per crop and only the trainable heads per epoch. Training flips crops along
W at random (``diffiqa.training.datasets``), and CNN features of a mirrored image are not
the mirrored features (asymmetric "same" padding), so each crop has two slots: slot
``2*crop + flip``. Slots are encoded on demand (:meth:`FeatureStore.ensure`) and kept:

- in memory (``float16`` by default, ``float32`` for bit-faithful features), or in
  ``np.memmap`` files under a work directory when they would exceed ``max_memory_bytes``;
- memoised per process (:func:`feature_store`) by (cache path, cache provenance, backbone
  weights and layout), so the pipeline's train stage, which calls ``train_split`` once per
  split, encodes each crop once in all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from diffiqa.cache import Cache
from diffiqa.errors import ConfigError
from diffiqa.cache import crops_by_row, read_crops
from diffiqa.training.datasets import TrainCropDataset

log = logging.getLogger(__name__)

FEATURE_DTYPES = ("float16", "float32")
MEMO_SIZE = 2  # stores kept per process (one dataset's train stage needs one)
_MEMO: "OrderedDict[tuple, FeatureStore]" = OrderedDict()


def can_cache_features(model: torch.nn.Module) -> bool:
    """True when ``model`` splits into frozen ``encode`` + trainable ``forward_features``."""
    cfg = getattr(model, "cfg", None)
    return (
        bool(getattr(cfg, "freeze_backbones", False))
        and callable(getattr(model, "encode", None))
        and callable(getattr(model, "forward_features", None))
    )


def backbone_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of what ``model.encode`` computes: backbone weights + buffers, kinds read, layout.

    Weights (not the config) are hashed because random-init backbones depend on the seed.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"kinds": list(model.kinds_needed),
                         "channels_last": bool(getattr(model.cfg, "channels_last", False)),
                         "sources": {k: list(v[1]) for k, v in getattr(model, "_branch_source", {}).items()},
                         "specs": {k: list(v[1]) for k, v in getattr(model, "backbone_specs", {}).items()}},
                        sort_keys=True).encode())
    for name, tensor in sorted(model.backbones.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def lazy_zeros(shape, dtype) -> np.ndarray:
    """A zero array whose pages cost memory only once written, at 4 KiB granularity.

    ``np.zeros`` of a large array asks the kernel for transparent huge pages (numpy madvises
    them), so writing one slot of a (2N, ...) store commits the 2 MiB around it: filling only
    the unflipped (even) slots committed the flipped ones too, and a 4-kind CLIVE store took
    15.3 GB instead of 7.7 (measured). An anonymous mmap is zero-filled and not madvised.
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    if n == 0:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, n), dtype=dtype).reshape(shape)


class FeatureStore:
    """Backbone features of a cache's crops, slot ``2*crop + flip``.

    Layout: one array per (kind, backbone key, level) of shape ``(2*N_crops, C, H, W)``,
    allocated at the first encode (zero pages cost nothing until written). ``filled`` (2N,)
    marks encoded slots. Serve with :meth:`batch` (dict shaped like ``model.encode``'s output).
    """

    def __init__(self, cache: Cache, dtype: str = "float16", work_dir=None,
                 max_memory_bytes: int = 2 << 30, encode_batch_size: int = 32, progress: bool = True):
        if dtype not in FEATURE_DTYPES:
            raise ConfigError(f"feature dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
        self.cache = cache
        self.dtype = np.dtype(dtype)
        self.work_dir = Path(work_dir) if work_dir else None
        self.max_memory_bytes = int(max_memory_bytes)
        self.encode_batch_size = int(encode_batch_size)
        self.progress = progress
        self.n_slots = 2 * len(cache.rows)
        self.filled = np.zeros(self.n_slots, dtype=bool)
        self.layout: list[tuple[str, str, int]] | None = None  # (kind, backbone key, level)
        self.arrays: list[np.ndarray] = []
        self.n_encoded = 0  # slots encoded so far (for logs and tests)
        self._tmpdir: tempfile.TemporaryDirectory | None = None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def _allocate(self, feats: dict) -> None:
        self.layout = [(kind, key, i) for kind, by_key in feats.items()
                       for key, levels in by_key.items() for i in range(len(levels))]
        shapes = [tuple(feats[k][b][i].shape[1:]) for k, b, i in self.layout]
        total = sum(int(np.prod(s)) for s in shapes) * self.n_slots * self.dtype.itemsize
        if total <= self.max_memory_bytes or self.work_dir is None:
            if total > self.max_memory_bytes:
                log.warning("features need %.1f GB and no work dir was given; keeping them in memory", total / 1e9)
            self.arrays = [lazy_zeros((self.n_slots, *s), self.dtype) for s in shapes]
            return
        # Too big for memory: sparse memory-mapped scratch files, removed with the store.
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="features-", dir=self.work_dir)
        log.info("features need %.1f GB: memory-mapped under %s", total / 1e9, self._tmpdir.name)
        self.arrays = [
            np.lib.format.open_memmap(os.path.join(self._tmpdir.name, f"{j}.npy"), mode="w+", dtype=self.dtype,
                                      shape=(self.n_slots, *s))
            for j, s in enumerate(shapes)
        ]

    @torch.no_grad()
    def ensure(self, model: torch.nn.Module, crop_ids: Sequence[int], flips: Sequence[bool] = (False,),
               device=None) -> int:
        """Encode the slots ``(crop, flip)`` for every crop and flip given that are not stored yet.

        ``model`` must be the (frozen) scorer whose backbones this store belongs to. Returns
        the number of slots encoded now.
        """
        ids = np.unique(np.asarray(crop_ids, dtype=np.int64))
        slots = np.concatenate([2 * ids + int(bool(f)) for f in flips]) if len(ids) else np.zeros(0, np.int64)
        todo = np.sort(np.unique(slots[~self.filled[slots]]))
        if len(todo) == 0:
            return 0
        if device is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was_training = model.training
        model.eval()  # frozen backbones are always in eval mode; this is for clarity
        try:
            bs = self.encode_batch_size
            for start in tqdm(range(0, len(todo), bs), desc="encode crops", unit="batch",
                              disable=not self.progress, leave=False):
                batch_slots = todo[start : start + bs]
                crops, where = np.unique(batch_slots // 2, return_inverse=True)
                pixels = read_crops(self.cache, crops)  # each crop read once for both flips
                flip = torch.from_numpy(batch_slots % 2 == 1)
                images = {}
                for kind, x in pixels.items():
                    x = x[torch.from_numpy(where)]
                    # Same W-axis mirror as TrainCropDataset, for all four kinds alike.
                    images[kind] = torch.where(flip[:, None, None, None], torch.flip(x, dims=(-1,)), x).to(device)
                feats = model.encode(images)
                if self.layout is None:
                    self._allocate(feats)
                for arr, (kind, key, i) in zip(self.arrays, self.layout):
                    arr[batch_slots] = feats[kind][key][i].float().cpu().numpy().astype(self.dtype, copy=False)
                self.filled[batch_slots] = True
        finally:
            model.train(was_training)
        self.n_encoded += len(todo)
        return len(todo)

    def batch(self, crop_ids: Sequence[int], flips: Sequence[bool] | None = None, device=None) -> dict:
        """Features of crops ``crop_ids`` (flipped where ``flips``), as ``model.encode`` returns
        them: ``{kind: {backbone_key: [(n,C,H,W) float32, ...]}}`` on ``device``."""
        ids = np.asarray(crop_ids, dtype=np.int64)
        slots = 2 * ids + (np.zeros(len(ids), np.int64) if flips is None else np.asarray(flips, dtype=np.int64))
        if not self.filled[slots].all():
            raise RuntimeError(f"features of slots {slots[~self.filled[slots]][:5].tolist()} were never encoded")
        out: dict = {}
        for arr, (kind, key, i) in zip(self.arrays, self.layout):
            t = torch.from_numpy(np.ascontiguousarray(arr[slots])).to(device=device, dtype=torch.float32)
            out.setdefault(kind, {}).setdefault(key, []).append(t)
        return out


def _memo_key(cache: Cache, model: torch.nn.Module, dtype: str) -> tuple:
    return (str(Path(cache.path).resolve()), json.dumps(cache.spec.to_attrs(), sort_keys=True),
            backbone_fingerprint(model), dtype)


def feature_store(cache: Cache, model: torch.nn.Module, dtype: str = "float16", work_dir=None,
                  progress: bool = True, **kwargs) -> FeatureStore:
    """The process-wide store for (cache, its provenance, ``model``'s backbones, ``dtype``)."""
    key = _memo_key(cache, model, dtype)
    store = _MEMO.get(key)
    if store is None:
        store = FeatureStore(cache, dtype=dtype, work_dir=work_dir, progress=progress, **kwargs)
        _MEMO[key] = store
        while len(_MEMO) > MEMO_SIZE:
            _MEMO.popitem(last=False)
    else:
        _MEMO.move_to_end(key)
        store.progress = progress
    return store


def remember_store(store: FeatureStore, model: torch.nn.Module) -> None:
    """Make ``store`` (filled elsewhere, e.g. from precomputed tile features) the one
    ``feature_store`` returns for its cache and ``model``'s backbones, so training reads it."""
    _MEMO[_memo_key(store.cache, model, store.dtype.name)] = store
    while len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)


def clear_memo() -> None:
    """Forget all memoised stores (frees their memory / scratch files once unreferenced)."""
    _MEMO.clear()


def epoch_samples(data: TrainCropDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(crop ids, flips, quality)`` of every item of ``data`` in item order, without reading
    pixels: exactly the crops and flips ``data[i]`` would return."""
    plan = data.plan
    pos = plan.order.astype(np.int64)
    crop = np.array([int(data.crops[p][int(plan.crop_pick[i] % np.uint64(len(data.crops[p])))])
                     for i, p in enumerate(pos)], dtype=np.int64)
    flip = plan.flip.copy() if data.use_flip else np.zeros(len(pos), dtype=bool)
    return crop, flip, data.quality[pos]


@torch.no_grad()
def predict_images_from_features(model: torch.nn.Module, store: FeatureStore, rows: Sequence[int],
                                 batch_size: int = 32, device=None, parts: bool = False) -> np.ndarray:
    """Like ``diffiqa.prediction.predict_images`` (image score = mean over all its crops, no
    flips, eval mode) but from stored features; encodes missing slots first. -> (len(rows),);
    ``parts``: (len(rows), 2) means of the skip and branch parts (``forward_parts``)."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    per_row = crops_by_row(store.cache, rows)
    if not per_row:
        return np.zeros((0, 2) if parts else 0, dtype=np.float64)
    crop_ids = np.concatenate(per_row)
    position = np.concatenate([np.full(len(c), i) for i, c in enumerate(per_row)])
    store.ensure(model, crop_ids, flips=(False,), device=device)
    sums = np.zeros((len(per_row), 2) if parts else len(per_row), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(crop_ids), batch_size):
            ids = crop_ids[start : start + batch_size]
            feats = store.batch(ids, device=device)
            if parts:  # a part the model lacks (no skip path, branches at gain 0) is 0
                got = model.forward_parts(feats)
                scores = torch.stack([got[k].reshape(-1) if k in got else torch.zeros(len(ids), device=device)
                                      for k in ("skip", "branches")], 1)
            else:
                scores = model.forward_features(feats)["score"].reshape(-1)
            np.add.at(sums, position[start : start + batch_size], scores.double().cpu().numpy())
    finally:
        model.train(was_training)
    counts = np.array([len(c) for c in per_row], dtype=np.float64)
    return sums / (counts[:, None] if parts else counts)
