"""Message schemas (version 1), owned here and pinned by golden-JSON tests.

Three messages cross process boundaries:

- ``ResizeJob``: the body published to the work queue (``imagepipe.resize``) by the upload
  function; AMQP ``message_id`` is the job id.
- ``Invocation`` / ``InvocationResult``: what the bridge passes to the resize function (in-process
  or Lambda Invoke) and what it returns. An invocation with ``give_up`` asks the function only to
  record that the bridge gave up on the job (status ``failed``), not to run it.
- ``ResultEvent``: published by the bridge to the topic exchange ``imagepipe.results`` with
  routing key ``job.done`` or ``job.failed``, one per finished job; a finished rerender (below)
  is ``variants.changed`` or ``variants.failed`` instead, so consumers of ``job.*`` see each
  upload finish once.

A rerender job (``python -m imagepipe backfill``) is a ``ResizeJob`` with ``rerender``: the
names of the variants to make again from the stored original, on the rerender queue
(``imagepipe.rerender``, AMQP ``type`` ``imagepipe.rerender.v1``), and optionally ``prune``:
names no longer in the spec whose objects are deleted. It never changes the upload's status.

One document is stored rather than sent, on the same schema version: the ``Manifest``, what the
resize made of an upload (``manifests/{upload_id}.json``), read back to answer a redelivered job
and the status document. ``State`` spells an upload's status for all of them, for the status
document and for the API client.

Bodies are UTF-8 JSON with sorted keys; every body carries ``"v": 1``. Optional fields added
within v1 (``callback_url``, a job's ``filename``, a variant's ``url``; ``owner``, the ``sub``
of the token that made the upload on a stage with auth) are left out when unset, so a body
without them is unchanged.
Decoding a body that is not JSON, not an object, of another version or missing a field raises
a ``PermanentError`` (``bad_message`` or ``unknown_schema_version``): such a message can never succeed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum

from imagepipe import keys, spec
from imagepipe.errors import BAD_MESSAGE, UNKNOWN_SCHEMA, PermanentError, public

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
JOB_TYPE = "imagepipe.resize.v1"
RERENDER_JOB_TYPE = "imagepipe.rerender.v1"
# The most variant names one rerender job may name (a spec has a handful).
MAX_RERENDER_NAMES = 64



class State(StrEnum):
    """An upload's status: ``pending`` (created, nothing verified yet), ``queued``,
    ``processing``, then ``done`` or ``failed`` for good."""

    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (State.DONE, State.FAILED)


# What an invocation ends in: the job's final state, or ``retry`` (transient, try again).
DONE = State.DONE
FAILED = State.FAILED
RETRY = "retry"
OUTCOMES = (DONE, FAILED, RETRY)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # UTC, every timestamp in messages and status markers
# Far above any body we send (a job is ~400 bytes, an event with 100 variants ~20 KB): a larger
# one is refused before it is parsed.
MAX_BODY_BYTES = 256 * 1024
# The longest value each string field of a job may hold (S3 allows 63-character bucket names,
# RFC 6838 127+127-character media types; callback URLs are checked to 2,048 at create, file
# names to 255; an owner is a token's sub, checked to 255 by imagepipe.auth).
MAX_FIELD_CHARS = {"bucket": 63, "content_type": 255, "submitted_at": 32, "source_etag": 130,
                   "callback_url": 2048, "source_key": 64, "filename": 255, "owner": 255}


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime(TIME_FORMAT)


def encode(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode(body: bytes | str) -> dict:
    if len(body) > MAX_BODY_BYTES:
        raise PermanentError(BAD_MESSAGE, f"body is over {MAX_BODY_BYTES} bytes")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PermanentError(BAD_MESSAGE, f"body is not JSON: {exc}") from None
    except RecursionError:
        raise PermanentError(BAD_MESSAGE, "body is nested too deeply") from None
    if not isinstance(obj, dict):
        raise PermanentError(BAD_MESSAGE, "body is not a JSON object")
    _check_version(obj)
    return obj


def _check_version(obj: dict) -> None:
    if obj.get("v") != SCHEMA_VERSION:
        raise PermanentError(UNKNOWN_SCHEMA, f"schema version {obj.get('v')!r} is not supported")


def _require(obj: dict, name: str, kind: type | tuple[type, ...] = str):
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise PermanentError(BAD_MESSAGE, f"field {name!r} is missing or of the wrong type")
    return value


@dataclass(frozen=True)
class ResizeJob:
    job_id: str
    upload_id: str
    bucket: str
    source_key: str
    content_type: str
    submitted_at: str
    # The ETag of the original as verified: the resize reads exactly that object, so a client
    # cannot swap in other bytes while its presigned upload URL is still valid.
    source_etag: str | None = None
    # Where the bridge's callback dispatcher POSTs the result (checked when the upload was made).
    callback_url: str | None = None
    # The client's name of the original (sanitised): the variants' download names start with it.
    filename: str | None = None
    # Who made the upload (the token's ``sub``), carried into the result event and callback.
    owner: str | None = None
    # A rerender (backfill): the variants to make again with the current spec; None for the
    # upload's own job. ``prune``: variants no longer in the spec, to delete (rerender only).
    rerender: tuple[str, ...] | None = None
    prune: tuple[str, ...] = ()

    @property
    def is_rerender(self) -> bool:
        return self.rerender is not None

    @property
    def message_type(self) -> str:
        """The AMQP ``type`` property it is published with."""
        return RERENDER_JOB_TYPE if self.is_rerender else JOB_TYPE

    @classmethod
    def for_upload(cls, upload_id: str, bucket: str, content_type: str,
                   source_etag: str | None = None,
                   callback_url: str | None = None,
                   filename: str | None = None, owner: str | None = None) -> "ResizeJob":
        # One job per upload: the id is the upload's, so a duplicate publish is recognisable.
        return cls(
            job_id=upload_id,
            upload_id=upload_id,
            bucket=bucket,
            source_key=keys.original_key(upload_id),
            content_type=content_type,
            submitted_at=utc_now(),
            source_etag=source_etag,
            callback_url=callback_url,
            filename=filename,
            owner=owner,
        )

    def to_dict(self) -> dict:
        return {
            "v": SCHEMA_VERSION,
            "job_id": self.job_id,
            "upload_id": self.upload_id,
            "bucket": self.bucket,
            "source_key": self.source_key,
            "content_type": self.content_type,
            "submitted_at": self.submitted_at,
            "source_etag": self.source_etag,
            **_callback_to_dict(self.callback_url),
            **({} if self.filename is None else {"filename": self.filename}),
            **_owner_to_dict(self.owner),
            **({} if self.rerender is None else {"rerender": list(self.rerender)}),
            **({"prune": list(self.prune)} if self.prune else {}),
        }

    @classmethod
    def from_dict(cls, obj: dict) -> "ResizeJob":
        _check_version(obj)
        job = cls(job_id=_require(obj, "job_id"), upload_id=_require(obj, "upload_id"),
                  bucket=_require(obj, "bucket"), source_key=_require(obj, "source_key"),
                  content_type=_require(obj, "content_type"),
                  submitted_at=_require(obj, "submitted_at"),
                  source_etag=_optional_str(obj, "source_etag"),
                  callback_url=_optional_str(obj, "callback_url"),
                  filename=_optional_str(obj, "filename"),
                  owner=_optional_str(obj, "owner"),
                  rerender=_optional_names(obj, "rerender"),
                  prune=_optional_names(obj, "prune") or ())
        if job.prune and job.rerender is None:
            raise PermanentError(BAD_MESSAGE, "prune is only for a rerender job")
        if not keys.is_upload_id(job.upload_id):
            raise PermanentError(BAD_MESSAGE, "upload_id is malformed")
        if job.job_id != job.upload_id:  # one job per upload (see for_upload)
            raise PermanentError(BAD_MESSAGE, "job_id is not the upload_id")
        for name, limit in MAX_FIELD_CHARS.items():
            value = getattr(job, name)
            if value is not None and len(value) > limit:
                raise PermanentError(BAD_MESSAGE, f"field {name!r} is over {limit} characters")
        if job.source_key != keys.original_key(job.upload_id):
            raise PermanentError(BAD_MESSAGE, "source_key does not belong to upload_id")
        return job

    def encode(self) -> bytes:
        return encode(self.to_dict())

    @classmethod
    def decode(cls, body: bytes | str, bucket: str | None = None) -> "ResizeJob":
        """The job in ``body``; with ``bucket``, refused unless it is that bucket's job."""
        job = cls.from_dict(decode(body))
        if bucket is not None and job.bucket != bucket:
            raise PermanentError(BAD_MESSAGE, "the job names another bucket than this stage's")
        return job


@dataclass(frozen=True)
class VariantInfo:
    name: str
    key: str
    width: int
    height: int
    format: str
    bytes: int
    # Where a client loads it (``delivery.variant_url``): a stable URL, the same in the manifest,
    # the result event, the callback and ``GET /uploads/{id}``. Optional within v1: left out on a
    # stage that delivers presigned URLs only (they would expire in the message).
    url: str | None = None
    # ``fingerprint.variant_fingerprint`` of the definition that made it; optional within v1
    # (manifests written before fingerprints existed have none).
    fingerprint: str | None = None

    def to_dict(self) -> dict:
        obj = {
            "name": self.name,
            "key": self.key,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "bytes": self.bytes,
        }
        if self.url is not None:
            obj["url"] = self.url
        if self.fingerprint is not None:
            obj["fingerprint"] = self.fingerprint
        return obj

    @classmethod
    def from_dict(cls, obj: dict) -> "VariantInfo":
        return cls(
            name=_require(obj, "name"),
            key=_require(obj, "key"),
            width=_require(obj, "width", int),
            height=_require(obj, "height", int),
            format=_require(obj, "format"),
            bytes=_require(obj, "bytes", int),
            url=_optional_str(obj, "url"),
            fingerprint=_optional_str(obj, "fingerprint"),
        )


@dataclass(frozen=True)
class Manifest:
    """What the resize made of one upload, written when it is done; a rerender replaces it
    whole (one PUT, conditional on the one it read) with ``revision`` one higher."""

    job_id: str
    upload_id: str
    source: dict  # {"key", "bytes"} and the fields of ``imaging.SourceInfo``
    spec: tuple[dict, ...]  # the variant specs it was made with (``spec.Variant.to_dict``)
    variants: tuple[VariantInfo, ...]
    created_at: str = field(default_factory=utc_now)
    stripped: tuple[str, ...] = ()  # metadata left out of the variants
    converted: tuple[str, ...] = ()  # mode and colour conversions
    colour_converted: bool = False
    notes: tuple[str, ...] = ()
    # 1 as first made; each rerender adds one and sets ``updated_at``. Optional within v1: left
    # out at 1, so a first manifest reads as before.
    revision: int = 1
    updated_at: str | None = None

    def variant(self, name: str) -> VariantInfo | None:
        return next((v for v in self.variants if v.name == name), None)

    def to_dict(self) -> dict:
        return {
            "v": SCHEMA_VERSION,
            "job_id": self.job_id,
            "upload_id": self.upload_id,
            "source": self.source,
            "spec": list(self.spec),
            "variants": [v.to_dict() for v in self.variants],
            "stripped": list(self.stripped),
            "converted": list(self.converted),
            "colour_converted": self.colour_converted,
            "notes": list(self.notes),
            "created_at": self.created_at,
            **({} if self.revision == 1 else {"revision": self.revision}),
            **({} if self.updated_at is None else {"updated_at": self.updated_at}),
        }

    @classmethod
    def from_dict(cls, obj: dict) -> "Manifest":
        # Manifests written before stripped/converted/colour_converted/notes existed still read.
        _check_version(obj)
        return cls(
            job_id=_require(obj, "job_id"),
            upload_id=_require(obj, "upload_id"),
            source=_require(obj, "source", dict),
            spec=tuple(_require(obj, "spec", list)),
            variants=tuple(VariantInfo.from_dict(v) for v in _require(obj, "variants", list)),
            created_at=_require(obj, "created_at"),
            stripped=tuple(obj.get("stripped") or ()),
            converted=tuple(obj.get("converted") or ()),
            colour_converted=bool(obj.get("colour_converted", False)),
            notes=tuple(obj.get("notes") or ()),
            revision=_require(obj, "revision", int) if "revision" in obj else 1,
            updated_at=_optional_str(obj, "updated_at"),
        )


@dataclass(frozen=True)
class Invocation:
    job: ResizeJob
    attempt: int = 1
    max_attempts: int = 1
    # Set when the bridge gives up on a job whose invocations failed before the resize ran
    # (Lambda down, worker pool broken): {"code", "message"}. The function then does no work;
    # it records the failure as the job's status (or answers done if the job did finish).
    # Optional, so a function that predates it still reads the message.
    give_up: dict | None = None

    @property
    def is_final_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def to_dict(self) -> dict:
        obj = {
            "v": SCHEMA_VERSION,
            "job": self.job.to_dict(),
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
        }
        if self.give_up is not None:
            obj["give_up"] = self.give_up
        return obj

    @classmethod
    def from_dict(cls, obj: dict) -> "Invocation":
        _check_version(obj)
        give_up = obj.get("give_up")
        if give_up is not None and not (
            isinstance(give_up, dict) and isinstance(give_up.get("code"), str)
        ):
            raise PermanentError(BAD_MESSAGE, "give_up must be null or {code, message}")
        return cls(
            job=ResizeJob.from_dict(_require(obj, "job", dict)),
            attempt=_require(obj, "attempt", int),
            max_attempts=_require(obj, "max_attempts", int),
            give_up=give_up,
        )


@dataclass(frozen=True)
class InvocationResult:
    job_id: str
    upload_id: str
    status: str  # done | failed | retry
    variants: tuple[VariantInfo, ...] = ()
    error: dict | None = None  # {"code", "message"}
    duration_ms: int = 0

    def to_dict(self) -> dict:
        return {"v": SCHEMA_VERSION, **_outcome_to_dict(self)}

    @classmethod
    def from_dict(cls, obj: dict) -> "InvocationResult":
        return cls(**_outcome_from_dict(obj, OUTCOMES))


@dataclass(frozen=True)
class ResultEvent:
    job_id: str
    upload_id: str
    status: str  # done | failed
    variants: tuple[VariantInfo, ...] = ()
    error: dict | None = None
    duration_ms: int = 0
    finished_at: str = field(default_factory=utc_now)
    callback_url: str | None = None  # the job's, for the callback dispatcher
    owner: str | None = None  # the job's: whose upload this was (stages with auth)
    # The end of a rerender job: the upload's variants changed (or could not be made again).
    rerender: bool = False

    @property
    def routing_key(self) -> str:
        if self.rerender:
            return "variants.changed" if self.status == DONE else "variants.failed"
        return f"job.{self.status}"

    @property
    def type(self) -> str:
        return f"imagepipe.{self.routing_key}"

    @classmethod
    def from_result(cls, result: InvocationResult, callback_url: str | None = None,
                    owner: str | None = None, rerender: bool = False) -> "ResultEvent":
        if result.status not in (DONE, FAILED):
            raise ValueError(f"a {result.status!r} result is not a finished job")
        return cls(
            job_id=result.job_id,
            upload_id=result.upload_id,
            status=result.status,
            variants=result.variants,
            # Events and callbacks leave the system: a fault of ours travels as its code and a
            # plain message; the detail stays in the logs and the dead letter.
            error=public(result.error),
            duration_ms=result.duration_ms,
            callback_url=callback_url,
            owner=owner,
            rerender=rerender,
        )

    def to_dict(self) -> dict:
        return {
            "v": SCHEMA_VERSION,
            "type": self.type,
            **_outcome_to_dict(self),
            "finished_at": self.finished_at,
            **_callback_to_dict(self.callback_url),
            **_owner_to_dict(self.owner),
        }

    @classmethod
    def from_dict(cls, obj: dict) -> "ResultEvent":
        return cls(**_outcome_from_dict(obj, (DONE, FAILED)),
                   finished_at=_require(obj, "finished_at"),
                   callback_url=_optional_str(obj, "callback_url"),
                   owner=_optional_str(obj, "owner"),
                   rerender=str(obj.get("type", "")).startswith("imagepipe.variants."))

    def encode(self) -> bytes:
        return encode(self.to_dict())


def _callback_to_dict(callback_url: str | None) -> dict:
    return {} if callback_url is None else {"callback_url": callback_url}


def _owner_to_dict(owner: str | None) -> dict:
    return {} if owner is None else {"owner": owner}


def _optional_names(obj: dict, name: str) -> tuple[str, ...] | None:
    """A list of variant names (unique, each a valid name), or None when absent."""
    value = obj.get(name)
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) <= MAX_RERENDER_NAMES
            and all(isinstance(v, str) and spec.is_variant_name(v) for v in value)
            and len(set(value)) == len(value)):
        raise PermanentError(BAD_MESSAGE, f"field {name!r} must be a list of distinct variant "
                                          f"names (at most {MAX_RERENDER_NAMES})")
    return tuple(value)


def _optional_str(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise PermanentError(BAD_MESSAGE, f"field {name!r} must be a string or null")
    return value


def _outcome_to_dict(outcome: InvocationResult | ResultEvent) -> dict:
    """The fields an invocation result and a result event share."""
    return {
        "job_id": outcome.job_id,
        "upload_id": outcome.upload_id,
        "status": outcome.status,
        "variants": [v.to_dict() for v in outcome.variants],
        "error": outcome.error,
        "duration_ms": outcome.duration_ms,
    }


def _outcome_from_dict(obj: dict, statuses: tuple[str, ...]) -> dict:
    _check_version(obj)
    status = _require(obj, "status")
    if status not in statuses:
        raise PermanentError(BAD_MESSAGE, f"status {status!r} is not one of {', '.join(statuses)}")
    error = obj.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("code"), str)):
        raise PermanentError(BAD_MESSAGE, "error must be null or {code, message}")
    return {
        "job_id": _require(obj, "job_id"),
        "upload_id": _require(obj, "upload_id"),
        "status": status,
        "variants": tuple(VariantInfo.from_dict(v) for v in _require(obj, "variants", list)),
        "error": error,
        "duration_ms": _require(obj, "duration_ms", int),
    }
