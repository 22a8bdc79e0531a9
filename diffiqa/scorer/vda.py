"""Visual difference analysis (VDA) branch (DiffV2IQA §III-D).

A CNN backbone (shared weights) gives feature maps f(d), f(r), f(n1), f(n2) for the
distorted, restored and two noisy images. Each chosen level is projected nonlinearly at its
own resolution (:class:`SlotProjection`, shared across the four images), resized to one
grid, and the levels are concatenated and fused (1x1 conv) to ``dim`` channels.
RTAB then attends with Q, K, V taken from the differences f(d)−f(r), f(d)−f(n1),
f(d)−f(n2) (the assignment is ``qkv``, letters from ``d r n1 n2``; ``d`` = f(d) itself), with
a residual on f(d); the score/weight heads give ``(N,)``.

When an input is switched off, its difference is replaced by f(d), so the branch never reads
it: with restored and noisy both off, RTAB is self-attention on f(d).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffiqa.scorer.blocks import RTAB, ScoreWeightHead, SlotProjection
from diffiqa.scorer.vcg import resize_to

SOURCE_KINDS = {"d": "distorted", "r": "restored", "n1": "noisy_1", "n2": "noisy_2"}


class VDABranch(nn.Module):
    """VDA branch; ``forward(feats: dict[kind, list[(N,C_l,H_l,W_l)]]) -> (N,)``."""

    def __init__(
        self,
        level_channels: Sequence[int],
        levels: Sequence[int] = (-1,),
        grid_level: int = -1,
        dim: int = 256,
        heads: int = 4,
        dropout: float = 0.0,
        qkv: Sequence[str] = ("r", "n1", "n2"),
        use_rtab: bool = True,
        use_restored: bool = True,
        use_noisy: bool = True,
        slot_norm: bool = False,
        zero_init: bool = False,
    ):
        super().__init__()
        if len(qkv) != 3 or any(s not in SOURCE_KINDS for s in qkv):
            raise ValueError(f"rtab qkv must be three of {sorted(SOURCE_KINDS)}, got {tuple(qkv)}")
        n = len(level_channels)
        if not levels or any(not -n <= lvl < n for lvl in levels):
            raise ValueError(f"VDA levels {tuple(levels)} out of range for {n} backbone levels")
        self.levels = [lvl % n for lvl in levels]
        self.grid_level = grid_level
        enabled = {"distorted": True, "restored": use_restored, "noisy_1": use_noisy, "noisy_2": use_noisy}
        # None = "use f(d) itself": either asked for ("d") or the input is switched off.
        self.sources = [
            SOURCE_KINDS[s] if SOURCE_KINDS[s] != "distorted" and enabled[SOURCE_KINDS[s]] else None for s in qkv
        ]
        if not use_rtab:
            self.sources = []
        level_dim = max(8, dim // len(self.levels))
        self.level_proj = nn.ModuleList(SlotProjection(level_channels[lvl], level_dim, slot_norm) for lvl in self.levels)
        self.proj = nn.Conv2d(level_dim * len(self.levels), dim, 1)
        self.rtab = RTAB(dim, heads, dropout) if use_rtab else None
        self.head = ScoreWeightHead(dim, dropout=dropout, zero_init=zero_init)

    @property
    def kinds_needed(self) -> set[str]:
        return {"distorted"} | {s for s in self.sources if s is not None}

    def embed(self, levels: Sequence[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """One image's levels -> ``(N,dim,H_g,W_g)``."""
        return self.proj(torch.cat([resize_to(p(levels[lvl]), grid) for lvl, p in zip(self.levels, self.level_proj)], dim=1))

    def forward(self, feats: dict[str, Sequence[torch.Tensor]]) -> torch.Tensor:
        grid = tuple(feats["distorted"][self.grid_level].shape[-2:])
        f_d = self.embed(feats["distorted"], grid)
        if self.rtab is None:
            return self.head(f_d)
        cache = {}

        def source(kind):
            if kind is None:
                return f_d
            if kind not in cache:
                cache[kind] = f_d - self.embed(feats[kind], grid)
            return cache[kind]

        q, k, v = (source(kind) for kind in self.sources)
        return self.head(self.rtab(f_d, q, k, v))
