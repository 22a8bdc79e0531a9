"""LIVE In the Wild Image Quality Challenge Database (CLIVE; Ghadiyaram & Bovik, 2016).

Layout under the root (``ChallengeDB_release/``): ``Data/AllImages_release.mat`` (a 1169x1 cell
array of names), ``Data/AllMOS_release.mat`` and ``Data/AllStdDev_release.mat`` (vectors in any
orientation), ``Images/`` and ``Images/trainingImages/``. The first 7 names (``t1.bmp``..``t7.bmp``)
are the study's training images; the usual protocol leaves them out (1,162 rated images).
MOS in [0, 100], higher is better; every image is its own content; distortion ``authentic``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import FolderLookup, frame, load_mat_var, mat_numbers, mat_strings, require_root
from diffiqa.errors import LabelError

TRAINING_NAME = re.compile(r"^t\d+\.bmp$", re.IGNORECASE)


def load_clive(root: Path) -> pd.DataFrame:
    root = require_root(root)
    data = root / "Data"
    names_file = data / "AllImages_release.mat"
    names = mat_strings(load_mat_var(names_file, ("AllImages_release",)))
    mos = mat_numbers(load_mat_var(data / "AllMOS_release.mat", ("AllMOS_release",)))
    std = mat_numbers(load_mat_var(data / "AllStdDev_release.mat", ("AllStdDev_release",)))
    if not len(names) == len(mos) == len(std):
        raise LabelError(f"{data}: {len(names)} names but {len(mos)} MOS and {len(std)} std values")
    files = FolderLookup(root, "Images")
    records = []
    for k, (name, score, sd) in enumerate(zip(names, mos, std)):
        if k < 7 and TRAINING_NAME.match(name):
            continue  # subjects' practice images, not part of the rated test set
        rel = files.rel(name)
        records.append(
            {
                "image": rel,
                "mos": score,
                "content": rel,
                "distortion": "authentic",
                "level": None,
                "reference": "",
                "mos_std": sd,
                "label_row": k + 1,
            }
        )
    return frame(records, names_file, higher_better=True)
