"""Helpers shared by the adapters: case-insensitive file lookup, .mat names, the row table."""

from __future__ import annotations

import csv
import io
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


def decode_utf8(path: Path) -> str:
    """A label file's text; LabelError naming the file (and row) when it is unreadable, empty
    or not UTF-8 (a byte-order mark is fine)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LabelError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data.strip():
        what = "empty file (0 bytes)" if not data else "only blank space"
        raise LabelError(f"{path}: {what}; expected a header row and one row per image")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        row = data[: e.start].count(b"\n") + 1
        raise LabelError(
            f"{path}, row {row}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8 "
            f"(from a Windows/Excel export: iconv -f cp1252 -t utf-8)") from None


def read_csv_rows(path: Path, required=()) -> tuple[list[str], list[tuple[int, dict]]]:
    """A UTF-8 CSV -> (header, [(row number, {column: text})]); row number = the line in the file.

    Blank lines are skipped; missing trailing fields are empty; extra fields are a LabelError
    naming file and row unless they are empty (spreadsheets often write trailing commas).
    (pandas would silently turn the extra leading fields of such rows into an index.)
    """
    reader = csv.reader(io.StringIO(decode_utf8(path), newline=""))
    rows: list[tuple[int, dict]] = []
    header: list[str] | None = None
    line = 0
    try:
        for fields in reader:
            start, line = line + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                dup = sorted({h for h in header if h and header.count(h) > 1})
                if dup:
                    raise LabelError(f"{path}, row {start}: column(s) {dup} appear more than once in the header")
                missing = [c for c in required if c not in header]
                if missing:
                    raise LabelError(f"{path}: missing column(s) {missing}; found {header}")
                continue
            if any(f.strip() for f in fields[len(header):]):
                raise LabelError(
                    f"{path}, row {start}: {len(fields)} fields but the header has {len(header)} "
                    f"(a comma inside a name? put the name in double quotes)")
            values = dict(zip(header, fields))
            rows.append((start, {c: values.get(c, "") for c in header}))
    except csv.Error as e:
        raise LabelError(f"{path}, row {line + 1}: cannot parse as CSV ({e})") from None
    if header is None:
        raise LabelError(f"{path}: only blank lines; expected a header row")
    if not rows:
        raise LabelError(f"{path}: no data rows (only the header {','.join(header)})")
    return header, rows


def read_csv_table(path: Path, required=()) -> pd.DataFrame:
    """``read_csv_rows`` as a DataFrame of text columns, indexed by the row number in the file."""
    header, rows = read_csv_rows(path, required)
    return pd.DataFrame([r for _, r in rows], columns=header, index=[n for n, _ in rows])


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
