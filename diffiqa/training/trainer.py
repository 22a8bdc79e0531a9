"""Train the scorer of one split from the restore cache, resumable after ``kill -9``.

One loop (:func:`run_epochs`) around three parts:

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
from diffiqa.training.datasets import crops_by_row
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


def _config_dict(cfg) -> dict:
    try:
        return to_dict(cfg)
    except TypeError:  # not a dataclass (a test stand-in): its attributes will do
        return dict(vars(cfg))


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
               progress=True, stop_after_epochs=None, label="train", ctx=None) -> bool:
    """The loop: epochs from ``state.epoch`` to ``params.epochs``; returns False when cut by
    ``stop_after_epochs`` (a simulated kill). ``ctx``: the distributed context (this rank
    trains on its slice of each global batch through a DDP wrapper)."""
    ctx = ctx or distributed.DistContext()
    device = next(p.device for p in model.parameters())
    net = distributed.wrap(model, ctx)
    evaluated = ema.module if ema is not None else model
    bar = tqdm(total=params.epochs, initial=state.epoch, desc=label, unit="epoch", disable=not progress)
    done_now = 0
    while state.epoch < params.epochs and not state.stopped_early:
        if stop_after_epochs is not None and done_now >= stop_after_epochs:
            bar.close()
            return False
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
            m = _val_metrics(source, evaluated, *val)
            record.update(val_srcc=m["srcc"], val_plcc=m["plcc"])
            score = m["srcc"] if math.isfinite(m["srcc"]) else -2.0  # NaN ranks last
            if score > state.best["srcc"]:
                state.best.update(srcc=score, epoch=epoch + 1, val=m, state=_cpu_state(evaluated), bad_evals=0)
            else:
                state.best["bad_evals"] += 1
                if not params.refit and params.patience and state.best["bad_evals"] >= params.patience:
                    state.stopped_early = True
        state.history.append(record)
        state.epoch = epoch + 1
        if ctx.is_main:
            state.save(model, ema, optimizer, scheduler)
        bar.update(1)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", val_srcc=record["val_srcc"])
        done_now += 1
    bar.close()
    return True


def _skip_and_branches(model, source, rows) -> tuple[np.ndarray, np.ndarray]:
    """``(skip path, branches' part)`` of the scores of ``rows``: the score at gain 0 and the
    difference to the score at gain 1."""
    keep = model.head_gain
    try:
        model.head_gain = 0.0
        skip = source.predict(model, rows)
        model.head_gain = 1.0
        return skip, source.predict(model, rows) - skip
    finally:
        model.head_gain = keep


def _fit_model(cfg, params: TrainParams, cache, store, rows, quality, device, work_dir: Path, state_path: Path,
               fingerprint: str, val, progress: bool, stop_after_epochs, label: str, ctx, train_heads: bool = True):
    """Build the scorer for ``cfg``, set its skip path by ridge on ``rows``, train its branches
    on ``rows`` (resumable through ``state_path``) -> ``(model, source, state, skip alpha)``;
    the model is the weight average when there is one. ``train_heads=False``: no epochs (the
    branches stay as built; with gain 0 they do not count)."""
    torch.manual_seed(int(params.seed))  # the initial weights
    model = build_scorer(cfg).to(device)
    if params.cache_features and can_cache_features(model):
        store = store or feature_store(cache, model, params.feature_dtype, work_dir=work_dir, progress=progress)
        source = FeatureSource(store, cache, model, rows, quality[rows], params.seed, params.batch_size,
                               params.window, device)
        if val is not None:
            store.ensure(model, np.concatenate(crops_by_row(cache, val[0])), device=device)
    else:
        source = PixelSource(cache, rows, quality[rows], params.seed, params.batch_size, device)

    offsets, skip_alpha = None, None
    if getattr(model, "skip", None) is not None:
        skip = fit_skip(model, source, rows, quality[rows], params.ridge_folds, params.seed, params.skip_fit)
        offsets, skip_alpha = skip["offsets"], skip["alpha"]
    state = ResumeState(state_path, fingerprint)
    state.finished = True
    if not train_heads:
        return model.eval(), source, state, skip_alpha

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / params.batch_size)
    total = params.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: _lr_factor(i, total, params.warmup))
    ema = None
    if params.ema_decay > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(params.ema_decay), use_buffers=True)
    if state.load(model, ema, optimizer, scheduler):
        log.info("%s: resuming after epoch %d", label, state.epoch)
    state.finished = run_epochs(model, ema, source, optimizer, scheduler, state, params, val, offsets,
                                progress, stop_after_epochs, label=label, ctx=ctx)
    return (ema.module if ema is not None else model), source, state, skip_alpha


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
    store=None,
) -> dict:
    """Train split ``split_id`` (``split["train"]``, plus ``split["val"]`` with ``params.refit``); write ``out_path``.

    ``index_df``: the dataset's index (``quality`` is the target). ``restorer_path`` (the
    checkpoint that filled the cache) is recorded so ``diffiqa score`` can restore new images.
    ``curves_path`` defaults to ``work_dir/split-<k>.curves.csv``. ``stop_after_epochs``
    stops this call after that many epochs (a simulated kill; the run resumes on the next call).
    ``cache_path`` may also be an open cache; ``store``: a :class:`FeatureStore` to use instead
    of the per-process one (benchmarks fill one from features computed elsewhere).
    Returns ``{"split_id", "best_epoch", "val", "epochs_run", "stopped_early", "finished",
    "history", "checkpoint", "skip_alpha", "head_gain"}``; ``finished`` is False only when ``stop_after_epochs``
    cut it. With ``params.head_gains`` the branches' gain is first chosen by k-fold CV on the fit
    rows (:mod:`diffiqa.training.head_gain`; each fold resumable like the main run), then the
    model is trained on all of them and saved with that gain (0: skip path only, no epochs).
    """
    out_path, work_dir = Path(out_path), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    curves_path = Path(curves_path) if curves_path else work_dir / f"split-{split_id}.curves.csv"
    ctx = distributed.from_env()
    device = ctx.device(device) if ctx.enabled else resolve_device(device)
    cache = cache_path if hasattr(cache_path, "rows") else read_cache(cache_path)
    train_rows = np.asarray(split["train"], dtype=np.int64)
    val_rows = np.asarray(split.get("val", []), dtype=np.int64)
    if len(train_rows) == 0 or (not params.refit and len(val_rows) < 4):
        raise ConfigError(f"split {split_id}: needs train rows and, without refit, at least 4 val rows "
                          f"(has {len(train_rows)} train, {len(val_rows)} val)")
    fit_rows = np.concatenate([train_rows, val_rows]) if params.refit else train_rows
    quality = index_df["quality"].to_numpy(np.float32)
    spec = cache.spec.to_attrs()
    # The feature switches change speed, not the model (up to float16 rounding).
    run_params = {k: v for k, v in to_dict(params).items() if k not in ("cache_features", "feature_dtype")}
    fingerprint = _fingerprint(cfg=_config_dict(scorer_cfg), params=run_params, split_id=split_id,
                               train=train_rows.tolist(), val=val_rows.tolist(), cache=spec)

    def fit(cfg, rows, state_path, val, stop=None, label="train", train_heads=True):
        return _fit_model(cfg, params, cache, store, rows, quality, device, work_dir, state_path,
                          _fingerprint(run=fingerprint, rows=np.asarray(rows).tolist(), cfg=_config_dict(cfg)),
                          val, progress and ctx.is_main, stop, label, ctx, train_heads)

    if params.head_gains and not getattr(scorer_cfg, "skip", False):
        raise ConfigError("train.head_gains needs a scorer with a skip path (scorer.skip: true)")
    val = (val_rows, quality[val_rows]) if len(val_rows) >= 4 else None
    gain = None
    train_cfg = scorer_cfg
    if params.head_gains:  # g by k-fold CV on the fit rows; the branches then train at gain 1
        train_cfg = dataclasses.replace(scorer_cfg, head_gain=1.0)

        def fit_predict(inner, held):
            f = int(len(gain_parts))
            model, source, _, _ = fit(train_cfg, inner, work_dir / f"split-{split_id}.gain-fold-{f}.last.pt", None,
                                      label=f"split {split_id} gain fold {f}")
            parts = _skip_and_branches(model, source, held)
            gain_parts.append(parts)
            return parts

        gain_parts: list = []
        choice = choose_head_gain(fit_rows, quality[fit_rows], params.head_gains, params.gain_folds,
                                  params.seed + 1, fit_predict)
        gain = choice["gain"]
        log.info("split %d: head gain %s (held-out MSE %s)", split_id, gain, choice["errors"])
    # g = 0: the branches would be multiplied by 0, so they are not trained (skip path only)
    model, source, state, skip_alpha = fit(train_cfg, fit_rows, work_dir / f"split-{split_id}.last.pt", val,
                                           stop_after_epochs, f"train split {split_id}", train_heads=gain != 0)
    finished = state.finished
    if ctx.is_main:
        _write_curves(curves_path, state.history)
    if not finished:
        return {"split_id": split_id, "finished": False, "epochs_run": state.epoch, "history": state.history}

    final = model
    if gain is not None:
        scorer_cfg = dataclasses.replace(scorer_cfg, head_gain=gain)
        final.head_gain = gain
    if params.refit or state.best["state"] is None:
        best_epoch, val_metrics = state.epoch, (state.history[-1] if val and state.history else {})
        val_metrics = {"srcc": val_metrics.get("val_srcc"), "plcc": val_metrics.get("val_plcc")}
    else:
        final.load_state_dict(state.best["state"])
        best_epoch, val_metrics = state.best["epoch"], state.best["val"]
    extra = {
        "split_id": int(split_id),
        "best_epoch": int(best_epoch),
        "val": {k: (float("nan") if v is None else float(v)) for k, v in val_metrics.items()},
        "val_in_training": bool(params.refit),
        "skip_alpha": skip_alpha,
        "head_gain": gain,
        "head_gain_cv_mse": {str(g): e for g, e in choice["errors"].items()} if gain is not None else None,
        "mos_mapping": mos_mapping(index_df),
        "restorer_sha256": spec["restorer_sha256"],
        "restore": spec,
        "restorer_path": str(restorer_path) if restorer_path else "",
        "train_params": to_dict(params),
        "n_train": int(len(fit_rows)),
        "n_val": int(len(val_rows)),
    }
    if ctx.is_main:
        _save_scorer_atomic(out_path, final.cpu(), scorer_cfg, extra)
    distributed.barrier(ctx)
    log.info("split %d: %d epochs, skip alpha %s -> %s", split_id, state.epoch, skip_alpha, out_path)
    return {"split_id": int(split_id), "finished": True, "best_epoch": extra["best_epoch"], "val": extra["val"],
            "epochs_run": state.epoch, "stopped_early": state.stopped_early, "history": state.history,
            "checkpoint": str(out_path), "skip_alpha": skip_alpha, "head_gain": gain}
