"""Prefect flows over the same stage functions DVC runs (one code path, DESIGN §7).

- `pretrain`: synth_pairs -> pretrain_restorer
- `build_cache`: prepare + restore per dataset; restore shards are mapped over a task runner
  (threads by default, a Dask cluster with `dask_workers > 0` or `dask_address`), each shard
  a retried task writing whole Zarr shards, so many workers fill one store safely.
- `train_evaluate`: train + evaluate per dataset
- `full`: all of the above, in order.

DVC owns "what is stale"; Prefect owns "where and how it runs". A deployment runs in the
working directory of the repository (see prefect.yaml), reading the same params.yaml.
"""

from __future__ import annotations

import os

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.common import params, setup_logging


def _params() -> dict:
    return params(os.environ.get("DIFFIQA_PARAMS", "params.yaml"))


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(ds: str) -> dict:
    from pipeline.prepare import run_prepare

    return run_prepare(ds, _params())


@task(name="synth_pairs", cache_policy=NO_CACHE)
def synth_pairs_task() -> dict:
    from pipeline.synth_pairs import run_synth_pairs

    return run_synth_pairs(_params())


@task(name="pretrain_restorer", cache_policy=NO_CACHE)
def pretrain_restorer_task() -> dict:
    from pipeline.pretrain_restorer import run_pretrain_restorer

    return run_pretrain_restorer(_params())


@task(name="init_cache", cache_policy=NO_CACHE)
def init_cache_task(ds: str) -> dict:
    from pipeline.restore import run_restore

    return run_restore(ds, _params(), create_only=True)


@task(name="restore_shard", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def restore_shard_task(ds: str, shard_index: int, shard_count: int) -> dict:
    from pipeline.restore import run_restore

    return run_restore(ds, _params(), shard=(shard_index, shard_count), progress=False)


@task(name="train", cache_policy=NO_CACHE)
def train_task(ds: str) -> dict:
    from pipeline.train import run_train

    return run_train(ds, _params())


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(ds: str) -> dict:
    from pipeline.evaluate import run_evaluate

    return run_evaluate(ds, _params())


def _datasets(datasets: list[str] | None) -> list[str]:
    return list(datasets or _params().get("datasets") or [])


@flow(name="pretrain", log_prints=True)
def pretrain() -> dict:
    setup_logging()
    synth_pairs_task()
    return pretrain_restorer_task()


@flow(name="restore_shards", log_prints=True)
def restore_shards(ds: str, shards: int) -> list[dict]:
    """Map one dataset's restore over `shards` disjoint shard sets (whole Zarr shards)."""
    futures = restore_shard_task.map(ds, list(range(shards)), shards)
    return [f.result() for f in futures]


def _shard_runner(dask_workers: int, dask_address: str | None):
    if not dask_workers and not dask_address:
        return None
    from prefect_dask import DaskTaskRunner

    if dask_address:  # an existing (multi-node) cluster: `dask scheduler` + `dask worker`s
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": dask_workers, "processes": True, "threads_per_worker": 1},
    )


@flow(name="build_cache", log_prints=True)
def build_cache(
    datasets: list[str] | None = None,
    shards: int = 1,
    dask_workers: int = 0,
    dask_address: str | None = None,
) -> dict:
    setup_logging()
    logger = get_run_logger()
    runner = _shard_runner(dask_workers, dask_address)
    out = {}
    for ds in _datasets(datasets):
        prepare_task(ds)
        init_cache_task(ds)
        sub = restore_shards if runner is None else restore_shards.with_options(task_runner=runner)
        out[ds] = sub(ds, shards)
        logger.info("cache for %s complete (%d shard sets)", ds, shards)
    return out


@flow(name="train_evaluate", log_prints=True)
def train_evaluate(datasets: list[str] | None = None) -> dict:
    setup_logging()
    out = {}
    for ds in _datasets(datasets):
        train_task(ds)
        out[ds] = evaluate_task(ds)
    return out


@flow(name="full", log_prints=True)
def full(datasets: list[str] | None = None, shards: int = 1, dask_workers: int = 0) -> dict:
    datasets = _datasets(datasets)
    for ds in datasets:  # synth_pairs may read a prepared dataset's references (demo)
        prepare_task(ds)
    pretrain()
    build_cache(datasets, shards=shards, dask_workers=dask_workers)
    return train_evaluate(datasets)


if __name__ == "__main__":
    import sys

    names = {"pretrain": pretrain, "build_cache": build_cache, "train_evaluate": train_evaluate, "full": full}
    if len(sys.argv) != 2 or sys.argv[1] not in names:
        sys.exit(f"usage: python -m pipeline.flows {{{','.join(names)}}}")
    names[sys.argv[1]]()
