"""The ``imagepipe`` command line: ``imagepipe <command> ...`` (or ``python -m imagepipe``).

Each command lives in its own module under ``imagepipe_tools.cli`` and exposes ``register(commands)``,
which adds its sub-parser and sets ``run`` (``args -> exit status``) as its default. This module
owns only what every command shares: logging, stdout hygiene and the exit statuses.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import imagepipe
from imagepipe import logs
from imagepipe.messages import State

# One rule for every command that takes inputs (resize, upload) or jobs (dlq): 0 when all were
# done, 1 when any failed, 2 for a usage or configuration error. A script can then tell "some of
# my photos were refused" from "all went through" without parsing the lines.
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, but some input or job failed (or stdout closed early)
EXIT_USAGE = 2  # what argparse uses
EXIT_INTERRUPTED = 130

# One line per command module: adding a command does not touch the others.
COMMAND_MODULES = (
    "imagepipe_tools.cli.resize",
    "imagepipe_tools.cli.upload",
    "imagepipe_tools.cli.dlq",
    "imagepipe_tools.cli.token",
    "imagepipe_tools.cli.backfill",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Text on a terminal, JSON lines when stderr goes to a file or a pipe (a CI job, cron).
    logs.configure(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
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
    parser.add_argument("--version", action="version", version=f"imagepipe {imagepipe.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def exit_status(results: Iterable[Mapping]) -> int:
    """The exit status of a command that printed one result per input: ``EXIT_FAILED`` when any
    result's ``status`` is ``failed``, else ``EXIT_OK``."""
    return EXIT_FAILED if any(result["status"] == State.FAILED for result in results) else EXIT_OK


def operator_settings(args: argparse.Namespace):
    """The settings of an operator command (``dlq``, ...): the environment's when it names a
    bucket, else the running ``make dev`` stack's, else the checkout's ``local`` stage (see
    ``imagepipe_tools.stack_env``). With ``-v`` the command says which it used."""
    from imagepipe_tools import stack_env

    chosen = stack_env.operator_settings()
    for name, value in chosen.credentials.items():
        os.environ.setdefault(name, value)
    if args.verbose:
        print(f"imagepipe {args.command}: settings from {chosen.source}", file=sys.stderr)
    return chosen.settings


def whole_number(text: str, minimum: int = 1) -> int:
    """An argparse type: a whole number of at least ``minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def unique_stem(name: str, used: set[str]) -> str:
    """The input's stem, made safe as one folder name and unique within this run, so that
    a/x.jpg and b/x.png do not overwrite each other's outputs (the second gets x-2)."""
    stem = Path(name).stem
    if stem in ("", ".", ".."):
        stem = "image"
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate)
    return candidate


def variant_summary(variants: list[dict]) -> str:
    """``xl 2048x1536 jpeg 301245, lg ...``: the variants of one result line."""
    return ", ".join(f"{v['name']} {v['width']}x{v['height']} {v['format']} {v['bytes']}"
                     for v in variants)


def one_line(text: str) -> str:
    """Control characters (a newline in a file name or a message) escaped: one item, one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
