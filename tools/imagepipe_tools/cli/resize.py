"""``imagepipe resize FILE... --out DIR [--json] [--max-pixels N] [--threads N] [--engine E]``.

Runs the resize job's imaging core on local files with the default variant spec. Every input
gets exactly one line on stdout, in the order given, as soon as it is done:

    photo.jpg: done (xl 2048x1536 jpeg 301245, lg 1024x768 jpeg 80211, ...)
    notes.txt: failed unsupported_format: not a JPEG, PNG, WebP, GIF image

or, with ``--json``, one JSON object per line::

    {"input": ..., "status": "done"|"failed", "variants": [{"name", "width", "height",
     "format", "bytes", "path"}], "error": null|{"code", "message"}}

Variants are written to ``DIR/<input stem>/<name>.<ext>``. The exit status is 0 when every
input is done, 1 when any failed (each still got its line), 2 for a usage error
(``imagepipe_tools.cli.exit_status``, as for ``upload``). A bad file never produces a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
from pathlib import Path

from imagepipe import imaging
from imagepipe_tools.cli import exit_status, one_line, positive_int, unique_stem, variant_summary
from imagepipe.errors import INTERNAL, SOURCE_MISSING, ConfigError, JobError, PermanentError
from imagepipe.keys import FORMAT_EXTENSIONS
from imagepipe.messages import State
from imagepipe.settings import DEFAULT_IMAGING_ENGINE, DEFAULT_MAX_PIXELS
from imagepipe.spec import DEFAULT_VARIANTS

LOGGER = logging.getLogger(__name__)


def register(commands) -> None:
    resize = commands.add_parser(
        "resize",
        help="make the default variants of local image files",
        description="Make the default variants of each FILE, one result line per FILE.",
    )
    resize.add_argument("files", nargs="+", metavar="FILE")
    resize.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="write variants to DIR/<file stem>/<variant>.<ext>")
    resize.add_argument("--json", action="store_true", help="one JSON object per line")
    resize.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        metavar="N", help=f"refuse larger images (default {DEFAULT_MAX_PIXELS})")
    resize.add_argument("--threads", type=positive_int, default=1, metavar="N",
                        help="threads for each image (resampling in strips, encoding): default 1")
    resize.add_argument("--engine", choices=imaging.ENGINES, default=None,
                        help="vips (the default, as in the resize function: libvips, or "
                             "Pillow's engine with a warning where libvips cannot run) or pillow")
    resize.set_defaults(run=run_resize, parser=resize)


def run_resize(args: argparse.Namespace) -> int:
    if args.engine is None:  # the pipeline's default, with the pipeline's fallback
        engine = imaging.start_engine(DEFAULT_IMAGING_ENGINE)
    else:  # asked for by name: it runs, or it is a usage error
        try:
            imaging.check_engine(args.engine)
        except ConfigError as exc:
            args.parser.error(f"--engine {args.engine}: {exc}")  # exits 2
        engine = args.engine
    # libvips logs each failed decode ("error in tile") as a warning; the input's line already
    # says it failed, and why.
    logging.getLogger("pyvips").setLevel(logging.ERROR)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        args.parser.error(f"--out {args.out}: {exc.strerror or exc}")  # exits 2
    used: set[str] = set()
    results = []
    for name in args.files:
        stem = unique_stem(name, used)
        result = resize_one(name, args.out, stem, args.max_pixels, args.threads, engine)
        results.append(result)
        print(_json_line(result) if args.json else _text_line(result), flush=True)
    return exit_status(results)


def resize_one(name: str, out: Path, stem: str, max_pixels: int, threads: int = 1,
               engine: str = "pillow") -> dict:
    """The result of one input in the ``--json`` shape; never raises (but for Ctrl-C)."""
    try:
        data = _read(Path(name))
        rendered = imaging.render(
            data, DEFAULT_VARIANTS, max_pixels=max_pixels, threads=threads, engine=engine
        )
        variants = _write(rendered, out / stem)
    except JobError as exc:
        return _failed(name, exc.code, exc.message)
    except Exception as exc:  # a bug or the disk: still exactly one line for this input
        LOGGER.debug("unexpected error for %s", name, exc_info=True)
        return _failed(name, INTERNAL, f"{type(exc).__name__}: {exc}")
    return {"input": name, "status": State.DONE, "variants": variants, "error": None}


def _read(path: Path) -> bytes:
    try:
        # Only regular files: a FIFO or /dev/zero would block or never end. O_NONBLOCK, or
        # opening a FIFO with no writer blocks before fstat could tell; files ignore it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermanentError(SOURCE_MISSING, f"{path}: not a regular file")
            return file.read()
    except OSError as exc:
        raise PermanentError(SOURCE_MISSING, f"{path}: {exc.strerror or exc}") from None


def _write(rendered: imaging.Rendered, folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for variant in rendered.variants:
        path = folder / f"{variant.name}.{FORMAT_EXTENSIONS[variant.format]}"
        path.write_bytes(variant.data)
        written.append(
            {
                "name": variant.name,
                "width": variant.width,
                "height": variant.height,
                "format": variant.format,
                "bytes": len(variant.data),
                "path": str(path),
            }
        )
    return written


def _failed(name: str, code: str, message: str) -> dict:
    error = {"code": code, "message": message}
    return {"input": name, "status": State.FAILED, "variants": [], "error": error}


def _json_line(result: dict) -> str:
    return json.dumps(result)  # ensure_ascii: any file name fits on one line


def _text_line(result: dict) -> str:
    if result["status"] == State.DONE:
        line = f"{result['input']}: done ({variant_summary(result['variants'])})"
    else:
        line = f"{result['input']}: failed {result['error']['code']}: {result['error']['message']}"
    return one_line(line)

