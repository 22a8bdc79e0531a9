"""kill -9 in the middle of `pretrain_restorer`, `restore` and `train` (the real stage
commands, in a demo repository): each rerun resumes and ends with the same result as an
uninterrupted run (issue 7 item 8)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from tests.pipeline_repo import env, make_repo, run

pytestmark = pytest.mark.slow

ONE_SPLIT = {"prepare.splits": 1, "train.epochs": 3, "pretrain_restorer.steps": 40}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("reliability") / "repo", ONE_SPLIT)
    run(["dvc", "repro", "synth_pairs", "prepare@demo"], repo)
    return repo


def kill_when(cmd: list[str], cwd: Path, ready, timeout: float = 300) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` is true; fail if it finished first."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail(f"{cmd} finished before it could be killed: {proc.stderr.read().decode()[-1500:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{cmd}: readiness not reached in {timeout} s")


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def stage(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"pipeline.{name}", *args]


def test_pretrain_restorer_resumes_after_kill(repo):
    ckpt = repo / "models" / "restorer" / "restorer.pt"
    last = repo / "data" / "resume" / "pretrain_restorer" / "last.pt"
    kill_when(stage("pretrain_restorer"), repo, last.exists)
    assert not ckpt.exists()
    run(stage("pretrain_restorer"), repo)
    shutil.copy(ckpt, repo / "resumed.pt")
    shutil.rmtree(repo / "data" / "resume" / "pretrain_restorer")
    run(stage("pretrain_restorer"), repo)
    assert_same_weights(repo / "resumed.pt", ckpt)


def _arrays(store: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    return {k: np.asarray(g[k][...]) for k in sorted(g.array_keys())}


def test_restore_resumes_after_kill_without_recomputing(repo):
    store = repo / "data" / "cache" / "demo.zarr"

    def some_done() -> bool:
        try:
            done = zarr.open_group(str(store), mode="r")["done"][...]
        except Exception:
            return False
        return 0 < done.sum() < len(done)

    kill_when(stage("restore", "demo"), repo, some_done)
    done_before = zarr.open_group(str(store), mode="r")["done"][...].copy()
    assert 0 < done_before.sum() < len(done_before)
    run(stage("restore", "demo"), repo)
    resumed = _arrays(store)
    assert resumed["done"].all()
    shutil.rmtree(store)
    run(stage("restore", "demo"), repo)
    fresh = _arrays(store)
    for k in fresh:
        np.testing.assert_array_equal(resumed[k], fresh[k], err_msg=k)


def test_train_resumes_after_kill(repo):
    out = repo / "models" / "scorer" / "demo" / "split-0.pt"
    work = repo / "data" / "resume" / "train" / "demo"

    def one_epoch_saved() -> bool:
        return any(work.glob("split-0*.last.pt")) if work.exists() else False

    kill_when(stage("train", "demo"), repo, one_epoch_saved)
    assert not out.exists()
    run(stage("train", "demo"), repo)
    shutil.copy(out, repo / "scorer_resumed.pt")
    shutil.rmtree(work)
    run(stage("train", "demo"), repo)
    assert_same_weights(repo / "scorer_resumed.pt", out)
