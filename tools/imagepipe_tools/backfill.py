"""Backfill: bring every stored photo's variants up to the current spec (``imagepipe backfill``).

One pass over ``manifests/``:

1. The keys are streamed page by page (``list_objects_v2``'s paginator), never listed whole, so
   memory stays flat at any number of photos.
2. Manifests are read by a small thread pool through a bounded window (at most ``window``
   manifests in flight or waiting to be planned), and each is compared with the current spec
   by ``imagepipe.backfill.compare`` (the one owner of stale/missing/extra; the worker applies
   the same rule before it renders).
3. A photo with work (stale or missing variants within ``only``, or with ``prune`` variants no
   longer in the spec) gets one rerender job, unless its status is not ``done``: a photo whose
   live job is still in flight is left alone (the next run picks it up).
4. Jobs are published on the calling thread (pika's channels are not thread-safe), with
   publisher confirms, at most ``rate`` per second. A refused publish stops the run: whatever
   was confirmed stays done, and the next run starts over and sends only what is still stale.

Nothing is remembered between runs: a second run reads the manifests again, and a photo whose
rerender already landed compares fresh. That is what makes it resumable, and idempotent.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

from imagepipe import keys, status
from imagepipe.formats import FORMAT_TO_MIME
from imagepipe.messages import Manifest, ResizeJob, State, utc_now
from imagepipe.spec import Variant

from imagepipe.backfill import compare

LOGGER = logging.getLogger(__name__)

# Reading manifests is S3 latency, not CPU: a few threads hide it. The window bounds what is in
# flight (and so the memory) whatever the bucket holds.
DEFAULT_CONCURRENCY = 8
WINDOW_PER_THREAD = 4
MAX_ERRORS_KEPT = 20  # the first errors go in the summary; the rest are only counted

Publish = Callable[[ResizeJob], None]


class Progress(Protocol):
    """What a run reports as it goes (the CLI's progress bar); every method is optional work."""

    def scanned(self, finding: "Finding") -> None: ...

    def published(self, job: ResizeJob) -> None: ...


@dataclass(frozen=True)
class Finding:
    """What one manifest needs. ``make``/``prune`` are the job's names; ``job`` is None when
    there is nothing to do, the photo was skipped, or it could not be read."""

    upload_id: str
    stale: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    make: tuple[str, ...] = ()
    prune: tuple[str, ...] = ()
    skipped: State | None = None  # the status that kept it back (not done)
    job: ResizeJob | None = None
    error: str | None = None

    @property
    def has_work(self) -> bool:
        return bool(self.make or self.prune)


@dataclass
class Summary:
    dry_run: bool = False
    scanned: int = 0
    up_to_date: int = 0  # photos that need no job (within --only; extras count with --prune)
    stale: Counter = field(default_factory=Counter)  # variant name -> photos
    missing: Counter = field(default_factory=Counter)
    extra: Counter = field(default_factory=Counter)  # reported always, deleted with --prune
    skipped_not_done: int = 0
    jobs_planned: int = 0  # photos with work whose status is done (published, or would be)
    jobs_published: int = 0
    pruned: int = 0  # variants named for deletion in published jobs
    failed: int = 0  # manifests that could not be read or planned, and refused publishes
    stopped: str | None = None  # why the run ended early (the broker refused a publish)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.stopped is None

    def fail(self, message: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message)

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "up_to_date": self.up_to_date,
            "stale": dict(sorted(self.stale.items())),
            "missing": dict(sorted(self.missing.items())),
            "extra": dict(sorted(self.extra.items())),
            "skipped_not_done": self.skipped_not_done,
            "jobs_planned": self.jobs_planned,
            "jobs_published": self.jobs_published,
            "pruned": self.pruned,
            "failed": self.failed,
            "stopped": self.stopped,
            "errors": list(self.errors),
        }


def manifest_upload_ids(s3, bucket: str, page_size: int = 1000) -> Iterator[str]:
    """The upload id of every manifest, one listing page at a time."""
    paginator = s3.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=bucket, Prefix=keys.MANIFESTS_PREFIX,
                               PaginationConfig={"PageSize": page_size})
    for page in pages:
        contents = page.get("Contents", [])
        del page  # one parsed page alive at a time, not two while the next one is parsed
        for item in contents:
            key = item["Key"]
            upload_id = _upload_id_of(key)
            if upload_id is None:
                LOGGER.debug("ignoring %s: not a manifest key", key)
                continue
            yield upload_id
        del contents


def count_manifests(s3, bucket: str) -> int:
    """How many manifests there are: a listing only (1,000 keys a call), for the ETA."""
    return sum(1 for _ in manifest_upload_ids(s3, bucket))


def _upload_id_of(key: str) -> str | None:
    name = key[len(keys.MANIFESTS_PREFIX):]
    if not name.endswith(".json"):
        return None
    upload_id = name[: -len(".json")]
    return upload_id if keys.is_upload_id(upload_id) else None


class Backfill:
    """One backfill run over a bucket. Clients are injected: ``s3`` (boto3, thread-safe) and
    ``publish`` (a rerender job, with confirms; not called on a dry run)."""

    def __init__(self, s3, bucket: str, variants: Sequence[Variant], engine: str, *,
                 publish: Publish | None = None, only: Iterable[str] | None = None,
                 prune: bool = False, dry_run: bool = False, rate: float | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY, window: int | None = None,
                 page_size: int = 1000,
                 status_store: status.StatusStore | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if publish is None and not dry_run:
            raise ValueError("a backfill that publishes needs a publish function")
        self._s3 = s3
        self._bucket = bucket
        self._variants = tuple(variants)
        self._engine = engine
        self._publish = publish
        self._only = frozenset(only) if only else None
        self._prune = prune
        self._dry_run = dry_run
        self._rate = rate
        self._concurrency = concurrency
        self._window = window or concurrency * WINDOW_PER_THREAD
        self._page_size = page_size
        self._store = status_store or status.StatusStore(s3, bucket)
        self._clock = clock
        self._sleep = sleep

    # --- planning (worker threads) -------------------------------------------------------------

    def inspect(self, upload_id: str) -> Finding:
        """What one photo needs; never raises for a bad manifest or an S3 error (it says so)."""
        try:
            return self._inspect(upload_id)
        except Exception as exc:  # noqa: BLE001 - one photo's fault must not end the run
            LOGGER.debug("upload %s: could not plan", upload_id, exc_info=True)
            return Finding(upload_id, error=f"{upload_id}: {type(exc).__name__}: {exc}")

    def _inspect(self, upload_id: str) -> Finding:
        manifest = self._store.get_manifest(upload_id)
        if manifest is None:  # deleted since the listing: nothing left to bring up to date
            return Finding(upload_id)
        found = compare(manifest, self._variants, self._engine)
        stale = self._counted(found.stale)
        missing = self._counted(found.missing)
        make = tuple(v.name for v in self._variants if v.name in stale or v.name in missing)
        prune = self._counted(found.extra) if self._prune else ()
        finding = Finding(upload_id, stale=stale, missing=missing, extra=tuple(found.extra),
                          make=make, prune=prune)
        if not finding.has_work:
            return finding
        # Only now the status (one more listing): a live job in flight must finish first, and
        # the rerender would be refused anyway.
        shown = self._store.state_of(upload_id).state
        if shown != State.DONE:
            return replace(finding, skipped=shown)
        record = self._store.get_upload_record(upload_id)
        return replace(finding, job=self._job(manifest, record, make, prune))

    def _counted(self, names: Iterable[str]) -> tuple[str, ...]:
        return tuple(n for n in names if self._only is None or n in self._only)

    def _job(self, manifest: Manifest, record: status.UploadRecord | None,
             make: tuple[str, ...], prune: tuple[str, ...]) -> ResizeJob:
        upload_id = manifest.upload_id
        content_type = (record.content_type if record is not None
                        else FORMAT_TO_MIME.get(str(manifest.source.get("format")),
                                                "application/octet-stream"))
        return ResizeJob(
            job_id=upload_id,  # one job per upload, rerenders too: redeliveries are recognisable
            upload_id=upload_id,
            bucket=self._bucket,
            source_key=keys.original_key(upload_id),
            content_type=content_type,
            submitted_at=utc_now(),
            callback_url=record.callback_url if record else None,
            filename=record.filename if record else None,
            owner=record.owner if record else None,
            rerender=make,
            prune=prune,
        )

    def findings(self) -> Iterator[Finding]:
        """Every manifest's finding, in listing order, with at most ``window`` in flight."""
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="backfill")
        pending: deque[Future] = deque()
        try:
            for upload_id in manifest_upload_ids(self._s3, self._bucket, self._page_size):
                pending.append(pool.submit(self.inspect, upload_id))
                if len(pending) >= self._window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # --- the run (calling thread) --------------------------------------------------------------

    def run(self, progress: Progress | None = None,
            report: Callable[[Finding, str], None] | None = None) -> Summary:
        """Scan, plan and publish; ``report(finding, outcome)`` hears of every photo with work
        (outcome: published, would_publish, skipped, failed) and every unreadable one."""
        summary = Summary(dry_run=self._dry_run)
        try:
            self._run(summary, progress, report)
        except Exception as exc:  # noqa: BLE001 - the listing failed: no bucket, S3 unreachable
            LOGGER.debug("the scan stopped", exc_info=True)
            summary.fail(f"listing {keys.MANIFESTS_PREFIX}: {type(exc).__name__}: {exc}")
            summary.stopped = f"could not list the manifests: {type(exc).__name__}: {exc}"
        return summary

    def _run(self, summary: Summary, progress: Progress | None,
             report: Callable[[Finding, str], None] | None) -> None:
        started: float | None = None
        for finding in self.findings():
            summary.scanned += 1
            outcome = self._count(summary, finding)
            if finding.job is not None and not self._dry_run:
                if started is None:
                    started = self._clock()
                self._pace(started, summary.jobs_published)
                try:
                    self._publish(finding.job)  # type: ignore[misc]
                except Exception as exc:  # noqa: BLE001 - reported, and the run stops
                    summary.fail(f"{finding.upload_id}: publish refused: {exc}")
                    summary.stopped = f"the broker refused a rerender job: {exc}"
                    if report:
                        report(finding, "failed")
                    if progress:
                        progress.scanned(finding)
                    break
                summary.jobs_published += 1
                summary.pruned += len(finding.prune)
                outcome = "published"
                if progress:
                    progress.published(finding.job)
            if report and outcome:
                report(finding, outcome)
            if progress:
                progress.scanned(finding)

    @staticmethod
    def _count(summary: Summary, finding: Finding) -> str | None:
        if finding.error is not None:
            summary.fail(finding.error)
            return "failed"
        summary.stale.update(finding.stale)
        summary.missing.update(finding.missing)
        summary.extra.update(finding.extra)
        if not finding.has_work:
            summary.up_to_date += 1
            return None
        if finding.skipped is not None:
            summary.skipped_not_done += 1
            return "skipped"
        summary.jobs_planned += 1
        return "would_publish"

    def _pace(self, started: float, published: int) -> None:
        """At most ``rate`` jobs a second, on average from the first publish."""
        if not self._rate:
            return
        delay = started + published / self._rate - self._clock()
        if delay > 0:
            self._sleep(delay)
