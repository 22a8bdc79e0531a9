"""Scorer training under torchrun: 2 CPU processes (gloo), each on its slice of every global
batch, end with the same checkpoint as 1 process with the same global batch size (issue 14
item 6). They differ only by float summation order (gradients are averaged across ranks
instead of summed in one batch), and Adam turns float noise in gradients that are zero in
exact arithmetic (attention over a one-token grid) into lr-sized steps of single weights; so
the test compares the models' scores, and the weights' distance with how far they moved."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "ddp_scorer_worker.py"


def _run(cmd, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


@pytest.mark.slow
def test_two_processes_train_the_same_scorer_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, str(WORKER), str(one), "--make-cache"], REPO)
    shutil.copytree(one, two)
    _run([sys.executable, str(WORKER), str(one)], REPO)
    torchrun = Path(sys.executable).with_name("torchrun")
    _run([str(torchrun), "--standalone", "--nproc_per_node=2", str(WORKER), str(two)], REPO)
    from diffiqa.cache import read_cache
    from diffiqa.prediction import predict_images
    from diffiqa.scorer import load_scorer

    a, _, ea = load_scorer(one / "model.pt")
    b, _, eb = load_scorer(two / "model.pt")
    assert ea["n_train"] == eb["n_train"]
    rows = list(range(18))
    pa = predict_images(a, read_cache(one / "ds.zarr"), rows)
    pb = predict_images(b, read_cache(two / "ds.zarr"), rows)
    from diffiqa.scorer import DualBranchScorer
    from tests.test_training import TinyScorerConfig

    torch.manual_seed(3)  # the trainer's initial weights (params.seed = 3 in the worker)
    init = DualBranchScorer(TinyScorerConfig(dropout=0.0)).state_dict()
    sa, sb = a.state_dict(), b.state_dict()
    heads = [k for k in sa if "backbones" not in k and "skip" not in k and sa[k].is_floating_point()]
    diff = torch.cat([(sa[k] - sb[k]).flatten() for k in heads]).norm()
    moved = torch.cat([(sa[k] - init[k]).flatten() for k in heads]).norm()
    assert moved > 0.05 and diff < 0.05 * moved, (float(diff), float(moved))
    assert abs(pa - pb).max() < 1e-2 * (pa.max() - pa.min()), (pa, pb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa if "backbones" in k)
