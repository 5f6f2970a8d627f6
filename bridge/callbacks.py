"""The callback dispatcher: POST each finished job's result to its ``callback_url``, signed.

It consumes the results exchange from its own durable queue (bound to ``job.done`` and
``job.failed``, and to ``variants.changed`` when the stage asks for rerender callbacks with
``settings.rerender_callbacks``) on its own connection and threads, so a slow or unreachable receiver never
delays a resize: the bridge has published the event and moved on. Each callback is retried with
capped exponential backoff; after the last attempt, or at once when the receiver refuses it for
good (a 4xx other than 408/429, or a target that is no longer allowed), the event is
dead-lettered to ``callback_dead_letter_queue`` with its cause in the same headers the bridge
uses for jobs. Events without a ``callback_url`` are acked at once.

The reconnecting consumer loop is the bridge's own (``bridge.loop``): the thread in ``run()``
owns the connection and its channels; worker threads deliver and hand the outcome back to it.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import socket
import ssl
from dataclasses import dataclass

import pika.exceptions

from bridge import backoff
from bridge.loop import ConsumerLoop, Delivery, Session
from bridge.settle import dead_letter_properties
from imagepipe import callbacks, logs
from imagepipe.errors import CALLBACK_FAILED, bad_message, gave_up
from imagepipe.messages import ResultEvent, decode, encode
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)

ROUTING_KEYS = ("job.done", "job.failed")
# A rerender (backfill) that changed an upload's variants; ``variants.failed`` is for operators
# (the dead-letter queue), never for the upload's owner.
RERENDER_ROUTING_KEY = "variants.changed"
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
        self.sock = _tls_context().wrap_socket(sock, server_hostname=self.host)


def _pinned_connection(target: callbacks.Target, address: str, timeout: float):
    kind = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    return kind(target.host, target.port, address, timeout)


def webhook_id(event: ResultEvent) -> str:
    """The event's ``webhook-id``: the same on every attempt, so receivers drop duplicates.

    A rerender's differs from the upload's own ``{job}.done`` (the receiver would drop it as a
    duplicate) and from every other rerender's of that upload: it names the variant set, whose
    keys carry the fingerprints, so the same rerender redelivered keeps its id.
    """
    if not event.rerender:
        return f"{event.job_id}.{event.status}"
    digest = hashlib.sha256("\n".join(sorted(v.key for v in event.variants)).encode())
    return f"{event.job_id}.{event.routing_key}.{digest.hexdigest()[:16]}"


def callback_body(event: ResultEvent) -> bytes:
    """What the receiver gets: the result event, without its own URL."""
    return encode({k: v for k, v in event.to_dict().items() if k != "callback_url"})


# --- the dispatcher ----------------------------------------------------------------------------

def routing_keys(settings: Settings) -> tuple[str, ...]:
    """The events that get a callback on this stage."""
    return ROUTING_KEYS + ((RERENDER_ROUTING_KEY,) if settings.rerender_callbacks else ())


def declare_topology(channel, settings: Settings) -> None:
    channel.exchange_declare(settings.results_exchange, exchange_type="topic", durable=True)
    quorum = {"x-queue-type": "quorum"}
    channel.queue_declare(settings.callback_dead_letter_queue, durable=True, arguments=quorum)
    channel.queue_declare(settings.callback_queue, durable=True, arguments=quorum)
    for routing_key in routing_keys(settings):
        channel.queue_bind(settings.callback_queue, settings.results_exchange,
                           routing_key=routing_key)
    if not settings.rerender_callbacks:
        # The queue is durable and so are its bindings: a stage that turned rerender callbacks
        # off must stop getting them (unbinding what is not bound is no error).
        channel.queue_unbind(settings.callback_queue, settings.results_exchange,
                             routing_key=RERENDER_ROUTING_KEY)


@dataclass(frozen=True)
class _Outcome:
    action: str  # delivered | dead_letter | released
    attempts: int = 0
    error: dict | None = None
    event: ResultEvent | None = None


class CallbackDispatcher:
    def __init__(self, settings: Settings, *, workers: int = 4, heartbeat: int = 30,
                 reconnect_initial_s: float = 0.5, reconnect_max_s: float = 30.0,
                 connection_name: str = "imagepipe-callbacks", resolver=socket.getaddrinfo):
        if not settings.callback_secret:
            raise ValueError("callbacks need a secret (IMAGEPIPE_CALLBACK_SECRET)")
        self._settings = settings
        self._resolver = resolver
        self._loop = ConsumerLoop(
            settings, self, queue=settings.callback_queue, label="callbacks", noun="callbacks",
            connection_name=connection_name, workers=workers, prefetch=workers,
            heartbeat=heartbeat, reconnect_initial_s=reconnect_initial_s,
            reconnect_max_s=reconnect_max_s,
        )

    @property
    def healthy(self) -> bool:
        return self._loop.healthy

    @property
    def drained(self) -> bool:
        """False when ``run`` returned with callbacks still being sent, after the drain timeout."""
        return self._loop.drained

    def stop(self) -> None:
        self._loop.stop()

    def run(self) -> None:
        """Consume until ``stop()``, reconnecting after a lost connection."""
        self._loop.run()

    # --- bridge.loop.Handler (I/O thread) -------------------------------------------------------

    def open(self, session: Session) -> None:
        declare_topology(session.consume_channel, self._settings)
        dead_letters = session.channel()
        dead_letters.confirm_delivery()
        session.context = dead_letters

    def on_message(self, delivery: Delivery) -> None:
        try:
            event = ResultEvent.from_dict(decode(delivery.body))
        except Exception as exc:
            self.settle(delivery, _Outcome(DEAD, 0, bad_message(exc).to_dict()))
            return
        if not event.callback_url or (event.rerender and not self._settings.rerender_callbacks):
            # The second: queued while the binding still stood (the setting was just turned off).
            delivery.ack()
            return
        self._loop.submit(delivery, functools.partial(self._deliver, event))

    def settle(self, delivery: Delivery, outcome: _Outcome) -> None:
        if outcome.action == RELEASED:
            delivery.nack(requeue=True)
            return
        error = outcome.error or {"code": CALLBACK_FAILED, "message": "not delivered"}
        if outcome.action == DEAD:
            try:
                delivery.session.context.basic_publish(
                    exchange="", routing_key=self._settings.callback_dead_letter_queue,
                    body=delivery.body, mandatory=True,
                    properties=dead_letter_properties(delivery.properties, error,
                                                      outcome.attempts))
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
                LOGGER.error("callback not dead-lettered (%s); requeued", exc)
                delivery.nack(requeue=True)
                return
        delivery.ack()
        job = outcome.event.job_id if outcome.event else delivery.message_id
        fields = {**_event_fields(outcome.event), "outcome": outcome.action,
                  "attempts": outcome.attempts}
        if outcome.action == DELIVERED:
            LOGGER.info("callback job=%s outcome=delivered attempts=%d", job, outcome.attempts,
                        extra=fields)
        else:
            LOGGER.warning("callback job=%s outcome=dead_letter attempts=%d code=%s: %s", job,
                           outcome.attempts, error["code"], error["message"],
                           extra={**fields, "code": error["code"]})

    def dropped(self, delivery: Delivery, outcome: _Outcome) -> None:
        LOGGER.warning("callback job=%s: connection closed; the broker will redeliver it",
                       outcome.event.job_id if outcome.event else delivery.message_id,
                       extra=_event_fields(outcome.event))

    # --- worker threads -----------------------------------------------------------------------

    def _deliver(self, event: ResultEvent) -> _Outcome:
        with logs.context(**_event_fields(event)):
            try:
                return self._attempts(event)
            except Exception:  # a dispatcher bug: never leave the delivery unsettled
                LOGGER.exception("callback job=%s: dispatcher error; requeueing", event.job_id)
                return _Outcome(RELEASED, event=event)

    def _attempts(self, event: ResultEvent) -> _Outcome:
        settings = self._settings
        stopping = self._loop.stopping
        body = callback_body(event)
        url = event.callback_url or ""  # events without one were acked before any attempt
        error = {"code": CALLBACK_FAILED, "message": "no attempt was made"}
        for attempt in range(1, settings.callback_attempts + 1):
            if stopping.is_set():
                return _Outcome(RELEASED, event=event)
            # Signed per attempt: the timestamp is fresh, so receivers can refuse old ones.
            headers = callbacks.signed_headers(settings.callback_secret, body,
                                               message_id=webhook_id(event))
            try:
                post_once(settings, url, body, headers, self._resolver)
                return _Outcome(DELIVERED, attempt, event=event)
            except AttemptFailed as exc:
                error = {"code": CALLBACK_FAILED, "message": str(exc)}
                LOGGER.info("callback job=%s attempt=%d/%d failed: %s", event.job_id, attempt,
                            settings.callback_attempts, exc)
                if exc.permanent:
                    return _Outcome(DEAD, attempt, error, event)
            if attempt < settings.callback_attempts and stopping.wait(
                    backoff.delay(settings.callback_backoff_s, attempt, MAX_DELAY_S)):
                return _Outcome(RELEASED, event=event)
        error["message"] = gave_up(error["message"], settings.callback_attempts)
        return _Outcome(DEAD, settings.callback_attempts, error, event)


def _event_fields(event: ResultEvent | None) -> dict:
    if event is None:  # an undecodable event names no job
        return {}
    return {logs.JOB_ID: event.job_id, logs.UPLOAD_ID: event.upload_id}
