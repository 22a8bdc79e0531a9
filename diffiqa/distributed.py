"""Data-parallel training past one device: `torchrun` + DistributedDataParallel, kept small.

A plain `python` run gets a one-process context and every helper is a no-op, so the trainers
call them unconditionally. Under `torchrun --nproc_per_node=N`, `from_env()` joins the process
group (NCCL when the process has a GPU, gloo on CPU) and each rank takes its slice of every
*global* batch: the batch size in params stays the global one, so N processes take the same
optimisation steps as one process (up to float summation order; see tests/test_distributed.py).
Only the main process (rank 0) writes files; the others wait at a barrier.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch

from diffiqa.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank in [0, world_size), its device, the backend (None: alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and curves."""
        return self.rank == 0

    def device(self, requested=None) -> torch.device:
        """NCCL ranks use their own GPU (LOCAL_RANK); otherwise `requested`, else cuda if present."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))

    # sharding a global batch
    def rows(self, n_global: int) -> slice:
        """This rank's contiguous slice of a global batch of `n_global` samples; slices differ in
        size by at most one and cover the batch in rank order (so a concatenation over ranks
        is the one-process batch)."""
        base, extra = divmod(n_global, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def shard(self, samples: Sequence[T]) -> list[T]:
        """This rank's part of one global batch (a list of samples, crop ids, ...)."""
        return list(samples[self.rows(len(samples))])

    def loss_weight(self, n_global: int) -> float:
        """Factor for this rank's mean loss so that DDP's gradient average equals the gradient
        of the global batch's mean loss even when slices differ in size: n_local·W/n_global."""
        r = self.rows(n_global)
        return (r.stop - r.start) * self.world_size / n_global


def from_env(backend: str | None = None) -> DistContext:
    """The context of this process. Under torchrun (WORLD_SIZE > 1 in the environment) this
    initialises the default process group once (env:// rendezvous: MASTER_ADDR, MASTER_PORT,
    RANK, WORLD_SIZE); NCCL when CUDA is available, else gloo, unless `backend` says."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"WORLD_SIZE={world} but RANK/LOCAL_RANK are missing or not integers ({e}); "
                          "start the script with torchrun") from None
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    ctx = DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend)
    log.info("distributed: rank %d of %d (%s)", rank, world, backend)
    return ctx


def wrap(net: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DistributedDataParallel around `net` (already on its device) when distributed, else `net`.
    Keep the unwrapped module for state_dict/EMA/saving: the wrapper adds a `module.` prefix.
    BatchNorm becomes SyncBatchNorm on GPUs, so batch statistics are those of the global batch."""
    if not ctx.enabled:
        return net
    from torch.nn.parallel import DistributedDataParallel

    if ctx.backend == "nccl":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return DistributedDataParallel(net, device_ids=[ctx.local_rank])
    return DistributedDataParallel(net)


def all_reduce_mean(value: float | torch.Tensor, ctx: DistContext) -> float | torch.Tensor:
    """Mean over ranks (of a float or a tensor); the value itself when alone."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    is_float = not isinstance(value, torch.Tensor)
    t = torch.tensor([float(value)], dtype=torch.float64) if is_float else value.detach().clone()
    if ctx.backend == "nccl":
        t = t.to(ctx.device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t = t / ctx.world_size
    return float(t.item()) if is_float else t


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when it is true on one (e.g. a time budget spent): ranks must leave a
    training loop together, or the ones still in it wait forever in the next all-reduce."""
    if not ctx.enabled:
        return bool(flag)
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=ctx.device() if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (e.g. for rank 0 to finish writing a checkpoint the others read)."""
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def close(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
