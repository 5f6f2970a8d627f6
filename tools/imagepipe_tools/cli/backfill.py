"""``imagepipe backfill [--dry-run] [--only NAME ...] [--prune] [--rate N] [--json]``.

Brings every stored photo's variants up to the stage's current spec: compares each manifest
with the spec and publishes one rerender job per photo with stale or missing variants (see
``imagepipe_tools.backfill`` for how, and docs/backfill.md for when). Settings are found like
``dlq``'s: the environment when it names a bucket, else the running ``make dev`` stack's, else
the checkout's ``local`` stage; ``-v`` says which, and prints a line per photo with work.

A progress bar (photos scanned of the total, jobs published, rate, ETA) goes to stderr when it
is a terminal. The summary goes to stdout: text, or with ``--json`` one JSON object
(``imagepipe_tools.backfill.Summary.to_dict``). Exit status: 0 when every manifest was read and
every job taken by the broker (a dry run that finds stale photos is 0 too), 1 when any manifest
could not be read or the broker refused a job, 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading

from imagepipe_tools.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    one_line,
    operator_settings,
    positive_int,
)
from imagepipe.errors import ConfigError

LOGGER = logging.getLogger(__name__)


def register(commands) -> None:
    backfill = commands.add_parser(
        "backfill",
        help="re-make stored photos' variants after a change of the variant spec",
        description="Compare every stored photo's variants with the current variant spec and "
                    "publish a rerender job for each photo with stale or missing variants.",
    )
    backfill.add_argument("--dry-run", action="store_true",
                          help="report what is stale; publish nothing, delete nothing")
    backfill.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                          help="consider only these variant names (repeatable)")
    backfill.add_argument("--prune", action="store_true",
                          help="also delete variants whose name is no longer in the spec")
    backfill.add_argument("--rate", type=positive_rate, metavar="N",
                          help="publish at most N jobs per second (default: as fast as the "
                               "broker confirms)")
    backfill.add_argument("--concurrency", type=positive_int, default=None, metavar="N",
                          help="manifests read at once (default 8)")
    backfill.add_argument("--json", action="store_true",
                          help="print the summary as one JSON object")
    backfill.add_argument("--no-progress", action="store_true",
                          help="no progress bar (there is none when stderr is not a terminal)")
    backfill.set_defaults(run=run_backfill, parser=backfill)


def positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def run_backfill(args: argparse.Namespace) -> int:
    from imagepipe import aws, spec
    from imagepipe_tools.backfill import DEFAULT_CONCURRENCY, Backfill

    try:
        settings = operator_settings(args)
    except ConfigError as exc:
        print(f"imagepipe backfill: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    names = {v.name for v in settings.variants}
    for name in args.only or ():
        if not spec.is_variant_name(name):
            args.parser.error(f"--only {name!r}: not a variant name")  # exits 2
        if name not in names and not args.prune:
            args.parser.error(f"--only {name!r}: not in the variant spec "
                              f"({', '.join(sorted(names))}); with --prune it names a variant "
                              "to delete")
    if not args.verbose:  # pika logs a refused publish as a warning; the summary reports it
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    s3 = aws.s3_client(settings)
    publisher = None if args.dry_run else _publisher(settings)
    run = Backfill(s3, settings.bucket, settings.variants, settings.imaging_engine,
                   publish=None if publisher is None else publisher.publish_rerender,
                   only=args.only, prune=args.prune, dry_run=args.dry_run,
                   rate=args.rate, concurrency=args.concurrency or DEFAULT_CONCURRENCY)
    report = _report_line if args.verbose else None
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        bar = _Bar(s3, settings.bucket, args.dry_run)
    try:
        if bar is not None:
            with bar:
                summary = run.run(progress=bar, report=report)
        else:
            summary = run.run(report=report)
    finally:
        if publisher is not None:
            publisher.close()
    if args.json:
        print(json.dumps(summary.to_dict(), sort_keys=True), flush=True)
    else:
        print(summary_text(summary), flush=True)
    return EXIT_OK if summary.ok else EXIT_FAILED


def _publisher(settings):
    from imagepipe.broker import JobPublisher

    return JobPublisher(settings, connect_timeout=5.0)


def _report_line(finding, outcome: str) -> None:
    parts = [f"{label} {', '.join(names)}" for label, names in
             (("stale", finding.stale), ("missing", finding.missing),
              ("prune", finding.prune)) if names]
    if outcome == "skipped":
        detail = f"skipped (status {finding.skipped})"
    elif outcome == "failed":
        detail = f"failed: {finding.error or 'publish refused'}"
    else:
        detail = outcome.replace("_", " ")
    print(one_line(f"{finding.upload_id}: {'; '.join(parts) or '-'}: {detail}"), file=sys.stderr,
          flush=True)


def summary_text(summary) -> str:
    """The text summary: counts, then the stale/missing/extra variants by name."""
    def by_name(counts) -> str:
        return ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items())) or "none"

    lines = [
        f"scanned {summary.scanned:,} manifests: {summary.up_to_date:,} up to date, "
        f"{summary.jobs_planned:,} to re-make, {summary.skipped_not_done:,} skipped (status "
        f"not done), {summary.failed:,} failed",
        f"stale:   {by_name(summary.stale)}",
        f"missing: {by_name(summary.missing)}",
        f"extra:   {by_name(summary.extra)}"
        + ("" if not summary.extra or summary.pruned or summary.dry_run else
           " (kept; --prune deletes them)"),
    ]
    if summary.dry_run:
        lines.append(f"dry run: {summary.jobs_planned:,} jobs would be published; nothing was "
                     "published or deleted")
    else:
        lines.append(f"jobs published: {summary.jobs_published:,}, variants pruned: "
                     f"{summary.pruned:,}")
    if summary.stopped:
        lines.append(f"stopped early: {summary.stopped}; run it again to continue")
    lines.extend(f"error: {error}" for error in summary.errors)
    if summary.failed > len(summary.errors):
        lines.append(f"... and {summary.failed - len(summary.errors):,} more errors (-v lists "
                     "them)")
    return "\n".join(one_line(line) for line in lines)


class _Bar:
    """A rich progress bar on stderr: photos scanned (of the total, once counted), jobs
    published, photos per second and the time left. The total comes from a listing in a
    background thread (keys only, 1,000 a call), so the scan starts at once and the ETA shows
    as soon as the count is in."""

    def __init__(self, s3, bucket: str, dry_run: bool = False):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._s3, self._bucket, self._dry_run = s3, bucket, dry_run
        self.progress = Progress(
            TextColumn("scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[jobs]} jobs" + (" to publish" if dry_run else ""),
                       markup=False),
            TextColumn("{task.fields[rate]}", markup=False),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            # -v's per-photo lines (stderr) go above the bar; the summary is printed after it.
            redirect_stdout=False,
            redirect_stderr=True,
        )
        self._task = self.progress.add_task("scan", total=None, jobs=0, rate="")
        self._jobs = 0

    def __enter__(self):
        self.progress.start()
        threading.Thread(target=self._count, name="backfill-count", daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def _count(self) -> None:
        from imagepipe_tools.backfill import count_manifests

        try:
            self.progress.update(self._task, total=count_manifests(self._s3, self._bucket))
        except Exception:  # noqa: BLE001 - no total means no ETA, nothing worse
            LOGGER.debug("could not count the manifests", exc_info=True)

    def scanned(self, finding) -> None:
        if self._dry_run and finding.job is not None:
            self.published(finding.job)  # what a real run would publish
        self.progress.advance(self._task)
        speed = self.progress.tasks[0].speed
        self.progress.update(self._task, rate=f"{speed:,.0f}/s" if speed else "")

    def published(self, job) -> None:
        self._jobs += 1
        self.progress.update(self._task, jobs=self._jobs)
