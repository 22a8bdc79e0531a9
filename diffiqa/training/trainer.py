"""Train the scorer of one split from the restore cache, resumable after ``kill -9``.

- Reads only the cache (never image files): one random cached crop per training image per
  epoch, horizontally flipped at random (``diffiqa.training.datasets``).
- Loss: MSE on ``quality`` (in [0,1], higher = better); optimizer AdamW.
- Model selection: SRCC on the split's ``val`` rows, image score = mean over all its crops.
  ``test`` is never touched here.
- Resume: after every epoch ``work_dir/split-<k>.last.pt`` is replaced atomically with the
  model, optimizer, epoch, best-so-far and history. All randomness of epoch e is seeded from
  (seed, e), so a resumed run ends with the same weights as an uninterrupted one.
- Frozen backbones (``scorer_cfg.freeze_backbones``, ``params.cache_features``): every crop
  (and its flipped copy) is encoded once per process (``diffiqa.training.features``) and the
  epochs run only the trainable heads, with the same plan, batches and RNG draws.
- Curves: ``epoch, train_loss, val_srcc, val_plcc`` rewritten (atomically) after every epoch
  from the saved history, so a resumed run never duplicates rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from diffiqa.cache import IMAGE_KINDS, read_cache
from diffiqa.config import to_dict
from diffiqa.errors import ConfigError, DiffiqaError
from diffiqa.evaluation import mos_mapping, predict_images, resolve_device
from diffiqa.io_utils import atomic_path, write_text_atomic
from diffiqa.training.datasets import TrainCropDataset, crops_by_row
from diffiqa.training.features import can_cache_features, epoch_samples, feature_store, predict_images_from_features

log = logging.getLogger(__name__)

RESUME_FORMAT_VERSION = 1
CURVE_COLUMNS = ("epoch", "train_loss", "val_srcc", "val_plcc")


@dataclass
class TrainParams:
    lr: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 10
    batch_size: int = 8
    seed: int = 0
    num_workers: int = 0
    eval_every: int = 1  # validate every n epochs (and always after the last)
    patience: int = 0  # stop after this many validations without a better val SRCC; 0 = off
    # Frozen backbones: encode every crop once (diffiqa.training.features) and train only the
    # heads on the stored features. Same model up to the storage rounding of the features.
    cache_features: bool = True
    feature_dtype: str = "float16"  # or "float32" (bit-faithful features, twice the memory)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ConfigError("train.epochs, train.batch_size and train.eval_every must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.patience < 0 or self.num_workers < 0:
            raise ConfigError("train.lr must be > 0; weight_decay, patience, num_workers >= 0")
        if self.feature_dtype not in ("float16", "float32"):
            raise ConfigError(f"train.feature_dtype must be float16 or float32, got {self.feature_dtype!r}")


def epoch_seed(seed: int, epoch: int) -> int:
    """Torch seed of epoch ``epoch`` (dropout, stochastic depth...): a function of (seed, epoch)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 0x7EA1]).generate_state(1)[0])


def build_scorer(cfg):
    """The scorer for ``cfg`` (imported here so this module loads without the scorer)."""
    from diffiqa.scorer import DualBranchScorer

    return DualBranchScorer(cfg)


def _save_scorer_atomic(path: Path, model, cfg, extra: dict) -> None:
    from diffiqa.scorer import save_scorer

    with atomic_path(path) as tmp:
        save_scorer(tmp, model, cfg, extra)


def _fingerprint(**parts) -> str:
    """What a resume state must match: the same config, split rows and cache provenance."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _config_dict(cfg) -> dict:
    try:
        return to_dict(cfg)
    except TypeError:  # not a dataclass (a test stand-in): its attributes will do
        return dict(vars(cfg))


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _write_curves(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for rec in history:
        writer.writerow({k: ("" if rec.get(k) is None else rec[k]) for k in CURVE_COLUMNS})
    write_text_atomic(path, buf.getvalue())


def _validate(model, cache, val_rows, val_quality, batch_size, device, store=None) -> dict:
    from diffiqa import metrics

    if store is not None:
        pred = predict_images_from_features(model, store, val_rows, batch_size, device)
    else:
        pred = predict_images(model, cache, val_rows, batch_size, device)
    try:
        return {"srcc": float(metrics.srcc(pred, val_quality)), "plcc": float(metrics.plcc(pred, val_quality))}
    except DiffiqaError as e:  # constant predictions (e.g. dead units early on): ranks last
        log.warning("val metrics undefined (%s); recorded as NaN", e)
        return {"srcc": float("nan"), "plcc": float("nan")}


def _feature_batches(data: TrainCropDataset, store, batch_size: int, device):
    """The DataLoader's batches of ``data`` (same items, order, flips), as stored features."""
    # iter(DataLoader) draws one int64 from the global torch generator (its worker base seed);
    # draw it too, so dropout masks match end-to-end training exactly.
    torch.empty((), dtype=torch.int64).random_()
    crops, flips, quality = epoch_samples(data)
    for start in range(0, len(crops), batch_size):
        end = start + batch_size
        yield {"feats": store.batch(crops[start:end], flips[start:end], device=device),
               "quality": torch.from_numpy(quality[start:end])}


def train_split(
    cache_path,
    index_df: pd.DataFrame,
    split: dict,
    split_id: int,
    scorer_cfg,
    params: TrainParams,
    out_path,
    work_dir,
    progress: bool = True,
    device=None,
    restorer_path=None,
    curves_path=None,
    stop_after_epochs: int | None = None,
) -> dict:
    """Train split ``split_id`` on ``split["train"]``, select on ``split["val"]``; write ``out_path``.

    ``index_df``: the dataset's index (``quality`` is the target). ``restorer_path`` (the
    checkpoint that filled the cache) is recorded so ``diffiqa score`` can restore new images.
    ``curves_path`` defaults to ``work_dir/split-<k>.curves.csv``. ``stop_after_epochs``
    stops this call after that many epochs (a simulated kill; the run resumes on the next call).
    Returns ``{"split_id", "best_epoch", "val", "epochs_run", "stopped_early", "finished",
    "history", "checkpoint"}``; ``finished`` is False only when ``stop_after_epochs`` cut it.
    """
    out_path, work_dir = Path(out_path), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    curves_path = Path(curves_path) if curves_path else work_dir / f"split-{split_id}.curves.csv"
    last_path = work_dir / f"split-{split_id}.last.pt"
    device = resolve_device(device)
    cache = read_cache(cache_path)
    train_rows = np.asarray(split["train"], dtype=np.int64)
    val_rows = np.asarray(split.get("val", []), dtype=np.int64)
    if len(train_rows) == 0 or len(val_rows) < 4:
        raise ConfigError(f"split {split_id}: needs train rows and at least 4 val rows "
                          f"(has {len(train_rows)} train, {len(val_rows)} val)")
    quality = index_df["quality"].to_numpy(np.float32)
    spec = cache.spec.to_attrs()
    # The feature switches change speed, not the model (up to float16 rounding): a run may
    # resume across them, and resume states from before they existed stay valid.
    run_params = {k: v for k, v in to_dict(params).items() if k not in ("cache_features", "feature_dtype")}
    fingerprint = _fingerprint(cfg=_config_dict(scorer_cfg), params=run_params, split_id=split_id,
                               train=train_rows.tolist(), val=val_rows.tolist(), cache=spec)

    torch.manual_seed(int(params.seed))  # the initial weights
    model = build_scorer(scorer_cfg).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    state = {"epoch": 0, "best_srcc": -math.inf, "best_epoch": -1, "best_val": None,
             "best_state": None, "bad_evals": 0, "stopped_early": False, "history": []}

    if last_path.exists():
        saved = torch.load(last_path, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") == fingerprint and saved.get("format_version") == RESUME_FORMAT_VERSION:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["state"]
            torch.set_rng_state(saved["torch_rng"])  # re-seeded per epoch anyway; kept for completeness
            log.info("split %d: resuming after epoch %d from %s", split_id, state["epoch"], last_path)
        else:
            log.warning("%s was made with other config/split/cache; starting split %d afresh", last_path, split_id)

    store = None
    if params.cache_features and can_cache_features(model) and state["epoch"] < params.epochs:
        store = feature_store(cache, model, params.feature_dtype, work_dir=work_dir, progress=progress)
        train_crops = np.concatenate(crops_by_row(cache, train_rows))
        store.ensure(model, train_crops, flips=(False, True), device=device)
        store.ensure(model, np.concatenate(crops_by_row(cache, val_rows)), flips=(False,), device=device)
        log.info("split %d: training on cached backbone features (%d slots, %.0f MB)", split_id,
                 int(store.filled.sum()), store.nbytes / 1e6)

    epochs_this_call = 0
    bar = tqdm(total=params.epochs, initial=state["epoch"], desc=f"train split {split_id}", unit="epoch",
               disable=not progress)
    while state["epoch"] < params.epochs and not state["stopped_early"]:
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            bar.close()
            return {"split_id": split_id, "finished": False, "epochs_run": state["epoch"], "history": state["history"]}
        epoch = state["epoch"]
        torch.manual_seed(epoch_seed(params.seed, epoch))
        data = TrainCropDataset(cache, train_rows, quality[train_rows], params.seed, epoch)
        model.train()
        loss_sum, n_seen = 0.0, 0
        for batch in _feature_batches(data, store, params.batch_size, device) if store else DataLoader(
                data, batch_size=params.batch_size, shuffle=False, num_workers=params.num_workers):
            if store is not None:
                pred = model.forward_features(batch["feats"])["score"].reshape(-1)
            else:
                pred = model(*[batch[k].to(device) for k in IMAGE_KINDS]).reshape(-1)
            target = batch["quality"].to(device=device, dtype=pred.dtype)
            loss = torch.nn.functional.mse_loss(pred, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(target)
            n_seen += len(target)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_seen, 1), "val_srcc": None, "val_plcc": None}
        if (epoch + 1) % params.eval_every == 0 or epoch + 1 == params.epochs:
            val = _validate(model, cache, val_rows, quality[val_rows], params.batch_size, device, store)
            record.update(val_srcc=val["srcc"], val_plcc=val["plcc"])
            score = val["srcc"] if math.isfinite(val["srcc"]) else -2.0  # NaN (constant output) ranks last
            if score > state["best_srcc"]:
                state.update(best_srcc=score, best_epoch=epoch + 1, best_val=val, best_state=_cpu_state(model),
                             bad_evals=0)
            else:
                state["bad_evals"] += 1
                if params.patience and state["bad_evals"] >= params.patience:
                    state["stopped_early"] = True
                    log.info("split %d: no val improvement in %d evaluations; stopping", split_id, params.patience)
        state["history"].append(record)
        state["epoch"] = epoch + 1
        with atomic_path(last_path) as tmp:
            torch.save({"format_version": RESUME_FORMAT_VERSION, "fingerprint": fingerprint,
                        "model": _cpu_state(model), "optimizer": optimizer.state_dict(), "state": state,
                        "torch_rng": torch.get_rng_state()}, tmp)
        _write_curves(curves_path, state["history"])
        log.info("split %d epoch %d: loss %.5f val SRCC %s", split_id, epoch + 1, record["train_loss"],
                 "-" if record["val_srcc"] is None else f"{record['val_srcc']:.4f}")
        bar.update(1)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", val_srcc=record["val_srcc"], best=state["best_epoch"])
        epochs_this_call += 1
    bar.close()

    model.load_state_dict(state["best_state"])
    extra = {
        "split_id": int(split_id),
        "best_epoch": int(state["best_epoch"]),
        "val": {k: float(v) for k, v in state["best_val"].items()},  # NaN if never defined
        "mos_mapping": mos_mapping(index_df),
        "restorer_sha256": spec["restorer_sha256"],
        "restore": spec,
        "restorer_path": str(restorer_path) if restorer_path else "",
        "train_params": to_dict(params),
        "n_train": int(len(train_rows)),
        "n_val": int(len(val_rows)),
    }
    _save_scorer_atomic(out_path, model.cpu(), scorer_cfg, extra)
    log.info("split %d: best epoch %d, val SRCC %.4f -> %s", split_id, extra["best_epoch"], extra["val"]["srcc"], out_path)
    return {"split_id": int(split_id), "finished": True, "best_epoch": extra["best_epoch"], "val": extra["val"],
            "epochs_run": state["epoch"], "stopped_early": state["stopped_early"], "history": state["history"],
            "checkpoint": str(out_path)}
