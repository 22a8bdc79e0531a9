"""CSIQ (Larson & Chandler, 2010).

Layout under the root: ``csiq.DMOS.xlsx`` (a sheet with the columns ``image``, ``dst_idx``,
``dst_type``, ``dst_lev``, ``dmos_std``, ``dmos``; a title may sit above the header),
``dst_imgs/<folder>/<image>.<TAG>.<lev>.png`` and ``src_imgs/<image>.png``. The spreadsheet's
``dst_type`` names differ from the folder names (``noise`` -> ``awgn``, ``jpeg 2000`` ->
``jpeg2000``) and file tags differ in case (``AWGN``, ``BLUR``, ``jpeg2000``): names are matched
case-insensitively. DMOS in [0, 1], lower is better.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import FolderLookup, frame, read_excel, require_root
from diffiqa.data.index import require_columns
from diffiqa.errors import LabelError

CSIQ_TYPE_FOLDERS = {
    "noise": "awgn", "awgn": "awgn", "jpeg": "jpeg", "jpeg 2000": "jpeg2000", "jpeg2000": "jpeg2000",
    "fnoise": "fnoise", "blur": "blur", "contrast": "contrast",
}


def _name(value) -> str:
    # Numeric names (1600) come back from Excel as numbers; keep them as written.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def load_csiq(root: Path) -> pd.DataFrame:
    root = require_root(root)
    label_file = root / "csiq.DMOS.xlsx"
    table = read_excel(label_file, ("image", "dst_type", "dst_lev", "dmos"))
    require_columns(table, ["image", "dst_type", "dst_lev", "dmos"], label_file)
    refs = FolderLookup(root, "src_imgs")
    lookups: dict[str, FolderLookup] = {}
    records = []
    for _, row in table.iterrows():
        image = _name(row["image"])
        dtype = str(row["dst_type"]).strip().lower()
        folder = CSIQ_TYPE_FOLDERS.get(dtype)
        if folder is None:
            raise LabelError(f"{label_file}, row {row['label_row']} (image {image!r}): "
                             f"unknown dst_type {row['dst_type']!r}; known: {sorted(CSIQ_TYPE_FOLDERS)}")
        lookup = lookups.setdefault(folder, FolderLookup(root, f"dst_imgs/{folder}"))
        level = _name(row["dst_lev"])
        records.append(
            {
                "image": lookup.rel(f"{image}.{folder}.{level}.png"),
                "mos": row["dmos"],
                "content": image,
                "distortion": folder,
                "level": level,
                "reference": refs.rel(f"{image}.png"),
                "mos_std": row.get("dmos_std"),
                "label_row": row["label_row"],
            }
        )
    return frame(records, label_file, higher_better=False)
