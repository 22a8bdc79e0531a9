"""``diffiqa report <ds> [--out reports/<ds>.html]``: the HTML report of a dataset's evaluation.

Reads what the pipeline wrote: ``data/prepared/<ds>/index.parquet``, ``data/cache/<ds>.zarr``,
``metrics/<ds>.json``, ``plots/<ds>/scatter.csv`` and the training curves
``plots/<ds>/*curves*.csv`` (or ``--curves``), all relative to ``--root`` (default: here).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="write reports/<ds>.html from a dataset's evaluation",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset name, e.g. demo or clive")
    p.add_argument("--out", default=None, help="HTML file (default: reports/<ds>.html)")
    p.add_argument("--root", default=".", help="the working copy holding data/, metrics/, plots/")
    p.add_argument("--curves", nargs="*", default=None, help="training-curve CSVs (default: plots/<ds>/*curves*.csv)")
    p.set_defaults(run=run)


def run(args) -> int:
    import pandas as pd

    from diffiqa.errors import DiffiqaError
    from diffiqa.report import write_report

    root, ds = Path(args.root), args.dataset
    index_path = root / "data" / "prepared" / ds / "index.parquet"
    metrics_path = root / "metrics" / f"{ds}.json"
    for needed, stage in ((index_path, "prepare"), (metrics_path, "evaluate")):
        if not needed.is_file():
            raise DiffiqaError(f"{needed}: not found; run `dvc repro {stage}@{ds}` first")
    plots = root / "plots" / ds
    curves = args.curves if args.curves is not None else sorted(plots.glob("*curves*.csv")) + sorted(
        plots.glob("curves/*.csv"))
    out = write_report(ds, pd.read_parquet(index_path), root / "data" / "cache" / f"{ds}.zarr", metrics_path, curves,
                       Path(args.out) if args.out else root / "reports" / f"{ds}.html",
                       scatter_csv=plots / "scatter.csv")
    print(out)
    return 0
