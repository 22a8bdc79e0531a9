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



@pytest.mark.slow  # a tiny U-Net trained 6 steps, by 1 process and by 2 (~1 min on 2 busy cores)
def test_restorer_on_two_processes_matches_one_process_with_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(WORKER), "restorer", str(one)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _torchrun(["restorer", str(two)], tmp_path)

    assert json.loads((one / "rank-0.json").read_text()) == {"grouped": False, "rows_per_forward": [4]}
    for rank in (0, 1):  # each rank's forward saw its half of the global batch of 4
        assert json.loads((two / f"rank-{rank}.json").read_text()) == {"grouped": True, "rows_per_forward": [2]}
    losses = [[float(v) for v in line.split(",")] for line in (two / "loss.csv").read_text().split()[1:]]
    assert [int(s) for s, _ in losses] == list(range(1, 7))  # one writer: no duplicate rows
    ref = [[float(v) for v in line.split(",")] for line in (one / "loss.csv").read_text().split()[1:]]
    assert [l for _, l in losses] == pytest.approx([l for _, l in ref], rel=1e-5)  # all-reduced loss = global loss

    a = torch.load(one / "restorer.pt", weights_only=True)["state_dict"]
    b = torch.load(two / "restorer.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    # Not bit-identical: DDP sums the ranks' gradients in another order than one process sums
    # the batch (float addition is not associative); measured max |diff| ~1e-5 after 6 steps.
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    print(f"2 processes vs 1: max |weight difference| {diff:.2e}")
    assert diff < 1e-4, diff
