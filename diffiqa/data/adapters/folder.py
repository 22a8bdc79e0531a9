"""Any folder of images with a CSV of scores: the way to bring a dataset without an adapter.

The CSV (``labels``; default ``<root>/labels.csv``) has columns ``image`` (path relative to the
root) and ``mos``, and optionally ``content`` (default: the image itself), ``distortion``
(default ``authentic``), ``level`` (an integer), ``reference``, ``mos_std``. The score
direction cannot be guessed from numbers, so it must be declared (``higher_better`` True or
False).

The CSV must be UTF-8 (a byte-order mark is fine); anything else, an empty file, a header
without rows, a row with more fields than the header, or a level that is not an integer is a
LabelError naming the file and the row (the line number in the file). Image names are
matched case-insensitively against the disk, per path component (``IMGS\\Upper.png`` finds
``imgs/upper.PNG``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import PathLookup, frame, read_csv_rows, require_file, require_root
from diffiqa.errors import ConfigError, LabelError

REQUIRED = ("image", "mos")


def _level(text: str, where: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not math.isfinite(x) or x != int(x):
        raise LabelError(f"{where}: level {text!r} is not an integer")
    return int(x)


def load_folder(root: Path, labels: str | Path | None = None, higher_better: bool | None = None) -> pd.DataFrame:
    root = require_root(root)
    if higher_better is None:
        raise ConfigError("folder: declare the score direction with --higher-better or --lower-better")
    label_file = require_file(Path(labels) if labels is not None else root / "labels.csv", "label CSV")
    _, rows = read_csv_rows(label_file, REQUIRED)
    files = PathLookup(root)
    records = []
    for lineno, row in rows:
        image = row["image"].strip()
        where = f"{label_file}, row {lineno} (image {image!r})"
        rel = files.rel(image) if image else image
        reference = row.get("reference", "").strip()
        records.append(
            {
                "image": rel,
                "mos": row["mos"],
                "content": row.get("content", "").strip() or rel,
                "distortion": row.get("distortion", "").strip() or "authentic",
                "level": _level(row.get("level", ""), where),
                "reference": files.rel(reference) if reference else "",
                "mos_std": row.get("mos_std", "").strip() or None,
                "label_row": lineno,
            }
        )
    return frame(records, label_file, higher_better=bool(higher_better))
