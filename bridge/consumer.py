"""The bridge: consume resize jobs, run each through an invoker, settle the delivery.

Threads and who may touch what:

- The thread that calls ``run()`` is pika's I/O thread. It owns the connection and its three
  channels: one consumes and acks, one publishes result events with pipelined confirms
  (``bridge.confirms``: a delivery is acked when its event's confirm arrives, without a round
  trip per message), one publishes dead letters with a confirm each (rare, and mandatory).
  ``_on_message`` only decodes the body and hands the job to the pool. Settling happens on this
  thread too: worker threads queue it with ``connection.add_callback_threadsafe``, because
  pika's channels are not thread-safe.
- The pool has ``settings.worker_count`` threads. Each calls ``invoker.invoke`` and blocks until
  the job ends. ``prefetch_count`` bounds the number of unacked deliveries, and so bounds what
  waits in the pool's queue.

A delivery is settled only on the channel it came from, and only while that channel is still
open. After a reconnect, results from the old channel are dropped: the broker has already put
those messages back and will deliver them again.

Stopping (``stop()``, SIGTERM): cancel the consumer, let the jobs in flight finish and settle,
then return; jobs handed over but not started are released (nack, requeue). The drain is
bounded by ``settings.drain_timeout_s``: after it the connection is closed and the broker
redelivers what is left. Every release, nack and lost connection counts toward the quorum
queue's delivery limit (RabbitMQ 3.10 offers no way around it), and that is on purpose: a job
that crashes or hangs its bridge every time ends in the dead-letter queue (``x-death`` reason
``delivery_limit``) instead of taking the fleet down for ever. To spend no attempt needlessly,
a final attempt is never released while stopping; it runs within the drain timeout.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, replace

import pika
import pika.exceptions

from bridge import confirms
from bridge.amqp import (
    CONNECTION_ERRORS,
    POLL_INTERVAL_S,
    SessionLost,
    bridge_connection_parameters,
    sleep_unless_stopped,
)
from bridge.confirms import PipelinedPublisher
from bridge.invokers import Invoker
from bridge.observability import BridgeObserver, NullObserver
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
from imagepipe.broker import declare_topology, delivery_count
from imagepipe.errors import (
    ConfigError,
    JobError,
    bad_message,
    gave_up,
    invoke_failed,
)
from imagepipe.messages import Invocation, ResizeJob
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)

PRECONDITION_FAILED = 406


@dataclass(eq=False)
class _Session:
    """One connection and its three channels. It is replaced as a whole on reconnect."""

    connection: pika.BlockingConnection
    consume_channel: object
    publish_channel: object  # dead letters: mandatory, a confirm each
    events: PipelinedPublisher  # result events: confirms pipelined
    consumer_tag: str = ""
    in_flight: int = 0  # touched on the I/O thread only


@dataclass(frozen=True)
class _Delivery:
    channel: object  # the channel this delivery tag belongs to; no other channel may settle it
    delivery_tag: int
    properties: object
    body: bytes
    attempt: int
    max_attempts: int


class Bridge:
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
        self._invoker = invoker
        self._observer = observer or NullObserver()  # health and metrics (bridge.observability)
        # Parsed now, so that a malformed URL is a config error at startup, not a reconnect loop.
        self._parameters = bridge_connection_parameters(settings.amqp_url, heartbeat,
                                                        connection_name)
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        # A plain flag: stop() may run in a signal handler, and taking a lock there could
        # deadlock against the interrupted code. The I/O loop turns the flag into the event.
        self._stop_requested = False
        self._stopping = threading.Event()  # wakes worker threads that wait on a retry backoff
        self._session: _Session | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._healthy = False
        self._consumed_since_connect = False
        # Bounds the drain after stop(): jobs still running then are left to the broker. Set by
        # the first stop() (a float assignment: safe in a signal handler).
        self._drain_deadline: float | None = None
        self._drained = True
        self._futures: set[Future] = set()
        self._futures_lock = threading.Lock()

    @property
    def healthy(self) -> bool:
        """Connected and consuming (for a health endpoint)."""
        return self._healthy

    @property
    def drain_deadline(self) -> float | None:
        """``time.monotonic()`` at which the drain started by ``stop()`` ends; None before."""
        return self._drain_deadline

    @property
    def drained(self) -> bool:
        """False when ``run`` returned with jobs still running, after the drain timeout."""
        return self._drained

    def stop(self) -> None:
        """Stop taking new jobs, settle the ones in flight, then return from ``run``.

        Safe to call from a signal handler or from another thread. The drain timeout runs from
        the first call.
        """
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self._settings.drain_timeout_s
        self._stop_requested = True

    # --- connection lifecycle (I/O thread) -----------------------------------------------------

    def run(self) -> None:
        """Consume until ``stop()``, reconnecting after a lost connection.

        Raises ``ConfigError`` when the broker's topology contradicts the settings.
        """
        self._executor = ThreadPoolExecutor(
            max_workers=self._settings.worker_count, thread_name_prefix="bridge-job"
        )
        backoff = self._reconnect_initial_s
        try:
            while not self._stop_requested:
                self._consumed_since_connect = False
                try:
                    self._run_session()
                except CONNECTION_ERRORS + (SessionLost,) as exc:
                    if self._stop_requested:
                        self._observer.not_consuming("stopping: broker connection lost")
                        LOGGER.warning(
                            "broker connection lost while stopping (%s); unsettled jobs will "
                            "be redelivered by the broker", _describe(exc),
                        )
                        break
                    if self._consumed_since_connect:  # it was a working connection
                        backoff = self._reconnect_initial_s
                    delay = random.uniform(backoff / 2, backoff)
                    self._observer.not_consuming(
                        f"broker connection lost ({_describe(exc)}); reconnecting"
                    )
                    LOGGER.warning(
                        "broker connection lost (%s); reconnecting in %.1fs; unsettled jobs "
                        "will be redelivered by the broker", _describe(exc), delay,
                    )
                    sleep_unless_stopped(delay, lambda: self._stop_requested)
                    backoff = min(backoff * 2, self._reconnect_max_s)
        finally:
            self._healthy = False
            self._observer.not_consuming("stopped")
            self._stopping.set()
            self._wait_for_workers()
            LOGGER.info("bridge stopped")

    def _wait_for_workers(self) -> None:
        """Let running jobs end (their results are dropped if their connection is gone), but
        not past the drain deadline: an invocation can hang for as long as its timeout."""
        with self._futures_lock:
            running = set(self._futures)
        _, not_done = wait_for_futures(running, timeout=max(self._drain_time_left(), 0))
        if not_done:
            self._drained = False
            LOGGER.warning(
                "drain timeout (%.0fs): %d jobs still running are left unsettled; the broker "
                "redelivers them", self._settings.drain_timeout_s, len(not_done),
            )
        self._executor.shutdown(wait=not not_done, cancel_futures=True)

    def _drain_time_left(self) -> float:
        if self._drain_deadline is None:  # run() ended without stop() (a config error)
            return self._settings.drain_timeout_s
        return self._drain_deadline - time.monotonic()

    def _run_session(self) -> None:
        connection = pika.BlockingConnection(self._parameters)
        try:
            session = self._open_session(connection)
            self._serve(session)
        finally:
            self._session = None
            self._healthy = False
            if connection.is_open:
                try:
                    connection.close()
                except CONNECTION_ERRORS:  # it is being torn down anyway
                    pass

    def _open_session(self, connection) -> _Session:
        settings = self._settings
        consume_channel = connection.channel()
        try:
            declare_topology(consume_channel, settings)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == PRECONDITION_FAILED:
                # Retrying cannot fix a queue that exists with other arguments.
                raise ConfigError(
                    f"queue topology conflicts with the broker: {exc.reply_text}"
                ) from None
            raise
        # Per-consumer QoS: RabbitMQ refuses global QoS on quorum queues.
        consume_channel.basic_qos(prefetch_count=settings.prefetch_count)
        publish_channel = connection.channel()
        publish_channel.confirm_delivery()
        events = PipelinedPublisher(connection, connection.channel())
        session = _Session(connection, consume_channel, publish_channel, events)
        session.consumer_tag = consume_channel.basic_consume(
            settings.resize_queue,
            functools.partial(self._on_message, session),
            auto_ack=False,
        )
        self._session = session
        self._healthy = self._consumed_since_connect = True
        self._observer.consuming()
        LOGGER.info(
            "consuming %s (prefetch %d, %d workers, %s invoker)",
            settings.resize_queue, settings.prefetch_count, settings.worker_count,
            settings.invoker,
        )
        return session

    def _serve(self, session: _Session) -> None:
        cancelled = False
        while True:
            session.connection.process_data_events(time_limit=POLL_INTERVAL_S)
            self._check_alive(session, expect_consumer=not cancelled)
            if not self._stop_requested:
                continue
            self._stopping.set()
            if not cancelled:
                self._healthy = False
                self._observer.not_consuming("stopping: finishing the jobs in flight")
                # Deliveries that pika has received but not yet dispatched are nacked by
                # basic_cancel itself, so only jobs already handed to the pool remain.
                session.consume_channel.basic_cancel(session.consumer_tag)
                cancelled = True
                LOGGER.info("stopping: no new jobs; %d in flight", session.in_flight)
            if session.in_flight == 0:
                return
            if self._drain_time_left() <= 0:
                # Closing the connection hands the unsettled deliveries back to the broker.
                self._drained = False
                LOGGER.warning(
                    "drain timeout (%.0fs) with %d jobs in flight: closing the connection; "
                    "the broker redelivers them", self._settings.drain_timeout_s,
                    session.in_flight,
                )
                return

    @staticmethod
    def _check_alive(session: _Session, *, expect_consumer: bool) -> None:
        if not (session.consume_channel.is_open and session.publish_channel.is_open
                and session.events.is_open):
            raise SessionLost("a channel was closed by the broker (consumer timeout?)")
        if expect_consumer and session.consumer_tag not in session.consume_channel.consumer_tags:
            raise SessionLost("the broker cancelled the consumer (queue deleted?)")

    # --- deliveries (I/O thread): decode and hand off -----------------------------------------

    def _on_message(self, session: _Session, channel, method, properties, body: bytes) -> None:
        delivery = _Delivery(
            channel=channel,
            delivery_tag=method.delivery_tag,
            properties=properties,
            body=body,
            attempt=delivery_count(properties) + 1,
            # x-delivery-limit=N allows N+1 deliveries.
            max_attempts=self._settings.delivery_limit + 1,
        )
        try:
            job = ResizeJob.decode(body, bucket=self._settings.bucket)
        except Exception as exc:
            self._dead_letter_undecodable(session, delivery, bad_message(exc))
            return
        session.in_flight += 1
        self._observer.job_started(delivery.attempt)
        future = self._executor.submit(self._work, session, delivery, job)
        with self._futures_lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:
        with self._futures_lock:
            self._futures.discard(future)

    def _dead_letter_undecodable(self, session: _Session, delivery: _Delivery,
                                 error: JobError) -> None:
        # This message can never become a job, so there is no job id and no result event.
        message_id = getattr(delivery.properties, "message_id", None)
        try:
            self._publish_dead_letter(session, delivery, error.to_dict())
        except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
            LOGGER.error(
                "message %s: could not dead-letter it (%s); requeued", message_id, _describe(exc)
            )
            delivery.channel.basic_nack(delivery.delivery_tag, requeue=True)
            return
        delivery.channel.basic_ack(delivery.delivery_tag)
        self._observer.settled("failed", None, error.code, dead_lettered=True)
        LOGGER.warning(
            "message=%s outcome=failed attempt=%d/%d code=%s: %s",
            message_id, delivery.attempt, delivery.max_attempts, error.code, error.message,
        )

    # --- the job (worker thread) --------------------------------------------------------------

    def _work(self, session: _Session, delivery: _Delivery, job: ResizeJob) -> None:
        started = time.monotonic()
        try:
            settlement = self._run_job(delivery, job, started)
        except Exception:  # a bridge bug; never leave a delivery unsettled
            LOGGER.exception("job %s: bridge error; requeueing it", job.job_id)
            settlement = released()
        duration_s = time.monotonic() - started
        if settlement.action == REQUEUE:
            # Back off here, in the worker thread, so the I/O thread stays responsive. A stop
            # request cuts the wait short. The logged duration is the job's, without the wait.
            self._stopping.wait(settlement.delay_s)
        settle = functools.partial(self._settle, session, delivery, job, settlement, duration_s)
        try:
            session.connection.add_callback_threadsafe(settle)
        except pika.exceptions.ConnectionWrongStateError:
            self._observer.settled("dropped", duration_s, None, dead_lettered=False)
            LOGGER.warning(
                "job=%s outcome=%s dropped: its connection is closed; the broker will "
                "redeliver it", job.job_id, settlement.outcome,
            )
        finally:
            self._observer.job_ended()

    def _run_job(self, delivery: _Delivery, job: ResizeJob, started: float) -> Settlement:
        invocation = Invocation(job, delivery.attempt, delivery.max_attempts)
        if self._stopping.is_set() and not invocation.is_final_attempt:
            # Handed over but not started: let another consumer take it. The release counts
            # as a delivery, so a final attempt runs instead (within the drain timeout):
            # released, it would be dead-lettered by the broker with no cause and no status.
            return released()
        try:
            result = self._invoker.invoke(invocation)
        except Exception as exc:  # could not run it (Lambda down, pool broken): transient
            error = invoke_failed(exc)
            if invocation.is_final_attempt:
                result = self._give_up(invocation, error, started)
            else:
                result = retry_result(invocation, error, _elapsed_ms(started))
        return decide(self._settings, invocation, result)

    def _give_up(self, invocation: Invocation, error: JobError, started: float):
        """Out of attempts without the resize having run: ask the function to record the
        failure (the bridge itself may not write to S3), then dead-letter with the cause."""
        cause = {"code": error.code, "message": gave_up(error.message, invocation.attempt)}
        # A throttled or restarting function is likelier to answer after the usual backoff.
        self._stopping.wait(retry_delay(self._settings, invocation.attempt))
        try:
            return self._invoker.invoke(replace(invocation, give_up=cause))
        except Exception as exc:
            LOGGER.error(
                "job=%s: could not record its failed status (%s); it is dead-lettered with "
                "its cause", invocation.job.job_id, _describe(exc),
            )
            return retry_result(invocation, error, _elapsed_ms(started))

    # --- settling (I/O thread) ----------------------------------------------------------------

    def _settle(self, session: _Session, delivery: _Delivery, job: ResizeJob,
                settlement: Settlement, duration_s: float) -> None:
        channel = delivery.channel
        if session is not self._session or not channel.is_open:
            self._dropped(session, job, settlement, duration_s)
            return
        if settlement.action in (REQUEUE, RELEASE):
            channel.basic_nack(delivery.delivery_tag, requeue=True)
            self._settled(session, delivery, job, settlement, duration_s)
            return
        if settlement.action == DEAD_LETTER:
            try:
                self._publish_dead_letter(session, delivery, settlement.error)
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
                self._refused(session, delivery, job, settlement, duration_s, _describe(exc))
                return
        # Acked only once the broker has confirmed the event (see _on_event_confirmed).
        event = settlement.event
        session.events.publish(
            # Not mandatory: a results exchange with no subscriber is normal.
            self._settings.results_exchange, event.routing_key, event.encode(),
            event_properties(event),
            functools.partial(self._on_event_confirmed, session, delivery, job, settlement,
                              duration_s),
        )

    def _on_event_confirmed(self, session: _Session, delivery: _Delivery, job: ResizeJob,
                            settlement: Settlement, duration_s: float, confirmed: bool) -> None:
        # Runs inside pika's I/O loop: no BlockingChannel calls here (see bridge.confirms).
        if not confirmed:
            self._refused(session, delivery, job, settlement, duration_s,
                          "the broker nacked the result event")
            return
        if session is not self._session or not delivery.channel.is_open:
            self._dropped(session, job, settlement, duration_s)
            return
        confirms.ack(delivery.channel, delivery.delivery_tag)
        self._settled(session, delivery, job, settlement, duration_s)

    def _settled(self, session: _Session, delivery: _Delivery, job: ResizeJob,
                 settlement: Settlement, duration_s: float) -> None:
        session.in_flight -= 1
        self._observer.settled(
            settlement.outcome, duration_s, (settlement.error or {}).get("code"),
            dead_lettered=settlement.action == DEAD_LETTER,
        )
        _log_outcome(job, delivery, settlement, duration_s)

    def _refused(self, session: _Session, delivery: _Delivery, job: ResizeJob,
                 settlement: Settlement, duration_s: float, why: str) -> None:
        # Not acked, so nothing is lost. The job runs again (its output is idempotent) and the
        # publish is retried.
        session.in_flight -= 1
        LOGGER.error(
            "job=%s outcome=%s not settled: the broker refused a publish (%s); requeued",
            job.job_id, settlement.outcome, why,
        )
        if delivery.channel.is_open:  # else the broker has put it back already
            confirms.nack(delivery.channel, delivery.delivery_tag, requeue=True)
        self._observer.settled("retry", duration_s, None, dead_lettered=False)

    def _dropped(self, session: _Session, job: ResizeJob, settlement: Settlement,
                 duration_s: float) -> None:
        session.in_flight -= 1
        self._observer.settled("dropped", duration_s, None, dead_lettered=False)
        LOGGER.warning(
            "job=%s outcome=%s dropped: its channel is closed; the broker will redeliver it",
            job.job_id, settlement.outcome,
        )

    def _publish_dead_letter(self, session: _Session, delivery: _Delivery, error: dict) -> None:
        # Publishing a copy, rather than basic_reject, keeps the cause with the message.
        # Mandatory, so a missing dead-letter queue raises instead of dropping the message.
        session.publish_channel.basic_publish(
            exchange=self._settings.dead_letter_exchange,
            routing_key=self._settings.dead_letter_queue,
            body=delivery.body,
            properties=dead_letter_properties(delivery.properties, error, delivery.attempt),
            mandatory=True,
        )


def _log_outcome(job: ResizeJob, delivery: _Delivery, settlement: Settlement,
                 duration_s: float) -> None:
    cause = ""
    if settlement.error:
        cause = f" code={settlement.error['code']}: {settlement.error['message']}"
    if settlement.action == REQUEUE:
        cause += f" (requeued after a {settlement.delay_s:.2f}s backoff)"
    level = logging.INFO if settlement.outcome in ("done", "released") else logging.WARNING
    LOGGER.log(
        level, "job=%s key=%s outcome=%s attempt=%d/%d duration=%.2fs%s",
        job.job_id, job.source_key, settlement.outcome, delivery.attempt, delivery.max_attempts,
        duration_s, cause,
    )


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
