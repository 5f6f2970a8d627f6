"""The callback dispatcher: POST each finished job's result to its ``callback_url``, signed.

It consumes the results exchange from its own durable queue (bound to ``job.done`` and
``job.failed``) on its own connection and threads, so a slow or unreachable receiver never
delays a resize: the bridge has published the event and moved on. Each callback is retried with
capped exponential backoff; after the last attempt, or at once when the receiver refuses it for
good (a 4xx other than 408/429, or a target that is no longer allowed), the event is
dead-lettered to ``callback_dead_letter_queue`` with its cause in the same headers the bridge
uses for jobs. Events without a ``callback_url`` are acked at once.

Threads follow the bridge's rule: the thread in ``run()`` owns the connection and its channels;
worker threads deliver and hand the settlement back with ``add_callback_threadsafe``.
"""

from __future__ import annotations

import functools
import http.client
import logging
import random
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pika
import pika.exceptions

from bridge.amqp import (
    CONNECTION_ERRORS,
    POLL_INTERVAL_S,
    SessionLost,
    bridge_connection_parameters,
    sleep_unless_stopped,
)
from bridge.settle import dead_letter_properties
from imagepipe import callbacks
from imagepipe.errors import CALLBACK_FAILED, bad_message, gave_up
from imagepipe.messages import ResultEvent, decode, encode
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)

ROUTING_KEYS = ("job.done", "job.failed")
MAX_DELAY_S = 60.0
MAX_RESPONSE_BYTES = 64 * 1024
RETRYABLE_STATUSES = frozenset({408, 429})

DELIVERED = "delivered"
DEAD = "dead_letter"
RELEASED = "released"


# --- one attempt -------------------------------------------------------------------------------

class AttemptFailed(Exception):
    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def post_once(settings: Settings, url: str, body: bytes, headers: dict[str, str],
              resolver=socket.getaddrinfo) -> int:
    """POST ``body`` to ``url`` once; returns the 2xx status or raises ``AttemptFailed``.

    The host is resolved and checked here, right before connecting, and the connection goes to
    the address that was checked: a name re-pointed at an internal address is refused.
    """
    try:
        target = callbacks.resolve_target(url, settings.callback_allow_private, resolver)
    except callbacks.CallbackUrlError as exc:
        raise AttemptFailed(str(exc), permanent=True) from None
    last_error: Exception | None = None
    for address in target.addresses:
        connection = _pinned_connection(target, address, settings.callback_timeout_s)
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(MAX_RESPONSE_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            last_error = exc
            continue
        finally:
            connection.close()
        if 200 <= response.status < 300:
            return response.status
        retryable = response.status >= 500 or response.status in RETRYABLE_STATUSES
        raise AttemptFailed(f"the receiver answered {response.status} {response.reason}",
                            permanent=not retryable)
    raise AttemptFailed(f"could not reach {target.host}:{target.port}: "
                        f"{type(last_error).__name__}: {last_error}", permanent=False)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a vetted address; Host header (and TLS name) stay the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Made once (loading the CA bundle is slow) and shared: wrap_socket is thread-safe.
    return ssl.create_default_context()


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=_tls_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _pinned_connection(target: callbacks.Target, address: str, timeout: float):
    kind = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    return kind(target.host, target.port, address, timeout)


def retry_delay(settings: Settings, attempt: int) -> float:
    return min(settings.callback_backoff_s * 2 ** max(attempt - 1, 0), MAX_DELAY_S)


def webhook_id(event: ResultEvent) -> str:
    """The event's ``webhook-id``: the same on every attempt, so receivers drop duplicates."""
    return f"{event.job_id}.{event.status}"


def callback_body(event: ResultEvent) -> bytes:
    """What the receiver gets: the result event, without its own URL."""
    return encode({k: v for k, v in event.to_dict().items() if k != "callback_url"})


# --- the dispatcher ----------------------------------------------------------------------------

def declare_topology(channel, settings: Settings) -> None:
    channel.exchange_declare(settings.results_exchange, exchange_type="topic", durable=True)
    quorum = {"x-queue-type": "quorum"}
    channel.queue_declare(settings.callback_dead_letter_queue, durable=True, arguments=quorum)
    channel.queue_declare(settings.callback_queue, durable=True, arguments=quorum)
    for routing_key in ROUTING_KEYS:
        channel.queue_bind(settings.callback_queue, settings.results_exchange,
                           routing_key=routing_key)


@dataclass(frozen=True)
class _Delivery:
    channel: object
    delivery_tag: int
    properties: object
    body: bytes


@dataclass(frozen=True)
class _Outcome:
    action: str  # delivered | dead_letter | released
    attempts: int = 0
    error: dict | None = None


class CallbackDispatcher:
    def __init__(self, settings: Settings, *, workers: int = 4, heartbeat: int = 30,
                 reconnect_initial_s: float = 0.5, reconnect_max_s: float = 30.0,
                 connection_name: str = "imagepipe-callbacks", resolver=socket.getaddrinfo):
        if not settings.callback_secret:
            raise ValueError("callbacks need a secret (IMAGEPIPE_CALLBACK_SECRET)")
        self._settings = settings
        self._workers = workers
        self._resolver = resolver
        self._parameters = bridge_connection_parameters(settings.amqp_url, heartbeat,
                                                        connection_name)
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        self._stop_requested = False  # a plain flag: stop() may run in a signal handler
        self._stopping = threading.Event()
        self._connection = None
        self._healthy = False
        self._consumed_since_connect = False
        # Deliveries handed to workers and not yet handed back (any session's).
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def healthy(self) -> bool:
        return self._healthy

    def stop(self) -> None:
        self._stop_requested = True

    def run(self) -> None:
        """Consume until ``stop()``, reconnecting after a lost connection."""
        executor = ThreadPoolExecutor(self._workers, thread_name_prefix="callback")
        backoff = self._reconnect_initial_s
        try:
            while not self._stop_requested:
                self._consumed_since_connect = False
                try:
                    self._run_session(executor)
                except CONNECTION_ERRORS + (SessionLost,) as exc:
                    if self._stop_requested:
                        break
                    if self._consumed_since_connect:  # it was a working connection
                        backoff = self._reconnect_initial_s
                    delay = random.uniform(backoff / 2, backoff)
                    LOGGER.warning("callbacks: broker connection lost (%s: %s); reconnecting "
                                   "in %.1fs", type(exc).__name__, exc, delay)
                    sleep_unless_stopped(delay, lambda: self._stop_requested)
                    backoff = min(backoff * 2, self._reconnect_max_s)
        finally:
            self._healthy = False
            self._stopping.set()
            executor.shutdown(wait=True)
            LOGGER.info("callback dispatcher stopped")

    def _run_session(self, executor: ThreadPoolExecutor) -> None:
        connection = pika.BlockingConnection(self._parameters)
        self._connection = connection
        try:
            consume = connection.channel()
            declare_topology(consume, self._settings)
            consume.basic_qos(prefetch_count=self._workers)
            publish = connection.channel()
            publish.confirm_delivery()
            tag = consume.basic_consume(
                self._settings.callback_queue,
                functools.partial(self._on_message, executor, publish), auto_ack=False)
            self._healthy = self._consumed_since_connect = True
            LOGGER.info("callbacks: consuming %s", self._settings.callback_queue)
            cancelled = False
            while True:
                connection.process_data_events(time_limit=POLL_INTERVAL_S)
                if not consume.is_open or not publish.is_open:
                    raise SessionLost("a callback channel was closed")
                if not cancelled and tag not in consume.consumer_tags:
                    raise SessionLost("the broker cancelled the callback consumer "
                                      "(queue deleted?)")
                if self._stop_requested:
                    self._stopping.set()
                    if not cancelled:
                        self._healthy = False
                        consume.basic_cancel(tag)
                        cancelled = True
                    if self._in_flight == 0:
                        # Run the settlements the last workers queued, then leave.
                        connection.process_data_events(time_limit=0)
                        return
        finally:
            self._healthy = False
            self._connection = None
            if connection.is_open:
                try:
                    connection.close()
                except CONNECTION_ERRORS:
                    pass

    # --- I/O thread ---------------------------------------------------------------------------

    def _on_message(self, executor, publish, channel, method, properties, body) -> None:
        delivery = _Delivery(channel, method.delivery_tag, properties, body)
        try:
            event = ResultEvent.from_dict(decode(body))
        except Exception as exc:
            self._settle(publish, delivery, None, _Outcome(DEAD, 0, bad_message(exc).to_dict()))
            return
        if not event.callback_url:
            channel.basic_ack(delivery.delivery_tag)
            return
        with self._lock:
            self._in_flight += 1
        executor.submit(self._work, publish, delivery, event)

    def _settle(self, publish, delivery: _Delivery, event: ResultEvent | None,
                outcome: _Outcome) -> None:
        channel = delivery.channel
        if not channel.is_open:
            return  # the broker redelivers it
        if outcome.action == RELEASED:
            channel.basic_nack(delivery.delivery_tag, requeue=True)
            return
        if outcome.action == DEAD:
            try:
                publish.basic_publish(
                    exchange="", routing_key=self._settings.callback_dead_letter_queue,
                    body=delivery.body, mandatory=True,
                    properties=dead_letter_properties(delivery.properties, outcome.error,
                                                      outcome.attempts))
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
                LOGGER.error("callback not dead-lettered (%s); requeued", exc)
                channel.basic_nack(delivery.delivery_tag, requeue=True)
                return
        channel.basic_ack(delivery.delivery_tag)
        job = event.job_id if event else getattr(delivery.properties, "message_id", None)
        if outcome.action == DELIVERED:
            LOGGER.info("callback job=%s outcome=delivered attempts=%d", job, outcome.attempts)
        else:
            LOGGER.warning("callback job=%s outcome=dead_letter attempts=%d code=%s: %s", job,
                           outcome.attempts, outcome.error["code"], outcome.error["message"])

    # --- worker threads -----------------------------------------------------------------------

    def _work(self, publish, delivery: _Delivery, event: ResultEvent) -> None:
        try:
            outcome = self._deliver(event)
        except Exception:  # a dispatcher bug: never leave the delivery unsettled
            LOGGER.exception("callback job=%s: dispatcher error; requeueing", event.job_id)
            outcome = _Outcome(RELEASED)
        settle = functools.partial(self._settle, publish, delivery, event, outcome)
        connection = self._connection  # a new session's, if the delivery's was lost
        try:
            if connection is None:
                raise pika.exceptions.ConnectionWrongStateError()
            connection.add_callback_threadsafe(settle)
        except pika.exceptions.ConnectionWrongStateError:
            LOGGER.warning("callback job=%s: connection closed; the broker will redeliver it",
                           event.job_id)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _deliver(self, event: ResultEvent) -> _Outcome:
        settings = self._settings
        body = callback_body(event)
        error = None
        for attempt in range(1, settings.callback_attempts + 1):
            if self._stopping.is_set():
                return _Outcome(RELEASED)
            # Signed per attempt: the timestamp is fresh, so receivers can refuse old ones.
            headers = callbacks.signed_headers(settings.callback_secret, body,
                                               message_id=webhook_id(event))
            try:
                post_once(settings, event.callback_url, body, headers, self._resolver)
                return _Outcome(DELIVERED, attempt)
            except AttemptFailed as exc:
                error = {"code": CALLBACK_FAILED, "message": str(exc)}
                LOGGER.info("callback job=%s attempt=%d/%d failed: %s", event.job_id, attempt,
                            settings.callback_attempts, exc)
                if exc.permanent:
                    return _Outcome(DEAD, attempt, error)
            if attempt < settings.callback_attempts and self._stopping.wait(
                    retry_delay(settings, attempt)):
                return _Outcome(RELEASED)
        error["message"] = gave_up(error["message"], settings.callback_attempts)
        return _Outcome(DEAD, settings.callback_attempts, error)

