"""The reconnecting consumer loop, written once for the bridge's consumers.

kombu's ``ConsumerMixin`` is the model: a component says what to declare, what to do with a
message and how to settle a result; the loop owns the connection and everything that goes wrong
with it. The components are ``bridge.consumer.JobConsumer`` (resize jobs: a bridge runs one for
the work queue and one for the rerender queue) and ``bridge.callbacks.CallbackDispatcher``
(completion callbacks); each is a ``Handler`` with a loop and a connection of its own.

What the loop does:

- Connects (``imagepipe.amqp``), lets the handler declare its topology and open the channels it
  publishes on (``Session.channel``), sets the prefetch and consumes one queue.
- Notices a lost connection, a channel the broker closed and a consumer the broker cancelled,
  and connects again after a capped exponential backoff that starts over after a working session
  (``bridge.backoff``). The last two raise nothing in pika's ``BlockingConnection``: a consumer
  timeout closes the channel, a deleted queue cancels the consumer, and the connection just stops
  delivering. So the loop looks after every turn of the I/O loop.
- Runs each delivery's work in a thread pool, never on the I/O thread, so heartbeats keep going
  during a long job, and hands the result back to the I/O thread with
  ``connection.add_callback_threadsafe``: pika's channels are not thread-safe.
- Settles a delivery only on the channel it came from, only while that channel is open and its
  session current, and only once (``Delivery``). After a reconnect a result from the old channel
  is dropped: the broker has put that message back already and delivers it again.
- ``stop()``: cancel the consumer, let the work in flight finish and settle, then return. The
  drain is bounded by ``settings.drain_timeout_s`` from the first ``stop()``; after it the
  connection is closed and the broker redelivers what is left.

Threads: the thread in ``run()`` is pika's I/O thread. It owns the connection and its channels,
and ``Handler.open``, ``on_message`` and ``settle`` run on it. Work runs on worker threads.
``stop()`` may be called from a signal handler or any other thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from typing import Any, Callable, Protocol

import pika
import pika.exceptions

from bridge import confirms
from bridge.backoff import ReconnectBackoff
from imagepipe import amqp
from imagepipe.broker import delivery_count
from imagepipe.errors import ConfigError
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)

# How often the I/O loop checks for a stop request, a silently closed channel or a cancel.
POLL_INTERVAL_S = 0.25
# Errors after which the connection is rebuilt. Unsettled work on the old channel is redelivered.
CONNECTION_ERRORS = (pika.exceptions.AMQPError, OSError)
PRECONDITION_FAILED = 406
# Parameters of the loop's own connections; a publish blocked by a resource alarm longer than
# this drops the connection rather than hang the I/O thread.
CONNECT_TIMEOUT_S = 10.0
BLOCKED_TIMEOUT_S = 120.0


class SessionLost(Exception):
    """The session ended without an exception from pika: a channel was closed by the broker
    (a consumer timeout does that) or the broker cancelled the consumer (queue deleted)."""


class Observer(Protocol):
    """Told when the loop starts and stops consuming (``bridge.observability`` keeps health)."""

    def consuming(self) -> None: ...

    def not_consuming(self, reason: str) -> None: ...


class _NoObserver:
    def consuming(self) -> None:
        pass

    def not_consuming(self, reason: str) -> None:
        pass


class Session:
    """One connection and the channels opened on it; replaced as a whole on reconnect."""

    def __init__(self, connection):
        self.connection = connection
        self.consume_channel: Any = None
        self.consumer_tag = ""
        self.current = True  # False once the loop has left this session
        # The handler's own per-session state (the channels it publishes on).
        self.context: Any = None
        self._channels: list = []
        self._closed_reason: str | None = None
        self._lock = threading.Lock()
        self._unsettled = 0

    def channel(self):
        """A new channel that the loop watches: if the broker closes it, the session ends."""
        channel = self.connection.channel()
        # pika's asynchronous channel reports why it closed; the blocking one only flips a flag.
        channel._impl.add_on_close_callback(self._on_channel_closed)
        self._channels.append(channel)
        return channel

    @property
    def unsettled(self) -> int:
        """Deliveries of this session not yet acked, nacked or dropped."""
        with self._lock:
            return self._unsettled

    def check(self, *, expect_consumer: bool) -> None:
        """Raise ``SessionLost`` if a channel was closed or the consumer cancelled."""
        if not all(channel.is_open for channel in self._channels):
            raise SessionLost(f"the broker closed a channel ({self._closed_reason or 'no reason'}"
                              "; a consumer timeout?)")
        if expect_consumer and self.consumer_tag not in self.consume_channel.consumer_tags:
            raise SessionLost("the broker cancelled the consumer (queue deleted?)")

    def _on_channel_closed(self, _channel, reason) -> None:
        if self._closed_reason is None and self.current:
            self._closed_reason = _describe(reason)

    def _received(self) -> None:
        with self._lock:
            self._unsettled += 1


class Delivery:
    """One message from the queue, settled at most once, on its own channel.

    ``ack`` and ``nack`` run on the I/O thread and write their frame without running pika's I/O
    loop, so they are safe inside pika's callbacks too (``bridge.confirms``). Each returns False
    and settles nothing when the delivery's channel is gone or its session is over (the broker
    has put the message back); it then counts as dropped.
    """

    def __init__(self, session: Session, channel, delivery_tag: int, properties, body: bytes):
        self.session = session
        self.channel = channel  # the channel this delivery tag belongs to, and no other
        self.delivery_tag = delivery_tag
        self.properties = properties
        self.body = body
        self._settled = False

    @property
    def attempt(self) -> int:
        """1 for the first delivery; the quorum queue counts redeliveries."""
        return delivery_count(self.properties) + 1

    @property
    def message_id(self) -> str | None:
        return getattr(self.properties, "message_id", None)

    @property
    def settleable(self) -> bool:
        return not self._settled and self.session.current and self.channel.is_open

    def ack(self) -> bool:
        if not self._finish_if_settleable():
            return False
        confirms.ack(self.channel, self.delivery_tag)
        return True

    def nack(self, requeue: bool = True) -> bool:
        if not self._finish_if_settleable():
            return False
        confirms.nack(self.channel, self.delivery_tag, requeue=requeue)
        return True

    def drop(self) -> None:
        """Give up on settling it: the broker redelivers it once its channel is gone."""
        self._finish()

    def _finish_if_settleable(self) -> bool:
        if self.settleable:
            self._finish()
            return True
        self._finish()
        return False

    def _finish(self) -> None:
        # Either thread may finish a delivery (a worker drops one whose connection closed), but
        # only once: the session's count of unsettled deliveries is what a drain waits for.
        with self.session._lock:
            if self._settled:
                return
            self._settled = True
            self.session._unsettled -= 1


class Handler(Protocol):
    """What a component supplies to the loop."""

    def open(self, session: Session) -> None:
        """I/O thread: declare the topology on ``session.consume_channel`` and open the
        channels the component publishes on with ``session.channel()``; keep them in
        ``session.context``."""

    def on_message(self, delivery: Delivery) -> None:
        """I/O thread: settle the delivery at once, or hand its work to ``ConsumerLoop.submit``."""

    def settle(self, delivery: Delivery, result: Any) -> None:
        """I/O thread: what the work returned, while the delivery can still be settled. The
        handler must end it with ``ack``, ``nack`` or ``drop`` (now, or from a later callback
        on the I/O thread, say a publisher confirm)."""

    def dropped(self, delivery: Delivery, result: Any) -> None:
        """Any thread: the result came after the delivery's channel or connection was lost;
        the broker redelivers the message. Report it; settle nothing."""


_WORK_FAILED = object()


class ConsumerLoop:
    def __init__(self, settings: Settings, handler: Handler, *, queue: str, label: str,
                 noun: str, connection_name: str, workers: int, prefetch: int,
                 heartbeat: int = 30, reconnect_initial_s: float = 0.5,
                 reconnect_max_s: float = 30.0, observer: Observer | None = None):
        self._handler = handler
        self._queue = queue
        self._label = label  # names the consumer in log lines: "bridge", "callbacks"
        self._noun = noun  # what a delivery is, for log lines: "jobs", "callbacks"
        self._workers = workers
        self._prefetch = prefetch
        self._drain_timeout_s = settings.drain_timeout_s
        self._observer = observer or _NoObserver()
        # Parsed now, so that a malformed URL is a config error at startup, not a reconnect loop.
        self._parameters = amqp.parameters(settings, connection_name, timeout=CONNECT_TIMEOUT_S,
                                           heartbeat=heartbeat,
                                           blocked_timeout=BLOCKED_TIMEOUT_S)
        self._backoff = ReconnectBackoff(reconnect_initial_s, reconnect_max_s)
        # A plain flag: stop() may run in a signal handler, and taking a lock there could
        # deadlock against the interrupted code. The I/O loop turns the flag into the event.
        self._stop_requested = False
        # Set once stopping: workers see it (a backoff wait ends, unstarted work is released).
        self.stopping = threading.Event()
        # Bounds the drain after stop(); set by the first stop() (a float assignment: safe in a
        # signal handler).
        self._drain_deadline: float | None = None
        self._drained = True
        self._healthy = False
        self._consuming_since: float | None = None
        # Its threads start with the first job. One loop runs once: run() shuts the pool down.
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix=f"{label}-work")
        self._futures: set[Future] = set()
        self._futures_lock = threading.Lock()

    @property
    def healthy(self) -> bool:
        """Connected and consuming."""
        return self._healthy

    @property
    def drain_deadline(self) -> float | None:
        """``time.monotonic()`` at which the drain started by ``stop()`` ends; None before."""
        return self._drain_deadline

    @property
    def drained(self) -> bool:
        """False when ``run`` returned with work still running, after the drain timeout."""
        return self._drained

    def stop(self) -> None:
        """Stop taking deliveries, settle the ones in flight, then return from ``run``.

        Safe from a signal handler or another thread. The drain timeout runs from the first call.
        """
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self._drain_timeout_s
        self._stop_requested = True

    # --- the reconnect loop (I/O thread) -------------------------------------------------------

    def run(self) -> None:
        """Consume until ``stop()``, connecting again after every lost session.

        Raises ``ConfigError`` when the broker's topology contradicts the settings: no retry can
        fix that.
        """
        try:
            while not self._stop_requested:
                self._consuming_since = None
                try:
                    self._run_session()
                except CONNECTION_ERRORS + (SessionLost,) as exc:
                    if self._stop_requested:
                        self._observer.not_consuming("stopping: broker connection lost")
                        LOGGER.warning(
                            "%s: broker connection lost while stopping (%s); unsettled %s will "
                            "be redelivered by the broker", self._label, _describe(exc),
                            self._noun,
                        )
                        break
                    self._reconnect_after(exc)
        finally:
            self._healthy = False
            self._observer.not_consuming("stopped")
            self.stopping.set()
            self._wait_for_workers()
            LOGGER.info("%s stopped", self._label)

    def _reconnect_after(self, exc: BaseException) -> None:
        consumed_s = (None if self._consuming_since is None
                      else time.monotonic() - self._consuming_since)
        delay = self._backoff.next_delay(consumed_s)
        self._observer.not_consuming(f"broker connection lost ({_describe(exc)}); reconnecting")
        LOGGER.warning(
            "%s: broker connection lost (%s); unsettled %s will be redelivered by the broker; "
            "reconnecting in %.1fs", self._label, _describe(exc), self._noun, delay,
        )
        self._sleep_unless_stopped(delay)

    def _sleep_unless_stopped(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop_requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, POLL_INTERVAL_S))

    def _run_session(self) -> None:
        session = Session(amqp.connect(self._parameters))
        try:
            self._open(session)
            self._serve(session)
        finally:
            session.current = False
            self._healthy = False
            if session.connection.is_open:
                try:
                    session.connection.close()
                except CONNECTION_ERRORS:  # it is being torn down anyway
                    pass

    def _open(self, session: Session) -> None:
        session.consume_channel = session.channel()
        try:
            self._handler.open(session)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == PRECONDITION_FAILED:
                # A queue that exists with other arguments: retrying cannot fix it.
                raise ConfigError(
                    f"queue topology conflicts with the broker: {exc.reply_text}"
                ) from None
            raise
        # Per-consumer QoS: RabbitMQ refuses global QoS on quorum queues.
        session.consume_channel.basic_qos(prefetch_count=self._prefetch)
        session.consumer_tag = session.consume_channel.basic_consume(
            self._queue, functools.partial(self._on_message, session), auto_ack=False,
        )
        self._healthy = True
        self._consuming_since = time.monotonic()
        self._observer.consuming()
        LOGGER.info("%s: consuming %s (prefetch %d, %d workers)", self._label, self._queue,
                    self._prefetch, self._workers)

    def _serve(self, session: Session) -> None:
        cancelled = False
        while True:
            session.connection.process_data_events(time_limit=POLL_INTERVAL_S)
            session.check(expect_consumer=not cancelled)
            if not self._stop_requested:
                continue
            self.stopping.set()
            if not cancelled:
                self._healthy = False
                self._observer.not_consuming(f"stopping: finishing the {self._noun} in flight")
                # Deliveries that pika has received but not yet dispatched are nacked by
                # basic_cancel itself, so only those already handed over remain.
                session.consume_channel.basic_cancel(session.consumer_tag)
                cancelled = True
                LOGGER.info("%s: stopping: no new %s; %d in flight", self._label, self._noun,
                            session.unsettled)
            if session.unsettled == 0:
                return
            if self._drain_time_left() <= 0:
                # Closing the connection hands the unsettled deliveries back to the broker.
                self._drained = False
                LOGGER.warning(
                    "%s: drain timeout (%.0fs) with %d %s in flight: closing the connection; "
                    "the broker redelivers them", self._label, self._drain_timeout_s,
                    session.unsettled, self._noun,
                )
                return

    def _drain_time_left(self) -> float:
        if self._drain_deadline is None:  # run() ended without stop() (a config error)
            return self._drain_timeout_s
        return self._drain_deadline - time.monotonic()

    def _wait_for_workers(self) -> None:
        """Let running work end (its results are dropped if its connection is gone), but not
        past the drain deadline: an invocation can hang for as long as its own timeout."""
        with self._futures_lock:
            running = set(self._futures)
        _, not_done = wait_for_futures(running, timeout=max(self._drain_time_left(), 0))
        if not_done:
            self._drained = False
            LOGGER.warning(
                "%s: drain timeout (%.0fs): %d %s still running are left unsettled; the broker "
                "redelivers them", self._label, self._drain_timeout_s, len(not_done), self._noun,
            )
        self._executor.shutdown(wait=not not_done, cancel_futures=True)

    # --- deliveries ----------------------------------------------------------------------------

    def _on_message(self, session: Session, channel, method, properties, body: bytes) -> None:
        delivery = Delivery(session, channel, method.delivery_tag, properties, body)
        session._received()
        try:
            self._handler.on_message(delivery)
        except Exception:  # a handler bug: never leave a delivery unsettled, never crash
            LOGGER.exception("%s: message %s could not be handled; requeued", self._label,
                             delivery.message_id)
            delivery.nack(requeue=True)

    def submit(self, delivery: Delivery, work: Callable[[], Any]) -> None:
        """I/O thread: run ``work`` on a worker thread; its return value goes to the handler's
        ``settle`` (or ``dropped``) on the I/O thread."""
        future = self._executor.submit(self._work, delivery, work)
        with self._futures_lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future) -> None:
        with self._futures_lock:
            self._futures.discard(future)

    def _work(self, delivery: Delivery, work: Callable[[], Any]) -> None:
        try:
            result = work()
        except Exception:  # a handler bug: the delivery is requeued
            LOGGER.exception("%s: message %s failed in a worker; requeued", self._label,
                             delivery.message_id)
            result = _WORK_FAILED
        settle = functools.partial(self._settle, delivery, result)
        try:
            delivery.session.connection.add_callback_threadsafe(settle)
        except pika.exceptions.ConnectionWrongStateError:  # the connection is closed
            self._dropped(delivery, result)

    def _settle(self, delivery: Delivery, result: Any) -> None:
        if not delivery.settleable:
            self._dropped(delivery, result)
        elif result is _WORK_FAILED:
            delivery.nack(requeue=True)
        else:
            self._handler.settle(delivery, result)

    def _dropped(self, delivery: Delivery, result: Any) -> None:
        delivery.drop()
        if result is not _WORK_FAILED:
            self._handler.dropped(delivery, result)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
