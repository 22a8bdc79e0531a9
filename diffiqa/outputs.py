"""What a command writes, planned before any work and put in place all at once.

Three guarantees every command that writes files relies on (docs/errors.md):

- **Nothing that was an input is overwritten.** ``OutputPlan.add`` refuses a target that is
  one of the inputs (any spelling, or a link to it) or that two sources would both write,
  before any model is loaded.
- **Nothing half-written looks whole.** ``OutputPlan.staged()`` gives a hidden folder inside
  the output folder (same file system, so renames are atomic); the command writes the whole
  set there and ``commit`` renames every file into place at the end. A failure (full disk,
  Ctrl-C, SIGTERM) removes the staging folder and leaves the output folder as it was. A
  staging folder left by ``kill -9`` is recognised by its free lock and removed by the next
  run into that folder.
- **Two runs cannot clobber each other.** ``RunLock`` is an exclusive ``flock`` on a hidden
  lock file next to an output; a second run on the same output is refused at once, naming it.

Files are written with the mode a plain ``open()`` gives (0666 minus the umask; ``file_mode``),
the same for images, CSV and JSON.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from diffiqa.errors import OutputError

STAGE_PREFIX = ".diffiqa-stage-"
_LOCK_NAME = ".lock"


def file_mode() -> int:
    """0666 minus the process umask: what ``open(path, "w")`` creates (``mkstemp`` gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def set_file_mode(path: str | os.PathLike) -> None:
    os.chmod(path, file_mode())


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same path once resolved, or (both existing)
    the same inode (hard links, bind mounts)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


class RunLock:
    """An exclusive, non-blocking lock on ``target``: a hidden ``.<name>.lock`` beside it,
    held with ``flock`` for the run (the kernel drops it when the process dies, even by
    ``kill -9``, so a stale lock file never blocks anyone). The file is removed on release."""

    def __init__(self, target: str | os.PathLike, what: str):
        self.target, self.what = Path(target), what
        self.path = self.target.with_name(f".{self.target.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
            except OSError as e:
                raise OutputError(f"{self.what} {self.target}: cannot create its lock file ({e.strerror or e}); "
                                  f"nothing was done") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(f"{self.what} {self.target}: another diffiqa run is writing it now; wait for it "
                                  f"or give another path (nothing was done)") from None
            # The holder we waited for may have removed the file we opened: lock the one on disk.
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    self._fd = fd
                    return self
            except FileNotFoundError:
                pass
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still held, so no other run is locking this inode
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _stale(stage: Path) -> bool:
    """A staging folder whose run is gone: its lock can be taken (or it has none)."""
    try:
        fd = os.open(stage / _LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def remove_stale_stages(folder: Path) -> list[Path]:
    """Remove the staging folders of runs into ``folder`` that were killed; returns them."""
    removed = []
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(STAGE_PREFIX) and p.is_dir()]
    except OSError:
        return removed
    for stage in entries:
        if _stale(stage):
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
    return removed


class Stage:
    """A hidden folder inside the output folder where one run writes its whole output set."""

    def __init__(self, plan: OutputPlan):
        self.plan = plan
        self.dir = Path(tempfile.mkdtemp(dir=plan.folder, prefix=STAGE_PREFIX))
        self._lock = os.open(self.dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)

    def path(self, name: str) -> Path:
        """Where to write the output ``name`` (relative to the output folder) during the run."""
        return self.dir / name

    def final(self, path: str | os.PathLike) -> Path:
        """The output folder's path for a path inside the stage."""
        return self.plan.folder / Path(path).relative_to(self.dir)

    def commit(self) -> list[Path]:
        """Rename every staged file into the output folder. Each target is checked against the
        inputs once more (a file the plan did not know is refused too) before any rename."""
        staged = sorted(p for p in self.dir.rglob("*") if p.is_file() and p.name != _LOCK_NAME)
        finals = [self.final(p) for p in staged]
        for target in finals:
            self.plan.check_target(target)
            if target.is_dir():
                raise OutputError(f"{self.plan.what} {target}: is a folder, not a file; nothing was overwritten")
        for src, dst in zip(staged, finals):
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        return finals

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.close(self._lock)
        except OSError:
            pass


class OutputPlan:
    """The outputs of one run into ``folder``, checked against ``inputs`` before any work.

    ``add(name, source)`` records a target (``folder/name``) and refuses at once one that is an
    input or that another source already writes. ``staged()`` is the all-or-nothing write.
    """

    def __init__(self, folder: str | os.PathLike, inputs=(), what: str = "--out"):
        from diffiqa.io_utils import check_output_dir

        self.folder = check_output_dir(folder, what)
        self.what = what
        self.inputs = [Path(q) for q in inputs]
        self._resolved = {}
        for q in self.inputs:
            try:
                self._resolved[q.resolve()] = q
            except OSError:
                pass
        self.targets: dict[Path, str] = {}

    def check_target(self, target: Path) -> None:
        hit = self._resolved.get(target.resolve())
        if hit is None and target.exists():
            hit = next((q for q in self.inputs if same_file(target, q)), None)
        if hit is not None:
            raise OutputError(f"{self.what} {self.folder}: the output {target.name} would overwrite the input {hit}; "
                              f"give another output folder (nothing was done)")

    def add(self, name: str, source: str = "") -> Path:
        target = self.folder / name
        self.check_target(target)
        other = self.targets.get(target)
        if other is not None and other != source:
            raise OutputError(f"{self.what} {self.folder}: {other} and {source} would both write {name} "
                              f"(nothing was done)")
        self.targets[target] = source
        return target

    @contextmanager
    def staged(self):
        """Yield a ``Stage``; on normal exit commit it, on any exception discard it."""
        from diffiqa.io_utils import explain_os_error

        remove_stale_stages(self.folder)
        try:
            stage = Stage(self)
        except OSError as e:
            raise explain_os_error(f"{self.what} {self.folder}", e, after="nothing was done") from None
        try:
            yield stage
            try:
                stage.commit()
            except OSError as e:
                raise explain_os_error(f"{self.what} {self.folder}", e,
                                       after="the outputs not yet moved are dropped") from None
        except OutputError as e:
            raise OutputError(_nothing_changed(str(e).replace(str(stage.dir), str(self.folder)), self.folder)) from None
        finally:
            stage.discard()


def _nothing_changed(message: str, folder: Path) -> str:
    """An output error during a staged run: nothing in the output folder was touched."""
    for tail in ("; nothing was overwritten", "; nothing was done"):
        if message.endswith(tail):
            return message[: -len(tail)] + f"; nothing in {folder} was changed"
    return message
