"""``diffiqa score PATH... [--model F] [--csv OUT]``: quality scores of new images.

Streams: one image in memory at a time, each row written and flushed as soon as it is scored,
so a folder of 10,000 images neither runs out of memory nor loses finished rows. With
``--csv`` the rows go to ``OUT.partial``, renamed to ``OUT`` when every image is done.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("score", help="score images with a trained model (higher = better)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--model", default=None,
                   help="scorer checkpoint (default: newest models/scorer/**/split-*.pt here, else the packaged model)")
    p.add_argument("--restorer", default=None, help="restorer checkpoint (default: the one recorded in the model)")
    p.add_argument("--csv", default=None, metavar="OUT", help="write path,score rows here (default: stdout)")
    p.add_argument("--batch-size", type=int, default=8, help="crops restored and scored together")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    from tqdm.auto import tqdm

    from diffiqa.api import create_metric
    from diffiqa.data.image_io import iter_image_files
    from diffiqa.errors import DiffiqaError, ImageError

    files = iter_image_files(args.paths)  # paths only; images are read one at a time below
    if not files:
        raise DiffiqaError(f"no image files in {' '.join(args.paths)}")
    metric = create_metric("diffiqa", checkpoint=args.model, device=args.device, restorer=args.restorer,
                           batch_size=args.batch_size, progress=not args.no_progress)
    out_path = Path(args.csv) if args.csv else None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        partial = out_path.with_name(out_path.name + ".partial")
        stream = open(partial, "w", newline="")
    else:
        stream = sys.stdout
    failed = 0
    try:
        writer = csv.writer(stream)
        writer.writerow(["path", "score"])
        for path in tqdm(files, desc="score", unit="image", disable=args.no_progress):
            try:
                _, score = next(iter(metric.score_paths([path])))
            except ImageError as e:  # one bad file must not lose the others
                failed += 1
                print(f"diffiqa: skipped: {e}", file=sys.stderr)
                continue
            writer.writerow([str(path), f"{score:.6f}"])
            stream.flush()
    finally:
        if out_path is not None:
            stream.close()
    if out_path is not None:
        os.replace(partial, out_path)
        log.info("%d scores written to %s", len(files) - failed, out_path)
    if failed:
        print(f"diffiqa: {failed} of {len(files)} images could not be scored", file=sys.stderr)
        return 1
    return 0
