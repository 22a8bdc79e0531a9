"""Run by tests/test_distributed.py under `torchrun --nproc_per_node=2` (gloo, CPU), or alone.

`helpers OUT`: the all-reduce helpers and DDP's gradient average with uneven slices.
`restorer OUT`: a tiny restorer training (diffiqa.diffusion.training) with a fixed global batch;
rank 0 writes OUT/restorer.pt and OUT/loss.csv. Alone, the same with one process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from diffiqa import distributed


def helpers(out: Path) -> None:
    ctx = distributed.from_env()
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    x, y = torch.randn(5, 3), torch.randn(5)  # 5 samples on 2 ranks: slices of 3 and 2
    full = torch.nn.Linear(3, 1)
    full.load_state_dict(net.state_dict())
    ((full(x).squeeze(1) - y) ** 2).mean().backward()
    ddp = distributed.wrap(net, ctx)
    rows = ctx.rows(len(x))
    loss = ((ddp(x[rows]).squeeze(1) - y[rows]) ** 2).mean() * ctx.loss_weight(len(x))
    loss.backward()
    result = {
        "rank": ctx.rank, "world": ctx.world_size, "rows": [rows.start, rows.stop],
        "mean": distributed.all_reduce_mean(float(ctx.rank), ctx),
        "any": distributed.any_rank(ctx.rank == 1, ctx),
        "grad_err": max(float((a.grad - b.grad).abs().max()) for a, b in zip(net.parameters(), full.parameters())),
    }
    (out / f"helpers-{ctx.rank}.json").write_text(json.dumps(result))
    distributed.close(ctx)


def restorer(out: Path) -> None:
    from diffiqa.diffusion.checkpoint import RestorerConfig
    from diffiqa.diffusion.training import train_restorer
    from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pristine = rng.integers(0, 256, size=(12, 3, 20, 20), dtype=np.uint8)
    distorted = np.clip(pristine.astype(int) + rng.integers(-40, 40, size=pristine.shape), 0, 255).astype(np.uint8)
    unet = UNetConfig(base_channels=8, channel_mults=(1, 2), res_blocks=1, attn_resolutions=(), attn_reference_size=16,
                      dropout=0.0, norm="group", groups=4)
    cfg = RestorerConfig(unet=unet, crop_size=16, batch_size=4, lr=1e-3, steps=6, loss="l1", ema_decay=0.9,
                         checkpoint_every=3, seed=0)
    seen: set[int] = set()  # batch rows each forward saw: the global batch, or this rank's slice
    forward = ConditionalUNet.forward

    def counting_forward(self, x, *args, **kwargs):
        seen.add(int(x.shape[0]))
        return forward(self, x, *args, **kwargs)

    ConditionalUNet.forward = counting_forward
    train_restorer(None, out, cfg, progress=False, device="cpu", pairs=(distorted, pristine))
    import torch.distributed as dist

    grouped = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if grouped else 0
    (out / f"rank-{rank}.json").write_text(json.dumps({"grouped": grouped, "rows_per_forward": sorted(seen)}))
    if grouped:
        dist.destroy_process_group()


if __name__ == "__main__":
    {"helpers": helpers, "restorer": restorer}[sys.argv[1]](Path(sys.argv[2]))
