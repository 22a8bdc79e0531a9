"""Atomic writes: no half-written output ever looks complete (DESIGN §8)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from diffiqa.errors import DiffiqaError


def _explain_os_error(path: Path, e: OSError) -> DiffiqaError:
    if e.errno == errno.ENOSPC:
        return DiffiqaError(f"{path}: no space left on device; nothing was overwritten")
    if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return DiffiqaError(f"{path}: cannot write here ({e.strerror}); nothing was overwritten")
    return DiffiqaError(f"{path}: write failed ({e}); nothing was overwritten")


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
        raise _explain_os_error(p, e) from None
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
        raise _explain_os_error(p, e) from None
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
