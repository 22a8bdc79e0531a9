"""The comparison sheet: each prior's enhancement of the same inputs, side by side, and a table
of how every *other* model and the full-reference metrics grade it.

Images are (H,W,3) float arrays in [0,1] throughout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffiqa.io_utils import atomic_path


def comparison_sheet(inputs: Sequence[np.ndarray], outputs: Mapping[str, Sequence[np.ndarray]],
                     references: Sequence[np.ndarray] | None, path: str | Path, row_labels: Sequence[str] = (),
                     title: str = "") -> None:
    """PNG grid: rows = images, columns = input | each prior's output (dict order) | reference;
    ``title`` (e.g. the generativity gate's verdict) above the grid."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [("input", list(inputs))] + [(k, list(v)) for k, v in outputs.items()]
    if references is not None:
        columns.append(("reference", list(references)))
    rows, cols = len(inputs), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for c, (heading, images) in enumerate(columns):
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(np.clip(images[r], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heading, fontsize=9)
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 30 * cols)), fontsize=9, color="darkred" if "FAIL" in title else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


@torch.no_grad()
def grade(grader: torch.nn.Module, images: Sequence[np.ndarray]) -> float:
    """Mean score of ``grader`` over images (each scored alone: sizes may differ)."""
    scores = [float(grader(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float())[0])
              for im in images]
    return float(np.mean(scores))


def comparison_table(outputs: Mapping[str, Sequence[np.ndarray]], references: Sequence[np.ndarray] | None,
                     graders: Mapping[str, torch.nn.Module], used_by: Mapping[str, set[str]]) -> pd.DataFrame:
    """Rows = the prior used (keys of ``outputs``, e.g. "input", "niqe", "fusion"); columns =
    each grader's mean score (higher = better), then PSNR / SSIM to the references.

    ``used_by[row]`` = the grader names that served as that row's prior: those cells are left
    blank (NaN), since no model grades its own output.
    """
    table = {}
    for row, images in outputs.items():
        own = used_by.get(row, set())
        rec = {g: (math.nan if g in own else grade(m, images)) for g, m in graders.items()}
        if references is not None:
            rec["PSNR"] = float(np.mean([peak_signal_noise_ratio(r, o.clip(0, 1), data_range=1.0)
                                         for o, r in zip(images, references)]))
            rec["SSIM"] = float(np.mean([structural_similarity(r, o.clip(0, 1), data_range=1.0, channel_axis=2)
                                         for o, r in zip(images, references)]))
        table[row] = rec
    return pd.DataFrame.from_dict(table, orient="index")


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A markdown table (blank cells for NaN) without extra dependencies."""
    head = ["prior used"] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in df.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.{digits}f}" for v in row]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)
