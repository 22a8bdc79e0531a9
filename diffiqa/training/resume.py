"""The resume state of a scorer training run: what an interrupted run needs to continue
exactly, keyed by a fingerprint of the config, rows and cache that made it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import torch

from diffiqa.io_utils import atomic_path

log = logging.getLogger(__name__)

RESUME_FORMAT_VERSION = 2


def fingerprint(**parts) -> str:
    """What a resume state must match: the same config, split rows and cache provenance."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class ResumeState:
    """Everything an interrupted run needs, keyed by a fingerprint of what made it."""

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        self.epoch, self.history = 0, []
        self.best = {"srcc": -math.inf, "epoch": -1, "val": None, "state": None, "bad_evals": 0}
        self.stopped_early = False
        self.finished = False  # set by the loop: False when the time budget cut it

    def load(self, model, ema, optimizer, scheduler) -> bool:
        if not self.path.exists():
            return False
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") != self.fingerprint or saved.get("format_version") != RESUME_FORMAT_VERSION:
            log.warning("%s was made with other config/split/cache; starting afresh", self.path)
            return False
        model.load_state_dict(saved["model"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        self.epoch, self.history, self.best = saved["epoch"], saved["history"], saved["best"]
        self.stopped_early = saved["stopped_early"]
        return True

    def save(self, model, ema, optimizer, scheduler) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({"format_version": RESUME_FORMAT_VERSION, "fingerprint": self.fingerprint,
                        "model": cpu_state(model), "ema": None if ema is None else cpu_state(ema),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "epoch": self.epoch, "history": self.history, "best": self.best,
                        "stopped_early": self.stopped_early}, tmp)
