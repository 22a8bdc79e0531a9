"""``diffiqa report <ds> [--out reports/<ds>.html]``: the HTML report of a dataset's evaluation.

Regenerates the page the evaluate stage wrote, from the same files (``diffiqa.layout``, under
``--root``, default: here): ``data/prepared/<ds>/index.parquet``, ``data/cache/<ds>.zarr``,
``reports/<ds>_metrics.json`` (summary, per split, per distortion type),
``plots/<ds>/scatter.csv`` and the training curves ``plots/<ds>/curves/*.csv`` (or ``--curves``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="write reports/<ds>.html from a dataset's evaluation",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset name, e.g. demo or clive")
    p.add_argument("--out", default=None, help="HTML file (default: reports/<ds>.html)")
    p.add_argument("--root", default=".", help="the working copy holding data/, metrics/, plots/, reports/")
    p.add_argument("--curves", nargs="*", default=None, help="training-curve CSVs (default: plots/<ds>/curves/*.csv)")
    p.set_defaults(run=run)


def run(args) -> int:
    from diffiqa.errors import ConfigError, DiffiqaError
    from diffiqa.io_utils import check_output_file
    from diffiqa.layout import ProjectLayout
    from diffiqa.report import dataset_report

    ds = args.dataset
    # Arguments first, before anything is read: a name (not a path), a folder, a writable file.
    if not ds or ds in (".", "..") or "/" in ds or "\\" in ds:
        raise ConfigError(f"dataset {ds!r}: give a dataset name such as demo or clive, not a path")
    if not Path(args.root).is_dir():
        raise ConfigError(f"--root {args.root}: not a folder (the working copy holding data/, metrics/, plots/)")
    for c in args.curves or []:
        if not Path(c).is_file():
            raise ConfigError(f"--curves {c}: file not found")
    layout = ProjectLayout(args.root)
    for needed, stage in ((layout.index(ds), "prepare"), (layout.full_metrics(ds), "evaluate"),
                          (layout.cache(ds), "restore")):
        if not needed.exists():
            raise DiffiqaError(f"{needed}: not found; run `dvc repro {stage}@{ds}` first")
    out_html = check_output_file(Path(args.out) if args.out else layout.report(ds), "--out")
    out = dataset_report(layout, ds, curves_csvs=args.curves, out_html=out_html)
    print(out)
    return 0
