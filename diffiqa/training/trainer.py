"""Train the scorer of one split from the restore cache, resumable after ``kill -9``.

``train_split`` in steps, over one :class:`SplitRun` (what every fit of the split shares):
``choose_gain`` (k-fold CV of the branches' gain, one fit per fold) -> ``fit_final`` (all rows)
-> the checkpoint. Each fit (``SplitRun.fit``) builds the scorer, sets its skip path
(``fit_skip``) and trains its branches with one loop (:func:`run_epochs`) around three parts:

- a **batch source** (:mod:`diffiqa.training.sources`): cached frozen features (the whole
  grid of covering tiles; training sees a random window of it, mirrored at random) or pixels
  (backbones being trained);
- a **resume state** (:class:`ResumeState`): model, optimiser, schedule, weight average and
  history, written atomically after every epoch; all randomness of epoch e is seeded from
  (seed, e), so a resumed run ends with the same weights as an uninterrupted one;
- a **model choice**: with ``refit`` (the default for small data) the fixed recipe trains on
  train + val and the final weight average is the model — no selection on 50 noisy val
  images; without it, the epoch with the best val SRCC (of the averaged weights) is kept.

Small-data recipe: AdamW with real weight decay, linear warm-up then cosine decay, an EMA of
the weights. When the scorer has a skip path, it is first set to ridge regression on the
pooled features with its strength chosen by k-fold CV (:mod:`diffiqa.training.ridge`), and
the branches learn on top of the *out-of-fold* ridge predictions: the model starts as the
linear probe and the branches (zero-initialised heads) only add what generalises across folds.
Loss: MSE on ``quality`` (in [0,1], higher = better). ``test`` is never touched here.
Curves: ``epoch, train_loss, val_srcc, val_plcc`` (with ``refit``, val is part of training:
the curve shows fit, not generalisation).

Past one device: under ``torchrun --nproc_per_node=N`` (:mod:`diffiqa.distributed`) every
rank builds the same batches and takes its slice of each *global* batch (``batch_size`` stays
the global one), DDP averages the gradients, and only rank 0 writes; N processes take the
same steps as one (up to float summation order; ``tests/test_distributed.py``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from diffiqa.cache import read_cache
from diffiqa.config import to_dict
from diffiqa import distributed
from diffiqa.devices import resolve_device
from diffiqa.errors import ConfigError, DiffiqaError
from diffiqa.io_utils import atomic_path, write_text_atomic
from diffiqa.prediction import mos_mapping
from diffiqa.cache import crops_by_row
from diffiqa.training.features import can_cache_features, feature_store
from diffiqa.training.head_gain import choose_head_gain
from diffiqa.training.resume import ResumeState, cpu_state as _cpu_state, fingerprint as _fingerprint
from diffiqa.training.ridge import DEFAULT_ALPHAS, SKIP_FITS, ridge_blocks
from diffiqa.training.sources import FeatureSource, PixelSource, take

log = logging.getLogger(__name__)

CURVE_COLUMNS = ("epoch", "train_loss", "val_srcc", "val_plcc")


@dataclass
class TrainParams:
    lr: float = 1e-3
    weight_decay: float = 0.05
    epochs: int = 20
    batch_size: int = 32
    seed: int = 0
    num_workers: int = 0  # kept for old params files; batches are built in-process
    eval_every: int = 1  # validate every n epochs (and always after the last)
    patience: int = 0  # without refit: stop after this many validations without a better val SRCC
    warmup: float = 0.1  # fraction of the steps with a linear warm-up; then cosine decay to 0
    ema_decay: float = 0.98  # per-step EMA of the weights (0 = off)
    refit: bool = True  # train on train + val with the fixed recipe (no selection)
    window: int = 10  # training window of the feature grid, cells a side (0 = whole grid)
    ridge_folds: int = 5  # k of the k-fold CV that picks the skip path's ridge strength
    # Frozen backbones: encode every crop once (diffiqa.training.features) and train only the
    # heads on the stored features. Same model up to the storage rounding of the features.
    cache_features: bool = True
    feature_dtype: str = "float16"  # or "float32"
    # Candidate gains g of the branches over the skip path (score = skip + g * branches), chosen
    # by gain_folds-fold CV on the rows trained on (diffiqa.training.head_gain); () = the config's.
    head_gains: tuple[float, ...] = ()
    gain_folds: int = 2
    # The skip path's ridge: "concat" (all pooled features), "average" (mean of one fit per skip
    # backbone) or "auto" (the lower k-fold error of the two on the fit rows)
    skip_fit: str = "concat"

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ConfigError("train.epochs, train.batch_size and train.eval_every must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.patience < 0 or self.num_workers < 0:
            raise ConfigError("train.lr must be > 0; weight_decay, patience, num_workers >= 0")
        if not 0.0 <= self.warmup < 1.0 or not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("train.warmup and train.ema_decay must be in [0, 1)")
        if self.window < 0 or self.ridge_folds < 2:
            raise ConfigError("train.window must be >= 0 and train.ridge_folds >= 2")
        self.head_gains = tuple(float(g) for g in self.head_gains)
        if any(not g >= 0 for g in self.head_gains) or self.gain_folds < 2:
            raise ConfigError(f"train.head_gains must be >= 0 and train.gain_folds >= 2, got {list(self.head_gains)}, "
                              f"{self.gain_folds}")
        if self.skip_fit not in SKIP_FITS:
            raise ConfigError(f"train.skip_fit must be one of {list(SKIP_FITS)}, got {self.skip_fit!r}")
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


def _write_curves(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for rec in history:
        writer.writerow({k: ("" if rec.get(k) is None else rec[k]) for k in CURVE_COLUMNS})
    write_text_atomic(path, buf.getvalue())


def _lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over ``warmup * total`` steps, then cosine decay to 0 at ``total``."""
    n_warm = max(1, int(round(warmup * total)))
    if step < n_warm:
        return (step + 1) / n_warm
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - n_warm) / max(1, total - n_warm))))


def _val_metrics(source, model, rows, quality) -> dict:
    from diffiqa import metrics

    pred = source.predict(model, rows)
    try:
        return {"srcc": float(metrics.srcc(pred, quality)), "plcc": float(metrics.plcc(pred, quality))}
    except DiffiqaError as e:  # constant predictions (e.g. zero-initialised heads, no skip)
        log.warning("val metrics undefined (%s); recorded as NaN", e)
        return {"srcc": float("nan"), "plcc": float("nan")}


def fit_skip(model, source, rows, quality, folds: int, seed: int, mode: str = "concat") -> dict[int, float]:
    """Set ``model.skip`` to k-fold-CV ridge on the pooled features of ``rows``; freeze it.
    ``mode``: one fit on all features, the mean of one per skip backbone, or the better of the
    two by k-fold error (:func:`diffiqa.training.ridge.ridge_blocks`).

    Returns ``{row: out-of-fold ridge prediction}`` (the offsets the branches train on).
    """
    X = source.pooled(model, rows)
    fit = ridge_blocks(X, quality, model.skip_blocks() if mode != "concat" else None, DEFAULT_ALPHAS, folds, seed,
                       mode)
    model.skip.set_ridge(fit)
    model.skip.requires_grad_(False)
    log.info("skip path: ridge on %d pooled features of %d images, alpha %.3g (k=%d CV)", X.shape[1], len(rows),
             fit.alpha, folds)
    averaged = len(fit.cv_mse) == 1 and len(fit.alphas) > 1
    return {"alpha": list(fit.alphas) if averaged else fit.alpha, "offsets": {int(r): float(o) for r, o in zip(rows, fit.oof)}}


def run_epochs(model, ema, source, optimizer, scheduler, state: ResumeState, params: TrainParams, val, offsets,
               progress=True, max_seconds=None, label="train", ctx=None) -> bool:
    """The loop: epochs from ``state.epoch`` to ``params.epochs``; returns False when the time
    budget ``max_seconds`` ran out first (checked at the end of each epoch; the state saved
    there resumes). ``ctx``: the distributed context (this rank trains on its slice of each
    global batch through a DDP wrapper)."""
    ctx = ctx or distributed.DistContext()
    device = next(p.device for p in model.parameters())
    net = distributed.wrap(model, ctx)
    evaluated = ema.module if ema is not None else model
    bar = tqdm(total=params.epochs, initial=state.epoch, desc=label, unit="epoch", disable=not progress)
    t0 = time.perf_counter()
    while state.epoch < params.epochs and not state.stopped_early:
        epoch = state.epoch
        torch.manual_seed(epoch_seed(params.seed, epoch))
        model.train()
        loss_sum, n_seen = 0.0, 0
        for batch in source.batches(epoch):
            n_global = len(batch["quality"])
            mine = ctx.rows(n_global)
            off = None
            if offsets is not None:
                off = torch.tensor([offsets[int(r)] for r in batch["rows"][mine]], dtype=torch.float32, device=device)
            pred = source.forward(net, take(batch["inputs"], mine), skip_offset=off).reshape(-1)
            target = batch["quality"][mine].to(device=device, dtype=pred.dtype)
            # weighted so that DDP's gradient average is the gradient of the global batch's mean
            if len(target):
                loss = torch.nn.functional.mse_loss(pred, target) * ctx.loss_weight(n_global)
            else:  # a last global batch smaller than the world: this rank has no rows (no NaN mean)
                loss = pred.sum() * 0.0
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += float(distributed.all_reduce_mean(float(loss.detach()), ctx)) * n_global
            n_seen += n_global
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_seen, 1), "val_srcc": None, "val_plcc": None}
        if val is not None and ((epoch + 1) % params.eval_every == 0 or epoch + 1 == params.epochs):
            record.update(_validate(source, evaluated, val, state, params))
        state.history.append(record)
        state.epoch = epoch + 1
        if ctx.is_main:
            state.save(model, ema, optimizer, scheduler)
        bar.update(1)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", val_srcc=record["val_srcc"])
        out_of_time = max_seconds is not None and time.perf_counter() - t0 >= max_seconds
        if distributed.any_rank(out_of_time and state.epoch < params.epochs, ctx):
            bar.close()
            return False
    bar.close()
    return True


def _validate(source, evaluated, val, state: ResumeState, params: TrainParams) -> dict:
    """Val SRCC/PLCC of the averaged weights; keeps the best epoch and counts patience."""
    m = _val_metrics(source, evaluated, *val)
    score = m["srcc"] if math.isfinite(m["srcc"]) else -2.0  # NaN ranks last
    if score > state.best["srcc"]:
        state.best.update(srcc=score, epoch=state.epoch + 1, val=m, state=_cpu_state(evaluated), bad_evals=0)
    else:
        state.best["bad_evals"] += 1
        if not params.refit and params.patience and state.best["bad_evals"] >= params.patience:
            state.stopped_early = True
    return {"val_srcc": m["srcc"], "val_plcc": m["plcc"]}


@dataclass
class Fit:
    """One trained scorer: the model (the weight average when there is one), the batch source
    it was trained and is scored through, its resume state and the skip path's ridge alpha."""

    model: torch.nn.Module
    source: FeatureSource | PixelSource
    state: ResumeState
    skip_alpha: float | list | None


@dataclass
class SplitRun:
    """What every fit of one split shares: the cache and targets, the recipe, where resume
    states go, and the fingerprint that keys them (config, params, rows, cache provenance)."""

    split_id: int
    cache: object
    quality: np.ndarray  # (index rows,) float32 targets in [0,1]
    params: TrainParams
    work_dir: Path
    device: torch.device
    ctx: distributed.DistContext
    progress: bool
    fingerprint: str

    def fit(self, cfg, rows, name: str, val=None, label: str = "train", train_heads: bool = True,
            max_seconds: float | None = None) -> Fit:
        """Build the scorer for ``cfg``, set its skip path (``fit_skip``) and train its branches
        on ``rows``, resumable through ``work_dir/name``. ``train_heads`` False: no epochs (the
        branches stay as built; at gain 0 they do not count)."""
        p = self.params
        torch.manual_seed(int(p.seed))  # the initial weights
        model = build_scorer(cfg).to(self.device)
        source = self._source(model, rows, val)
        offsets, skip_alpha = None, None
        if getattr(model, "skip", None) is not None:
            skip = fit_skip(model, source, rows, self.quality[rows], p.ridge_folds, p.seed, p.skip_fit)
            offsets, skip_alpha = skip["offsets"], skip["alpha"]
        state = ResumeState(self.work_dir / name,
                            _fingerprint(run=self.fingerprint, rows=np.asarray(rows).tolist(), cfg=to_dict(cfg)))
        state.finished = True
        if not train_heads:
            return Fit(model.eval(), source, state, skip_alpha)
        trainable = [q for q in model.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=p.lr, weight_decay=p.weight_decay)
        total = p.epochs * math.ceil(len(rows) / p.batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: _lr_factor(i, total, p.warmup))
        ema = None
        if p.ema_decay > 0:
            ema = torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(p.ema_decay), use_buffers=True)
        if state.load(model, ema, optimizer, scheduler):
            log.info("%s: resuming after epoch %d", label, state.epoch)
        state.finished = run_epochs(model, ema, source, optimizer, scheduler, state, p, val, offsets,
                                    self.progress and self.ctx.is_main, max_seconds, label=label, ctx=self.ctx)
        return Fit(ema.module if ema is not None else model, source, state, skip_alpha)

    def _source(self, model, rows, val):
        p = self.params
        if not (p.cache_features and can_cache_features(model)):
            return PixelSource(self.cache, rows, self.quality[rows], p.seed, p.batch_size, self.device)
        store = feature_store(self.cache, model, p.feature_dtype, work_dir=self.work_dir,
                              progress=self.progress and self.ctx.is_main)
        source = FeatureSource(store, self.cache, model, rows, self.quality[rows], p.seed, p.batch_size, p.window,
                               self.device)
        if val is not None:
            store.ensure(model, np.concatenate(crops_by_row(self.cache, val[0])), device=self.device)
        return source


def choose_gain(run: SplitRun, cfg, rows) -> dict | None:
    """The branches' gain g by k-fold CV on ``rows`` (``train.head_gains``; None when unset):
    each fold fits a scorer at gain 1 on the other folds and scores its own with
    ``forward_parts``; g minimises the held-out error of skip + g * branches
    (:mod:`diffiqa.training.head_gain`). -> ``{"gain", "errors", ...}``."""
    p = run.params
    if not p.head_gains:
        return None
    at_one = dataclasses.replace(cfg, head_gain=1.0)
    folds = iter(range(p.gain_folds))

    def fit_predict(inner, held):
        f = next(folds)
        fit = run.fit(at_one, inner, f"split-{run.split_id}.gain-fold-{f}.last.pt",
                      label=f"split {run.split_id} gain fold {f}")
        parts = fit.source.predict_parts(fit.model, held)
        return parts[:, 0], parts[:, 1]

    choice = choose_head_gain(rows, run.quality[rows], p.head_gains, p.gain_folds, p.seed + 1, fit_predict)
    log.info("split %d: head gain %s (held-out MSE %s)", run.split_id, choice["gain"], choice["errors"])
    return choice


def fit_final(run: SplitRun, cfg, rows, val, gain: float | None, max_seconds: float | None = None) -> Fit:
    """The split's model: trained on all ``rows`` (branches at gain 1 when a gain was chosen,
    not trained at all when it is 0), then scored with ``gain``."""
    train_cfg = cfg if gain is None else dataclasses.replace(cfg, head_gain=1.0)
    fit = run.fit(train_cfg, rows, f"split-{run.split_id}.last.pt", val, f"train split {run.split_id}",
                  train_heads=gain != 0, max_seconds=max_seconds)
    if fit.state.finished and gain is not None:
        fit.model.head_gain = gain
    return fit


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
    max_seconds: float | None = None,
) -> dict:
    """Train split ``split_id`` (``split["train"]``, plus ``split["val"]`` with ``params.refit``); write ``out_path``.

    ``index_df``: the dataset's index (``quality`` is the target). ``restorer_path`` (the
    checkpoint that filled the cache) is recorded so ``diffiqa score`` can restore new images.
    ``curves_path`` defaults to ``work_dir/split-<k>.curves.csv``. ``max_seconds``: stop at the
    first epoch end after this much training (resumable: the next call continues). ``cache_path``
    may also be an open cache. Steps: ``choose_gain`` (with ``params.head_gains``; each fold
    resumable like the main run) -> ``fit_final`` -> the checkpoint with that gain.
    Returns ``{"split_id", "best_epoch", "val", "epochs_run", "stopped_early", "finished",
    "history", "checkpoint", "skip_alpha", "head_gain"}``; ``finished`` is False only when the
    time budget cut it.
    """
    out_path, work_dir = Path(out_path), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = distributed.from_env()
    cache = cache_path if hasattr(cache_path, "rows") else read_cache(cache_path)
    train_rows = np.asarray(split["train"], dtype=np.int64)
    val_rows = np.asarray(split.get("val", []), dtype=np.int64)
    if len(train_rows) == 0 or (not params.refit and len(val_rows) < 4):
        raise ConfigError(f"split {split_id}: needs train rows and, without refit, at least 4 val rows "
                          f"(has {len(train_rows)} train, {len(val_rows)} val)")
    if params.head_gains and not getattr(scorer_cfg, "skip", False):
        raise ConfigError("train.head_gains needs a scorer with a skip path (scorer.skip: true)")
    fit_rows = np.concatenate([train_rows, val_rows]) if params.refit else train_rows
    quality = index_df["quality"].to_numpy(np.float32)
    # The feature switches change speed, not the model (up to float16 rounding).
    run_params = {k: v for k, v in to_dict(params).items() if k not in ("cache_features", "feature_dtype")}
    fingerprint = _fingerprint(cfg=to_dict(scorer_cfg), params=run_params, split_id=split_id,
                               train=train_rows.tolist(), val=val_rows.tolist(), cache=cache.spec.to_attrs())
    run = SplitRun(split_id, cache, quality, params, work_dir, ctx.device(device) if ctx.enabled else resolve_device(device),
                   ctx, progress, fingerprint)
    val = (val_rows, quality[val_rows]) if len(val_rows) >= 4 else None

    choice = choose_gain(run, scorer_cfg, fit_rows)
    gain = None if choice is None else choice["gain"]
    fit = fit_final(run, scorer_cfg, fit_rows, val, gain, max_seconds)
    if ctx.is_main:
        _write_curves(Path(curves_path) if curves_path else work_dir / f"split-{split_id}.curves.csv", fit.state.history)
    if not fit.state.finished:
        return {"split_id": split_id, "finished": False, "epochs_run": fit.state.epoch, "history": fit.state.history}
    return _save_split(run, fit, scorer_cfg if gain is None else dataclasses.replace(scorer_cfg, head_gain=gain),
                       choice, index_df, fit_rows, val_rows, out_path, restorer_path)


def _save_split(run: SplitRun, fit: Fit, cfg, choice, index_df, fit_rows, val_rows, out_path: Path,
                restorer_path) -> dict:
    """Write the split's checkpoint (the chosen epoch's weights, its provenance) -> the summary."""
    state, params, gain = fit.state, run.params, None if choice is None else choice["gain"]
    if params.refit or state.best["state"] is None:
        best_epoch, last = state.epoch, (state.history[-1] if len(val_rows) >= 4 and state.history else {})
        val_metrics = {"srcc": last.get("val_srcc"), "plcc": last.get("val_plcc")}
    else:
        fit.model.load_state_dict(state.best["state"])
        best_epoch, val_metrics = state.best["epoch"], state.best["val"]
    spec = run.cache.spec.to_attrs()
    extra = {
        "split_id": int(run.split_id),
        "best_epoch": int(best_epoch),
        "val": {k: (float("nan") if v is None else float(v)) for k, v in val_metrics.items()},
        "val_in_training": bool(params.refit),
        "skip_alpha": fit.skip_alpha,
        "head_gain": gain,
        "head_gain_cv_mse": {str(g): e for g, e in choice["errors"].items()} if choice is not None else None,
        "mos_mapping": mos_mapping(index_df),
        "restorer_sha256": spec["restorer_sha256"],
        "restore": spec,
        "restorer_path": str(restorer_path) if restorer_path else "",
        "train_params": to_dict(params),
        "n_train": int(len(fit_rows)),
        "n_val": int(len(val_rows)),
    }
    if run.ctx.is_main:
        _save_scorer_atomic(out_path, fit.model.cpu(), cfg, extra)
    distributed.barrier(run.ctx)
    log.info("split %d: %d epochs, skip alpha %s -> %s", run.split_id, state.epoch, fit.skip_alpha, out_path)
    return {"split_id": int(run.split_id), "finished": True, "best_epoch": extra["best_epoch"], "val": extra["val"],
            "epochs_run": state.epoch, "stopped_early": state.stopped_early, "history": state.history,
            "checkpoint": str(out_path), "skip_alpha": fit.skip_alpha, "head_gain": gain}
