"""What to do with a delivery once its invocation has ended. Pure decisions, no I/O.

- ``done``: publish a ``job.done`` event, then ack.
- ``failed``, or ``retry`` on the final attempt: publish a ``job.failed`` event, dead-letter the
  message with its cause in headers, then ack.
- A rerender job's events are ``variants.changed`` and ``variants.failed`` instead: its upload
  finished once already, and consumers of ``job.*`` must see that once.
- ``retry`` before the final attempt: wait with exponential backoff, then nack with requeue. The
  broker's delivery limit stops a retry loop even if the bridge misjudges the attempt number.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bridge import backoff
from imagepipe.broker import (
    HEADER_ATTEMPTS,
    HEADER_DEAD_LETTERED_AT,
    HEADER_DELIVERY_COUNT,
    HEADER_ERROR_CODE,
    HEADER_ERROR_MESSAGE,
    PERSISTENT,
    copy_properties,
)
from imagepipe.errors import INTERNAL, JobError, gave_up
from imagepipe.messages import (
    CONTENT_TYPE,
    DONE,
    FAILED,
    RETRY,
    Invocation,
    InvocationResult,
    ResultEvent,
    utc_now,
)
from imagepipe.settings import Settings

ACK = "ack"  # done: event, then ack
DEAD_LETTER = "dead_letter"  # failed: event, dead letter with cause, then ack
REQUEUE = "requeue"  # transient: nack(requeue=True) after a backoff
RELEASE = "release"  # never started (shutting down): nack(requeue=True) at once

MAX_RETRY_DELAY_S = 10.0
MAX_ERROR_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class Settlement:
    action: str
    outcome: str  # for the log line: done | failed | retry | released
    event: ResultEvent | None = None
    error: dict | None = None
    delay_s: float = 0.0


def retry_delay(settings: Settings, attempt: int) -> float:
    """How long a job waits before its next attempt."""
    return backoff.delay(settings.retry_backoff_s, attempt, MAX_RETRY_DELAY_S)


def decide(settings: Settings, invocation: Invocation, result: InvocationResult) -> Settlement:
    if result.status == DONE:
        return Settlement(ACK, DONE, event=_event(invocation, result))
    if result.status == RETRY and not invocation.is_final_attempt:
        return Settlement(
            REQUEUE, RETRY, error=_error(result), delay_s=retry_delay(settings, invocation.attempt)
        )
    error = _error(result)
    if result.status == RETRY:
        # The resize core gives up by itself on the final attempt. This branch covers invokers
        # that failed before the core ran (Lambda down, pool broken) and whose "give up"
        # invocation, which records the failed status, failed too: the bridge may only invoke
        # the function, not write to S3. It still publishes the event and the dead letter.
        error = {
            "code": error["code"],
            "message": gave_up(error.get("message", ""), invocation.attempt),
        }
    failed = replace(result, status=FAILED, error=error)
    return Settlement(DEAD_LETTER, FAILED, event=_event(invocation, failed), error=error)


def _event(invocation: Invocation, result: InvocationResult) -> ResultEvent:
    # The job's callback travels on its event to the callback dispatcher (bridge.callbacks).
    return ResultEvent.from_result(result, callback_url=invocation.job.callback_url,
                                   owner=invocation.job.owner,
                                   rerender=invocation.job.is_rerender)


def retry_result(invocation: Invocation, error: JobError, duration_ms: int) -> InvocationResult:
    """The result of an invocation that raised: transient, so it is retried like any other."""
    return InvocationResult(
        job_id=invocation.job.job_id,
        upload_id=invocation.job.upload_id,
        status=RETRY,
        error=error.to_dict(),
        duration_ms=duration_ms,
    )


def released() -> Settlement:
    return Settlement(RELEASE, "released")


def _error(result: InvocationResult) -> dict:
    error = result.error or {}
    return {
        "code": str(error.get("code") or INTERNAL),
        "message": str(error.get("message") or f"resize returned {result.status} without a cause"),
    }


# --- AMQP properties (pika is imported lazily, like everywhere else) --------------------------


def event_properties(event: ResultEvent):
    import pika

    return pika.BasicProperties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=event.job_id,
        type=event.type,  # imagepipe.job.done, ..., imagepipe.variants.changed
    )


def dead_letter_properties(original, error: dict, attempt: int):
    """The original message's properties plus the cause, for a copy sent to the dead-letter queue.

    ``x-delivery-count`` is dropped. It counted deliveries from the work queue, not of the copy.
    RabbitMQ 3.10 quorum queues overwrite it on delivery anyway (checked), but a stale count must
    not make a replayed job look like its final attempt. Which properties are copied:
    ``imagepipe.broker.copy_properties``.
    """
    headers = {
        name: value
        for name, value in (getattr(original, "headers", None) or {}).items()
        if name != HEADER_DELIVERY_COUNT
    }
    headers[HEADER_ERROR_CODE] = str(error.get("code", INTERNAL))
    headers[HEADER_ERROR_MESSAGE] = str(error.get("message", ""))[:MAX_ERROR_MESSAGE_CHARS]
    headers[HEADER_ATTEMPTS] = attempt
    headers[HEADER_DEAD_LETTERED_AT] = utc_now()
    return copy_properties(original, headers)
