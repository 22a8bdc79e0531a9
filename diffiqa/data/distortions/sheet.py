"""The 25x5 contact sheet: every KADID type (rows) at every level (columns) on one image."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from diffiqa.io_utils import atomic_path


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Central ``size`` x ``size`` crop of (H,W,3); the whole image if it is smaller."""
    h, w = image.shape[:2]
    s = min(size, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(image[top : top + s, left : left + s])


def draw_contact_sheet(image: np.ndarray, path: str | os.PathLike, cell_px: int = 96, seed: int = 0) -> None:
    """Write a PNG grid: one row per type (labelled), columns = pristine, level 1..5.

    image: (H,W,3) uint8, resized so its short side is ``cell_px`` and centre-cropped.
    Each cell uses ``np.random.default_rng([seed, type_id, level])``, so the sheet is
    reproducible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffiqa.data.distortions import DISTORTION_TYPES, distort

    h, w = image.shape[:2]
    scale = cell_px / min(h, w)
    resized = Image.fromarray(image).resize((max(cell_px, round(w * scale)), max(cell_px, round(h * scale))), Image.Resampling.LANCZOS)
    cell = center_crop(np.asarray(resized), cell_px)

    n_rows, n_cols = len(DISTORTION_TYPES), 6
    inch = cell_px / 72.0
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * inch + 2.0, n_rows * inch + 0.4), dpi=72, squeeze=False)
    for r, name in enumerate(DISTORTION_TYPES):
        for c in range(n_cols):
            ax = axes[r, c]
            shown = cell if c == 0 else distort(cell, name, c, np.random.default_rng([seed, r + 1, c]))
            ax.imshow(shown, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("pristine" if c == 0 else f"level {c}", fontsize=9)
        axes[r, 0].set_ylabel(f"{r + 1}. {name}", rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=2.0 / (n_cols * inch + 2.0), right=0.99, top=1 - 0.3 / (n_rows * inch + 0.4), bottom=0.005, wspace=0.04, hspace=0.04)
    out = os.fspath(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
