"""The resize job: read the original from S3, make the variants, write them and a manifest.

``handle_invocation`` is the one entry point that both the resize Lambda handler and the
bridge's local invoker call. It never raises: every outcome is an ``InvocationResult`` whose
status says what the caller should do (``done``; ``failed``: dead-letter; ``retry``: requeue).

Redelivery is safe: keys are deterministic, and a job whose manifest exists is answered from
the manifest without redoing the work.

A rerender job (``job.rerender``, from ``python -m imagepipe backfill``) goes to
``imagepipe.rerender``; it shares the error handling here but never writes the upload's status.
"""

from __future__ import annotations

import logging
import time

from imagepipe import aws, delivery, fingerprint, imaging, logs, rerender, status, variant_store
from imagepipe.errors import (
    BAD_MESSAGE,
    INTERNAL,
    JobError,
    PermanentError,
    classify,
    gave_up,
    public,
)
from imagepipe.messages import (
    DONE,
    FAILED,
    RETRY,
    Invocation,
    InvocationResult,
    Manifest,
    State,
    utc_now,
)
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)


class Runtime:
    """What a job needs from the outside world; the S3 client is made on first use."""

    def __init__(self, settings: Settings, s3=None):
        # At start, not as every job's failure (a ConfigError there would be retried per job).
        self.engine = imaging.start_engine(settings.imaging_engine)
        imaging.check_variants(settings.variants)
        delivery.check(settings, needs_api_url=True)
        self.settings = settings
        # What each variant of the spec is when this engine makes it: recorded with every
        # variant, compared by rerenders (``backfill.compare``).
        self.fingerprints = fingerprint.spec_fingerprints(settings.variants, self.engine)
        self._s3 = s3

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = aws.s3_client(self.settings)
        return self._s3

    @property
    def status(self) -> status.StatusStore:
        return status.StatusStore(self.s3, self.settings.bucket)


def handle_invocation(payload: dict, runtime: Runtime) -> dict:
    """Run one invocation (the JSON shape of ``messages.Invocation``) and return the JSON shape
    of ``messages.InvocationResult``."""
    started = time.monotonic()
    try:
        invocation = Invocation.from_dict(payload if isinstance(payload, dict) else {})
    except JobError as exc:
        job = payload.get("job") if isinstance(payload, dict) else None
        job = job if isinstance(job, dict) else {}
        return InvocationResult(
            job_id=str(job.get("job_id", "")),
            upload_id=str(job.get("upload_id", "")),
            status=FAILED,
            error=exc.to_dict(),
            duration_ms=_elapsed_ms(started),
        ).to_dict()
    job = invocation.job
    with logs.context(**{logs.JOB_ID: job.job_id, logs.UPLOAD_ID: job.upload_id}):
        return process(invocation, runtime, started).to_dict()


def process(invocation: Invocation, runtime: Runtime, started: float | None = None) -> InvocationResult:
    started = time.monotonic() if started is None else started
    job = invocation.job
    store = runtime.status
    if job.bucket != runtime.settings.bucket:
        # Not this stage's job: refused before any status is touched, so a forged message
        # cannot mark another upload failed.
        refused = PermanentError(BAD_MESSAGE, "the job names another bucket than this stage's")
        return _result(job, FAILED, started, error=refused.to_dict())
    if invocation.give_up is not None:
        if job.is_rerender:  # a rerender never touches the upload's status
            return _result(job, FAILED, started, error=_give_up_error(invocation))
        return _give_up(invocation, store, started)
    try:
        if job.is_rerender:
            return _done(job, rerender.run(job, runtime), started)
        answer = _answer_if_done(job, store, started)
        if answer is not None:
            return answer
        store.mark(job.upload_id, State.PROCESSING, exclusive=True)
        manifest = _make_variants(job, runtime)
        if not store.put_manifest(manifest):
            # Another attempt finished first; its manifest describes the same keys.
            manifest = store.get_manifest(job.upload_id) or manifest
        store.mark(job.upload_id, State.DONE, exclusive=True)
        return _done(job, manifest, started)
    except Exception as exc:  # every failure becomes a result; the caller never sees a raise
        error = classify(exc)
        if not error.permanent and not invocation.is_final_attempt:
            LOGGER.warning("job %s attempt %d: %s (will retry)", job.job_id, invocation.attempt, error)
            return _result(job, RETRY, started, error=error.to_dict())
        if not error.permanent:
            error = type(error)(error.code, gave_up(error.message, invocation.attempt))
        if not job.is_rerender:  # the upload is done and stays so; the dead letter has the cause
            _mark_failed(store, job.upload_id, error)
        return _result(job, FAILED, started, error=error.to_dict())


def _give_up(invocation: Invocation, store: status.StatusStore, started: float) -> InvocationResult:
    """The bridge gave up on the job after its invocations failed; record it, do no work.

    An invocation that timed out on the caller's side may still have finished here, so a job
    with a manifest is answered ``done``. Otherwise the job's status becomes ``failed`` with the
    bridge's cause. When S3 cannot be written either, the answer is ``retry`` and the bridge
    dead-letters the job with its cause anyway.
    """
    job = invocation.job
    error = _give_up_error(invocation)
    try:
        answer = _answer_if_done(job, store, started)
        if answer is not None:
            return answer
        store.mark(job.upload_id, State.FAILED, error=error, exclusive=True)
    except Exception as exc:
        LOGGER.warning("job %s: could not record that it failed: %s", job.job_id, classify(exc))
        return _result(job, RETRY, started, error=error)
    return _result(job, FAILED, started, error=error)


def _give_up_error(invocation: Invocation) -> dict:
    cause = invocation.give_up or {}
    return {
        "code": str(cause.get("code") or INTERNAL),
        "message": str(cause.get("message") or "the bridge gave up on the job"),
    }


def _answer_if_done(job, store: status.StatusStore, started: float) -> InvocationResult | None:
    """``done`` from the manifest when an earlier attempt finished the job (its status marked
    done too), else None: the job has still to be done."""
    existing = store.get_manifest(job.upload_id)
    if existing is None:
        return None
    store.mark(job.upload_id, State.DONE, exclusive=True)
    return _done(job, existing, started)


def _make_variants(job, runtime: Runtime) -> Manifest:
    settings = runtime.settings
    data = variant_store.read_original(runtime.s3, settings, job)
    rendered = imaging.render(data, settings.variants, max_pixels=settings.max_pixels,
                             engine=runtime.engine)
    # The URLs' lifetime (if the stage sets one) counts from the manifest's time.
    created_at = utc_now()
    infos = variant_store.store_variants(runtime.s3, settings, job, rendered.variants,
                                         runtime.fingerprints, created_at,
                                         under_fingerprint=False)
    return Manifest(
        job_id=job.job_id,
        upload_id=job.upload_id,
        source={"key": job.source_key, "bytes": len(data), **rendered.source.to_dict()},
        spec=tuple(v.to_dict() for v in settings.variants),
        variants=infos,
        stripped=tuple(rendered.stripped),
        converted=tuple(rendered.converted),
        colour_converted=rendered.colour_converted,
        notes=tuple(rendered.notes),
        created_at=created_at,
    )


def _mark_failed(store: status.StatusStore, upload_id: str, error: JobError) -> None:
    try:
        store.mark(upload_id, State.FAILED, error=public(error.to_dict()), exclusive=True)
    except Exception:  # the result still says failed and the job is dead-lettered with its cause
        LOGGER.exception("could not record failed status for upload %s", upload_id)


def _done(job, manifest: Manifest, started: float) -> InvocationResult:
    return _result(job, DONE, started, variants=manifest.variants)


def _result(job, outcome: str, started: float, *, variants=(), error=None) -> InvocationResult:
    return InvocationResult(
        job_id=job.job_id,
        upload_id=job.upload_id,
        status=outcome,
        variants=variants,
        error=error,
        duration_ms=_elapsed_ms(started),
    )


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
