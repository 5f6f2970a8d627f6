"""The dead-letter queue from an operator's side: see what is there and why, replay or discard it.

Two kinds of messages land in the dead-letter queue:

- copies the bridge published itself (a permanent failure, or the last attempt of a transient
  one). They carry the cause in ``x-imagepipe-error-code`` / ``-message`` / ``-attempts``.
- messages the broker dead-lettered on its own: a job delivered more often than the quorum
  queue's ``x-delivery-limit`` (its bridge crashed or lost its connection on every attempt).
  They carry the broker's ``x-death`` header, whose reason becomes the code (``delivery_limit``).

RabbitMQ has no "peek". A scan takes messages with ``basic_get`` without acking them, so the
broker keeps them, and gives back what it does not settle with one ``nack(requeue)`` at the end
(or when the connection drops). A scan reads at most the number of messages the queue held when
it started, so messages dead-lettered meanwhile are not chased forever.

Replay is at-least-once and loses nothing. For each chosen job, in this order:

1. The job's ``failed`` and ``processing`` status markers are removed, so its status reads
   ``queued`` again (a ``done`` marker is kept: such a job is answered from its manifest).
2. The original body is published to the queue it came from (a rerender job to the rerender
   queue, any other job to the work queue: ``imagepipe.broker.job_queue``) with publisher
   confirms and ``mandatory``;
   the cause headers and the broker's delivery bookkeeping are dropped, so the job starts again
   at attempt 1, and ``x-imagepipe-replays`` counts how often it was replayed.
3. Only after the broker confirmed that publish is the dead letter acked (removed).

If the publish fails, the ``failed`` marker is put back and the dead letter stays. If the process
dies between 2 and 3, the job is in both queues; a second replay of it is harmless, because the
resize answers a finished job from its manifest. Copies of one job found in the same scan are
replayed once; the other copies are removed after that one was confirmed. Messages that are not
a resize job (``bad_message``, ``unknown_schema_version``) are never replayed: fix the producer,
then ``discard`` them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable

from imagepipe import amqp, status
from imagepipe.broker import (
    HEADER_ATTEMPTS,
    HEADER_DEAD_LETTERED_AT,
    HEADER_DELIVERY_COUNT,
    HEADER_ERROR_CODE,
    HEADER_ERROR_MESSAGE,
    HEADER_REPLAYS,
    copy_properties,
    job_queue,
)
from imagepipe.errors import BROKER_UNAVAILABLE, TransientError, bad_message
from imagepipe.messages import RERENDER_JOB_TYPE, ResizeJob, State
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)

BY_BRIDGE = "bridge"
BY_BROKER = "broker"
UNKNOWN_CAUSE = "unknown"

# Headers that describe a past life in the queues. A replayed job must not carry them: a stale
# delivery count would make it look like its final attempt, a stale cause would mislabel it.
_BOOKKEEPING_HEADERS = frozenset({
    HEADER_DELIVERY_COUNT, HEADER_ERROR_CODE, HEADER_ERROR_MESSAGE, HEADER_ATTEMPTS,
    HEADER_DEAD_LETTERED_AT,
    "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
    "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason",
})

# What happened to each chosen dead letter.
REPLAYED = "replayed"
DISCARDED = "discarded"
DUPLICATE = "duplicate_removed"  # another copy of the same job was replayed in this run
SKIPPED = "skipped"  # not a resize job: never replayed
FAILED = "failed"  # the broker refused the publish; the dead letter stays
WOULD_REPLAY = "would_replay"  # --dry-run
WOULD_DISCARD = "would_discard"


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message as an operator sees it."""

    message_id: str | None
    job: ResizeJob | None  # None when the body is not a resize job
    code: str
    message: str
    attempts: int | None
    dead_lettered_by: str  # bridge | broker | unknown
    dead_lettered_at: str | None
    replays: int
    body_error: dict | None = None  # why the body is not a job

    @property
    def job_id(self) -> str | None:
        return self.job.job_id if self.job else self.message_id

    def to_dict(self) -> dict:
        return {
            "job_id": self.job_id,
            "message_id": self.message_id,
            "upload_id": self.job.upload_id if self.job else None,
            "source_key": self.job.source_key if self.job else None,
            "error": {"code": self.code, "message": self.message},
            "attempts": self.attempts,
            "dead_lettered_by": self.dead_lettered_by,
            "dead_lettered_at": self.dead_lettered_at,
            "replays": self.replays,
            "replayable": self.job is not None,
            "body_error": self.body_error,
        }


@dataclass(frozen=True)
class Outcome:
    letter: DeadLetter
    action: str
    reason: str = ""

    def to_dict(self) -> dict:
        return {"job_id": self.letter.job_id, "message_id": self.letter.message_id,
                "action": self.action, "reason": self.reason or None}


def describe(properties, body: bytes) -> DeadLetter:
    """Read a dead-lettered message's cause from its headers, and its job from its body."""
    headers = dict(getattr(properties, "headers", None) or {})
    job, body_error = None, None
    try:
        job = ResizeJob.decode(body)
    except Exception as exc:  # noqa: BLE001 - any unreadable body is reported, never raised
        body_error = bad_message(exc).to_dict()
    code, message, attempts, by, at = _cause(headers)
    return DeadLetter(
        message_id=getattr(properties, "message_id", None),
        job=job,
        code=code,
        message=message,
        attempts=attempts,
        dead_lettered_by=by,
        dead_lettered_at=at,
        replays=_int(headers.get(HEADER_REPLAYS)) or 0,
        body_error=body_error,
    )


def _cause(headers: dict) -> tuple[str, str, int | None, str, str | None]:
    if HEADER_ERROR_CODE in headers:
        return (
            _text(headers[HEADER_ERROR_CODE]),
            _text(headers.get(HEADER_ERROR_MESSAGE, "")),
            _int(headers.get(HEADER_ATTEMPTS)),
            BY_BRIDGE,
            _text(headers[HEADER_DEAD_LETTERED_AT]) if HEADER_DEAD_LETTERED_AT in headers else None,
        )
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        latest = deaths[0]  # the broker keeps the most recent death first
        reason = _text(latest.get("reason", UNKNOWN_CAUSE))
        queue = _text(latest.get("queue", "?"))
        when = latest.get("time")
        at = when.isoformat() if isinstance(when, datetime) else None
        return (
            reason,
            f"dead-lettered by the broker from {queue}: {reason} "
            f"({_int(latest.get('count')) or 1} time(s))",
            None,
            BY_BROKER,
            at,
        )
    return UNKNOWN_CAUSE, "no cause recorded", None, UNKNOWN_CAUSE, None


def replay_properties(properties, replays: int):
    """The original properties, minus the bookkeeping of its past life, plus the replay count
    (``imagepipe.broker.copy_properties``)."""
    headers = {
        name: value
        for name, value in (getattr(properties, "headers", None) or {}).items()
        if name not in _BOOKKEEPING_HEADERS
    }
    headers[HEADER_REPLAYS] = replays
    return copy_properties(properties, headers)


def match_jobs(job_ids: Iterable[str]) -> Callable[[DeadLetter], bool]:
    wanted = frozenset(job_ids)
    return lambda letter: letter.job_id in wanted or letter.message_id in wanted


def match_all(_letter: DeadLetter) -> bool:
    return True


class _StatusResetFailed(Exception):
    pass


@dataclass
class _Held:
    delivery_tag: int
    properties: object
    body: bytes
    letter: DeadLetter


class DeadLetterQueue:
    """Inspect, replay and discard dead letters. Broker and S3 clients are made on first use."""

    def __init__(self, settings: Settings, *, status_store: status.StatusStore | None = None,
                 connect_timeout: float = 5.0):
        self._settings = settings
        self._status_store = status_store
        self._connect_timeout = connect_timeout

    @property
    def name(self) -> str:
        return self._settings.dead_letter_queue

    # --- reading ------------------------------------------------------------------------------

    def depth(self) -> int:
        """Messages ready in the dead-letter queue."""
        with self._channel() as (_channel, ready):
            return ready

    def list(self, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters, oldest first, without removing any."""
        with self._channel() as (channel, ready):
            held = self._scan(channel, ready, limit)
            self._give_back(channel, held)
            self._wait_until_returned(channel, len(held))
        return [h.letter for h in held]

    # --- changing -----------------------------------------------------------------------------

    def replay(self, select: Callable[[DeadLetter], bool], *, limit: int | None = None,
               dry_run: bool = False, reset_status: bool = True) -> list[Outcome]:
        """Send the chosen dead letters back to their queues (see the module docstring)."""
        return self._act(select, limit, dry_run, replay=True, reset_status=reset_status)

    def discard(self, select: Callable[[DeadLetter], bool], *, limit: int | None = None,
                dry_run: bool = False) -> list[Outcome]:
        """Remove the chosen dead letters for good."""
        return self._act(select, limit, dry_run, replay=False, reset_status=False)

    def _act(self, select, limit, dry_run, *, replay: bool, reset_status: bool) -> list[Outcome]:
        import pika.exceptions

        outcomes: list[Outcome] = []
        with self._channel(confirm=True) as (channel, ready):
            # The whole queue: a --job may be anywhere in it.
            held = self._scan(channel, ready, None)
            chosen = [h for h in held if select(h.letter)]
            if limit is not None:
                chosen = chosen[:limit]
            chosen_tags = {h.delivery_tag for h in chosen}
            self._give_back(channel, [h for h in held if h.delivery_tag not in chosen_tags])
            replayed: set[str] = set()
            for item in chosen:
                letter = item.letter
                if dry_run:
                    action = WOULD_REPLAY if replay and letter.job else WOULD_DISCARD
                    if replay and not letter.job:
                        action = SKIPPED
                    outcomes.append(Outcome(letter, action, _skip_reason(letter, replay)))
                    continue
                if not replay:
                    channel.basic_ack(item.delivery_tag)
                    outcomes.append(Outcome(letter, DISCARDED))
                    continue
                if letter.job is None:
                    channel.basic_nack(item.delivery_tag, requeue=True)
                    outcomes.append(Outcome(letter, SKIPPED, _skip_reason(letter, replay)))
                    continue
                if letter.job.job_id in replayed:
                    channel.basic_ack(item.delivery_tag)
                    outcomes.append(Outcome(letter, DUPLICATE))
                    continue
                try:
                    self._replay_one(channel, item, reset_status)
                except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
                    channel.basic_nack(item.delivery_tag, requeue=True)
                    outcomes.append(Outcome(letter, FAILED, _refusal(
                        exc, self._settings, replay_queue(self._settings, item.properties,
                                                          letter.job))))
                    continue
                except _StatusResetFailed as exc:
                    channel.basic_nack(item.delivery_tag, requeue=True)
                    outcomes.append(Outcome(letter, FAILED, str(exc)))
                    continue
                channel.basic_ack(item.delivery_tag)
                replayed.add(letter.job.job_id)
                outcomes.append(Outcome(letter, REPLAYED))
            if dry_run:
                self._give_back(channel, chosen)
            removed = sum(o.action in (REPLAYED, DISCARDED, DUPLICATE) for o in outcomes)
            self._wait_until_returned(channel, len(held) - removed)
        return outcomes

    def _replay_one(self, channel, item: _Held, reset_status: bool) -> None:
        job = item.letter.job
        queue = replay_queue(self._settings, item.properties, job)
        try:
            # A rerender never touched the status (the upload stays done): nothing to reset.
            restore = (self._reset_status(job) if reset_status and not job.is_rerender
                       else None)
        except Exception as exc:  # S3 down or access denied: nothing was published yet
            raise _StatusResetFailed(
                f"could not reset its status ({type(exc).__name__}: {exc}); the dead letter "
                "stays (--keep-status replays without touching the status)"
            ) from exc
        try:
            channel.basic_publish(
                exchange="",
                routing_key=queue,
                body=item.body,
                properties=replay_properties(item.properties, item.letter.replays + 1),
                mandatory=True,
            )
        except Exception:
            if restore is not None:
                restore()
            raise
        LOGGER.info("job %s replayed to %s", job.job_id, queue)

    def _reset_status(self, job: ResizeJob):
        """Make the job's status read ``queued``; returns how to undo that, or None."""
        if job.bucket != self._settings.bucket:
            return None  # not this stage's upload: its status is not ours to change
        store = self._store()
        shown = store.state_of(job.upload_id)
        for state in (State.FAILED, State.PROCESSING):
            store.unmark(job.upload_id, state)
        if shown.state != State.FAILED:
            return None

        def restore() -> None:
            try:
                store.mark(job.upload_id, State.FAILED, error=shown.error, exclusive=True)
            except Exception:  # noqa: BLE001 - the dead letter stays; the replay can be redone
                LOGGER.exception("job %s: could not restore its failed status", job.job_id)

        return restore

    # --- plumbing -----------------------------------------------------------------------------

    def _scan(self, channel, ready: int, limit: int | None) -> list[_Held]:
        """Take at most ``ready`` (the depth when the command began) messages, unacked."""
        budget = ready
        if limit is not None:
            budget = min(budget, limit)
        held: list[_Held] = []
        while len(held) < budget:
            method, properties, body = channel.basic_get(self._settings.dead_letter_queue,
                                                         auto_ack=False)
            if method is None:
                break
            held.append(_Held(method.delivery_tag, properties, body, describe(properties, body)))
        return held

    @staticmethod
    def _give_back(channel, held: list[_Held]) -> None:
        for item in held:
            channel.basic_nack(item.delivery_tag, requeue=True)

    def _wait_until_returned(self, channel, count: int, timeout: float = 5.0) -> None:
        """A quorum queue takes messages back asynchronously: wait until they are ready again,
        so that a command run right after this one sees them (and counts them)."""
        deadline = time.monotonic() + timeout
        while self._depth(channel) < count and time.monotonic() < deadline:
            channel.connection.sleep(0.02)

    def _depth(self, channel) -> int:
        declared = channel.queue_declare(self._settings.dead_letter_queue, passive=True)
        return declared.method.message_count

    def _store(self) -> status.StatusStore:
        if self._status_store is None:
            from imagepipe import aws

            self._status_store = status.StatusStore(
                aws.s3_client(self._settings), self._settings.bucket
            )
        return self._status_store

    def _channel(self, confirm: bool = False):
        return _ChannelScope(self._settings, self._connect_timeout, confirm)


class _ChannelScope:
    """A connection and one channel for one operation, entered as ``(channel, ready)``: the
    passive declare that checks the queue exists also gives its depth. Closing it returns every
    unacked message to the queue, so an interrupted command leaves the dead letters where they
    were."""

    def __init__(self, settings: Settings, timeout: float, confirm: bool):
        self._settings = settings
        self._timeout = timeout
        self._confirm = confirm
        self._connection = None

    def __enter__(self):
        import pika.exceptions

        params = amqp.parameters(self._settings, "imagepipe-dlq", timeout=self._timeout,
                                 blocked_timeout=30)
        try:
            self._connection = amqp.connect(params)
            channel = self._connection.channel()
            if self._confirm:
                channel.confirm_delivery()
            # Passive: an operator's typo must not create a queue.
            declared = channel.queue_declare(self._settings.dead_letter_queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.__exit__(None, None, None)
            raise TransientError(
                BROKER_UNAVAILABLE,
                f"dead-letter queue {self._settings.dead_letter_queue!r}: {exc.reply_text}",
            ) from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.__exit__(None, None, None)
            raise TransientError(
                BROKER_UNAVAILABLE, f"message broker unreachable: {type(exc).__name__} {exc}"
            ) from None
        return channel, declared.method.message_count

    def __exit__(self, *_exc) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - closing a broken connection; nothing to release
                pass


def _skip_reason(letter: DeadLetter, replay: bool) -> str:
    if replay and letter.job is None:
        error = letter.body_error or {}
        return f"not a resize job ({error.get('code')}: {error.get('message')}); discard it"
    return ""


def replay_queue(settings: Settings, properties, job: ResizeJob) -> str:
    """Where a dead job goes back to: the rerender queue for a rerender job (its body says so,
    or, for a producer that left the field out of a body that still decodes, its AMQP type),
    so that a replayed backfill never takes a live upload's place."""
    if getattr(properties, "type", None) == RERENDER_JOB_TYPE:
        return settings.rerender_queue
    return job_queue(settings, job)


def _refusal(exc: Exception, settings: Settings, queue: str) -> str:
    import pika.exceptions

    if isinstance(exc, pika.exceptions.UnroutableError):
        kind = "rerender queue" if queue == settings.rerender_queue else "work queue"
        return f"{kind} {queue!r} does not exist; the dead letter stays"
    return "the broker refused the publish; the dead letter stays"


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
