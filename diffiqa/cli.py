"""The ``diffiqa`` command.

Each subcommand lives in ``diffiqa/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Heavy imports happen inside ``run`` so ``diffiqa --help`` stays fast.
Errors derived from ``DiffiqaError`` are printed as one line (no traceback), exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from diffiqa.errors import DiffiqaError

COMMANDS = ["prepare", "distortions", "restore", "score", "enhance", "profile", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffiqa", description="Diffusion-guided NR-IQA")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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
    try:
        return int(args.run(args) or 0)
    except DiffiqaError as e:
        print(f"diffiqa: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffiqa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
