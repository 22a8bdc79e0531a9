"""Accuracy benchmark: the model, its ablations and two baselines on the same content-disjoint splits.

Run from a DVC working tree where `dvc repro restore@<ds>` has filled the cache (the cpu
profile: `diffiqa profile cpu && dvc repro restore@clive`). Every row uses the same
`data/prepared/<ds>/splits.json` (first ``--splits`` splits), trains on `train`, selects on
`val` and reports SRCC / PLCC (after the 4-parameter logistic fit) on `test`, mean ± std over
splits. The four model rows share one restore cache and are `ScorerConfig` switches trained
with `diffiqa.training.trainer.train_split` in this one process (the frozen backbone features
are memoised per process, so the first model row pays for encoding the crops).

Rows: full (VCG + VDA, restored and noisy inputs; or the checkpoints of `dvc repro train@<ds>`
with ``--full-models``), vcg_only, vda_only, distorted_only, lite0_ridge (frozen multi-level
EfficientNet-Lite0, mean+std pooled, whole image at native resolution, ridge), brisque_krr (36
NSS features, RBF kernel ridge), niqe (no training; pristine model shipped in the package).

Usage:
  python benchmarks/accuracy.py --dataset clive [--splits 5] [--workdir outputs/bench_accuracy]
      [--skip niqe,vda_only] [--only full,lite0_ridge] [--full-models models/scorer/clive]
      [--params params.yaml] [--epochs N] [--no-progress]
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
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import baselines  # noqa: E402
from diffiqa import metrics  # noqa: E402
from diffiqa.config import from_dict, from_preset, load_params  # noqa: E402
from diffiqa.data.index import read_prepared  # noqa: E402
from diffiqa.evaluation import mos_mapping  # noqa: E402
from diffiqa.io_utils import write_json_atomic  # noqa: E402
from diffiqa.scorer import scorer_preset  # noqa: E402
from diffiqa.training.trainer import TrainParams, train_split  # noqa: E402

log = logging.getLogger("benchmarks.accuracy")

MODEL_ROWS = {  # row -> (ScorerConfig overrides, description)
    "full": ({}, "VCG + VDA, distorted + restored + noisy_1/2"),
    "vcg_only": ({"use_vda": False}, "VCG branch only (`scorer.use_vda=false`)"),
    "vda_only": ({"use_vcg": False}, "VDA branch only (`scorer.use_vcg=false`)"),
    "distorted_only": ({"use_restored": False, "use_noisy": False},
                       "both branches, distorted input only (no diffusion)"),
}
BASELINE_ROWS = {
    "lite0_ridge": "frozen Lite0 levels 1-4, mean+std pooled, whole image; ridge (alpha on val)",
    "brisque_krr": "BRISQUE-style 36 NSS features; RBF kernel ridge (alpha, gamma on val)",
    "niqe": "NIQE (no training; pristine model in diffiqa/assets)",
}
ALL_ROWS = [*MODEL_ROWS, *BASELINE_ROWS]


def summarize(per_split: list[dict]) -> dict:
    out = {}
    for key in ("srcc", "plcc"):
        vals = np.array([s[key] for s in per_split], dtype=np.float64)
        out[key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=0))}
    return out


def evaluate_checkpoint(ckpt, k, cache_path, index, split, tp, row_dir, progress) -> dict:
    """Test SRCC/PLCC of split ``k``'s checkpoint: image score = mean over its cached crops, as
    ``diffiqa.evaluation.evaluate_splits``, but from the per-process feature store when the
    backbones are frozen (the rows share one encoding of the test crops)."""
    from diffiqa.cache import read_cache
    from diffiqa.evaluation import load_model_for_cache, predict_images, quality_to_mos
    from diffiqa.training.features import can_cache_features, feature_store, predict_images_from_features

    cache = read_cache(cache_path)
    model, _cfg, extra = load_model_for_cache(ckpt, cache)
    if int(extra.get("split_id", k)) != k:
        raise SystemExit(f"{ckpt}: is the model of split {extra['split_id']}, not of split {k}")
    test = np.asarray(split["test"], dtype=np.int64)
    if tp.cache_features and can_cache_features(model):
        store = feature_store(cache, model, tp.feature_dtype, work_dir=row_dir / "resume", progress=progress)
        quality = predict_images_from_features(model, store, test)
    else:
        quality = predict_images(model, cache, test, progress=progress)
    pred, mos = quality_to_mos(quality, extra.get("mos_mapping") or mos_mapping(index)), index["mos"].to_numpy()[test]
    return {"split": k, "srcc": metrics.srcc(pred, mos), "plcc": metrics.plcc(pred, mos),
            "best_epoch": extra.get("best_epoch"), "val_srcc": (extra.get("val") or {}).get("srcc")}


def run_model_row(name, overrides, args, index, splits, cache, base_cfg, tp, restorer_path, work) -> dict:  # noqa: PLR0913
    cfg = dataclasses.replace(base_cfg, **overrides)
    row_dir = work / name
    if name == "full" and args.full_models:
        ckpts = [Path(args.full_models) / f"split-{k}.pt" for k in range(len(splits))]
        source = f"checkpoints of {args.full_models}"
    else:
        ckpts = []
        for k, split in enumerate(splits):
            r = train_split(cache, index, split, k, cfg, tp, out_path=row_dir / f"split-{k}.pt", work_dir=row_dir / "resume",
                            progress=args.progress, restorer_path=restorer_path)
            log.info("%s split %d: best epoch %s val SRCC %.4f", name, k, r["best_epoch"], r["val"]["srcc"])
            ckpts.append(Path(r["checkpoint"]))
        source = "trained here"
    per_split = [evaluate_checkpoint(ckpt, k, cache, index, split, tp, row_dir, args.progress)
                 for k, (ckpt, split) in enumerate(zip(ckpts, splits))]
    write_json_atomic(row_dir / "metrics.json", {"per_split": per_split, **summarize(per_split)})
    return {"per_split": per_split, "source": source}


def run_baseline_row(name, args, index, splits, root, work) -> dict:
    mos = index["mos"].to_numpy(np.float64)
    if name == "niqe":
        score = baselines.niqe_scores(index, root, work, args.progress)
        per_split = [{"split": k, "srcc": metrics.srcc(score[s["test"]], mos[s["test"]]),
                      "plcc": metrics.plcc(score[s["test"]], mos[s["test"]])} for k, s in enumerate(splits)]
        return {"per_split": per_split, "source": "no training"}
    if name == "lite0_ridge":
        feats, fit = baselines.lite0_features(index, root, work, args.progress), baselines.fit_ridge
    else:
        feats, fit = baselines.nss_features(index, root, work, args.progress), baselines.fit_kernel_ridge
    per_split = []
    for k, s in enumerate(splits):
        train, val, test = (np.asarray(s[p], dtype=np.int64) for p in ("train", "val", "test"))
        pred, chosen = fit(feats, mos, train, val, test)
        per_split.append({"split": k, "srcc": metrics.srcc(pred, mos[test]), "plcc": metrics.plcc(pred, mos[test]),
                          **chosen})
    return {"per_split": per_split, "source": f"{feats.shape[1]} features"}


def machine_line() -> str:
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {'cuda' if torch.cuda.is_available() else 'cpu'}")


def write_results(path: Path, header: list[str], results: dict) -> None:
    """Merge this run's rows into ``path`` (rows of earlier ``--only`` runs are kept)."""
    merged = json.loads(path.read_text())["results"] if path.exists() else {}
    merged.update(results)
    write_json_atomic(path, {"header": header, "results": merged})


def table(results: dict) -> str:
    lines = ["| method | what | SRCC | PLCC | wall s |", "|---|---|---|---|---|"]
    for name, r in results.items():
        what = MODEL_ROWS[name][1] if name in MODEL_ROWS else BASELINE_ROWS[name]
        s, p = r["srcc"], r["plcc"]
        lines.append(f"| {name} | {what} | {s['mean']:.3f} ± {s['std']:.3f} | {p['mean']:.3f} ± {p['std']:.3f} "
                     f"| {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--splits", type=int, default=5, help="use the first N splits of splits.json")
    ap.add_argument("--workdir", default="outputs/bench_accuracy", help="intermediates (checkpoints, features)")
    ap.add_argument("--params", default="params.yaml", help="scorer and train groups for the model rows")
    ap.add_argument("--skip", default="", help=f"comma-separated rows to leave out, of {ALL_ROWS}")
    ap.add_argument("--only", default="", help="comma-separated rows to run (default: all)")
    ap.add_argument("--full-models", help="the full row evaluates these split-<k>.pt (e.g. models/scorer/clive)")
    ap.add_argument("--epochs", type=int, help="override train.epochs")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = [r.strip() for r in args.only.split(",") if r.strip()] or list(ALL_ROWS)
    skip = {r.strip() for r in args.skip.split(",") if r.strip()}
    unknown = (set(rows) | skip) - set(ALL_ROWS)
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; known: {ALL_ROWS}")
    rows = [r for r in rows if r not in skip]

    ds = args.dataset
    index, splits_obj = read_prepared(Path("data/prepared") / ds)
    splits = splits_obj["splits"][: args.splits]
    if len(splits) < args.splits:
        log.warning("splits.json has only %d splits", len(splits))
    root = Path(splits_obj.get("root_abs") or splits_obj["root"])
    cache = Path("data/cache") / f"{ds}.zarr"
    restorer_path = "models/restorer/restorer.pt"
    params = load_params(args.params)
    base_cfg = from_preset(scorer_preset, params.get("scorer"), "scorer")
    train_group = dict(params.get("train") or {})
    if args.epochs:
        train_group["epochs"] = args.epochs
    tp = from_dict(TrainParams, train_group, "train")
    work = Path(args.workdir) / ds
    work.mkdir(parents=True, exist_ok=True)

    header = [
        f"command: {shlex.join(['python', *sys.argv])}",
        f"date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"machine: {machine_line()}",
        f"data: {ds}, {len(index)} images, {len(splits)} content-disjoint splits "
        f"({splits_obj.get('protocol')}, seeds {splits_obj.get('seeds', [])[: len(splits)]}), "
        f"train/val/test {len(splits[0]['train'])}/{len(splits[0]['val'])}/{len(splits[0]['test'])}",
        f"train params: {json.dumps(train_group)}",
    ]
    results = {}
    for name in rows:
        t0 = time.perf_counter()
        log.info("row %s", name)
        if name in MODEL_ROWS:
            r = run_model_row(name, MODEL_ROWS[name][0], args, index, splits, cache, base_cfg, tp, restorer_path, work)
        else:
            r = run_baseline_row(name, args, index, splits, root, work)
        r.update(summarize(r["per_split"]), wall_s=time.perf_counter() - t0)
        results[name] = r
        log.info("%s: SRCC %.4f ± %.4f, PLCC %.4f ± %.4f (%.0f s)", name, r["srcc"]["mean"], r["srcc"]["std"],
                 r["plcc"]["mean"], r["plcc"]["std"], r["wall_s"])
        write_results(work / "results.json", header, results)
    if "full" in results or any(r in results for r in MODEL_ROWS):
        from diffiqa.cache import read_cache

        spec = read_cache(cache).spec.to_attrs()
        header.append("restore cache: " + ", ".join(f"{k}={spec[k]}" for k in (
            "crop_size", "crops_per_image", "sampler", "steps", "t_start", "keep_steps", "dtype") if k in spec))
    print("\n".join(header) + "\n\n" + table(results))
    print("\nSRCC/PLCC on each split's test part (PLCC after the 4-parameter logistic fit), mean ± std over splits; "
          "wall s = training + evaluation of all splits (the first model row also encodes the crops).")
    write_results(work / "results.json", header, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
