"""The bridge: consume resize jobs, run each through an invoker, settle the delivery.

Two queues, one invoker: ``Bridge`` runs a ``JobConsumer`` for the work queue (live uploads) and
one for the rerender queue (backfill jobs), each on its own connection, so that neither queue's
prefetch or backlog holds up the other. They share the invoker through ``bridge.slots``: rerender
jobs run on at most ``settings.rerender_worker_count`` of the ``settings.worker_count`` workers,
and a live job is first in line for any worker. Stopping, draining, reconnects and health cover
both; a rerender job's result event is ``variants.changed|failed`` (``bridge.settle``).

The reconnecting consumer loop (connection, channels, worker threads, stopping) is
``bridge.loop``; this module is what the bridge does with a delivery:

- On the I/O thread, ``on_message`` decodes the body. A body that can never become a job is
  dead-lettered at once; a job goes to a worker thread.
- The worker calls ``invoker.invoke``, which blocks until the job ends, and decides what the
  result means (``bridge.settle``). A retry waits out its backoff there, so the I/O thread stays
  responsive. ``prefetch_count`` bounds the unacked deliveries, and so what waits for a worker.
- Back on the I/O thread, ``settle`` publishes the job's result event on a channel of its own
  with pipelined confirms (``bridge.confirms``) and acks the delivery when the event's confirm
  arrives, without a round trip per message. A failed job is first dead-lettered with its cause,
  on a third channel with a confirm each (rare, and mandatory).

Stopping (``stop()``, SIGTERM): jobs handed over but not started are released (nack, requeue);
the loop bounds the drain by ``settings.drain_timeout_s``. Every release, nack and lost
connection counts toward the quorum queue's delivery limit (RabbitMQ 3.10 offers no way around
it), and that is on purpose: a job that crashes or hangs its bridge every time ends in the
dead-letter queue (``x-death`` reason ``delivery_limit``) instead of taking the fleet down for
ever. To spend no attempt needlessly, a final attempt is never released while stopping; it runs
within the drain timeout.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import pika.exceptions

from bridge.confirms import PipelinedPublisher
from bridge.invokers import Invoker
from bridge.loop import ConsumerLoop, Delivery, Session
from bridge.observability import BridgeObserver, NullObserver
from bridge.slots import WorkerSlots
from bridge.settle import (
    DEAD_LETTER,
    RELEASE,
    REQUEUE,
    Settlement,
    dead_letter_properties,
    decide,
    event_properties,
    released,
    retry_delay,
    retry_result,
)
from imagepipe import logs
from imagepipe.broker import declare_topology
from imagepipe.errors import JobError, bad_message, gave_up, invoke_failed
from imagepipe.messages import Invocation, InvocationResult, ResizeJob
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)

REFUSED = (pika.exceptions.NackError, pika.exceptions.UnroutableError)


@dataclass(frozen=True)
class _Publishers:
    """The channels one session publishes on."""

    dead_letters: Any  # a BlockingChannel in confirm mode: mandatory, a confirm each
    events: PipelinedPublisher  # result events: confirms pipelined


@dataclass(frozen=True)
class _Outcome:
    """What a worker hands back to the I/O thread."""

    invocation: Invocation
    settlement: Settlement
    duration_s: float  # the invocation's, without a retry's backoff

    @property
    def job(self) -> ResizeJob:
        return self.invocation.job


class Bridge:
    """Both consumers, run and stopped as one; they share ``invoker`` (``bridge.slots``)."""

    def __init__(
        self,
        settings: Settings,
        invoker: Invoker,
        *,
        heartbeat: int = 30,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        connection_name: str = "imagepipe-bridge",
        observer: BridgeObserver | None = None,
    ):
        self._settings = settings
        observer = observer or NullObserver()
        self.slots = WorkerSlots(settings.worker_count, settings.rerender_worker_count)
        consumer = functools.partial(
            JobConsumer, settings, invoker, self.slots, heartbeat=heartbeat,
            reconnect_initial_s=reconnect_initial_s, reconnect_max_s=reconnect_max_s,
        )
        self.live = consumer(
            rerender=False, queue=settings.resize_queue,
            label="bridge", connection_name=connection_name, workers=settings.worker_count,
            prefetch=settings.prefetch_count, observer=observer,
        )
        # Its prefetch is its share: a bridge holds no rerender job it could not start, so the
        # backlog stays with the broker, for the other bridges.
        self.rerender = consumer(
            rerender=True, queue=settings.rerender_queue,
            label="rerender", connection_name=f"{connection_name}-rerender",
            workers=settings.rerender_worker_count, prefetch=settings.rerender_worker_count,
            observer=observer.for_rerender(),
        )
        self._errors: list[BaseException] = []
        self._rerender_left_running = False

    @property
    def healthy(self) -> bool:
        """Both consumers connected and consuming (for a health endpoint)."""
        return self.live.healthy and self.rerender.healthy

    @property
    def drain_deadline(self) -> float | None:
        """``time.monotonic()`` at which the drain started by ``stop()`` ends; None before."""
        return self.live.drain_deadline

    @property
    def drained(self) -> bool:
        """False when ``run`` returned with jobs still running, after the drain timeout."""
        return self.live.drained and self.rerender.drained and not self._rerender_left_running

    def stop(self) -> None:
        """Stop taking new jobs, settle the ones in flight, then return from ``run``.

        Safe to call from a signal handler or from another thread. The drain timeout runs from
        the first call.
        """
        self.live.stop()
        self.rerender.stop()

    def run(self) -> None:
        """Consume both queues until ``stop()``, reconnecting after a lost connection.

        Raises ``ConfigError`` when the broker's topology contradicts the settings (either
        queue's): the other consumer is stopped too, since no retry can fix it.
        """
        LOGGER.info("resize jobs run on the %s invoker (%d workers, at most %d for rerender "
                    "jobs)", self._settings.invoker, self.slots.workers,
                    self.slots.rerender_share)
        thread = threading.Thread(target=self._run_rerender, name="rerender", daemon=True)
        thread.start()
        try:
            self.live.run()
        except BaseException as exc:
            self._errors.append(exc)
        finally:
            self.rerender.stop()  # no-op after a stop request: the drain started with it
            deadline = self.rerender.drain_deadline or time.monotonic()
            thread.join(timeout=max(deadline - time.monotonic(), 0) + 5)
            if thread.is_alive():
                self._rerender_left_running = True
                LOGGER.warning("rerender consumer still stopping after the drain timeout; the "
                               "broker redelivers its jobs")
        if self._errors:
            raise self._errors[0]

    def _run_rerender(self) -> None:
        try:
            self.rerender.run()
        except BaseException as exc:  # reported by run(), after the live consumer stopped too
            self._errors.append(exc)
            self.live.stop()


class JobConsumer:
    """One queue's consumer: decode, invoke (holding a worker from ``slots``), settle."""

    def __init__(
        self,
        settings: Settings,
        invoker: Invoker,
        slots: WorkerSlots,
        *,
        rerender: bool,
        queue: str,
        label: str,
        connection_name: str,
        workers: int,
        prefetch: int,
        heartbeat: int = 30,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        observer: BridgeObserver | None = None,
    ):
        self._settings = settings
        self._invoker = invoker
        self._slots = slots
        self._rerender = rerender
        self._observer = observer or NullObserver()  # health and metrics (bridge.observability)
        self._loop = ConsumerLoop(
            settings, self, queue=queue, label=label, noun="jobs",
            connection_name=connection_name, workers=workers,
            prefetch=prefetch, heartbeat=heartbeat,
            reconnect_initial_s=reconnect_initial_s, reconnect_max_s=reconnect_max_s,
            observer=self._observer,
        )

    @property
    def healthy(self) -> bool:
        """Connected and consuming (for a health endpoint)."""
        return self._loop.healthy

    @property
    def drain_deadline(self) -> float | None:
        """``time.monotonic()`` at which the drain started by ``stop()`` ends; None before."""
        return self._loop.drain_deadline

    @property
    def drained(self) -> bool:
        """False when ``run`` returned with jobs still running, after the drain timeout."""
        return self._loop.drained

    def stop(self) -> None:
        """Stop taking new jobs, settle the ones in flight, then return from ``run``.

        Safe to call from a signal handler or from another thread. The drain timeout runs from
        the first call.
        """
        self._loop.stop()

    def run(self) -> None:
        """Consume until ``stop()``, reconnecting after a lost connection.

        Raises ``ConfigError`` when the broker's topology contradicts the settings.
        """
        self._loop.run()

    # --- bridge.loop.Handler (I/O thread) -------------------------------------------------------

    def open(self, session: Session) -> None:
        declare_topology(session.consume_channel, self._settings)
        dead_letters = session.channel()
        dead_letters.confirm_delivery()
        session.context = _Publishers(dead_letters,
                                      PipelinedPublisher(session.connection, session.channel()))

    def on_message(self, delivery: Delivery) -> None:
        try:
            job = ResizeJob.decode(delivery.body, bucket=self._settings.bucket)
        except Exception as exc:
            self._dead_letter_undecodable(delivery, bad_message(exc))
            return
        self._observer.job_started(delivery.attempt)
        self._loop.submit(delivery, functools.partial(self._work, delivery, job))

    def settle(self, delivery: Delivery, outcome: _Outcome) -> None:
        settlement = outcome.settlement
        if settlement.action in (REQUEUE, RELEASE):
            delivery.nack(requeue=True)
            self._settled(outcome)
            return
        publishers: _Publishers = delivery.session.context
        if settlement.action == DEAD_LETTER:
            try:
                self._publish_dead_letter(publishers, delivery, settlement.error or {},
                                          outcome.invocation.attempt)
            except REFUSED as exc:
                self._refused(delivery, outcome, _describe(exc))
                return
        # Acked only once the broker has confirmed the event (see _on_event_confirmed).
        event = settlement.event
        assert event is not None, "a settled job that is not released has its event"
        publishers.events.publish(
            # Not mandatory: a results exchange with no subscriber is normal.
            self._settings.results_exchange, event.routing_key, event.encode(),
            event_properties(event),
            functools.partial(self._on_event_confirmed, delivery, outcome),
        )

    def dropped(self, delivery: Delivery, outcome: _Outcome) -> None:
        self._observer.settled("dropped", outcome.duration_s, None, dead_lettered=False)
        LOGGER.warning(
            "job=%s outcome=%s dropped: its channel is gone; the broker will redeliver it",
            outcome.job.job_id, outcome.settlement.outcome, extra=_job_fields(outcome.job),
        )

    def _dead_letter_undecodable(self, delivery: Delivery, error: JobError) -> None:
        # This message can never become a job, so there is no job id and no result event.
        try:
            self._publish_dead_letter(delivery.session.context, delivery, error.to_dict(),
                                      delivery.attempt)
        except REFUSED as exc:
            LOGGER.error("message %s: could not dead-letter it (%s); requeued",
                         delivery.message_id, _describe(exc),
                         extra={"message_id": delivery.message_id})
            delivery.nack(requeue=True)
            return
        delivery.ack()
        self._observer.settled("failed", None, error.code, dead_lettered=True)
        LOGGER.warning(
            "message=%s outcome=failed attempt=%d/%d code=%s: %s", delivery.message_id,
            delivery.attempt, self._max_attempts, error.code, error.message,
            extra={"message_id": delivery.message_id, "outcome": "failed", "code": error.code,
                   "attempt": delivery.attempt},
        )

    def _on_event_confirmed(self, delivery: Delivery, outcome: _Outcome,
                            confirmed: bool) -> None:
        # Runs inside pika's I/O loop: no BlockingChannel calls here (see bridge.confirms).
        if not confirmed:
            self._refused(delivery, outcome, "the broker nacked the result event")
        elif delivery.ack():
            self._settled(outcome)
        else:
            self.dropped(delivery, outcome)

    def _settled(self, outcome: _Outcome) -> None:
        settlement = outcome.settlement
        self._observer.settled(
            settlement.outcome, outcome.duration_s, (settlement.error or {}).get("code"),
            dead_lettered=settlement.action == DEAD_LETTER,
        )
        _log_outcome(outcome)

    def _refused(self, delivery: Delivery, outcome: _Outcome, why: str) -> None:
        # Not acked, so nothing is lost. The job runs again (its output is idempotent) and the
        # publish is retried.
        LOGGER.error(
            "job=%s outcome=%s not settled: the broker refused a publish (%s); requeued",
            outcome.job.job_id, outcome.settlement.outcome, why, extra=_job_fields(outcome.job),
        )
        delivery.nack(requeue=True)  # unless its channel is gone: then the broker has it back
        self._observer.settled("retry", outcome.duration_s, None, dead_lettered=False)

    def _publish_dead_letter(self, publishers: _Publishers, delivery: Delivery, error: dict,
                             attempt: int) -> None:
        # Publishing a copy, rather than basic_reject, keeps the cause with the message.
        # Mandatory, so a missing dead-letter queue raises instead of dropping the message.
        publishers.dead_letters.basic_publish(
            exchange=self._settings.dead_letter_exchange,
            routing_key=self._settings.dead_letter_queue,
            body=delivery.body,
            properties=dead_letter_properties(delivery.properties, error, attempt),
            mandatory=True,
        )

    @property
    def _max_attempts(self) -> int:
        return self._settings.delivery_limit + 1  # x-delivery-limit=N allows N+1 deliveries

    # --- the job (worker thread) --------------------------------------------------------------

    def _work(self, delivery: Delivery, job: ResizeJob) -> _Outcome:
        with logs.context(**_job_fields(job)):  # on whatever this thread logs for the job
            invocation = Invocation(job, delivery.attempt, self._max_attempts)
            started = time.monotonic()
            try:
                settlement = self._run_job(invocation, started)
            except Exception:  # a bridge bug; never leave a delivery unsettled
                LOGGER.exception("job %s: bridge error; requeueing it", job.job_id)
                settlement = released()
            duration_s = time.monotonic() - started
            try:
                if settlement.action == REQUEUE:
                    # Back off here, in the worker thread, so the I/O thread stays responsive.
                    # A stop request cuts the wait short.
                    self._loop.stopping.wait(settlement.delay_s)
            finally:
                self._observer.job_ended()
            return _Outcome(invocation, settlement, duration_s)

    def _run_job(self, invocation: Invocation, started: float) -> Settlement:
        if self._loop.stopping.is_set() and not invocation.is_final_attempt:
            # Handed over but not started: let another consumer take it. The release counts
            # as a delivery, so a final attempt runs instead (within the drain timeout):
            # released, it would be dead-lettered by the broker with no cause and no status.
            return released()
        try:
            result = self._invoke(invocation)
            if result is None:  # stopping while it waited for a worker: it never started
                return released()
        except Exception as exc:  # could not run it (Lambda down, pool broken): transient
            error = invoke_failed(exc)
            if invocation.is_final_attempt:
                result = self._give_up(invocation, error, started)
            else:
                result = retry_result(invocation, error, _elapsed_ms(started))
        return decide(self._settings, invocation, result)

    def _invoke(self, invocation: Invocation) -> InvocationResult | None:
        """Invoke on one of the shared workers (``bridge.slots``), waiting for it if need be;
        None when a stop request came first (a final attempt waits regardless, see above)."""
        cancel = None if invocation.is_final_attempt else self._loop.stopping
        if not self._slots.acquire(self._rerender, cancel):
            return None
        try:
            return self._invoker.invoke(invocation)
        finally:
            self._slots.release(self._rerender)

    def _give_up(self, invocation: Invocation, error: JobError, started: float):
        """Out of attempts without the resize having run: ask the function to record the
        failure (the bridge itself may not write to S3), then dead-letter with the cause."""
        cause = {"code": error.code, "message": gave_up(error.message, invocation.attempt)}
        # A throttled or restarting function is likelier to answer after the usual backoff.
        self._loop.stopping.wait(retry_delay(self._settings, invocation.attempt))
        try:
            result = self._invoke(replace(invocation, give_up=cause))  # final: never None
            assert result is not None
            return result
        except Exception as exc:
            LOGGER.error(
                "job=%s: could not record its failed status (%s); it is dead-lettered with "
                "its cause", invocation.job.job_id, _describe(exc),
            )
            return retry_result(invocation, error, _elapsed_ms(started))


def _log_outcome(outcome: _Outcome) -> None:
    settlement, invocation = outcome.settlement, outcome.invocation
    cause = ""
    if settlement.error:
        cause = f" code={settlement.error['code']}: {settlement.error['message']}"
    if settlement.action == REQUEUE:
        cause += f" (requeued after a {settlement.delay_s:.2f}s backoff)"
    level = logging.INFO if settlement.outcome in ("done", "released") else logging.WARNING
    fields = {**_job_fields(invocation.job), "outcome": settlement.outcome,
              "attempt": invocation.attempt, "duration_s": round(outcome.duration_s, 3)}
    if settlement.error:
        fields["code"] = settlement.error["code"]
    LOGGER.log(
        level, "job=%s key=%s outcome=%s attempt=%d/%d duration=%.2fs%s",
        invocation.job.job_id, invocation.job.source_key, settlement.outcome,
        invocation.attempt, invocation.max_attempts, outcome.duration_s, cause, extra=fields,
    )


def _job_fields(job: ResizeJob) -> dict:
    # A rerender's lines say so: the same upload also has its live job's lines.
    kind = {"rerender": list(job.rerender or ())} if job.is_rerender else {}
    return {logs.JOB_ID: job.job_id, logs.UPLOAD_ID: job.upload_id, **kind}


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
