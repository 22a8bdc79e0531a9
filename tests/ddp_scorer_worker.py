"""Run by tests/test_distributed_scorer.py: train the tiny real scorer on a tiny cache with one
global batch size, under `torchrun --nproc_per_node=2` (gloo, CPU) or alone; rank 0 writes
OUT/model.pt. Argument: OUT."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffiqa.training import TrainParams, train_split  # noqa: E402
from tests.test_training import TinyScorerConfig, make_cache, make_index, make_split  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    index = make_index()
    cache = out / "ds.zarr"
    if not cache.exists():  # written once, before torchrun starts (see the test)
        raise SystemExit(f"{cache} missing")
    cfg = TinyScorerConfig(dropout=0.0)  # dropout masks would differ between 1 and 2 processes
    params = TrainParams(lr=3e-3, weight_decay=0.01, epochs=2, batch_size=6, seed=3, refit=True, window=0,
                         ema_decay=0.5)
    train_split(cache, index, make_split(), 0, cfg, params, out / "model.pt", out / "work", progress=False,
                device="cpu")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    if len(sys.argv) > 2 and sys.argv[2] == "--make-cache":
        out.mkdir(parents=True, exist_ok=True)
        make_cache(out / "ds.zarr", make_index())
    else:
        main(out)
