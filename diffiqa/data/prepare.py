"""Native dataset -> ``index.parquet`` + ``splits.json`` (what ``diffiqa prepare`` and the
``prepare@<ds>`` stage both call).

Order of checks, so that the cheapest error comes first: label rows (LabelError naming file,
row and image) -> image files present (missing ones are an error, or dropped and counted with
``allow_missing_images``) -> every image decodes (ImageError naming the file) -> splits.
Both outputs are written atomically; nothing is written when any check fails.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

import pandas as pd

from diffiqa.data.adapters import ADAPTERS, adapter_function
from diffiqa.data.index import finalize_index, validate_rows
from diffiqa.data.splits import make_splits
from diffiqa.errors import ConfigError, ImageError
from diffiqa.io_utils import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

SHOW_FIRST = 5  # names quoted in an error or summary about many files
MAX_SPLITS = 100  # each split lists every row in splits.json; papers use 10


def check_split_options(n_splits: int, seed: int, val_fraction: float) -> None:
    """Refuse absurd split options before any file is read (they used to fail, or fill the
    memory, only after every image had been decoded)."""
    if not 1 <= n_splits <= MAX_SPLITS:
        raise ConfigError(f"--splits {n_splits}: must be 1..{MAX_SPLITS} (each split lists every row; 10 is usual)")
    if seed < 0:
        raise ConfigError(f"--seed {seed}: must be 0 or more")
    if not 0.0 <= val_fraction < 1.0:  # also refuses NaN
        raise ConfigError(f"--val-fraction {val_fraction}: must be in [0, 1)")


def _adapter_options(adapter: str, labels, higher_better, options: dict) -> dict:
    """The keyword options for ``adapter``; an option it does not take is a ConfigError."""
    opts = dict(options)
    if labels is not None:
        opts["labels"] = labels
    if higher_better is not None:
        opts["higher_better"] = higher_better
    params = inspect.signature(adapter_function(adapter)).parameters
    accepted = [n for n in params if n != "root"]
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise ConfigError(f"adapter {adapter!r} does not take option(s) {unknown}; it takes {accepted}")
    return opts


def _quote(names) -> str:
    names = list(names)
    more = f" ... ({len(names) - SHOW_FIRST} more)" if len(names) > SHOW_FIRST else ""
    return ", ".join(names[:SHOW_FIRST]) + more


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a parent folder without search permission: reported below
        return False


def unreadable_folders(root: Path, missing) -> dict[str, list[str]]:
    """For images not found: the folder on their path that cannot be listed, if any
    (folder -> those images). Such images are not missing, and must not be dropped as if."""
    cache: dict[Path, bool] = {}
    found: dict[str, list[str]] = {}
    for rel in missing:
        folder = root
        for part in (None, *Path(rel).parts[:-1]):
            folder = folder if part is None else folder / part
            if folder not in cache:
                try:
                    os.listdir(folder)
                    cache[folder] = True
                except (FileNotFoundError, NotADirectoryError):
                    cache[folder] = True  # really absent: "missing" is right
                    break
                except OSError:
                    cache[folder] = False
            if not cache[folder]:
                found.setdefault(str(folder), []).append(rel)
                break
    return found


def verify_images(root: Path, images, progress: bool = True) -> None:
    """Decode every image once (``load_image``); ImageError naming the bad file(s) otherwise."""
    from tqdm import tqdm

    from diffiqa.data.image_io import load_image

    bad = []
    for rel in tqdm(list(images), desc="checking images", unit="img", disable=not progress):
        try:
            load_image(root / rel)
        except ImageError as e:
            bad.append(str(e))
    if bad:
        raise ImageError(f"{len(bad)} image(s) cannot be read: " + "; ".join(bad[:SHOW_FIRST])
                         + (f"; ... ({len(bad) - SHOW_FIRST} more)" if len(bad) > SHOW_FIRST else ""))


def _drop_missing(root_path: Path, rows: pd.DataFrame, allow_missing: bool) -> tuple[pd.DataFrame, list[str]]:
    """-> (the rows whose image exists, the missing images). An unreadable folder is always an
    error naming it; missing images are one unless ``allow_missing`` (then they are dropped)."""
    present = [_is_file(root_path / rel) for rel in rows["image"]]
    missing = rows.loc[[not p for p in present], "image"].tolist()
    blocked = unreadable_folders(root_path, missing)
    if blocked:
        folder, names = next(iter(blocked.items()))
        try:
            os.listdir(folder)
            reason = "cannot be read"
        except OSError as e:
            reason = f"cannot be read ({e.strerror or e})"
        more = f"; {len(blocked) - 1} more such folder(s)" if len(blocked) > 1 else ""
        raise ImageError(f"{folder}: folder {reason}; {len(names)} labelled image(s) are in it: "
                         f"{_quote(names)}{more}")
    if missing and not allow_missing:
        raise ImageError(
            f"{root_path}: {len(missing)} of {len(rows)} labelled images are missing: {_quote(missing)}"
            " (pass --allow-missing-images to drop them)"
        )
    if missing:
        log.warning("%s: %d of %d labelled images are missing; dropped: %s",
                    root_path, len(missing), len(rows), _quote(missing))
        rows = rows.loc[present].reset_index(drop=True)
    return rows, missing


def prepare_dataset(
    adapter: str,
    root: str | Path | None,
    out: str | Path,
    protocol: str = "8:2",
    n_splits: int = 10,
    seed: int = 0,
    allow_missing_images: bool = False,
    labels: str | Path | None = None,
    higher_better: bool | None = None,
    val_fraction: float = 0.1,
    check_images: bool = True,
    progress: bool = True,
    **options,
) -> dict:
    """Read dataset ``root`` with ``adapter``; write ``out/index.parquet`` and ``out/splits.json``.

    ``labels`` and ``higher_better`` are for the ``folder`` adapter; other adapter-specific
    ``options`` (e.g. ``resolution`` for koniq10k) are passed through. For ``demo`` the root
    may be None: the demo images are built under ``out``, which becomes the root.
    Returns a summary dict (rows, contents, dropped missing images, score range, ...).
    """
    if adapter not in ADAPTERS:
        raise ConfigError(f"unknown dataset adapter {adapter!r}; choose one of {sorted(ADAPTERS)}")
    check_split_options(n_splits, seed, val_fraction)
    out = Path(out)
    root_given = root if root is not None else (out if adapter == "demo" else None)
    if root_given is None:
        raise ConfigError(f"adapter {adapter!r} needs a dataset root (--root)")
    root_path = Path(root_given)
    opts = _adapter_options(adapter, labels, higher_better, options)
    if adapter == "demo":
        opts.setdefault("progress", progress)
    rows = ADAPTERS[adapter](root_path, **opts)
    direction = rows.attrs["higher_better"]
    rows = validate_rows(rows)  # label errors first: they need no disk access

    rows, missing = _drop_missing(root_path, rows, allow_missing_images)
    if check_images:
        verify_images(root_path, rows["image"], progress=progress)

    index = finalize_index(rows, higher_better=direction)
    splits = make_splits(index["content"].tolist(), protocol=protocol, n_splits=n_splits, seed=seed,
                         val_fraction=val_fraction)
    record = {"adapter": adapter, "root": str(root_given), "root_abs": str(root_path.resolve()), "n_rows": len(index),
              "higher_better": bool(direction), "missing_images_dropped": len(missing), **splits}
    if adapter == "demo":
        from diffiqa.data.demo import PSEUDO_MOS_NOTE

        record["note"] = PSEUDO_MOS_NOTE
    with atomic_path(out / "index.parquet") as tmp:
        index.to_parquet(tmp, index=False)
    write_json_atomic(out / "splits.json", record)

    summary = {
        "adapter": adapter, "root": str(root_given), "out": str(out), "rows": len(index),
        "contents": splits["n_contents"], "distortions": int(index["distortion"].nunique()),
        "missing_images_dropped": len(missing), "missing_examples": missing[:SHOW_FIRST],
        "mos_min": float(index["mos"].min()), "mos_max": float(index["mos"].max()),
        "higher_better": bool(direction), "protocol": protocol, "splits": n_splits, "seed": seed,
        **({"note": record["note"]} if "note" in record else {}),
    }
    log.info("prepared %s: %d rows, %d contents -> %s", adapter, len(index), splits["n_contents"], out)
    return summary
