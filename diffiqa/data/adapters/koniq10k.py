"""KonIQ-10k (Hosu et al., 2020).

Layout under the root (``koniq10k/``): ``koniq10k_scores_and_distributions.csv`` with columns
``image_name``, ``c1``..``c5``, ``c_total``, ``MOS``, ``SD``, ``MOS_zscore`` and the images in
``1024x768/`` (original size) and/or ``512x384/`` (half size). ``resolution`` picks the folder;
by default ``1024x768`` when present, else ``512x384``. MOS in [1, 5], higher is better.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import FolderLookup, frame, read_csv_table, require_file, require_root
from diffiqa.data.index import require_columns
from diffiqa.errors import ConfigError

KONIQ_RESOLUTIONS = ("1024x768", "512x384")


def load_koniq10k(root: Path, resolution: str | None = None) -> pd.DataFrame:
    root = require_root(root)
    if resolution is None:
        resolution = next((r for r in KONIQ_RESOLUTIONS if (root / r).is_dir()), KONIQ_RESOLUTIONS[0])
    elif resolution not in KONIQ_RESOLUTIONS:
        raise ConfigError(f"koniq10k: resolution {resolution!r} unknown; choose one of {list(KONIQ_RESOLUTIONS)}")
    label_file = require_file(root / "koniq10k_scores_and_distributions.csv", "label file")
    table = read_csv_table(label_file)
    require_columns(table, ["image_name", "MOS"], label_file)
    files = FolderLookup(root, resolution)
    records = []
    for i, row in table.iterrows():
        rel = files.rel(row["image_name"].strip())
        records.append(
            {
                "image": rel,
                "mos": row["MOS"],
                "content": rel,
                "distortion": "authentic",
                "mos_std": pd.to_numeric(row.get("SD", ""), errors="coerce"),
                "label_row": int(i),  # the line in the file (read_csv_table's index)
            }
        )
    return frame(records, label_file, higher_better=True)
