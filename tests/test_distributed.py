"""diffiqa.distributed: sharding a global batch, the helpers alone and under torchrun (gloo, CPU),
and a restorer trained by 2 processes vs 1 process with the same global batch (issue 14 item 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffiqa import distributed
from diffiqa.distributed import DistContext
from diffiqa.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "ddp_worker.py"


@pytest.mark.parametrize("n,world", [(8, 2), (5, 2), (7, 3), (2, 4)])
def test_rank_slices_cover_the_global_batch_in_order(n, world):
    ctxs = [DistContext(rank=r, world_size=world) for r in range(world)]
    parts = [c.shard(list(range(n))) for c in ctxs]
    assert sum(parts, []) == list(range(n))  # concatenated over ranks = the one-process batch
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # weighted rank means, averaged over ranks as DDP averages gradients, give the global mean
    values = [float(v) ** 2 for v in range(n)]
    rank_terms = [c.loss_weight(n) * sum(c.shard(values)) / len(p) for c, p in zip(ctxs, parts) if p]
    assert sum(rank_terms) / world == pytest.approx(sum(values) / n)


def test_alone_everything_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.from_env()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled) == (0, 1, True, False)
    net = torch.nn.Linear(2, 1)
    assert distributed.wrap(net, ctx) is net
    assert distributed.all_reduce_mean(2.5, ctx) == 2.5
    assert distributed.any_rank(False, ctx) is False
    assert ctx.rows(6) == slice(0, 6) and ctx.loss_weight(6) == 1.0
    distributed.barrier(ctx)


def test_world_without_rank_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        distributed.from_env()


def _torchrun(args: list[str], tmp_path: Path, nproc: int = 2) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port=0",
           "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:0", str(WORKER), *args]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"torchrun failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


@pytest.mark.slow  # two torch processes start (~10 s on 2 cores)
def test_helpers_under_torchrun_gloo(tmp_path):
    _torchrun(["helpers", str(tmp_path)], tmp_path)
    got = [json.loads((tmp_path / f"helpers-{r}.json").read_text()) for r in (0, 1)]
    assert [g["rows"] for g in got] == [[0, 3], [3, 5]]
    assert all(g["world"] == 2 and g["mean"] == 0.5 and g["any"] is True for g in got)
    # uneven slices (3 + 2 samples): DDP's averaged gradient = the 5-sample batch's gradient
    assert all(g["grad_err"] < 1e-6 for g in got), got

