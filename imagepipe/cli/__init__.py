"""The ``imagepipe`` command line: ``python -m imagepipe <command> ...``.

Each command lives in its own module under ``imagepipe.cli`` and exposes ``register(commands)``,
which adds its sub-parser and sets ``run`` (``args -> exit status``) as its default. This module
owns only what every command shares: logging, stdout hygiene and the exit statuses.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, but some input or job failed (or stdout closed early)
EXIT_USAGE = 2  # what argparse uses
EXIT_INTERRUPTED = 130

# One line per command module: adding a command does not touch the others.
COMMAND_MODULES = (
    "imagepipe.cli.resize",
    "imagepipe.cli.dlq",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)  # Pillow warns about odd files (bad EXIF): log, not print
    if hasattr(sys.stdout, "reconfigure"):  # an undecodable file name must not crash its line
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit-time flush quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagepipe", description="imagepipe tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def one_line(text: str) -> str:
    """Control characters (a newline in a file name or a message) escaped: one item, one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
