"""The ``diffiqa`` command.

Each subcommand lives in ``diffiqa/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Heavy imports happen inside ``run`` so ``diffiqa --help`` stays fast.
Errors derived from ``DiffiqaError`` are printed as one line (no traceback), exit code 2.
A reader that goes away (``diffiqa score photos/ | head -1``) ends the command quietly with
exit code 141 (128 + SIGPIPE, what a shell reports for a filter killed that way).
SIGTERM (``kill``, a job scheduler's timeout) unwinds like Ctrl-C, so temporary files and
staging folders are removed and the outputs stay as they were; exit code 143.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys

from diffiqa import __version__
from diffiqa.errors import DiffiqaError, Terminated, raise_on_sigterm

EXIT_BROKEN_PIPE = 141
EXIT_TERMINATED = 143  # 128 + SIGTERM

COMMANDS = ["prepare", "distortions", "restore", "score", "enhance", "profile", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffiqa", description="Diffusion-guided NR-IQA")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"diffiqa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"diffiqa.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"diffiqa.commands.{name}":
                continue  # not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    previous = raise_on_sigterm()
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a full or closed stdout is reported here, not at interpreter exit
        return code
    except DiffiqaError as e:
        # One line whatever the message holds (a library's multi-line text quoted in it).
        text = " / ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"diffiqa: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffiqa: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("diffiqa: terminated (SIGTERM); outputs left as they were", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as e:
        # Named files are reported by the commands (atomic writes, score's OUT.partial); a
        # nameless ENOSPC is a write to stdout: `diffiqa score x > /dev/full`.
        if e.errno != errno.ENOSPC or e.filename is not None:
            raise
        _silence_stdout()
        print("diffiqa: error: standard output: no space left on device", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush of the rows still
    buffered does not print an "Exception ignored ... BrokenPipeError" at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
