"""Visual compensation guidance (VCG) branch (DiffV2IQA §III-C).

Input: backbone feature maps for each of the four images, ``feats[kind][level]`` of shape
``(N,C_level,H_level,W_level)``. Steps:

1. **Selection** (4:2:1:1 by default): a list of slots ``(kind, level)`` — the distorted
   image contributes 4 levels, the restored 2, each noisy state 1. A slot whose kind is
   switched off (``use_restored`` / ``use_noisy`` False) takes the *distorted* features of
   the same level instead, so the branch never reads a disabled input.
2. Each slot is projected *nonlinearly* at its own resolution (:class:`SlotProjection`:
   1x1 conv + GELU, with signed log + LayerNorm for frozen CNN statistics) to ``slot_dim``
   channels, then resized to one grid (the size of ``grid_level`` in the distorted
   features). Projecting before resizing keeps what the fine levels say: averaging signed
   features first kept only 9-30 % of their spatial variance. (The paper concatenates the
   raw ViT maps and projects once; a ViT's maps all share one grid, so there it is the same.)
3. **Noise-level embedding**: one learned vector per kind (distorted, restored, noisy_1,
   noisy_2 are four noise levels), added to or concatenated with each slot of that kind.
4. Concatenate the slots along channels, 1x1 conv to ``embed_dim``, then TAB, then a Swin
   stage, then the score/weight heads: ``(N,)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffiqa.scorer.blocks import TAB, ScoreWeightHead, SlotProjection, SwinStage

KINDS = ("distorted", "restored", "noisy_1", "noisy_2")


def selection_levels(counts: Sequence[int], n_levels: int) -> tuple[tuple[int, ...], ...]:
    """Counts per kind (e.g. 4,2,1,1) -> level positions per kind: the deepest ``k`` levels."""
    if len(counts) != len(KINDS):
        raise ValueError(f"selection needs one count per kind {KINDS}, got {tuple(counts)}")
    if max(counts) > n_levels or min(counts) < 0:
        raise ValueError(f"selection {tuple(counts)} needs 0..{n_levels} levels per kind")
    return tuple(tuple(range(n_levels - k, n_levels)) for k in counts)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N,C,H,W)`` to ``size``: antialiased when shrinking, bilinear when growing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class VCGBranch(nn.Module):
    """VCG branch; ``forward(feats: dict[kind, list[(N,C_l,H_l,W_l)]]) -> (N,)``.

    ``level_channels``: channels of each backbone level; ``levels_by_kind``: level positions
    per kind in the order of :data:`KINDS`.
    """

    def __init__(
        self,
        level_channels: Sequence[int],
        levels_by_kind: Sequence[Sequence[int]],
        grid_level: int = -1,
        slot_dim: int = 128,
        embed_dim: int = 256,
        heads: int = 4,
        window_size: int = 4,
        swin_depth: int = 2,
        dropout: float = 0.0,
        embedding: str | None = "concat",
        use_tab: bool = True,
        use_swin: bool = True,
        use_restored: bool = True,
        use_noisy: bool = True,
        slot_norm: bool = False,
        zero_init: bool = False,
    ):
        super().__init__()
        if embedding not in (None, "concat", "add"):
            raise ValueError(f"embedding must be 'concat', 'add' or None, got {embedding!r}")
        enabled = {"distorted": True, "restored": use_restored, "noisy_1": use_noisy, "noisy_2": use_noisy}
        # slots: (kind whose features are read, level); a disabled kind reads the distorted image.
        self.slots = []
        for kind, levels in zip(KINDS, levels_by_kind):
            for level in levels:
                if not -len(level_channels) <= level < len(level_channels):
                    raise ValueError(f"VCG level {level} out of range for {len(level_channels)} backbone levels")
                self.slots.append((kind if enabled[kind] else "distorted", level % len(level_channels)))
        if not self.slots:
            raise ValueError("VCG selection is empty")
        self.grid_level = grid_level
        self.embedding = embedding
        self.slot_proj = nn.ModuleList(SlotProjection(level_channels[lvl], slot_dim, slot_norm) for _, lvl in self.slots)
        self.kind_embedding = nn.Parameter(torch.zeros(len(KINDS), slot_dim)) if embedding else None
        if self.kind_embedding is not None:
            nn.init.trunc_normal_(self.kind_embedding, std=0.02)
        per_slot = slot_dim * (2 if embedding == "concat" else 1)
        self.fuse = nn.Conv2d(per_slot * len(self.slots), embed_dim, 1)
        self.act = nn.GELU()
        self.tab = TAB(embed_dim, heads, dropout) if use_tab else nn.Identity()
        self.swin = SwinStage(embed_dim, swin_depth, heads, window_size, dropout) if use_swin else nn.Identity()
        self.head = ScoreWeightHead(embed_dim, dropout=dropout, zero_init=zero_init)

    @property
    def kinds_needed(self) -> set[str]:
        return {kind for kind, _ in self.slots}

    def tokens(self, feats: dict[str, Sequence[torch.Tensor]]) -> torch.Tensor:
        """Selected, embedded and fused features before TAB: ``(N,embed_dim,H_g,W_g)``."""
        grid = tuple(feats["distorted"][self.grid_level].shape[-2:])
        parts = []
        for (kind, level), proj in zip(self.slots, self.slot_proj):
            x = resize_to(proj(feats[kind][level]), grid)
            if self.kind_embedding is not None:
                e = self.kind_embedding[KINDS.index(kind)].view(1, -1, 1, 1)
                x = x + e if self.embedding == "add" else torch.cat([x, e.expand_as(x)], dim=1)
            parts.append(x)
        return self.act(self.fuse(torch.cat(parts, dim=1)))

    def forward(self, feats: dict[str, Sequence[torch.Tensor]]) -> torch.Tensor:
        x = self.tokens(feats)
        x = self.swin(self.tab(x))
        return self.head(x)
