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

import csv
import io
import math
from pathlib import Path

import pandas as pd

from diffiqa.data.adapters._common import PathLookup, frame, require_file, require_root
from diffiqa.errors import ConfigError, LabelError

REQUIRED = ("image", "mos")
OPTIONAL = ("content", "distortion", "level", "reference", "mos_std")


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LabelError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data.strip():
        what = "empty file (0 bytes)" if not data else "only blank space"
        raise LabelError(f"{path}: {what}; expected a header row `image,mos` and one row per image")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        row = data[: e.start].count(b"\n") + 1
        raise LabelError(
            f"{path}, row {row}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the CSV as UTF-8 "
            f"(from a Windows/Excel export: iconv -f cp1252 -t utf-8)") from None


def read_label_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """``path`` -> (header, [(row number, {column: text})]); row number = the line in the file.

    Blank lines are skipped; missing trailing fields are empty; extra fields are an error
    unless they are empty (spreadsheets often write trailing commas).
    """
    reader = csv.reader(io.StringIO(_decode(path), newline=""))
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
                missing = [c for c in REQUIRED if c not in header]
                if missing:
                    raise LabelError(f"{path}: missing column(s) {missing}; found {header}")
                continue
            extra = fields[len(header):]
            if any(f.strip() for f in extra):
                raise LabelError(
                    f"{path}, row {start}: {len(fields)} fields but the header has {len(header)} "
                    f"(a comma inside a name? put the name in double quotes)")
            values = dict(zip(header, fields))
            rows.append((start, {c: values.get(c, "") for c in (*REQUIRED, *OPTIONAL)}))
    except csv.Error as e:
        raise LabelError(f"{path}, row {line + 1}: cannot parse ({e})") from None
    if header is None:
        raise LabelError(f"{path}: only blank lines; expected a header row `image,mos`")
    if not rows:
        raise LabelError(f"{path}: no data rows (only the header {','.join(header)})")
    return header, rows


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
    _, rows = read_label_rows(label_file)
    files = PathLookup(root)
    records = []
    for lineno, row in rows:
        image = row["image"].strip()
        where = f"{label_file}, row {lineno} (image {image!r})"
        rel = files.rel(image) if image else image
        reference = row["reference"].strip()
        records.append(
            {
                "image": rel,
                "mos": row["mos"],
                "content": row["content"].strip() or rel,
                "distortion": row["distortion"].strip() or "authentic",
                "level": _level(row["level"], where),
                "reference": files.rel(reference) if reference else "",
                "mos_std": row["mos_std"].strip() or None,
                "label_row": lineno,
            }
        )
    return frame(records, label_file, higher_better=bool(higher_better))
