"""The ``selfsynth`` command line: one parser, subcommands defined next to the code they drive.

Each subcommand lives in ``selfsynth.commands.<name>`` and exposes ``add_parser(subparsers)``
(cheap: no torch import) and ``run(args) -> int``. Bad input raises ``SelfsynthError``, which
is printed as one line on stderr with exit code 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from selfsynth import __version__
from selfsynth.errors import SelfsynthError

# Order is the order shown in --help.
COMMANDS = (
    "demo",
    "run",
    "status",
    "report",
    "compare",
    "world",
    "data",
    "export",
    "base",
    "concepts",
    "eval",
    "sft",
    "chat",
    "serve",
    "env",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsynth",
        description="Teach a vision-language model fine-grained classes with grounded explanations.",
    )
    parser.add_argument("--version", action="version", version=f"selfsynth {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"selfsynth.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"selfsynth.commands.{name}":
                continue  # a command not built yet
            raise
        module.add_parser(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code so tests can call it in-process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except SelfsynthError as e:
        print(f"selfsynth: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(
            "selfsynth: interrupted; finished work is kept, rerun with --resume to continue", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
