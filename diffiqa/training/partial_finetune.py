"""Partial fine-tuning of an EfficientNet(-Lite): its last stage(s) and a head learn from cached maps.

The frozen part (stem and the first ``cut`` stages) runs once per image and its output map is
cached (:func:`trunk_maps`); training then runs only the *tail* (stages ``cut..``, ``conv_head``,
``bn2``) and a linear head on mean + std pooling of the tail's output. On 500² images the
stride-16 map of Lite0 is (112, 32, 32) after ``cut=5`` and the stride-32 map (192, 16, 16)
after ``cut=6``, so an epoch costs a small part of full fine-tuning.

The head predicts a residual on a *base* prediction (the frozen read-out, e.g. kernel ridge):
for training rows the base must be out-of-fold (a fit that saw the row would leave no residual
to learn), for other rows a fit on the training rows. The output layer starts at zero, so
epoch 0 is the base itself. BatchNorm keeps its ImageNet statistics (eval mode: batches of 16
are too small to estimate them). Loss: MSE of the standardised target plus ``rank_weight``
times a pairwise logistic ranking loss over the batch (SRCC is what is measured). The epoch
count is chosen on held-out rows (``val``): the state of the epoch with the best val SRCC is
kept (epoch 0 included, so a tail that does not help returns the base).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

log = logging.getLogger(__name__)


def split_efficientnet(net: nn.Module, cut: int) -> tuple[nn.Module, nn.Module, int]:
    """A timm EfficientNet classifier -> (trunk = stem + stages[:cut], tail = stages[cut:] + conv_head + bn2,
    tail output channels). The modules are shared with ``net``, not copied."""
    if not 1 <= cut < len(net.blocks):
        raise ValueError(f"cut must be in 1..{len(net.blocks) - 1} (stages of the tail), got {cut}")
    trunk = nn.Sequential(net.conv_stem, net.bn1, *net.blocks[:cut])
    tail = nn.Sequential(*net.blocks[cut:], net.conv_head, net.bn2)
    return trunk, tail, int(net.conv_head.out_channels)


@torch.no_grad()
def trunk_maps(trunk: nn.Module, images01: torch.Tensor, mean, std) -> torch.Tensor:
    """(N,3,H,W) float in [0,1] -> the trunk's (N,C,h,w) map (inputs normalised with ``mean`` / ``std``)."""
    trunk.eval()
    m = torch.as_tensor(mean, dtype=images01.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images01.dtype).view(1, -1, 1, 1)
    return trunk((images01 - m) / s)


class TailRegressor(nn.Module):
    """``maps (N,C,h,w)`` and ``base (N,)`` -> ``base + w . [mean, std](tail(maps)) + b``; w, b start at 0."""

    def __init__(self, tail: nn.Module, channels: int):
        super().__init__()
        self.tail = tail
        self.out = nn.Linear(2 * channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, maps: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        f = self.tail(maps).flatten(2)
        pooled = torch.cat([f.mean(2), f.std(2)], 1)
        return base + self.out(pooled).squeeze(1)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():  # keep the ImageNet statistics (small batches)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def ranking_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over ordered pairs (i, j) with target_i > target_j of softplus(-(pred_i - pred_j))."""
    dp = pred[:, None] - pred[None, :]
    order = (target[:, None] > target[None, :]).to(pred.dtype)
    n = order.sum()
    return (F.softplus(-dp) * order).sum() / n if n > 0 else pred.sum() * 0.0


@dataclass(frozen=True)
class FinetuneParams:
    epochs: int = 8  # the most; the kept state is the best on val
    batch_size: int = 16
    lr_tail: float = 1e-4
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    rank_weight: float = 1.0
    seed: int = 0


def predict(model: TailRegressor, maps: torch.Tensor, base: np.ndarray, ids: np.ndarray, batch: int = 32) -> np.ndarray:
    """Predictions (standardised target scale) of rows ``ids`` of ``maps`` with base predictions ``base[ids]``."""
    model.eval()
    out = []
    with torch.no_grad():
        for b in range(0, len(ids), batch):
            i = ids[b : b + batch]
            out.append(model(maps[i].float(), torch.as_tensor(base[i], dtype=torch.float32)).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def finetune(model: TailRegressor, maps: torch.Tensor, y: np.ndarray, base: np.ndarray, train: np.ndarray,
             val: np.ndarray, params: FinetuneParams = FinetuneParams()) -> dict:
    """Train ``model`` on rows ``train`` of ``maps`` (N,C,h,w) towards ``y`` (N,) standardised
    targets with ``base`` (N,) predictions (out-of-fold on ``train``); keep the state of the
    epoch with the best SRCC on ``val``. Returns {"best_epoch", "val_srcc": per epoch from 0}."""
    g = torch.Generator().manual_seed(params.seed)
    head = list(model.out.parameters())
    head_ids = {id(p) for p in head}
    tail = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    opt = torch.optim.AdamW([{"params": tail, "lr": params.lr_tail}, {"params": head, "lr": params.lr_head}],
                            weight_decay=params.weight_decay)
    yt = torch.as_tensor(y, dtype=torch.float32)
    bt = torch.as_tensor(base, dtype=torch.float32)

    def val_srcc() -> float:  # constant predictions (a constant base at epoch 0) rank nothing: -1
        p = predict(model, maps, base, val)
        return float(stats.spearmanr(p, y[val])[0]) if np.ptp(p) > 0 else -1.0

    history = [val_srcc()]
    best = (history[0], 0, copy.deepcopy(model.state_dict()))
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = train[torch.randperm(len(train), generator=g).numpy()]
        for b in range(0, len(order), params.batch_size):
            i = order[b : b + params.batch_size]
            pred = model(maps[i].float(), bt[i])
            loss = F.mse_loss(pred, yt[i]) + params.rank_weight * ranking_loss(pred, yt[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append(val_srcc())
        log.info("epoch %d: val SRCC %.4f", epoch, history[-1])
        if history[-1] > best[0]:
            best = (history[-1], epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return {"best_epoch": best[1], "val_srcc": history}
