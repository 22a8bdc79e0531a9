"""The demo dataset as an adapter: builds it under the root (see ``diffiqa.data.demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from diffiqa.data.adapters._common import frame
from diffiqa.data.demo import DEMO_CONTENTS, DEMO_KINDS, DEMO_LABELS, DEMO_LEVELS, build_demo
from diffiqa.errors import ConfigError


def load_demo(
    root: Path,
    n_images: int = len(DEMO_CONTENTS),
    kinds: Sequence[str] = DEMO_KINDS,
    levels: Sequence[int] = DEMO_LEVELS,
    size: int = 128,
    image_seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """(Re)build the demo images under ``root`` (deterministic) and return its rows. Pseudo-MOS:
    higher is better. ``image_seed`` seeds the distortions (``seed`` of prepare seeds the splits)."""
    if root is None:
        raise ConfigError("demo: no folder to write the demo images into")
    table = build_demo(root, n_images=n_images, kinds=tuple(kinds), levels=tuple(levels), size=size,
                       seed=image_seed, progress=progress)
    records = table.to_dict("records")
    for i, r in enumerate(records):
        r["label_row"] = i + 2  # line 1 of demo_labels.csv is the header
    return frame(records, Path(root) / DEMO_LABELS, higher_better=True)
