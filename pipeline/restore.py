"""Stage `restore@<ds>`: index + restorer -> data/cache/<ds>.zarr (resumable, sharded).

`python -m pipeline.restore <ds> [--shard i/n]`. The store is a persistent DVC out: after a
`kill -9`, rerunning finishes only the missing shards. When DVC reruns this stage because
the restorer or the `restore` params changed, the old store is refused by the library
(provenance mismatch) and this stage rebuilds it from scratch, saying why.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys

from diffiqa.errors import ConfigError, ProvenanceError
from pipeline.common import LAYOUT, check_dataset, dataset_root, group, main_guard, params

log = logging.getLogger("pipeline.restore")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def run_restore(
    ds: str,
    all_params: dict | None = None,
    shard: tuple[int, int] = (0, 1),
    create_only: bool = False,
    progress: bool = True,
    rebuild_on_mismatch: bool = True,
) -> dict:
    from diffiqa.data.index import read_prepared
    from diffiqa.restore import RestoreParams, restore_dataset

    p = params() if all_params is None else all_params
    check_dataset(ds, p)
    cfg = group(RestoreParams, p, "restore")
    index, splits = read_prepared(LAYOUT.prepared(ds))
    root = dataset_root(splits)
    store = LAYOUT.cache(ds)
    kwargs = dict(shard=shard, progress=progress, create_only=create_only)
    try:
        return restore_dataset(index, root, store, LAYOUT.restorer, cfg, **kwargs)
    except ProvenanceError as e:
        # Only a whole-store run may rebuild; a shard worker must not delete others' work.
        if not rebuild_on_mismatch or shard != (0, 1) and not create_only:
            raise
        log.warning("%s; rebuilding %s", e, store)
        shutil.rmtree(store)
        return restore_dataset(index, root, store, LAYOUT.restorer, cfg, **kwargs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dataset")
    ap.add_argument("--shard", default="0/1", help="i/n: this process fills shards k with k %% n == i")
    args = ap.parse_args()
    run_restore(args.dataset, shard=parse_shard(args.shard))


if __name__ == "__main__":
    sys.exit(main_guard(main))
