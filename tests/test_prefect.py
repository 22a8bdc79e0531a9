"""Prefect for real: a local server on 127.0.0.1, the `gpu` work pool, `prefect deploy`,
a process worker running a demo deployment, and the restore flow mapped over a 2-worker
Dask cluster writing the same Zarr store as a single process (issue 7 items 4, 5).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.pipeline_repo import BIN, env, make_repo, run

pytestmark = pytest.mark.slow

ONE_SPLIT = {"prepare.splits": 1, "train.epochs": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop what we started by its own process group (the worker has children)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    e = env()
    e.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_LOGGING_LEVEL="WARNING",
        DASK_TEMPORARY_DIRECTORY=str(home / "dask"),
    )
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=e, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(1)
    else:
        _stop(proc)
        pytest.fail(f"prefect server did not become healthy:\n{(home / 'server.log').read_text()[-2000:]}")
    yield e
    _stop(proc)


def _run(cmd, cwd, e, timeout=900, check=True):
    r = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("prefect-repo") / "repo", ONE_SPLIT)
    run(["dvc", "repro", "restore@demo"], repo)
    return repo


def _arrays(store: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    return {name: np.asarray(g[name][...]) for name in sorted(g.array_keys())}


def test_restore_over_two_dask_workers_equals_single_process(repo, server):
    store = repo / "data" / "cache" / "demo.zarr"
    single = _arrays(store)
    assert single["done"].all()
    shutil.rmtree(store)
    code = (
        "from pipeline.flows import restore\n"
        "if __name__ == '__main__':\n"
        "    restore(['demo'], shards=2, dask_workers=2)\n"
    )
    (repo / "run_dask.py").write_text(code)
    _run([str(BIN / "python"), "run_dask.py"], repo, server)
    distributed = _arrays(store)
    assert distributed.keys() == single.keys()
    for name in single:
        np.testing.assert_array_equal(distributed[name], single[name], err_msg=name)


def test_deployment_runs_through_worker_in_gpu_pool(repo, server):
    e = dict(server, DIFFIQA_REPO=str(repo))
    _run([str(BIN / "prefect"), "work-pool", "create", "gpu", "--type", "process"], repo, e)
    _run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], repo, e)
    log = open(repo / "worker.log", "w")
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "gpu"],
        cwd=repo, env=e, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        r = _run(
            [str(BIN / "prefect"), "deployment", "run", "train_evaluate/diffiqa-train-evaluate",
             "-p", 'datasets=["demo"]', "--watch", "--watch-timeout", "600"],
            repo, e, check=False, timeout=700,
        )
        assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-2000:]}\n{(repo / 'worker.log').read_text()[-3000:]}"
        assert "Completed" in r.stdout + r.stderr
        assert (repo / "metrics" / "demo.json").exists()
    finally:
        _stop(worker)
