"""LIVE Image Quality Assessment Database, release 2 (Sheikh et al., 2006).

Layout under the root (``databaserelease2/``): ``refnames_all.mat`` (``refnames_all``: the
reference name of each of the 982 entries), ``dmos_realigned.mat`` (``dmos_new``, ``dmos_std``,
``orgs``; preferred) or ``dmos.mat`` (``dmos``, ``orgs``), ``refimgs/``, and five folders
``jp2k``, ``jpeg``, ``wn``, ``gblur``, ``fastfading`` holding ``img1.bmp``... in the order of the
score vectors (227, 233, 174, 174, 174 entries). ``orgs == 1`` marks the reference copies
placed among the distorted images; they are left out. DMOS: lower is better.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import (
    FolderLookup,
    frame,
    load_mat_var,
    mat_numbers,
    mat_strings,
    require_root,
)
from diffiqa.errors import LabelError

# Folder order and sizes of the published score vectors.
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def load_live(root: Path) -> pd.DataFrame:
    root = require_root(root)
    realigned = root / "dmos_realigned.mat"
    dmos_file = realigned if realigned.exists() else root / "dmos.mat"
    dmos = mat_numbers(load_mat_var(dmos_file, ("dmos_new", "dmos")))
    orgs = mat_numbers(load_mat_var(dmos_file, ("orgs",)))
    std = mat_numbers(load_mat_var(dmos_file, ("dmos_std",))) if dmos_file == realigned else None
    refnames_file = root / "refnames_all.mat"
    refnames = mat_strings(load_mat_var(refnames_file, ("refnames_all",)))
    expected = sum(n for _, n in LIVE_FOLDERS)
    for name, vec in (("dmos", dmos), ("orgs", orgs), ("refnames_all", refnames)):
        if len(vec) != expected:
            raise LabelError(f"{dmos_file if name != 'refnames_all' else refnames_file}: "
                             f"{name} has {len(vec)} entries; LIVE release 2 has {expected}")
    refs = FolderLookup(root, "refimgs")
    records, k = [], 0
    for folder, count in LIVE_FOLDERS:
        files = FolderLookup(root, folder)
        for i in range(1, count + 1):
            if orgs[k] != 1:  # 1 = an undistorted copy of the reference, not a rated distortion
                ref = refnames[k]
                records.append(
                    {
                        "image": files.rel(f"img{i}.bmp"),
                        "mos": dmos[k],
                        "content": Path(ref).stem,
                        "distortion": folder,
                        "level": None,  # LIVE gives continuous parameters, not levels
                        "reference": refs.rel(ref),
                        "mos_std": None if std is None else std[k],
                        "label_row": k + 1,
                    }
                )
            k += 1
    return frame(records, dmos_file, higher_better=False)
