"""``diffiqa score PATH... [--model F] [--csv OUT]``: quality scores of new images.

Streams: one image in memory at a time, each row written and flushed as soon as it is scored,
so a folder of 10,000 images neither runs out of memory nor loses finished rows. With
``--csv`` the rows go to ``OUT.partial`` a whole row at a time, renamed to ``OUT`` when every
image is done; the run holds a lock on ``OUT`` (``diffiqa.outputs.RunLock``), so a second
``score --csv OUT`` is refused while it runs instead of mixing rows into its file.

Scores are on the training set's quality scale (0 = its worst rated image, 1 = its best) and
are NOT clamped: an image judged worse or better than anything the model was trained on
scores a little below 0 or above 1 (e.g. 1.07). Clamping would tie exactly the images one
most wants told apart, and would differ from the predictions the evaluation reports.

Everything that can be checked before scoring is: the device, the output path (not a folder,
not one of the inputs, writable), the checkpoints (readable, of the right kind).
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# `kind` values of checkpoints that are not scorers (diffiqa.diffusion.checkpoint / training).
RESTORER_KIND = "diffiqa-restorer"
NOT_A_SCORER = {
    RESTORER_KIND: "a restorer checkpoint, not a scorer (pass it as --restorer, or leave --restorer out: "
                   "the scorer records its own)",
    "diffiqa-restorer-train-state": "a restorer's training resume state, not a scorer",
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("score", help="score images with a trained model (higher = better)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--model", default=None,
                   help="scorer checkpoint (default: newest models/scorer/**/split-*.pt here, else the packaged model)")
    p.add_argument("--restorer", default=None, help="restorer checkpoint (default: the one recorded in the model)")
    p.add_argument("--csv", default=None, metavar="OUT", help="write path,score rows here (default or '-': stdout)")
    p.add_argument("--batch-size", type=int, default=8, help="crops restored and scored together")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N, mps (default auto: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _peek_kind(path: Path):
    """The checkpoint's ``kind`` field, or None when it has none or is not a torch file."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except Exception:  # not a torch file: the loader that owns the format says what is wrong
        return None
    return ckpt.get("kind") if isinstance(ckpt, dict) else None


def check_checkpoint(path, option: str) -> None:
    """One line for a checkpoint that is missing, a folder, unreadable or of the wrong kind."""
    from diffiqa.errors import ConfigError

    if path is None:
        return
    p = Path(path)
    try:
        if p.is_dir():
            raise ConfigError(f"{option} {p}: is a folder, not a checkpoint file")
        if not p.is_file():
            raise ConfigError(f"{option} {p}: checkpoint not found")
        kind = _peek_kind(p)
    except PermissionError as e:
        raise ConfigError(f"{option} {p}: cannot read ({e.strerror or 'permission denied'})") from None
    if option == "--model" and kind in NOT_A_SCORER:
        raise ConfigError(f"--model {p}: wrong kind of checkpoint: {NOT_A_SCORER[kind]}")
    if option == "--restorer" and kind is not None and kind != RESTORER_KIND:
        raise ConfigError(f"--restorer {p}: wrong kind of checkpoint ({kind!r}, not a restorer)")


class CsvRows:
    """``OUT.partial`` written a whole row at a time: a row that fails half-way (full disk) is
    cut off again, so the file only ever holds whole rows. Mode as ``open()`` gives (0644)."""

    def __init__(self, path: Path):
        from diffiqa.outputs import file_mode

        self.path, self.size = path, 0
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode())

    def write_row(self, row: list[str]) -> None:
        line = io.StringIO()
        csv.writer(line).writerow(row)
        # surrogateescape: a file name that is not valid UTF-8 is written back as its bytes
        data = line.getvalue().encode("utf-8", errors="surrogateescape")
        try:
            _write_all(self.fd, data)
        except BaseException:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            raise
        self.size += len(data)

    def close(self) -> None:
        os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def run(args) -> int:
    from diffiqa.data.image_io import iter_image_files
    from diffiqa.devices import resolve_device
    from diffiqa.errors import ConfigError, DiffiqaError
    from diffiqa.io_utils import check_output_file
    from diffiqa.outputs import RunLock

    # Cheap checks first: nothing is loaded or scored when one of them fails.
    device = resolve_device(args.device)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: must be at least 1")
    unreadable: list[str] = []
    files = iter_image_files(args.paths, unreadable=unreadable)  # paths only; read one at a time below
    for problem in unreadable:
        print(f"diffiqa: skipped: {problem}", file=sys.stderr)
    if not files:
        raise DiffiqaError(f"no image files in {' '.join(args.paths)}")
    out_path = lock = None
    if args.csv not in (None, "-"):
        out_path = check_output_file(args.csv, "--csv", inputs=files)
        partial = check_output_file(out_path.with_name(out_path.name + ".partial"), "--csv", inputs=files)
    check_checkpoint(args.model, "--model")
    check_checkpoint(args.restorer, "--restorer")
    if out_path is not None:
        # One run per output: a second `score --csv OUT` is refused while this one holds OUT.
        lock = RunLock(out_path, "--csv").acquire()
    try:
        return _score(args, files, unreadable, device, out_path, partial if out_path else None)
    finally:
        if lock is not None:
            lock.release()


def _score(args, files, unreadable, device, out_path, partial) -> int:
    from tqdm.auto import tqdm

    from diffiqa.api import create_metric
    from diffiqa.errors import ImageError, OutputError

    metric = create_metric("diffiqa", checkpoint=args.model, device=device, restorer=args.restorer,
                           batch_size=args.batch_size, progress=not args.no_progress)
    if out_path is not None:
        try:
            rows = CsvRows(partial)
        except OSError as e:
            raise OutputError(f"--csv {out_path}: cannot write {partial.name} ({e.strerror or e}); "
                              f"nothing was scored") from None
        write_row = rows.write_row
    else:
        stream = sys.stdout
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
        writer = csv.writer(stream)

        def write_row(row):
            writer.writerow(row)
            stream.flush()
    failed, written = 0, 0
    try:
        write_row(["path", "score"])
        for path in tqdm(files, desc="score", unit="image", disable=args.no_progress):
            try:
                _, score = next(iter(metric.score_paths([path])))
            except ImageError as e:  # one bad file must not lose the others
                failed += 1
                print(f"diffiqa: skipped: {e}", file=sys.stderr)
                continue
            write_row([str(path), f"{score:.6f}"])
            written += 1
    except BrokenPipeError:
        raise  # stdout's reader left (`| head`): the CLI ends quietly
    except OSError as e:
        if out_path is None:
            raise
        why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise OutputError(f"--csv {out_path}: {why} after {written} of {len(files)} images; {out_path} was not "
                          f"written, the {written} whole rows are kept in {partial}") from None
    finally:
        if out_path is not None:
            try:
                rows.close()
            except OSError:
                pass  # the write error above already says what happened
    if out_path is not None:
        try:
            os.replace(partial, out_path)
        except OSError as e:
            raise OutputError(f"--csv {out_path}: cannot rename {partial.name} onto it ({e.strerror or e}); "
                              f"all {written} rows are in {partial}") from None
        log.info("%d scores written to %s", written, out_path)
    if failed or unreadable:
        paths = f"; {len(unreadable)} path(s) could not be read" if unreadable else ""
        print(f"diffiqa: {failed} of {len(files)} images could not be scored{paths}", file=sys.stderr)
        return 1
    return 0
