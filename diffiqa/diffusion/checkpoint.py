"""RestorerConfig and restorer checkpoints (DESIGN §2: a dict with ``state_dict``, the config
that built the model, and a format version; loaded with ``weights_only=True``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffiqa.config import from_dict, to_dict
from diffiqa.diffusion.unet import ConditionalUNet, UNetConfig
from diffiqa.errors import DiffiqaError
from diffiqa.io_utils import atomic_path

FORMAT_VERSION = 1
KIND = "diffiqa-restorer"


@dataclass
class RestorerConfig:
    """Everything that builds and trains a restorer (the ``pretrain_restorer`` params group).

    crop_size: side of the random training crops (<= the pairs' side). loss: "l1" (SR3) or
    "l2" on the predicted noise. ema_decay: 0 = off, else the EMA weights are what
    ``restorer.pt`` holds. checkpoint_every: steps between ``last.pt`` writes (resume points).
    num_workers: kept for params compatibility; the pairs are held in memory and crops are
    cut in the main process, so it is currently unused.
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    crop_size: int = 64
    batch_size: int = 16
    lr: float = 1e-4
    steps: int = 1000
    loss: str = "l1"
    ema_decay: float = 0.0
    checkpoint_every: int = 100
    seed: int = 0
    num_workers: int = 0


def save_restorer(path: str | Path, net: torch.nn.Module, cfg: RestorerConfig, extra: dict | None = None) -> None:
    """Write ``{state_dict, config, format_version, kind, extra}`` atomically.

    ``extra``: plain values only (numbers, strings, lists, dicts, tensors) so that
    ``weights_only`` loading accepts it.
    """
    ckpt = {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "config": to_dict(cfg),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_restorer(path: str | Path, map_location="cpu") -> tuple[ConditionalUNet, RestorerConfig, dict[str, Any]]:
    """-> (net in eval mode, RestorerConfig, extra). Errors name the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise DiffiqaError(f"{p}: restorer checkpoint not found (train one with the pretrain_restorer stage)")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not a usable checkpoint"
        raise DiffiqaError(f"{p}: not a readable restorer checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise DiffiqaError(f"{p}: not a diffiqa restorer checkpoint (kind={ckpt.get('kind') if isinstance(ckpt, dict) else None!r})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise DiffiqaError(f"{p}: format_version {ckpt.get('format_version')} (this code reads {FORMAT_VERSION})")
    cfg = from_dict(RestorerConfig, ckpt["config"], where=f"{p}:config")
    net = ConditionalUNet(cfg.unet)
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), cfg, ckpt.get("extra", {})
