"""Job state, kept in S3 so the functions stay stateless.

An upload's state is derived from objects (see ``keys``): the upload record makes it ``pending``;
each later state adds its own marker object and no marker is ever overwritten, so concurrent
writers (the upload function, resize attempts on several workers) never race on one object.
The visible state is the highest-ranked marker present: done > failed > processing > queued.

Two documents sit beside the markers, each typed here or in ``messages``: the ``UploadRecord``
(``uploads/{id}.json``, what the client asked for) and the ``messages.Manifest``. The manifest
is written once by the upload's job; only a rerender replaces it, conditionally on the ETag it
read (``replace_manifest``), so of two concurrent rerenders one wins and the other knows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from imagepipe import keys
from imagepipe.errors import aws_error_code, is_missing_object
from imagepipe.messages import TIME_FORMAT, Manifest, State, utc_now

_RANK = {State.QUEUED: 1, State.PROCESSING: 2, State.FAILED: 3, State.DONE: 4}


@dataclass(frozen=True)
class Status:
    upload_id: str
    state: State
    error: dict | None = None


@dataclass(frozen=True)
class MultipartRecord:
    """What an upload record keeps of its S3 multipart upload, to resume and complete it."""

    s3_upload_id: str
    part_bytes: int

    def to_dict(self) -> dict:
        return {"s3_upload_id": self.s3_upload_id, "part_bytes": self.part_bytes}

    @classmethod
    def from_dict(cls, obj: dict) -> "MultipartRecord":
        return cls(s3_upload_id=str(obj["s3_upload_id"]), part_bytes=int(obj["part_bytes"]))


@dataclass(frozen=True)
class UploadRecord:
    """What the client asked for when it made the upload; its existence makes it ``pending``.

    Written by the upload function only, after the request was checked: reading it back trusts
    its shape. Optional fields are left out of the JSON when unset.
    """

    upload_id: str
    filename: str  # for display only, sanitised
    content_type: str  # as declared, and then verified against the bytes
    size: int
    method: str  # uploads.POST, PUT or MULTIPART
    created_at: str = field(default_factory=utc_now)
    callback_url: str | None = None
    multipart: MultipartRecord | None = None
    # When the job was last published again because it looked lost in the queue.
    requeued_at: str | None = None
    # The ``sub`` of the bearer token that made it, on a stage with auth: only it may reach it.
    owner: str | None = None

    def requeued(self) -> "UploadRecord":
        return replace(self, requeued_at=utc_now())

    def to_dict(self) -> dict:
        obj = {
            "upload_id": self.upload_id,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "method": self.method,
            "created_at": self.created_at,
        }
        if self.callback_url is not None:
            obj["callback_url"] = self.callback_url
        if self.multipart is not None:
            obj["multipart"] = self.multipart.to_dict()
        if self.requeued_at is not None:
            obj["requeued_at"] = self.requeued_at
        if self.owner is not None:
            obj["owner"] = self.owner
        return obj

    @classmethod
    def from_dict(cls, obj: dict) -> "UploadRecord":
        multipart = obj.get("multipart")
        return cls(
            upload_id=str(obj["upload_id"]),
            filename=str(obj["filename"]),
            content_type=str(obj["content_type"]),
            size=int(obj["size"]),
            method=str(obj["method"]),
            created_at=str(obj["created_at"]),
            callback_url=obj.get("callback_url"),
            multipart=MultipartRecord.from_dict(multipart) if multipart else None,
            requeued_at=obj.get("requeued_at"),
            owner=obj.get("owner"),
        )


class StatusStore:
    def __init__(self, s3, bucket: str):
        self._s3 = s3
        self._bucket = bucket

    # --- upload record ------------------------------------------------------------------------
    def put_upload_record(self, record: UploadRecord) -> None:
        self._put_json(keys.upload_record_key(record.upload_id), record.to_dict())

    def get_upload_record(self, upload_id: str) -> UploadRecord | None:
        found = self._get_json(keys.upload_record_key(upload_id))
        return None if found is None else UploadRecord.from_dict(found)

    # --- markers ------------------------------------------------------------------------------
    def mark(self, upload_id: str, state: State, *, error: dict | None = None,
             exclusive: bool = False) -> bool:
        """Add the marker for ``state``. With ``exclusive``, only the first writer wins.

        Returns False when ``exclusive`` and the marker already existed.
        """
        if state not in _RANK:
            raise ValueError(f"no marker for state {state!r}")
        body = {"state": state, "at": utc_now(), "error": error}
        return self._put_json(keys.status_marker_key(upload_id, state), body, exclusive=exclusive)

    def marked_at(self, upload_id: str, state: State) -> datetime | None:
        """When the marker for ``state`` was written, or None without one."""
        marker = self._get_json(keys.status_marker_key(upload_id, state))
        if not marker or not marker.get("at"):
            return None
        return datetime.strptime(marker["at"], TIME_FORMAT).replace(tzinfo=timezone.utc)

    def unmark(self, upload_id: str, state: State) -> None:
        self._s3.delete_object(Bucket=self._bucket, Key=keys.status_marker_key(upload_id, state))

    def states(self, upload_id: str) -> set[State]:
        """The states marked for the upload (a marker this code does not know is left out)."""
        response = self._s3.list_objects_v2(
            Bucket=self._bucket, Prefix=keys.status_prefix(upload_id), MaxKeys=100
        )
        found = {keys.state_from_marker_key(o["Key"]) for o in response.get("Contents", [])}
        return {State(name) for name in found if name in _RANK}

    def current(self, upload_id: str) -> Status | None:
        """The visible state, or None when no such upload was ever created."""
        found = self.state_of(upload_id)
        if found.state == State.PENDING and self.get_upload_record(upload_id) is None:
            return None
        return found

    def state_of(self, upload_id: str) -> Status:
        """The visible state of an upload known to exist (its record was read already)."""
        present = self.states(upload_id)
        if not present:
            return Status(upload_id, State.PENDING)
        state = max(present, key=_RANK.__getitem__)
        error = None
        if state == State.FAILED:
            marker = self._get_json(keys.status_marker_key(upload_id, State.FAILED)) or {}
            error = marker.get("error")
        return Status(upload_id, state, error)

    # --- manifest -----------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest) -> bool:
        """Write the manifest once; returns False if another attempt already wrote it."""
        return self._put_json(keys.manifest_key(manifest.upload_id), manifest.to_dict(),
                              exclusive=True)

    def get_manifest(self, upload_id: str) -> Manifest | None:
        found = self.get_manifest_with_etag(upload_id)
        return None if found is None else found[0]

    def get_manifest_with_etag(self, upload_id: str) -> tuple[Manifest, str] | None:
        """The manifest and the ETag of the object it was read from (for ``replace_manifest``)."""
        found = self._get_json_with_etag(keys.manifest_key(upload_id))
        return None if found is None else (Manifest.from_dict(found[0]), found[1])

    def replace_manifest(self, manifest: Manifest, etag: str) -> bool:
        """Replace the manifest read with ``etag`` (a rerender's new revision) in one PUT;
        False when another writer replaced or removed it since (S3's If-Match)."""
        try:
            self._s3.put_object(Bucket=self._bucket, Key=keys.manifest_key(manifest.upload_id),
                                Body=_json_body(manifest.to_dict()),
                                ContentType="application/json", IfMatch=etag)
        except Exception as exc:
            # NoSuchKey: deleted since it was read; ConditionalRequestConflict: a concurrent PUT.
            if aws_error_code(exc) in ("PreconditionFailed", "412", "NoSuchKey",
                                       "ConditionalRequestConflict", "409"):
                return False
            raise
        return True

    # --- plumbing -----------------------------------------------------------------------------
    def _put_json(self, key: str, obj: dict, *, exclusive: bool = False) -> bool:
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=_json_body(obj),
                ContentType="application/json",
                **extra,
            )
        except Exception as exc:
            if exclusive and aws_error_code(exc) in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    def _get_json(self, key: str) -> dict | None:
        found = self._get_json_with_etag(key)
        return None if found is None else found[0]

    def _get_json_with_etag(self, key: str) -> tuple[dict, str] | None:
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=key)
        except Exception as exc:
            if is_missing_object(exc):
                return None
            raise
        return json.loads(response["Body"].read()), response["ETag"]


def _json_body(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()

