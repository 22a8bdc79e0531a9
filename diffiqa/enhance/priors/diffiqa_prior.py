"""The trained dual-branch scorer as a prior (``diffiqa.api.create_metric("diffiqa")``).

The metric scores deterministic crops (or covering tiles) of an image from (distorted,
restored, noisy_1, noisy_2). Here the three restorer outputs are computed without gradient (a
stochastic chain per crop) and held fixed for the step; the gradient reaches the pixels
through the scorer's ``distorted`` input only. That is the direction the scorer itself
prefers, and it costs one scorer backward pass instead of a backward pass through the chain.
A scorer that reads the distorted image only (the metric has no restorer) scores the crops
directly. The crops are the metric's own (``diffiqa.api``: the same boxes and tile size).
"""

from __future__ import annotations

import torch
from torch import nn


class DiffIQAPrior(nn.Module):
    """``forward((N,3,H,W) in [0,1]) -> (N,)`` = mean scorer output over the crops; higher = better.

    ``metric``: a ``DiffIQAMetric`` (default: built lazily with ``create_metric("diffiqa",
    checkpoint=checkpoint)``, the import deferred so the other priors work without a scorer).
    """

    lower_better = False
    name = "diffiqa"

    def __init__(self, checkpoint=None, metric=None, device=None):
        super().__init__()
        if metric is None:
            from diffiqa.api import create_metric

            metric = create_metric("diffiqa", checkpoint=checkpoint, device=device, progress=False)
        self.metric = metric
        self.metric.scorer.requires_grad_(False)
        cfg = getattr(self.metric.scorer, "cfg", None)
        if getattr(cfg, "freeze_backbones", False):
            # A frozen-backbone scorer extracts its features without autograd (to cache them);
            # as a prior the gradient must reach the pixels. This metric instance is the prior's
            # own, and its weights stay frozen (requires_grad False above).
            import dataclasses

            self.metric.scorer.cfg = dataclasses.replace(cfg, freeze_backbones=False)
        if self.metric.restorer is not None:
            self.metric.restorer.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from diffiqa.api import CROP_KEY, _as_cached
        from diffiqa.cache import IMAGE_KINDS
        from diffiqa.crops import image_boxes
        from diffiqa.restore import sample_crops

        p = self.metric.params
        dev = self.metric.device
        out = []
        for img in images:
            h, w = img.shape[-2:]
            tile = min(p.crop_size, h, w) if p.crops_per_image == 0 else p.crop_size  # whole-image models: covering tiles
            boxes = image_boxes(h, w, tile, p.crops_per_image, p.seed, CROP_KEY)
            # box = (top, left, h, w); slicing the tensor keeps autograd
            crops = torch.stack([img[:, t:t + bh, l:l + bw] for t, l, bh, bw in boxes])
            if self.metric.restorer is None:  # a distorted-only scorer
                out.append(self.metric.scorer(crops.to(dev)).reshape(-1).mean())
                continue
            u8 = (crops.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            with torch.no_grad():
                got = sample_crops(self.metric.restorer, u8, list(range(len(boxes))), p, dev)
            fixed = [torch.from_numpy(_as_cached(got[k], p.dtype)).to(dev) for k in IMAGE_KINDS[1:]]
            out.append(self.metric.scorer(crops.to(dev), *fixed).reshape(-1).mean())
        return torch.stack(out).to(images.device)

