"""Training pairs made on the fly: random crops of pristine photographs, degraded by a random
camera (diffiqa.data.degradations). Nothing is written to disk, so every step sees new pairs;
a batch is a function of the step's generator only, so a resumed run sees the same stream.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from diffiqa.data.degradations import MARGIN, CameraMix, random_degradation
from diffiqa.data.image_io import iter_image_files, load_image
from diffiqa.errors import DiffiqaError

log = logging.getLogger(__name__)
# A share of the crops is cut from the photo downscaled by a factor in [SCALE_MIN, 1]: other
# scales of the same content, and sharper pixels than the photo's own (BSDS500's are soft).
SCALE_MIN, SCALE_SHARE = 0.5, 0.5


class CameraPairSource:
    """Pristine photos held in memory as uint8 (H,W,3); ``batch`` cuts and degrades crops.

    ``folders``: folders of pristine images (every readable image in them, sorted);
    ``exclude``: file names (stems) to leave out (a test set). ``mix``: the degradation draws.
    """

    def __init__(self, folders: list[Path], mix: CameraMix | None = None, exclude: set[str] = frozenset(), progress: bool = True):
        files = [f for f in iter_image_files([Path(folder) for folder in folders]) if f.stem not in exclude]
        if not files:
            raise DiffiqaError(f"no pristine images in {', '.join(str(f) for f in folders)}")
        self.files = files
        self.images = [load_image(f) for f in tqdm(files, desc="pristine photos", disable=not progress)]
        self.mix = mix or CameraMix()
        log.info("%d pristine photos, %.0f MB", len(files), sum(a.nbytes for a in self.images) / 2**20)

    def summary(self) -> dict:
        return {"n_photos": len(self.files), "folders": sorted({f.parent.name for f in self.files}), "mix": vars(self.mix)}

    def _patch(self, rng: np.random.Generator, side: int) -> np.ndarray:
        image = self.images[int(rng.integers(len(self.images)))]
        scale = float(rng.uniform(SCALE_MIN, 1.0)) if rng.random() < SCALE_SHARE else 1.0
        src = min(int(np.ceil(side / scale)), *image.shape[:2])
        y, x = int(rng.integers(image.shape[0] - src + 1)), int(rng.integers(image.shape[1] - src + 1))
        patch = image[y : y + src, x : x + src]
        if src != side:
            patch = np.asarray(Image.fromarray(patch).resize((side, side), Image.LANCZOS))
        patch = np.rot90(patch, int(rng.integers(4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return np.ascontiguousarray(patch).astype(np.float64) / 255.0

    def batch(self, generator: torch.Generator, crop_size: int, batch_size: int, rotate: bool = True):
        """-> (cond, x0) float32 (B,3,c,c) in [-1,1]: degraded and clean crops. Draws one seed
        from ``generator`` (so the step's later draws stay a function of the step)."""
        seed = int(torch.randint(2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        cond, clean = [], []
        for _ in range(batch_size):
            patch = self._patch(rng, crop_size + 2 * MARGIN)
            degraded, _ = random_degradation(patch, self.mix, rng)
            cond.append(degraded)
            clean.append(np.round(patch[MARGIN:-MARGIN, MARGIN:-MARGIN] * 255.0))
        to_t = lambda arrs: torch.from_numpy(np.stack(arrs).astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1  # noqa: E731
        return to_t(cond), to_t(clean)
