"""``create_metric("diffiqa")``: score new images with a trained scorer (pyiqa-style API).

For each image: deterministic crops (``crop_boxes`` with the training cache's seed and one
fixed key, so the same pixels get the same crops whether given as a path or a tensor), or
with a whole-image cache (``crops_per_image == 0``) the tiles that cover every pixel (side
``min(crop_size, H, W)``: one tile in memory at a time, so any image size fits) → the
restorer recorded in the scorer checkpoint (same sampler, steps, keep_steps, noise seeds and
storage precision as the training cache) → the scorer → mean over the crops.

Model resolution without an explicit checkpoint: the newest ``models/scorer/**/split-<k>.pt``
under the current directory, else the model shipped in the package
(``diffiqa/assets/default_scorer.pt`` with its restorer ``default_restorer.pt``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from diffiqa.cache import IMAGE_KINDS
from diffiqa.crops import cut_crops, image_boxes
from diffiqa.data.image_io import load_image
from diffiqa.errors import ConfigError, DiffiqaError, ImageError, NumericError, ProvenanceError
from diffiqa.layout import ProjectLayout
from diffiqa.packaged import DEFAULT_RESTORER, DEFAULT_SCORER

log = logging.getLogger(__name__)

MIN_TILE = 32  # whole-image models: the smallest side a tile may have (one stride-32 cell)
CROP_KEY = "image"  # one key for every new image: crops depend on the pixels' size only
_SPLIT_CKPT = re.compile(r"^split-\d+\.pt$")
RANGE_SLACK = 1e-6  # float rounding of a [0,1] image made elsewhere ((x + 1) / 2, x / 255) stays inside this

HOW_TO_TRAIN = (
    "train one with `dvc repro train@demo` (the demo profile: minutes on a CPU; writes "
    "models/scorer/demo/split-0.pt) and run from the repository, or pass --model/checkpoint="
)


def find_checkpoint(checkpoint=None, search_dir=".") -> Path:
    """The scorer checkpoint to use (explicit, newest in ``models/scorer``, or the packaged one)."""
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.is_file():
            raise DiffiqaError(f"{p}: scorer checkpoint not found")
        return p
    found = [p for p in ProjectLayout(search_dir).scorers.rglob("split-*.pt") if _SPLIT_CKPT.match(p.name)]
    if found:
        return max(found, key=lambda p: (p.stat().st_mtime, str(p)))
    if DEFAULT_SCORER.is_file():
        return DEFAULT_SCORER
    raise DiffiqaError(f"no scorer model: none in {ProjectLayout(search_dir).scorers} and no packaged "
                       f"{DEFAULT_SCORER.name}; {HOW_TO_TRAIN}")


def find_restorer(checkpoint: Path, extra: dict, restorer=None) -> Path:
    """The restorer that filled the scorer's training cache; its sha256 must match the record."""
    from diffiqa.restore import file_sha256

    recorded = extra.get("restorer_path") or ""
    if restorer is not None:
        candidates = [Path(restorer)]
    else:
        candidates = [Path(recorded)] if recorded else []
        if recorded and not Path(recorded).is_absolute():
            candidates += [parent / recorded for parent in checkpoint.resolve().parents]
        if checkpoint.resolve() == DEFAULT_SCORER.resolve():
            candidates.insert(0, DEFAULT_RESTORER)
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise DiffiqaError(f"{checkpoint}: its restorer {recorded or '(not recorded)'} was not found; "
                           f"pass --restorer / restorer= with the checkpoint that filled the training cache")
    want = extra.get("restorer_sha256")
    if want:
        got = file_sha256(path)
        if got != want:
            raise ProvenanceError(f"restorer_sha256: {checkpoint} was trained with {want[:12]}… but {path} "
                                  f"is {got[:12]}…; pass the restorer that filled the training cache")
    return path


def _as_cached(image01: np.ndarray, dtype: str) -> np.ndarray:
    """What the training cache would have stored, read back (``diffiqa.cache.as_stored``)."""
    from diffiqa.cache import as_stored

    return as_stored(image01, dtype)


class DiffIQAMetric(nn.Module):
    """Quality of whole images, higher = better, on the training set's [0,1] quality scale.

    ``forward(x)``: a path, a list of paths, or an (N,3,H,W) / (3,H,W) floating tensor in [0,1]
    (sides at least the crop size) → (N,) float32 tensor. Deterministic: same input, same score.
    A tensor of another dtype (uint8), another range (0-255, [-1, 1]) or with NaN/inf is refused
    with one line saying what was found (``check_image_tensor``), never clamped; a restorer or
    scorer output that is not finite is a ``NumericError`` naming the image, never a NaN score.
    Scores are not clamped: score_range (0, 1) is the training set's nominal scale (0 = its worst
    rated image, 1 = its best); an image judged beyond those scores slightly below 0 or above 1.
    """

    lower_better = False
    score_range = (0.0, 1.0)

    def __init__(self, scorer: nn.Module, restorer_net: nn.Module, restore_params, device, batch_size: int = 8,
                 progress: bool = True, checkpoint: str = "", restorer_path: str = ""):
        super().__init__()
        self.scorer = scorer.eval()
        # None: the scorer reads only the distorted image (no restoration to run)
        self.restorer = restorer_net.eval() if restorer_net is not None else None
        self.params = restore_params
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.checkpoint = checkpoint
        self.restorer_path = restorer_path

    @torch.no_grad()
    def score_array(self, image: np.ndarray, name: str = "image") -> float:
        """(H,W,3) uint8 → the mean scorer output over its deterministic restored crops."""
        from diffiqa.restore import sample_crops

        p = self.params
        h, w = image.shape[:2]
        tile = min(p.crop_size, h, w) if p.crops_per_image == 0 else p.crop_size
        smallest = MIN_TILE if p.crops_per_image == 0 else p.crop_size
        if min(h, w) < max(tile, smallest):
            raise ImageError(f"{name}: image is {w}x{h}, smaller than the crop size {max(tile, smallest)}")
        boxes = image_boxes(h, w, tile, p.crops_per_image, p.seed, CROP_KEY)
        scores = []
        # Every crop draws its noise from its own generator (seed, crop number) in
        # diffiqa.restore, so the score does not depend on the batch size.
        # Tiles are cut per batch, so a large image never holds all its tiles at once.
        step = self.batch_size
        for start in tqdm(range(0, len(boxes), step), desc=f"restore {Path(name).name}", unit="batch",
                          leave=False, disable=not self.progress):
            ids = list(range(start, min(start + step, len(boxes))))
            tiles = cut_crops(image, boxes[ids[0] : ids[-1] + 1])
            if self.restorer is None:
                x = torch.from_numpy(tiles.astype(np.float32) / 255.0).to(self.device)
                scores.append(self.scorer(x).reshape(-1).float().cpu())
                continue
            got = sample_crops(self.restorer, tiles, ids, p, self.device)
            for kind in IMAGE_KINDS[1:]:
                if not np.isfinite(got[kind]).all():
                    raise NumericError(f"{name}: the restorer {self.restorer_path or ''} output NaN/inf ({kind}); "
                                       f"its checkpoint or the chain settings are broken")
            if got["distorted"].dtype == np.uint8:
                got["distorted"] = got["distorted"].astype(np.float32) / 255.0
            kinds = [torch.from_numpy(_as_cached(got[k], p.dtype)).to(self.device) for k in IMAGE_KINDS]
            scores.append(self.scorer(*kinds).reshape(-1).float().cpu())
        score = torch.cat(scores)
        if not bool(torch.isfinite(score).all()):
            raise NumericError(f"{name}: the scorer {self.checkpoint} output NaN/inf; its checkpoint is broken")
        return float(score.mean())

    def score_paths(self, paths: Iterable) -> Iterable[tuple[Path, float]]:
        """Yield (path, score) one image at a time (only one image is ever in memory)."""
        for path in paths:
            min_size = MIN_TILE if self.params.crops_per_image == 0 else self.params.crop_size
            yield Path(path), self.score_array(load_image(path, min_size=min_size), str(path))

    def forward(self, x) -> torch.Tensor:
        if isinstance(x, (str, os.PathLike)):
            x = [x]
        if isinstance(x, torch.Tensor):
            if x.dim() == 3:
                x = x.unsqueeze(0)
            if x.dim() != 4 or x.shape[1] != 3:
                raise DiffiqaError(f"expected an (N,3,H,W) tensor in [0,1], got shape {tuple(x.shape)}")
            check_image_tensor(x)
            # clamp only the rounding slack check_image_tensor allows
            arrays = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            scores = [self.score_array(np.ascontiguousarray(a), f"tensor[{i}]") for i, a in enumerate(arrays)]
        else:
            scores = [s for _, s in self.score_paths(list(x))]
        return torch.tensor(scores, dtype=torch.float32)


def check_image_tensor(x: torch.Tensor, name: str = "tensor") -> None:
    """Refuse what would otherwise be clamped silently: a non-float dtype, NaN/inf, values
    outside [0, 1] (beyond ``RANGE_SLACK``). The message says what was found and the usual fix."""
    if not x.is_floating_point():
        hint = " (divide 8-bit images by 255)" if x.dtype == torch.uint8 else ""
        raise NumericError(f"{name}: expected a floating tensor in [0, 1], got {x.dtype}{hint}")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        raise NumericError(f"{name}: holds {int((~finite).sum())} NaN/inf values; expected a finite image in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
        hint = (" (0-255 values: divide by 255)" if hi > 1.5 else
                " ([-1, 1] values: map them with (x + 1) / 2)" if lo < -0.5 else "")
        raise NumericError(f"{name}: values in [{lo:.4g}, {hi:.4g}], expected [0, 1]{hint}")


def create_metric(name: str = "diffiqa", **options) -> nn.Module:
    """Any quality model the package ships, by name (``diffiqa.registry``: diffiqa, niqe,
    brisque, restoration_gap, fusion); ``bounded=True`` puts it on the 0-100 MOS scale.
    For ``"diffiqa"``: ``checkpoint`` (a ``split-<k>.pt``; default :func:`find_checkpoint`),
    ``restorer`` (overrides the recorded one; its sha256 must match), ``device``,
    ``batch_size``, ``progress``."""
    from diffiqa.registry import create

    return create(name, **options)


def load_diffiqa_metric(checkpoint=None, device=None, restorer=None, batch_size: int = 8,
                        progress: bool = True) -> DiffIQAMetric:
    """The ``diffiqa`` metric from a scorer checkpoint (``create_metric("diffiqa")``)."""
    from diffiqa.checkpoint_checks import restore_spec
    from diffiqa.devices import resolve_device
    from diffiqa.diffusion.training import load_restorer
    from diffiqa.errors import CheckpointError
    from diffiqa.restore import RestoreParams
    from diffiqa.scorer import load_scorer

    device = resolve_device(device, "device=")
    ckpt = find_checkpoint(checkpoint)
    scorer, _cfg, extra = load_scorer(ckpt)
    extra = dict(extra or {})
    try:
        restore_params = RestoreParams.from_record(restore_spec(extra, ckpt), batch_size)
    except CheckpointError:
        raise
    except ConfigError as e:  # RestoreParams' own range checks
        raise CheckpointError(f"{ckpt}: extra.{e}") from None
    if list(getattr(scorer, "kinds_needed", IMAGE_KINDS)) == ["distorted"] and restorer is None:
        # a scorer that reads only the distorted image: nothing to restore (several times faster)
        restorer_path, net = "", None
    else:
        restorer_path = find_restorer(ckpt, extra, restorer)
        net, rcfg, _rextra = load_restorer(restorer_path)
        if restore_params.chain is None:  # a record without a chain: the restorer's own
            restore_params = restore_params.resolved(rcfg.chain)
    log.info("diffiqa metric: scorer %s, restorer %s, %d crops of %d px, chain %s", ckpt, restorer_path,
             restore_params.crops_per_image, restore_params.crop_size,
             restore_params.chain.label() if restore_params.chain else "none")
    return DiffIQAMetric(scorer.to(device), None if net is None else net.to(device), restore_params, device, batch_size, progress,
                         str(ckpt), str(restorer_path))
