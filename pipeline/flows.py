"""Prefect flows over the same stage functions DVC runs (one code path, DESIGN §7).

Every DVC stage is a task of the same name (prepare, synth_pairs, pretrain_restorer, restore,
train, evaluate, evaluate_cross, enhance; tests/test_flows.py checks it). The flows group them:
- `pretrain`: synth_pairs -> pretrain_restorer
- `restore`: prepare + restore per dataset; restore's shard sets are mapped over a task runner
  (threads by default, a Dask cluster with `dask_workers > 0` or `dask_address`), each shard
  set a retried `restore` task writing whole Zarr shards, so many workers fill one store safely.
- `train_evaluate`: train + evaluate per dataset, evaluate_cross for params' `cross` pairs
- `full`: all of the above, then enhance.

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


@task(name="restore", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE,
      task_run_name="restore-{ds}-{shard_index}/{shard_count}")
def restore_task(ds: str, shard_index: int = 0, shard_count: int = 1, create_only: bool = False) -> dict:
    """Stage `restore@<ds>`, or one shard set of it (a worker writes whole Zarr shards only);
    `create_only` makes the empty store once, before shard workers fill it."""
    from pipeline.restore import run_restore

    return run_restore(ds, _params(), shard=(shard_index, shard_count), create_only=create_only, progress=False)


@task(name="train", cache_policy=NO_CACHE)
def train_task(ds: str) -> dict:
    from pipeline.train import run_train

    return run_train(ds, _params())


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(ds: str) -> dict:
    from pipeline.evaluate import run_evaluate

    return run_evaluate(ds, _params())


@task(name="evaluate_cross", cache_policy=NO_CACHE, task_run_name="evaluate_cross-{train_ds}-to-{test_ds}")
def evaluate_cross_task(train_ds: str, test_ds: str) -> dict:
    from pipeline.evaluate import run_evaluate_cross

    return run_evaluate_cross(train_ds, test_ds, _params())


@task(name="enhance", cache_policy=NO_CACHE)
def enhance_task() -> list[dict]:
    from pipeline.enhance import run_enhance

    return run_enhance(_params(), progress=False)


def _datasets(datasets: list[str] | None) -> list[str]:
    return list(datasets or _params().get("datasets") or [])


@flow(name="pretrain", log_prints=True)
def pretrain() -> dict:
    setup_logging()
    synth_pairs_task()
    return pretrain_restorer_task()


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


def _restore_shards(ds: str, shards: int, runner) -> list[dict]:
    """Map one dataset's `restore` task over `shards` disjoint shard sets, on the flow's own
    threads or on a Dask cluster (a runner chosen at run time, so no sub-flow is needed)."""
    mapped = {"ds": ds, "shard_index": list(range(shards)), "shard_count": shards}
    if runner is None:
        return [f.result() for f in restore_task.map(**mapped)]
    with runner:
        return [f.result() for f in runner.map(restore_task, mapped)]


@flow(name="restore", log_prints=True)
def restore(
    datasets: list[str] | None = None,
    shards: int = 1,
    dask_workers: int = 0,
    dask_address: str | None = None,
) -> dict:
    """prepare + restore per dataset; restore's shard sets are tasks (threads, or Dask)."""
    setup_logging()
    logger = get_run_logger()
    out = {}
    for ds in _datasets(datasets):
        prepare_task(ds)
        restore_task(ds, create_only=True)
        out[ds] = _restore_shards(ds, shards, _shard_runner(dask_workers, dask_address))
        logger.info("cache for %s complete (%d shard sets)", ds, shards)
    return out


@flow(name="train_evaluate", log_prints=True)
def train_evaluate(datasets: list[str] | None = None) -> dict:
    """train + evaluate per dataset, then evaluate_cross for the `cross` pairs of params.yaml."""
    setup_logging()
    out = {}
    for ds in _datasets(datasets):
        train_task(ds)
        out[ds] = evaluate_task(ds)
    for pair in _params().get("cross") or []:
        out[f"{pair['train']}_to_{pair['test']}"] = evaluate_cross_task(pair["train"], pair["test"])
    return out


@flow(name="full", log_prints=True)
def full(datasets: list[str] | None = None, shards: int = 1, dask_workers: int = 0) -> dict:
    """Every stage in dvc.yaml's order: prepare, synth_pairs, pretrain_restorer, restore,
    train, evaluate, evaluate_cross, enhance."""
    datasets = _datasets(datasets)
    for ds in datasets:  # synth_pairs may read a prepared dataset's references (demo)
        prepare_task(ds)
    pretrain()
    restore(datasets, shards=shards, dask_workers=dask_workers)
    out = train_evaluate(datasets)
    if _params().get("enhance"):
        out["enhance"] = enhance_task()
    return out


if __name__ == "__main__":
    import sys

    names = {"pretrain": pretrain, "restore": restore, "train_evaluate": train_evaluate, "full": full}
    if len(sys.argv) != 2 or sys.argv[1] not in names:
        sys.exit(f"usage: python -m pipeline.flows {{{','.join(names)}}}")
    names[sys.argv[1]]()
