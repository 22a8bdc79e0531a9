"""Any folder of images with a CSV of scores: the way to bring a dataset without an adapter.

The CSV (``labels``; default ``<root>/labels.csv``) has columns ``image`` (path relative to the
root) and ``mos``, and optionally ``content`` (default: the image itself), ``distortion``
(default ``authentic``), ``level``, ``reference``, ``mos_std``. The score direction cannot be
guessed from numbers, so it must be declared (``higher_better`` True or False).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import frame, require_file, require_root
from diffiqa.data.index import require_columns
from diffiqa.errors import ConfigError


def load_folder(root: Path, labels: str | Path | None = None, higher_better: bool | None = None) -> pd.DataFrame:
    root = require_root(root)
    if higher_better is None:
        raise ConfigError("folder: declare the score direction with --higher-better or --lower-better")
    label_file = require_file(Path(labels) if labels is not None else root / "labels.csv", "label CSV")
    table = pd.read_csv(label_file, dtype=str, keep_default_na=False)
    table.columns = [str(c).strip() for c in table.columns]
    require_columns(table, ["image", "mos"], label_file)
    records = []
    for i, row in table.iterrows():
        image = row["image"].strip()
        records.append(
            {
                "image": image,
                "mos": row["mos"],
                "content": (row.get("content") or "").strip() or image,
                "distortion": (row.get("distortion") or "").strip() or "authentic",
                "level": (row.get("level") or "").strip() or None,
                "reference": (row.get("reference") or "").strip(),
                "mos_std": (row.get("mos_std") or "").strip() or None,
                "label_row": int(i) + 2,  # line 1 is the header
            }
        )
    return frame(records, label_file, higher_better=bool(higher_better))
