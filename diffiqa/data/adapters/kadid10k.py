"""KADID-10k (Lin, Hosu & Saupe, 2019).

Layout under the root (``kadid10k/``): ``dmos.csv`` with columns ``dist_img``, ``ref_img``,
``dmos``, ``var``, and ``images/`` holding both ``I01.png`` (references) and ``I01_01_01.png``
(reference 01, distortion type 01, level 1). Despite its column name, KADID's ``dmos`` is a
mean opinion score on the 1-5 absolute category scale (the crowd rated the distorted image
against its reference): HIGHER is better. ``var`` is a variance; its square root is stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from diffiqa.data.adapters._common import FolderLookup, frame, read_csv_table, require_file, require_root
from diffiqa.data.distortions import DISTORTION_TYPES
from diffiqa.data.index import require_columns
from diffiqa.errors import LabelError

# KADID's 25 types in id order; the distortion library uses the same names.
KADID_TYPES = tuple(DISTORTION_TYPES)


def load_kadid10k(root: Path) -> pd.DataFrame:
    root = require_root(root)
    label_file = require_file(root / "dmos.csv", "label file")
    table = read_csv_table(label_file)
    require_columns(table, ["dist_img", "ref_img", "dmos"], label_file)
    files = FolderLookup(root, "images")
    records = []
    for i, row in table.iterrows():
        lineno = int(i)  # the line in the file (read_csv_table's index)
        name = row["dist_img"].strip()
        parts = Path(name).stem.split("_")
        if len(parts) != 3 or not all(p.isdigit() for p in (parts[0][1:], parts[1], parts[2])):
            raise LabelError(f"{label_file}, row {lineno} (image {name!r}): name is not of the form I01_01_01.png")
        type_id = int(parts[1])
        if not 1 <= type_id <= len(KADID_TYPES):
            raise LabelError(f"{label_file}, row {lineno} (image {name!r}): distortion id {type_id} is not 1..25")
        var = pd.to_numeric(row.get("var", ""), errors="coerce")
        records.append(
            {
                "image": files.rel(name),
                "mos": row["dmos"],
                "content": Path(row["ref_img"].strip()).stem,
                "distortion": KADID_TYPES[type_id - 1],
                "level": int(parts[2]),
                "reference": files.rel(row["ref_img"].strip()),
                "mos_std": float(np.sqrt(var)) if pd.notna(var) and var >= 0 else None,
                "label_row": lineno,
            }
        )
    return frame(records, label_file, higher_better=True)
