"""Attention blocks and heads shared by the VCG and VDA branches.

All blocks take and return feature maps ``(N,C,H,W)``; H and W may be any size.

- :class:`TAB`: transposed attention (MANIQA / Restormer "MDTA"): self-attention *across
  channels* (a C/h x C/h attention map per head, cost linear in H*W), with a residual.
- :class:`RTAB`: the same channel attention, but Q, K and V come from three different
  inputs (in VDA: differences of distorted-image features with the restored / noisy ones),
  and the residual is added to a fourth (the distorted features).
- :class:`SwinStage`: timm's ``SwinTransformerStage`` (window attention, shifted windows) with
  padding to whole windows and a mask computed per input size, so any grid size works.
- :class:`ScoreWeightHead`: a score and a positive weight per spatial token;
  the image score is ``sum(w*s) / sum(w)``.
- :class:`SlotProjection`: the per-level nonlinear projection (``1x1 conv -> GELU``, with an
  optional channel LayerNorm in front for frozen CNN statistics, whose channels differ in
  scale by orders of magnitude).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerStage
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of an ``(N,C,H,W)`` map."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SlotProjection(nn.Module):
    """``(N,C,H,W) -> (N,dim,H,W)``: [channel LayerNorm,] 1x1 conv, GELU.

    Nonlinear at each level's own grid, before anything pools it (a linear projection
    followed by averaging would keep only the mean of signed features).
    """

    def __init__(self, in_channels: int, dim: int, normalise: bool = False):
        super().__init__()
        self.normalise = normalise
        self.norm = ChannelLayerNorm(in_channels) if normalise else nn.Identity()
        self.proj = nn.Conv2d(in_channels, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(self.norm(x)))


def channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                      temperature: torch.Tensor, attn_drop: nn.Module) -> torch.Tensor:
    """Attention across channels. q, k, v: ``(N,C,H,W)``; returns ``(N,C,H,W)``.

    Per head, queries and keys are the C/heads channel vectors (length H*W), L2-normalised
    so the logits are cosines scaled by a learned temperature (as in Restormer), which keeps
    them bounded for any H*W.
    """
    n, c, h, w = q.shape
    if c % heads:
        raise ValueError(f"channels {c} not divisible by heads {heads}")

    def split(t):
        return t.reshape(n, heads, c // heads, h * w)

    q, k, v = F.normalize(split(q), dim=-1), F.normalize(split(k), dim=-1), split(v)
    attn = (q @ k.transpose(-2, -1)) * temperature  # (N, heads, C/h, C/h)
    attn = attn_drop(attn.softmax(dim=-1))
    return (attn @ v).reshape(n, c, h, w)


class TAB(nn.Module):
    """Transposed attention block: ``x + proj(channel_attention(norm(x)))``; ``(N,C,H,W)``."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm = ChannelLayerNorm(dim)
        self.qkv = nn.Conv2d(dim, dim * 3, 1)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=1)
        out = channel_attention(q, k, v, self.heads, self.temperature, self.attn_drop)
        return x + self.proj_drop(self.proj(out))


class RTAB(nn.Module):
    """Residual transposed attention with Q, K, V from three sources.

    ``forward(residual, q_src, k_src, v_src)``, all ``(N,C,H,W)`` ->
    ``residual + proj(channel_attention(Wq·q_src, Wk·k_src, Wv·v_src))``.
    Passing the same tensor as all three sources (and as residual) is plain self-attention.
    Q and K are layer-normalised; V is not, so the size of a feature difference (how much
    restoration changed the image) reaches the output.
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_k = ChannelLayerNorm(dim), ChannelLayerNorm(dim)
        self.to_q, self.to_k, self.to_v = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, residual, q_src, k_src, v_src) -> torch.Tensor:
        q = self.to_q(self.norm_q(q_src))
        k = self.to_k(self.norm_k(k_src))
        v = self.to_v(v_src)
        out = channel_attention(q, k, v, self.heads, self.temperature, self.attn_drop)
        return residual + self.proj_drop(self.proj(out))


class SwinStage(nn.Module):
    """A stage of Swin blocks (alternating plain / shifted windows) on ``(N,C,H,W)`` maps.

    Uses timm's ``SwinTransformerStage`` with ``always_partition`` (windows stay
    ``window_size`` even on small grids; the grid is padded) and ``dynamic_mask`` (the
    shift mask is computed for each input size), so crops of any size work.
    """

    def __init__(self, dim: int, depth: int = 2, heads: int = 4, window_size: int = 4, dropout: float = 0.0):
        super().__init__()
        self.stage = SwinTransformerStage(
            dim=dim, out_dim=dim, input_resolution=(window_size, window_size), depth=depth,
            downsample=False, num_heads=heads, window_size=window_size, always_partition=True,
            dynamic_mask=True, proj_drop=dropout, attn_drop=dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


def weighted_score(scores: torch.Tensor, weights: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(N,T)`` scores and positive weights -> ``(N,)`` = sum(w*s) / sum(w)."""
    return (weights * scores).sum(dim=1) / (weights.sum(dim=1) + eps)


class ScoreWeightHead(nn.Module):
    """Per-token score and weight MLPs; ``(N,C,H,W)`` -> ``(N,)`` weighted mean score.

    The weight goes through a sigmoid, so it is positive and no single token can dominate
    without bound (as in MANIQA).
    """

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.0, zero_init: bool = False):
        """``zero_init``: the score layer starts at 0, so a head added to another predictor
        (the scorer's linear skip path) starts by changing nothing."""
        super().__init__()
        hidden = hidden or dim

        def mlp():
            return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

        self.score, self.weight = mlp(), mlp()
        if zero_init:
            nn.init.zeros_(self.score[-1].weight)
            nn.init.zeros_(self.score[-1].bias)

    def token_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N,C,H,W)`` -> scores ``(N,H*W)``, weights ``(N,H*W)`` in (0,1)."""
        tokens = x.flatten(2).transpose(1, 2)  # (N, H*W, C)
        return self.score(tokens).squeeze(-1), torch.sigmoid(self.weight(tokens)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores, weights = self.token_outputs(x)
        return weighted_score(scores, weights)
