"""Accuracy benchmark: the model, its ablations and the frozen baselines on the same splits.

Every row reads the same content-disjoint splits (``splits.json``: the first ``--splits``),
fits on ``train + val`` (the model: fixed recipe, ``refit``; the baselines: strengths by
k-fold CV on the same rows), and is scored on ``test``: SRCC and PLCC (after the 4-parameter
logistic fit), mean ± std over splits, plus **paired per-split differences** (mean ± s.e.,
splits won and the corrected resampled t-test of Nadeau & Bengio, ``diffiqa.comparison``:
the splits share images, so the plain s.e. overstates certainty) of the model against the
strongest baseline and against its distorted-only ablation.

Inputs are the whole-image tile features of ``benchmarks/tile_features.py`` (every image cut
into tiles that cover it, each tile through the frozen backbone with cell statistics): the
baselines pool them (mean and std over the grid of every level: the same pooled features
as the model's skip path), the model rows train ``diffiqa.training.trainer.train_split`` on
them through a filled feature store (the same numbers the train stage would compute from
the cache, encoded once instead of once per row). Restored / noisy features come from a
restore cache with the same tiles (``tile_features.py --cache``).

    python benchmarks/tile_features.py --prepared P --root R --out T --backbones tf_efficientnet_lite0,tf_efficientnet_lite2
    python benchmarks/tile_features.py ... --cache data/cache/clive.zarr --kinds restored,noisy_1,noisy_2
    python benchmarks/accuracy.py --prepared P --tiles T --splits 10 --rows full,distorted_only,lite02_ridge \\
        --out benchmarks/results/accuracy [--epochs 20] [--cache-sha SHA]

Rows: see ``MODEL_ROWS``, ``BASELINE_ROWS``, ``KRR_ROWS`` and ``recipes.RECIPE_ROWS`` (stacking, the nested recipe). Results merge into ``<out>/results.json``
(rows of earlier runs kept) and ``<out>/tables.md`` is rewritten from all rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import recipes  # noqa: E402

from diffiqa import metrics  # noqa: E402
from diffiqa.comparison import PairedComparison, paired_comparison, split_sizes  # noqa: E402
from diffiqa.io_utils import write_json_atomic, write_text_atomic  # noqa: E402
from diffiqa.scorer import DualBranchScorer, scorer_preset  # noqa: E402
from diffiqa.training.features import FeatureStore, lazy_zeros, remember_store  # noqa: E402
from diffiqa.training.kernel_ridge import rbf_ridge_cv  # noqa: E402
from diffiqa.training.ridge import ridge_blocks  # noqa: E402
from diffiqa.training.trainer import TrainParams, train_split  # noqa: E402

log = logging.getLogger("benchmarks.accuracy")

LITE = {"lite0": "tf_efficientnet_lite0", "lite1": "tf_efficientnet_lite1", "lite2": "tf_efficientnet_lite2"}
MODEL_ROWS = {  # row -> (ScorerConfig overrides on the cpu preset, description)
    "full": ({"use_restored": True, "use_noisy": True}, "VCG + VDA + skip; distorted, restored, noisy_1/2"),
    "distorted_only": ({"use_restored": False, "use_noisy": False}, "the same model, distorted input only"),
    "restored_only": ({"use_noisy": False}, "guidance by the restored image only (no noisy states)"),
    "noisy_only": ({"use_restored": False}, "guidance by the noisy states only (no restored image)"),
    "vcg_only": ({"use_vda": False}, "VCG branch + skip (no VDA)"),
    "vda_only": ({"use_vcg": False}, "VDA branch + skip (no VCG)"),
}
BASELINE_ROWS = {
    "lite0_ridge": ("lite0",), "lite1_ridge": ("lite1",), "lite2_ridge": ("lite2",),
    "lite02_ridge": ("lite0", "lite2"), "lite012_ridge": ("lite0", "lite1", "lite2"),
    "lite012_ridge_avg": ("lite0", "lite1", "lite2"), "lite012_ridge_auto": ("lite0", "lite1", "lite2"),
    "lite012_ridge_guided": ("lite0", "lite1", "lite2"),
}
BASELINE_MODE = {"lite012_ridge_avg": "average", "lite012_ridge_auto": "auto"}  # else concat
MODE_WHAT = {"concat": "ridge", "average": "mean of one ridge per backbone",
             "auto": "ridge or mean of one ridge per backbone, the lower 5-fold CV error"}
KRR_ROWS = {**{n: ("lite0", "lite1", "lite2") for n in ("lite012_krr", "lite012_krr_guided", "lite012_krr_restored",
                                                         "lite012_krr_noisy", "lite012ms_krr", "lite012_krr_dnoisy_s0",
                                                         "lite012_krr_dnoisy_s1")},
            "lite0_krr": ("lite0",), "lite1_krr": ("lite1",), "lite2_krr": ("lite2",)}
MS_ROWS = {"lite012ms_krr"}  # full scale + the half-scale view (--tiles-half), concatenated
# Rows whose pooled features also hold the guidance differences d - k of the skip path
# (``DualBranchScorer.pooled_features``): they need restore-cache tiles (tile_features.py --cache).
GUIDED_KINDS = {"lite012_krr_guided": ("distorted", "restored", "noisy_1", "noisy_2"),
                "lite012_krr_restored": ("distorted", "restored"), "lite012_krr_noisy": ("distorted", "noisy_1", "noisy_2"),
                "lite012_ridge_guided": ("distorted", "restored", "noisy_1", "noisy_2"),
                # the noise-only control of lite012_krr_noisy: d noised like noisy_1/2 (tile_features.py dnoisy_*)
                "lite012_krr_dnoisy_s0": ("distorted", "dnoisy_1_s0", "dnoisy_2_s0"),
                "lite012_krr_dnoisy_s1": ("distorted", "dnoisy_1_s1", "dnoisy_2_s1")}
KRR_WHAT = ("frozen {names}: the pooled features of the ridge rows, standardised; RBF kernel ridge, width (x 1/p) "
            "and alpha by 5-fold CV on train+val")
CLASSICAL_ROWS = {"brisque_krr": "BRISQUE-style 36 NSS features (whole image); RBF kernel ridge, alpha and width "
                                  "by 5-fold CV on train+val"}
BASELINE_WHAT = ("frozen {names}: levels 1-4 + 1280-d head, mean+std per 32-px cell, mean+std over the grid, "
                 "whole image; {how}, alpha by 5-fold CV on train+val")


class TileCache:
    """What the feature path of ``train_split`` reads of a cache: one "crop" per tile."""

    @dataclasses.dataclass
    class Spec:
        restorer_sha256: str
        attrs: dict = dataclasses.field(default_factory=dict)

        def to_attrs(self) -> dict:
            return {**self.attrs, "restorer_sha256": self.restorer_sha256, "tiles": "benchmarks/tile_features.py"}

    def __init__(self, tiles: pd.DataFrame, path: str, sha: str, attrs: dict | None = None):
        self.rows = tiles["row"].to_numpy(np.int64)
        self.path = path
        self.spec = self.Spec(sha, dict(attrs or {}))

    def read(self, kind, ids, raw=False):  # never called: every slot is filled
        raise RuntimeError("TileCache holds features only")


def load_tile_features(tiles_dir: Path, kind: str, backbone: str) -> tuple[np.ndarray, list[int]]:
    arr = np.load(tiles_dir / f"{kind}_{backbone}.npy", mmap_mode="r")
    channels = json.loads((tiles_dir / f"{backbone}.channels.json").read_text())["channels"]
    return arr, channels


def filled_store(model: DualBranchScorer, cache: TileCache, tiles_dir: Path) -> FeatureStore:
    """A FeatureStore whose unflipped slots hold the precomputed tile features of what ``model`` encodes."""
    store = FeatureStore(cache, dtype="float16", progress=False)
    layout, arrays = [], []
    n = len(cache.rows)
    specs = model.backbone_specs  # {key: (backbone name, out indices)}
    for kind in model.kinds_needed:
        for key, (backbone, out_indices) in specs.items():
            if key not in model.backbones:
                continue
            arr, channels = load_tile_features(tiles_dir, kind, backbone)
            offsets = np.concatenate([[0], np.cumsum(channels)])
            want = model.backbones[key].channels
            for i, level in enumerate(out_indices):
                lo, hi = offsets[level - 1], offsets[level]
                if hi - lo != want[i]:
                    raise SystemExit(f"{backbone} level {level}: stored {hi - lo} channels, model wants {want[i]}")
                a = lazy_zeros((2 * n, hi - lo, *arr.shape[-2:]), np.float16)  # odd slots stay untouched (no memory)
                # the backbone compresses cell statistics with a signed log; tile_features stores them
                # raw. In blocks of tiles: a whole level in float32 is ~1 GB (the 1280-d head).
                for b in range(0, n, 64):
                    raw = np.asarray(arr[b : b + 64, lo:hi], dtype=np.float32)
                    a[2 * b : 2 * (b + len(raw)) : 2] = (np.sign(raw) * np.log1p(np.abs(raw))).astype(np.float16)
                layout.append((kind, key, i))
                arrays.append(a)
    store.layout, store.arrays = layout, arrays
    store.filled[0::2] = True
    return store


def pooled(tiles_dir: Path, tiles: pd.DataFrame, n_images: int, backbones, kind="distorted") -> np.ndarray:
    """Image x features: per tile, mean and std over the grid of every stored channel; mean over tiles."""
    per_tile = np.concatenate([pooled_tiles(tiles_dir, kind, bb) for bb in backbones], axis=1)
    out = np.zeros((n_images, per_tile.shape[1]))
    counts = np.bincount(tiles["row"], minlength=n_images).astype(np.float64)
    np.add.at(out, tiles["row"].to_numpy(), per_tile)
    return out / counts[:, None]


def pooled_tiles(tiles_dir: Path, kind: str, backbone: str, block: int = 64) -> np.ndarray:
    """(N_tiles, 2 sum(C)) signed-log cell statistics pooled over the grid (mean, std), memoised
    next to the features as ``pooled_<kind>_<backbone>.npy`` (computed in blocks of tiles: a
    whole array in float32 is gigabytes)."""
    memo = tiles_dir / f"pooled_{kind}_{backbone}.npy"
    src = tiles_dir / f"{kind}_{backbone}.npy"
    if memo.exists() and memo.stat().st_mtime >= src.stat().st_mtime:
        return np.load(memo)
    arr, _ = load_tile_features(tiles_dir, kind, backbone)
    out = []
    for b in range(0, len(arr), block):
        f = np.asarray(arr[b : b + block], dtype=np.float32).reshape(min(block, len(arr) - b), arr.shape[1], -1)
        f = np.sign(f) * np.log1p(np.abs(f))  # as the backbone's cell statistics (signed log)
        out.append(np.concatenate([f.mean(2), f.std(2)], axis=1).astype(np.float64))
    out = np.concatenate(out)
    tmp = memo.with_name(f"{memo.stem}.{os.getpid()}.tmp.npy")  # the feature folder may be shared
    np.save(tmp, out)
    os.replace(tmp, memo)
    return out


def pooled_guided(tiles_dir: Path, tiles: pd.DataFrame, n_images: int, backbones, kinds) -> np.ndarray:
    """[d, d - k for the other kinds]: the skip path's layout (differences, not the kinds' own
    features: the change restoration makes is small next to the content variance)."""
    d = pooled(tiles_dir, tiles, n_images, backbones)
    return np.concatenate([d] + [d - pooled(tiles_dir, tiles, n_images, backbones, k) for k in kinds if k != "distorted"], 1)


def row_features(name, args, tiles, n_images, names) -> np.ndarray:
    kinds = GUIDED_KINDS.get(name, ("distorted",))
    X = pooled_guided(args.tiles, tiles, n_images, [LITE[n] for n in names], kinds)
    if name in MS_ROWS:
        X = np.concatenate([X, pooled(half_tiles(args), tiles, n_images, [LITE[n] for n in names])], 1)
    return X


def half_tiles(args) -> Path:
    if args.tiles_half is None:
        raise SystemExit("this row needs the half-scale view: --tiles-half (tile_features.py --scale 0.5)")
    return args.tiles_half


def row_inputs(name) -> set[str]:
    """What a frozen-feature row reads: {view:kind}; a model is compared with baselines that read a subset."""
    if name in recipes.RECIPE_ROWS:
        return {f"{v}:distorted" for v in recipes.RECIPE_ROWS[name][1]}
    kinds = GUIDED_KINDS.get(name, ("distorted",))
    return {f"full:{k}" for k in kinds} | ({"half:distorted"} if name in MS_ROWS else set())


def chosen(splits, args):
    """(split id, split) of the splits this run computes: all of the first ``--splits``, or
    ``--only-splits`` of them (one row's splits spread over processes; merge the results.json)."""
    only = {int(k) for k in args.only_splits.split(",")} if args.only_splits else None
    return [(k, s) for k, s in enumerate(splits) if only is None or k in only]


def split_metrics(k, pred, mos, **extra) -> dict:
    return {"split": k, "srcc": float(metrics.srcc(pred, mos)), "plcc": float(metrics.plcc(pred, mos)), **extra}


def run_baseline(name, args, index, splits, tiles) -> dict:
    names = BASELINE_ROWS[name]
    mode = BASELINE_MODE.get(name, "concat")
    parts = [row_features(name, args, tiles, len(index), [n]) for n in names]
    X = np.concatenate(parts, axis=1)
    ends = np.cumsum([p.shape[1] for p in parts])
    blocks = [np.arange(e - p.shape[1], e) for e, p in zip(ends, parts)]
    q, mos = index["quality"].to_numpy(np.float64), index["mos"].to_numpy(np.float64)
    per_split = []
    for k, s in chosen(splits, args):
        fit_rows = np.asarray(s["train"] + s["val"], dtype=np.int64)
        test = np.asarray(s["test"], dtype=np.int64)
        fit = ridge_blocks(X[fit_rows], q[fit_rows], blocks, folds=5, seed=0, mode=mode)
        averaged = len(fit.cv_mse) == 1 and len(fit.alphas) > 1
        per_split.append(split_metrics(k, fit.predict(X[test]), mos[test], alpha=fit.alpha, averaged=averaged))
    what = BASELINE_WHAT.format(names=" + ".join(n.capitalize() for n in names), how=MODE_WHAT[mode])
    if name in GUIDED_KINDS:
        what += "; with the guidance differences " + ", ".join(f"d - {k}" for k in GUIDED_KINDS[name][1:])
    return {"per_split": per_split, "what": what, "n_features": int(X.shape[1])}


def krr_fit_predict(X, q, fit_rows, test):
    """RBF kernel ridge on features standardised on ``fit_rows`` (``diffiqa.training.kernel_ridge``:
    width and alpha by 5-fold CV on ``fit_rows``) -> (test predictions, width, alpha)."""
    fit, g = rbf_ridge_cv(X, q, fit_rows)
    return fit.predict(test), g, fit.alpha


def run_krr(name, args, index, splits, tiles) -> dict:
    names = KRR_ROWS[name]
    X = row_features(name, args, tiles, len(index), names)
    q, mos = index["quality"].to_numpy(np.float64), index["mos"].to_numpy(np.float64)
    per_split = []
    for k, s in chosen(splits, args):
        fit_rows = np.asarray(s["train"] + s["val"], dtype=np.int64)
        test = np.asarray(s["test"], dtype=np.int64)
        pred, g, a = krr_fit_predict(X, q, fit_rows, test)
        per_split.append(split_metrics(k, pred, mos[test], gamma=g, alpha=a))
    what = KRR_WHAT.format(names=" + ".join(n.capitalize() for n in names))
    if name in MS_ROWS:
        what += "; full scale and the half-scale view, concatenated"
    if name in GUIDED_KINDS:
        what += "; with the guidance differences " + ", ".join(f"d - {k}" for k in GUIDED_KINDS[name][1:])
    return {"per_split": per_split, "what": what,
            "n_features": int(X.shape[1])}


def run_recipe(name, args, index, splits, tiles) -> dict:
    """Stacking / the nested recipe selection (``benchmarks/recipes.py``) on pooled distorted features."""
    kind, views = recipes.RECIPE_ROWS[name]
    dirs = {"full": args.tiles, **({"half": half_tiles(args)} if "half" in views else {})}
    feats = {(v, bb): pooled(dirs[v], tiles, len(index), [LITE[bb]]) for v in views for bb in recipes.BACKBONES}
    q, mos = index["quality"].to_numpy(np.float64), index["mos"].to_numpy(np.float64)
    per_split = []
    for k, s in chosen(splits, args):
        t0 = time.time()
        fit_rows = np.asarray(s["train"] + s["val"], dtype=np.int64)
        test = np.asarray(s["test"], dtype=np.int64)
        pred, info = recipes.run_split(kind, views, feats, q, fit_rows, test)
        per_split.append(split_metrics(k, pred, mos[test], **info, wall_s=round(time.time() - t0, 1)))
        log.info("%s split %d: test SRCC %.4f %s (%.0f s)", name, k, per_split[-1]["srcc"], info, time.time() - t0)
    return {"per_split": per_split, "what": recipes.what(name)}


def run_classical(name, args, index, splits) -> dict:
    """BRISQUE-style NSS features + RBF kernel ridge, (alpha, width) by k-fold CV on train+val."""
    import baselines

    from diffiqa.training.ridge import fold_ids

    root = Path(json.loads((args.prepared / "splits.json").read_text())["root_abs"])
    X = baselines.nss_features(index, root, args.out / "work", progress=False)
    q, mos = index["quality"].to_numpy(np.float64), index["mos"].to_numpy(np.float64)
    per_split = []
    for k, s in chosen(splits, args):
        fit_rows = np.asarray(s["train"] + s["val"], dtype=np.int64)
        test = np.asarray(s["test"], dtype=np.int64)
        folds = fold_ids(len(fit_rows), 5, seed=0)
        best = None
        for g in baselines.GAMMAS:
            for alpha in baselines.ALPHAS:
                err = 0.0
                for f in range(5):
                    tr, va = fit_rows[folds != f], fit_rows[folds == f]
                    pred, _ = baselines.fit_kernel_ridge_fixed(X, q, tr, va, alpha, g / X.shape[1])
                    err += float(((pred - q[va]) ** 2).sum())
                if best is None or err < best[0]:
                    best = (err, alpha, g / X.shape[1])
        pred, _ = baselines.fit_kernel_ridge_fixed(X, q, fit_rows, test, best[1], best[2])
        per_split.append(split_metrics(k, pred, mos[test], alpha=best[1], gamma=best[2]))
    return {"per_split": per_split, "what": CLASSICAL_ROWS[name], "n_features": int(X.shape[1])}


def run_model(name, args, index, splits, tiles) -> dict:
    overrides, what = MODEL_ROWS[name]
    cfg = scorer_preset("cpu", **overrides, **json.loads(args.scorer or "{}"))
    tp = TrainParams(**{**dict(lr=1e-3, weight_decay=0.05, epochs=args.epochs, batch_size=32, seed=0, refit=True,
                               window=10, ema_decay=0.98), **json.loads(args.train or "{}")})
    cache = TileCache(tiles, str(args.tiles), args.cache_sha)
    work = args.out / "work" / name
    per_split, store = [], None
    mos = index["mos"].to_numpy(np.float64)
    for k, s in chosen(splits, args):
        torch.manual_seed(0)
        if store is None:
            store = filled_store(DualBranchScorer(cfg), cache, args.tiles)
            remember_store(store, DualBranchScorer(cfg))  # train_split reads it as the cache's feature store
        r = train_split(cache, index, s, k, cfg, tp, out_path=work / f"split-{k}.pt", work_dir=work / "resume",
                        progress=False)
        from diffiqa.scorer import load_scorer
        from diffiqa.training.features import predict_images_from_features

        model, _, extra = load_scorer(work / f"split-{k}.pt")
        test = np.asarray(s["test"], dtype=np.int64)
        pred = predict_images_from_features(model, store, test)
        per_split.append(split_metrics(k, pred, mos[test], skip_alpha=r["skip_alpha"], head_gain=r.get("head_gain"),
                                       gains=[float(g) for g in model.branch_gain] if model.branch_gain is not None else None))
        log.info("%s split %d: test SRCC %.4f", name, k, per_split[-1]["srcc"])
    return {"per_split": per_split, "what": what, "scorer": dataclasses.asdict(cfg), "train": dataclasses.asdict(tp)}


def summarize(per_split) -> dict:
    out = {}
    for key in ("srcc", "plcc"):
        v = np.array([s[key] for s in per_split])
        out[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=0))}
    return out


def paired(a: dict, b: dict, splits) -> PairedComparison | None:
    """Per-split SRCC differences a - b on the splits both rows have: mean ± s.e., splits won and
    the corrected resampled t-test (the splits share images; ``diffiqa.comparison``); None
    below 2 common splits."""
    sa = {s["split"]: s["srcc"] for s in a["per_split"]}
    sb = {s["split"]: s["srcc"] for s in b["per_split"]}
    common = sorted(set(sa) & set(sb))
    return paired_comparison(sa, sb, *split_sizes(splits, common)) if len(common) >= 2 else None


def tables(results: dict, header: list[str], splits) -> str:
    lines = [*header, "", "| row | what | SRCC | PLCC | wall s |", "|---|---|---|---|---|"]
    for name, r in results.items():
        s, p = r["srcc"], r["plcc"]
        lines.append(f"| {name} | {r['what']} | {s['mean']:.3f} ± {s['std']:.3f} | {p['mean']:.3f} ± {p['std']:.3f} | {r['wall_s']:.0f} |")
    base = {n: results[n].get("base", n) for n in results}
    baselines = [n for n in results if base[n] in {**BASELINE_ROWS, **KRR_ROWS, **CLASSICAL_ROWS}]
    models = [n for n in results if base[n] in MODEL_ROWS]
    recipe_rows = [n for n in results if base[n] in recipes.RECIPE_ROWS]
    pairs = []
    if baselines and models:
        best = max(baselines, key=lambda n: results[n]["srcc"]["mean"])
        pairs += [(m, best) for m in models]
        if "distorted_only" in results:
            pairs += [(m, "distorted_only") for m in models if m != "distorted_only"]
    for m in recipe_rows:  # against the strongest baseline that reads no more than the recipe does
        fair = [b for b in baselines if base[b] not in CLASSICAL_ROWS and row_inputs(base[b]) <= row_inputs(base[m])]
        if fair:
            pairs.append((m, max(fair, key=lambda n: results[n]["srcc"]["mean"])))
    if pairs:
        ratio = "n_test/n_train = {:.3f}".format(split_sizes(splits)[1] / split_sizes(splits)[0])
        lines += ["", "Paired per-split SRCC differences against the strongest baseline (for a recipe row: the strongest "
                  f"that reads no more than it); corrected resampled t-test of Nadeau & Bengio, df = splits - 1, {ratio}:", "",
                  "| comparison | mean ± s.e. | splits won | corrected t-test (Nadeau & Bengio) |", "|---|---|---|---|"]
        for a, b in pairs:
            c = paired(results[a], results[b], splits)
            lines.append(f"| {a} − {b} | {c.row() if c else 'fewer than 2 common splits | | '} |")
    commands = sorted({r["header"][0] for r in results.values() if r.get("header")})
    if len(commands) > 1 or (commands and commands[0] != header[0]):
        lines += ["", "The rows' own commands:", ""] + [f"- `{c.removeprefix('command: ')}`" for c in commands]
    lines += ["", "Test SRCC per split:", "", "| row | " + " | ".join(str(s["split"]) for s in next(iter(results.values()))["per_split"]) + " |",
              "|---|" + "---|" * len(next(iter(results.values()))["per_split"])]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{s['srcc']:.3f}" for s in r["per_split"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--tiles", type=Path, required=True)
    ap.add_argument("--tiles-half", type=Path, default=None, help="tile features of the half-scale view (rows *ms*)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "accuracy")
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--rows", default="lite0_ridge,lite2_ridge,lite02_ridge,distorted_only")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--only-splits", default="", help="comma-separated split ids of the first --splits to run (default all)")
    ap.add_argument("--scorer", default="", help="JSON overrides of the cpu scorer preset for the model rows")
    ap.add_argument("--train", default="", help="JSON overrides of TrainParams for the model rows")
    ap.add_argument("--merge", default="", help="comma-separated results.json files whose rows join this run's "
                    "(--rows '' rewrites the tables only)")
    ap.add_argument("--label", default="", help="stored as <row>_<label> (variants of one row side by side)")
    ap.add_argument("--cache-sha", default="none", help="sha256 of the restorer behind the restored/noisy tiles")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    index = pd.read_parquet(args.prepared / "index.parquet")
    splits = json.loads((args.prepared / "splits.json").read_text())["splits"][: args.splits]
    tiles = pd.read_parquet(args.tiles / "tiles.parquet")
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text())["results"] if results_path.exists() else {}
    header = [
        f"command: python benchmarks/accuracy.py {shlex.join(sys.argv[1:] if argv is None else argv)}",
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})",
        f"data: {args.prepared} ({len(index)} images, {len(tiles)} tiles), splits 0-{len(splits) - 1}",
    ]
    for other in filter(None, args.merge.split(",")):  # rows of runs written elsewhere (e.g. in parallel)
        results.update(json.loads(Path(other).read_text())["results"])
    if args.merge:
        write_json_atomic(results_path, {"results": results})
    for name in filter(None, args.rows.split(",")):
        t0 = time.time()
        if name in BASELINE_ROWS:
            r = run_baseline(name, args, index, splits, tiles)
        elif name in KRR_ROWS:
            r = run_krr(name, args, index, splits, tiles)
        elif name in CLASSICAL_ROWS:
            r = run_classical(name, args, index, splits)
        elif name in recipes.RECIPE_ROWS:
            r = run_recipe(name, args, index, splits, tiles)
        else:
            r = run_model(name, args, index, splits, tiles)
        r.update(summarize(r["per_split"]), wall_s=time.time() - t0,
                 date=datetime.now(timezone.utc).isoformat(timespec="seconds"), header=header, base=name)
        results[f"{name}_{args.label}" if args.label else name] = r
        write_json_atomic(results_path, {"results": results})
        log.info("%s: SRCC %.3f ± %.3f (%.0f s)", name, r["srcc"]["mean"], r["srcc"]["std"], r["wall_s"])
    all_splits = json.loads((args.prepared / "splits.json").read_text())["splits"]
    write_text_atomic(args.out / "tables.md", tables(results, header, all_splits))
    print(tables(results, header, all_splits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
