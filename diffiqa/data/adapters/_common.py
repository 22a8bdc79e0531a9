"""Helpers shared by the adapters: case-insensitive file lookup, .mat names, the row table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from diffiqa.data.index import ADAPTER_COLUMNS
from diffiqa.errors import ConfigError, LabelError


def require_root(root) -> Path:
    if root is None:
        raise ConfigError("this adapter needs --root: the folder holding the dataset")
    p = Path(root)
    if not p.is_dir():
        raise ConfigError(f"{p}: dataset root not found (or not a folder)")
    return p


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise LabelError(f"{path}: {what} not found")
    return path


class FolderLookup:
    """Resolve file names inside one folder case-insensitively.

    Datasets published from Windows list ``i01_01_1.bmp`` while the disk holds
    ``I01_01_1.BMP``; on Linux only one spelling opens. The folder is listed once.
    """

    def __init__(self, root: Path, folder: str):
        self.root = root
        self.folder = folder
        d = root / folder
        self._names = {n.lower(): n for n in os.listdir(d)} if d.is_dir() else {}

    def rel(self, name: str) -> str:
        """Path relative to the root, spelled as on disk (or as given when absent)."""
        actual = self._names.get(name.lower(), name)
        return f"{self.folder}/{actual}" if self.folder else actual


class PathLookup:
    """Resolve root-relative paths with subfolders (``imgs/Upper.png``) case-insensitively,
    one component at a time; each folder is listed once.

    The exact spelling wins when it exists; otherwise the one entry that differs only in case.
    A name that matches several entries only by case, or none, is returned as given (then
    ``prepare`` reports it as missing). A folder that cannot be listed is remembered in
    ``unreadable`` (folder -> reason) so that ``prepare`` can say so instead of "missing".
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._listings: dict[str, dict[str, list[str]]] = {}
        self.unreadable: dict[str, str] = {}

    def _listing(self, rel_dir: str) -> dict[str, list[str]]:
        if rel_dir not in self._listings:
            names: dict[str, list[str]] = {}
            try:
                for n in os.listdir(self.root / rel_dir if rel_dir else self.root):
                    names.setdefault(n.lower(), []).append(n)
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as e:
                self.unreadable[rel_dir] = e.strerror or str(e)
            self._listings[rel_dir] = names
        return self._listings[rel_dir]

    def rel(self, name: str) -> str:
        """``name`` (relative, '/' or '\\' separated) spelled as on disk, or as given."""
        parts = [q for q in name.replace("\\", "/").split("/") if q not in ("", ".")]
        if not parts or any(q == ".." for q in parts):
            return name
        found: list[str] = []
        for part in parts:
            candidates = self._listing("/".join(found)).get(part.lower(), [])
            if part in candidates:
                found.append(part)
            elif len(candidates) == 1:
                found.append(candidates[0])
            else:
                return name
        return "/".join(found)


def mat_strings(value) -> list[str]:
    """A MATLAB cell array / char array of names (any orientation) -> list of str."""
    arr = np.asarray(value, dtype=object).ravel()
    out = []
    for item in arr:
        while isinstance(item, np.ndarray):
            item = item.ravel()[0] if item.size else ""
        out.append(str(item).strip())
    return out


def mat_numbers(value) -> np.ndarray:
    """A MATLAB row or column vector -> 1-D float array."""
    return np.asarray(value, dtype=np.float64).ravel()


def load_mat_var(path: Path, names: tuple[str, ...]):
    """The first variable of ``names`` present in ``path`` (a .mat file)."""
    import scipy.io

    require_file(path, "label file")
    try:
        data = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for a damaged file
        raise LabelError(f"{path}: cannot read as a .mat file ({e})") from None
    for n in names:
        if n in data:
            return data[n]
    found = sorted(k for k in data if not k.startswith("__"))
    raise LabelError(f"{path}: none of the variables {list(names)} found; the file holds {found}")


def read_excel(path: Path, header_cols: tuple[str, ...]) -> pd.DataFrame:
    """Read the first sheet of ``path`` whose header row holds all of ``header_cols``.

    Some published spreadsheets put a title above the header; the header row is searched for
    in the first 20 rows of every sheet. Data rows get ``label_row`` = the spreadsheet's own
    row number (1-based, as Excel shows it).
    """
    require_file(path, "label spreadsheet")
    try:
        sheets = pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except ImportError as e:
        raise ConfigError(f"{path}: reading .xlsx needs openpyxl (pip install openpyxl): {e}") from None
    wanted = [c.lower() for c in header_cols]
    for _, raw in sheets.items():
        for r in range(min(20, len(raw))):
            cells = [str(v).strip() for v in raw.iloc[r].tolist()]
            if all(w in [c.lower() for c in cells] for w in wanted):
                table = raw.iloc[r + 1 :].copy()
                table.columns = cells
                table = table.dropna(how="all")
                table["label_row"] = table.index + 1  # pandas 0-based -> Excel row number
                return table.reset_index(drop=True)
    raise LabelError(f"{path}: no sheet has a header row with the columns {list(header_cols)}")


def frame(records: list[dict], label_file: Path | str, higher_better: bool) -> pd.DataFrame:
    """Adapter rows -> DataFrame with ``ADAPTER_COLUMNS``; direction in ``attrs``."""
    df = pd.DataFrame.from_records(records)
    for col, default in (("reference", ""), ("mos_std", np.nan), ("level", pd.NA), ("label_file", str(label_file))):
        if col not in df.columns:
            df[col] = default
    df = df.reindex(columns=ADAPTER_COLUMNS)
    df.attrs["higher_better"] = bool(higher_better)
    df.attrs["label_file"] = str(label_file)
    return df
