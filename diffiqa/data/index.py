"""The index contract (DESIGN §2): one row per rated image, the same columns for every dataset.

Columns of ``index.parquet``:
- ``image``: path relative to the dataset root, spelled as on disk (str)
- ``mos``: the published score on its native scale (float; MOS or DMOS as published)
- ``quality``: float in [0, 1], higher = better; one min-max over the whole dataset, inverted
  when the published score is lower-is-better (DMOS)
- ``content``: scene / reference id (str); for authentic sets the image itself
- ``distortion``: type name (str); ``authentic`` for in-the-wild sets
- ``level``: nullable Int64
- ``reference``: path of the pristine image relative to the root, or "" (str)
- ``mos_std``: nullable float

Adapters produce every column but ``quality``, plus two bookkeeping columns, ``label_file``
and ``label_row``, so that a bad label can be named by file, row and image; ``finalize_index``
validates the rows and drops those two columns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from diffiqa.errors import ConfigError, LabelError

INDEX_COLUMNS = ["image", "mos", "quality", "content", "distortion", "level", "reference", "mos_std"]
# What an adapter returns: the index columns without ``quality``, plus where each row came from.
SOURCE_COLUMNS = ["label_file", "label_row"]
ADAPTER_COLUMNS = [c for c in INDEX_COLUMNS if c != "quality"] + SOURCE_COLUMNS


def require_columns(table: pd.DataFrame, columns, label_file: str | Path) -> None:
    """Raise LabelError naming ``label_file`` when any of ``columns`` is absent."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise LabelError(
            f"{label_file}: missing column(s) {missing}; found {[str(c) for c in table.columns]}"
        )


def _where(row) -> str:
    return f"{row['label_file']}, row {row['label_row']} (image {row['image']!r})"


def _as_number(value) -> float | None:
    """float(value), or None when it is not a finite number (empty, text, NaN, inf)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def validate_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Check every row's image name and score; return a copy with ``mos`` as float.

    Raises LabelError naming label file, row number and image for: an empty image name, a
    missing / non-numeric / NaN / infinite MOS, a non-numeric std or level, and an image
    listed twice (both rows are named).
    """
    require_columns(df, ADAPTER_COLUMNS, "adapter output")
    out = df.copy()
    mos = []
    for _, row in out.iterrows():
        name = row["image"]
        if not isinstance(name, str) or not name.strip():
            raise LabelError(f"{row['label_file']}, row {row['label_row']}: empty image name")
        x = _as_number(row["mos"])
        if x is None:
            raw = row["mos"]
            problem = "missing MOS" if raw is None or (isinstance(raw, float) and math.isnan(raw)) or (
                isinstance(raw, str) and not raw.strip()) else f"MOS {raw!r} is not a finite number"
            raise LabelError(f"{_where(row)}: {problem}")
        mos.append(x)
        if not pd.isna(row["mos_std"]) and _as_number(row["mos_std"]) is None:
            raise LabelError(f"{_where(row)}: score std {row['mos_std']!r} is not a number")
        if not pd.isna(row["level"]) and _as_number(row["level"]) is None:
            raise LabelError(f"{_where(row)}: level {row['level']!r} is not a number")
    out["mos"] = np.asarray(mos, dtype=np.float64)
    key = out["image"].str.lower()  # case-insensitive: two spellings are one file on some disks
    dup = key.duplicated(keep=False)
    if dup.any():
        first = out[dup].iloc[0]
        others = out[dup & (key == first["image"].lower())]
        rows = ", ".join(str(r) for r in others["label_row"])
        raise LabelError(
            f"{first['label_file']}: image {first['image']!r} is listed more than once (rows {rows});"
            f" {int(dup.sum())} rows in all share a name with another row"
        )
    return out


def finalize_index(df: pd.DataFrame, higher_better: bool) -> pd.DataFrame:
    """Adapter output -> the index table (``INDEX_COLUMNS``, in order, with fixed dtypes).

    ``quality`` = (mos - min) / (max - min) over the whole table, or 1 minus that when
    ``higher_better`` is False. A table whose scores are all equal is a LabelError (no scale).
    """
    if higher_better is None:
        raise ConfigError("score direction unknown: say whether higher scores are better")
    if len(df) == 0:
        raise LabelError("no rated images: the label files list no image (or all were dropped)")
    rows = validate_rows(df)
    mos = rows["mos"].to_numpy(np.float64)
    lo, hi = float(mos.min()), float(mos.max())
    if hi <= lo:
        raise LabelError(f"{rows['label_file'].iloc[0]}: all {len(rows)} scores equal {lo}; no quality scale")
    quality = (mos - lo) / (hi - lo)
    if not higher_better:
        quality = 1.0 - quality
    out = pd.DataFrame(
        {
            "image": rows["image"].astype(str).to_numpy(),
            "mos": mos,
            "quality": quality,
            "content": rows["content"].astype(str).to_numpy(),
            "distortion": rows["distortion"].astype(str).to_numpy(),
            "level": pd.array(pd.to_numeric(rows["level"], errors="raise"), dtype="Int64"),
            "reference": rows["reference"].fillna("").astype(str).to_numpy(),
            "mos_std": pd.array(pd.to_numeric(rows["mos_std"], errors="raise"), dtype="Float64"),
        }
    )
    return out[INDEX_COLUMNS].reset_index(drop=True)


def read_prepared(prepared_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read ``index.parquet`` and ``splits.json`` of a prepared dataset; check they agree."""
    d = Path(prepared_dir)
    index_path, splits_path = d / "index.parquet", d / "splits.json"
    for p in (index_path, splits_path):
        if not p.exists():
            raise ConfigError(f"{p}: not found; run `diffiqa prepare` for this dataset first")
    index = pd.read_parquet(index_path)
    require_columns(index, INDEX_COLUMNS, index_path)
    with open(splits_path) as f:
        splits = json.load(f)
    n = len(index)
    for k, split in enumerate(splits.get("splits", [])):
        for part in ("train", "val", "test"):
            rows = split.get(part, [])
            if rows and (min(rows) < 0 or max(rows) >= n):
                raise ConfigError(
                    f"{splits_path}: split {k} part {part!r} names row {max(rows)} but the index has {n} rows;"
                    " the two files are from different runs: prepare again"
                )
    return index, splits
