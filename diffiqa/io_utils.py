"""Atomic writes: no half-written output ever looks complete (DESIGN §8)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from diffiqa.errors import OutputError
from diffiqa.outputs import same_file


def explain_os_error(path, e: OSError, after: str = "nothing was overwritten") -> OutputError:
    if e.errno == errno.ENOSPC:
        return OutputError(f"{path}: no space left on device; {after}")
    if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return OutputError(f"{path}: cannot write here ({e.strerror}); {after}")
    if e.errno in (errno.ENOTDIR, errno.EEXIST):  # EEXIST: mkdir found a file where a folder goes
        return OutputError(f"{path}: a parent of this path is a file, not a folder; {after}")
    if e.errno == errno.EISDIR:
        return OutputError(f"{path}: is a folder, not a file; {after}")
    return OutputError(f"{path}: write failed ({e.strerror or e}); {after}")



def _probe_folder(folder: Path, path: Path, what: str) -> None:
    """Create ``folder`` (and parents) and a scratch file in it: the errors a real write would
    meet (read-only, permission, a file where a folder should be) show up now, before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise OutputError(f"{what} {path}: {folder} is a file, not a folder") from None
    except OSError as e:
        raise explain_os_error(f"{what} {path}", e, after="nothing was done") from None


def check_output_file(path: str | os.PathLike, what: str = "output", inputs=()) -> Path:
    """Refuse, before any work, an output file that cannot be written or must not be.

    One-line OutputError naming ``what`` and the path when it is an existing folder, one of
    ``inputs`` (it would be overwritten), under a file, or in a folder that cannot be created
    or written (read-only, permission). Creates the parent folder; writes nothing else.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{what} {p}: is a folder, not a file; give a file name")
    for q in inputs:
        if same_file(p, Path(q)):
            raise OutputError(f"{what} {p}: is one of the inputs; it would be overwritten")
    _probe_folder(p.parent, p, what)
    return p


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, before any work, an output folder that is a file or cannot be created/written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p}: is a file, not a folder")
    _probe_folder(p, p / "x", what)
    return p


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; on success rename it onto ``path``.

    Works for files and directories. On any error the temporary is removed and the old
    ``path`` (if any) is untouched.
    """
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=p.parent, prefix=f".{p.name}.")) / p.name
    except OSError as e:
        raise explain_os_error(p, e) from None
    try:
        yield tmp
        if p.is_dir() and not p.is_symlink():
            old = p.with_name(f".{p.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(p, old)
            os.replace(tmp, p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p)
    except OSError as e:
        raise explain_os_error(p, e) from None
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    if Path(path).is_dir():  # atomic_path replaces folders whole: a file must never do that
        raise OutputError(f"{path}: is a folder, not a file; nothing was overwritten")
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
