"""SPAQ (Fang et al., 2020): smartphone photographs.

Layout under the root: ``Annotations/MOS and Image attribute scores.xlsx`` (columns
``Image name``, ``MOS``, then attribute scores) and the photographs in ``TestImage/``.
MOS in [0, 100], higher is better; every image is its own content; distortion ``authentic``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import FolderLookup, frame, read_excel, require_root
from diffiqa.data.index import require_columns

SPAQ_LABELS = "Annotations/MOS and Image attribute scores.xlsx"


def load_spaq(root: Path) -> pd.DataFrame:
    root = require_root(root)
    label_file = root / SPAQ_LABELS
    table = read_excel(label_file, ("Image name", "MOS"))
    require_columns(table, ["Image name", "MOS"], label_file)
    files = FolderLookup(root, "TestImage")
    records = []
    for _, row in table.iterrows():
        rel = files.rel(str(row["Image name"]).strip())
        records.append(
            {
                "image": rel,
                "mos": row["MOS"],
                "content": rel,
                "distortion": "authentic",
                "label_row": row["label_row"],
            }
        )
    return frame(records, label_file, higher_better=True)
