"""``imagepipe upload FILE... --api URL [--wait] [--out DIR] [--json]``.

Uploads each file as a browser does (``imagepipe_tools.client``): the file is checked against the
server's ``GET /limits`` before a URL is asked for, its bytes go straight to S3 with a presigned
PUT, or as a presigned multipart upload above the server's threshold (parts in parallel, each
retried, the rest resumed after a dropped connection), then ``complete`` queues it. A progress
bar per file goes to stderr when it is a terminal. Every input gets exactly one line on stdout,
in the order given:

    cat.jpg: queued 9f0c...                                   (without --wait: complete's answer)
    cat.jpg: done 9f0c... (xl 2048x1536 jpeg 301245, lg ...)  (--wait or --out)
    notes.txt: failed unsupported_type: text/plain is not one of image/jpeg, ...

or, with ``--json``, one JSON object per line::

    {"input", "upload_id", "status", "variants": [{"name", "width", "height", "format",
     "bytes", "url", "path"?}], "error": null|{"code", "message"}}

``--out DIR`` (implies ``--wait``) saves the variants as ``DIR/<file stem>/<name>.<ext>``.
The exit status is 1 when any file failed (or did not finish within ``--timeout``), 2 for a
usage error, else 0 (``imagepipe_tools.cli.exit_status``, as for ``resize``). Network errors
and HTTP errors are one line for their file, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from imagepipe_tools.cli import (
    exit_status,
    one_line,
    positive_int,
    unique_stem,
    variant_summary,
)
from imagepipe_tools.client import TERMINAL, UploadClient, UploadFailed
from imagepipe.errors import INTERNAL, TIMEOUT
from imagepipe.messages import State

LOGGER = logging.getLogger(__name__)
# The bearer token for a stage with auth, when --token is not given.
ENV_TOKEN = "IMAGEPIPE_TOKEN"

DEFAULT_TIMEOUT_S = 300.0


def register(commands) -> None:
    upload = commands.add_parser(
        "upload",
        help="upload image files through the upload API, as a browser does",
        description="Upload each FILE through the API at --api (presigned, straight to S3), "
                    "one result line per FILE.",
    )
    upload.add_argument("files", nargs="+", metavar="FILE")
    upload.add_argument("--api", required=True, metavar="URL",
                        help="the upload API, e.g. http://127.0.0.1:8000")
    upload.add_argument("--token", default=os.environ.get(ENV_TOKEN) or None, metavar="JWT",
                        help=f"bearer token for a stage with auth (default: ${ENV_TOKEN}); "
                             "`imagepipe token` mints one from the stage's secret")
    upload.add_argument("--wait", action="store_true",
                        help="wait until each upload is done or failed")
    upload.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"with --wait: give up on a file after S seconds "
                             f"(default {DEFAULT_TIMEOUT_S:.0f})")
    upload.add_argument("--out", type=Path, metavar="DIR",
                        help="save the variants to DIR/<file stem>/<variant>.<ext> "
                             "(implies --wait)")
    upload.add_argument("--json", action="store_true", help="one JSON object per line")
    upload.add_argument("--jobs", type=positive_int, default=2, metavar="N",
                        help="files uploaded at once (default 2)")
    upload.add_argument("--part-workers", type=positive_int, default=4, metavar="N",
                        help="parts of one multipart upload sent at once (default 4)")
    upload.add_argument("--no-progress", action="store_true",
                        help="no progress bars (they are shown only on a terminal anyway)")
    upload.set_defaults(run=run_upload, parser=upload)


def run_upload(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        args.parser.error("--timeout must be more than 0")
    if not args.api.startswith(("http://", "https://")):
        args.parser.error(f"--api must be an http(s) URL, got {args.api!r}")
    if args.out is not None:
        args.wait = True
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            args.parser.error(f"--out {args.out}: {exc.strerror or exc}")  # exits 2
    client = UploadClient(args.api, part_workers=args.part_workers, token=args.token)
    used: set[str] = set()
    stems = [unique_stem(name, used) for name in args.files]
    bars = _progress(args)
    try:
        client.limits()
    except UploadFailed as exc:
        # The API did not answer even after retries: say so once per file, without asking
        # again for each.
        unanswered = [{"input": name, "upload_id": None, "status": State.FAILED, "variants": [],
                       "error": exc.to_dict()} for name in args.files]
        for result in unanswered:
            print(_json_line(result) if args.json else _text_line(result), flush=True)
        return exit_status(unanswered)
    results = []
    with bars or nullcontext():
        pool = ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="upload")
        futures = [pool.submit(upload_one, client, name, stem, args, bars)
                   for name, stem in zip(args.files, stems)]
        try:
            for future in futures:  # in the order given, each as soon as it and those before end
                result = future.result()
                results.append(result)
                print(_json_line(result) if args.json else _text_line(result), flush=True)
        except KeyboardInterrupt:
            # Files not started never start; those in flight stop at their next step (a part
            # being sent finishes first) and cancel their upload on the server.
            client.stopping.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
    return exit_status(results)


def upload_one(client: UploadClient, name: str, stem: str, args, bars) -> dict:
    """The result of one input in the ``--json`` shape; never raises (but for Ctrl-C)."""
    result = {"input": name, "upload_id": None, "status": State.FAILED, "variants": [],
              "error": None}
    task = bars.start(name) if bars else None
    try:
        completed = client.submit_file(Path(name),
                                       progress=bars.advancer(task) if bars else None)
        upload_id = completed["upload_id"]
        result.update(upload_id=upload_id, status=completed["status"])
        if args.wait:
            if bars:
                bars.state(task, "processing")
            final = client.wait(upload_id, timeout=args.timeout)
            result.update(status=final["status"], error=final["error"],
                          variants=final["variants"])
            if final["status"] not in TERMINAL:
                result.update(status=State.FAILED, error={
                    "code": TIMEOUT,
                    "message": f"still {final['status']} after {args.timeout:g} s"})
            elif final["status"] == State.DONE and args.out is not None:
                client.save_variants(result["variants"], args.out / stem)
    except UploadFailed as exc:
        result.update(status=State.FAILED, error=exc.to_dict(),
                      upload_id=exc.upload_id or result["upload_id"])
    except Exception as exc:  # a bug or the disk: still exactly one line for this input
        LOGGER.debug("unexpected error for %s", name, exc_info=True)
        result.update(status=State.FAILED, error={"code": INTERNAL,
                                              "message": f"{type(exc).__name__}: {exc}"})
    if bars:
        bars.state(task, result["status"] if result["error"] is None
                   else f"failed: {result['error']['code']}")
    return result


def _json_line(result: dict) -> str:
    return json.dumps(result)  # ensure_ascii: any file name fits on one line


def _text_line(result: dict) -> str:
    name, status = result["input"], result["status"]
    if result["error"] is not None:
        line = f"{name}: failed {result['error']['code']}: {result['error']['message']}"
    elif status == State.DONE and result["variants"]:  # without --wait: complete's answer alone
        line = f"{name}: done {result['upload_id']} ({variant_summary(result['variants'])})"
    else:
        line = f"{name}: {status} {result['upload_id']}"
    return one_line(line)


class _Bars:
    """One rich progress bar per file on stderr: bytes sent, then what the upload is doing."""

    def __init__(self, redirect_stdout: bool):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[state]}", markup=False),
            console=Console(stderr=True),
            # Result lines on stdout go above the bars when both share the terminal; into a
            # pipe they go straight through.
            redirect_stdout=redirect_stdout,
            redirect_stderr=False,
        )

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start(self, name: str):
        try:
            total = Path(name).stat().st_size
        except OSError:
            total = None
        return self.progress.add_task(one_line(name), total=total, state="uploading")

    def advancer(self, task):
        return lambda n: self.progress.advance(task, n)

    def state(self, task, text: str) -> None:
        self.progress.update(task, state=text)


def _progress(args) -> _Bars | None:
    if args.no_progress or not sys.stderr.isatty():
        return None
    return _Bars(redirect_stdout=sys.stdout.isatty())
