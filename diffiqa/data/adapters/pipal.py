"""PIPAL (Jinjin et al., 2020), the public training part.

Layout under the root: ``Train_Ref/A0001.bmp`` (references), ``Train_Dis/A0001_00_00.bmp``
(reference A0001, distortion type 00, variant 00) and ``Train_Label/A0001.txt`` (one file per
reference; lines ``A0001_00_00.bmp,1234.5678``: an Elo score, higher is better). The third name
field numbers variants within a type, not severity levels, so ``level`` stays empty.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import FolderLookup, frame, require_root
from diffiqa.errors import LabelError


def load_pipal(root: Path) -> pd.DataFrame:
    root = require_root(root)
    label_dir = root / "Train_Label"
    label_files = sorted(label_dir.glob("*.txt")) if label_dir.is_dir() else []
    if not label_files:
        raise LabelError(f"{label_dir}: no label files (*.txt) found")
    files = FolderLookup(root, "Train_Dis")
    refs = FolderLookup(root, "Train_Ref")
    records = []
    for label_file in label_files:
        for lineno, line in enumerate(label_file.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != 2:
                raise LabelError(f"{label_file}, row {lineno}: expected '<image>,<score>', got {line.strip()!r}")
            name, score = fields
            parts = Path(name).stem.split("_")
            if len(parts) != 3:
                raise LabelError(f"{label_file}, row {lineno} (image {name!r}): name is not of the form A0001_00_00.bmp")
            records.append(
                {
                    "image": files.rel(name),
                    "mos": score,
                    "content": parts[0],
                    "distortion": parts[1],
                    "reference": refs.rel(f"{parts[0]}{Path(name).suffix}"),
                    "label_file": str(label_file),
                    "label_row": lineno,
                }
            )
    return frame(records, label_dir, higher_better=True)
