"""RabbitMQ topology and the job publisher.

Topology (names from ``Settings``; the defaults are the documented contract)::

    (default exchange) --routing key = queue--> imagepipe.resize         quorum, x-delivery-limit,
                                                                          dead-letters to the DLX
                       --routing key = queue--> imagepipe.rerender       the same arguments
    imagepipe.resize.dlx (direct) --imagepipe.resize.dead--> imagepipe.resize.dead   quorum
    imagepipe.results (topic)      job.done | job.failed                  one event per finished job
                                   variants.changed | variants.failed     one per finished rerender

Rerender (backfill) jobs wait on a queue of their own so that a live upload never queues behind
them; it dead-letters exactly like the work queue, so one dead-letter queue holds both kinds with
their causes, and a replay sends each back where it came from (``job_queue``).

Dead-lettering is at-least-once (needs ``x-overflow=reject-publish``), so a message on its way to
the dead-letter queue is not lost if the broker restarts in between.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from imagepipe import amqp
from imagepipe.errors import BROKER_UNAVAILABLE, ConfigError, TransientError
from imagepipe.messages import CONTENT_TYPE, ResizeJob
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)

PERSISTENT = 2
# Headers the bridge puts on a message it dead-letters itself, so the cause travels with it.
HEADER_ERROR_CODE = "x-imagepipe-error-code"
HEADER_ERROR_MESSAGE = "x-imagepipe-error-message"
HEADER_ATTEMPTS = "x-imagepipe-attempts"
HEADER_DEAD_LETTERED_AT = "x-imagepipe-dead-lettered-at"  # ISO 8601 UTC
HEADER_DELIVERY_COUNT = "x-delivery-count"
# How often an operator sent the job back from the dead-letter queue (``imagepipe_tools.dlq``).
HEADER_REPLAYS = "x-imagepipe-replays"
# How the job publisher's connection is named in the management UI.
CONNECTION_NAME = "imagepipe-job-publisher"


def work_queue_arguments(settings: Settings) -> dict:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": settings.dead_letter_exchange,
        "x-dead-letter-routing-key": settings.dead_letter_queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def declare_topology(channel, settings: Settings) -> None:
    """Declare exchanges and queues (idempotent; 406 if a queue exists with other arguments)."""
    channel.exchange_declare(settings.dead_letter_exchange, exchange_type="direct", durable=True)
    channel.queue_declare(
        settings.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    channel.queue_bind(
        settings.dead_letter_queue, settings.dead_letter_exchange,
        routing_key=settings.dead_letter_queue,
    )
    for queue in (settings.resize_queue, settings.rerender_queue):
        channel.queue_declare(queue, durable=True, arguments=work_queue_arguments(settings))
    channel.exchange_declare(settings.results_exchange, exchange_type="topic", durable=True)


def job_queue(settings: Settings, job: ResizeJob) -> str:
    """The queue a job is published (and replayed) to: rerender jobs have their own."""
    return settings.rerender_queue if job.is_rerender else settings.resize_queue


def delivery_count(properties) -> int:
    """How many times the broker delivered this message before (a missing header means 0)."""
    headers = getattr(properties, "headers", None) or {}
    try:
        return int(headers.get(HEADER_DELIVERY_COUNT, 0))
    except (TypeError, ValueError):
        return 0


def copy_properties(original, headers: dict):
    """A copy of ``original``'s properties with ``headers`` instead of its own, persistent: what
    the bridge publishes to the dead-letter queue and what a replay sends back to the work queue.

    Both are the same message moved by hand, so both keep everything the producer set, including
    ``reply_to``. Not copied: ``user_id`` (the broker rejects a publish whose user_id names
    another user) and ``expiration`` (a per-message TTL must not make a dead letter vanish, nor
    expire a replayed job before it runs).
    """
    import pika

    return pika.BasicProperties(
        content_type=getattr(original, "content_type", None),
        content_encoding=getattr(original, "content_encoding", None),
        headers=headers,
        delivery_mode=PERSISTENT,
        priority=getattr(original, "priority", None),
        correlation_id=getattr(original, "correlation_id", None),
        reply_to=getattr(original, "reply_to", None),
        message_id=getattr(original, "message_id", None),
        timestamp=getattr(original, "timestamp", None),
        type=getattr(original, "type", None),
        app_id=getattr(original, "app_id", None),
    )


def job_properties(job: ResizeJob):
    import pika

    return pika.BasicProperties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=job.job_id,
        type=job.message_type,  # imagepipe.resize.v1 or imagepipe.rerender.v1
    )


class JobPublisher:
    """Publishes resize jobs with publisher confirms and ``mandatory``: a job the broker did not
    take (down, queue missing, nacked) raises ``TransientError(broker_unavailable)``, never
    vanishes. A job goes to its queue (``job_queue``): the upload function's live jobs to the work
    queue, the backfill's rerender jobs (``publish_rerender``) to the rerender queue.

    The connection is opened on first use and reused across calls (a warm Lambda keeps it); a
    stale one (heartbeats missed while the Lambda was frozen) is replaced once per publish.
    """

    def __init__(self, settings: Settings, connect_timeout: float = 3.0):
        self._settings = settings
        self._connect_timeout = connect_timeout
        self._connection: Any = None  # pika.BlockingConnection, opened on first publish
        self._channel: Any = None
        self._lock = threading.Lock()

    def publish(self, job: ResizeJob) -> None:
        with self._lock:
            try:
                self._publish_once(job)
            except (TransientError, ConfigError):  # a malformed URL is not worth a retry
                raise
            except Exception as first:  # a stale connection: try a fresh one once
                LOGGER.info("publish failed (%s); reconnecting once", first)
                self._close_quietly()
                try:
                    self._publish_once(job)
                except TransientError:
                    raise
                except Exception as exc:
                    self._close_quietly()
                    raise TransientError(
                        BROKER_UNAVAILABLE, f"message broker unreachable: {str(exc) or repr(exc)}"
                    ) from exc

    def publish_rerender(self, job: ResizeJob) -> None:
        """``publish`` for the backfill: refuses a live job, which must never reach the
        rerender queue's smaller share of the workers by mistake."""
        if not job.is_rerender:
            raise ValueError(f"job {job.job_id} is not a rerender job")
        self.publish(job)

    def _publish_once(self, job: ResizeJob) -> None:
        import pika.exceptions

        channel = self._ensure_channel()
        queue = job_queue(self._settings, job)
        try:
            channel.basic_publish(
                exchange="",
                routing_key=queue,
                body=job.encode(),
                properties=job_properties(job),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            raise TransientError(BROKER_UNAVAILABLE, f"queue {queue!r} does not exist") from None
        except pika.exceptions.NackError:
            raise TransientError(BROKER_UNAVAILABLE, "the broker refused the job") from None

    def _ensure_channel(self):
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._close_quietly()
        self._connection = amqp.connect(amqp.parameters(
            self._settings, CONNECTION_NAME, timeout=self._connect_timeout, blocked_timeout=10,
        ))
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        return self._channel

    def _close_quietly(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # already broken; nothing to release
                pass

    def close(self) -> None:
        with self._lock:
            self._close_quietly()
