"""Job state, kept in S3 so the functions stay stateless.

An upload's state is derived from objects (see ``keys``): the upload record makes it ``pending``;
each later state adds its own marker object and no marker is ever overwritten, so concurrent
writers (the upload function, resize attempts on several workers) never race on one object.
The visible state is the highest-ranked marker present: done > failed > processing > queued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from imagepipe import keys
from imagepipe.errors import aws_error_code, is_missing_object
from imagepipe.messages import TIME_FORMAT, utc_now

PENDING = "pending"
QUEUED = "queued"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
STATES = (PENDING, QUEUED, PROCESSING, DONE, FAILED)
_RANK = {QUEUED: 1, PROCESSING: 2, FAILED: 3, DONE: 4}


@dataclass(frozen=True)
class Status:
    upload_id: str
    state: str
    error: dict | None = None


class StatusStore:
    def __init__(self, s3, bucket: str):
        self._s3 = s3
        self._bucket = bucket

    # --- upload record ------------------------------------------------------------------------
    def put_upload_record(self, upload_id: str, record: dict) -> None:
        self._put_json(keys.upload_record_key(upload_id), record)

    def get_upload_record(self, upload_id: str) -> dict | None:
        return self._get_json(keys.upload_record_key(upload_id))

    # --- markers ------------------------------------------------------------------------------
    def mark(self, upload_id: str, state: str, *, error: dict | None = None,
             exclusive: bool = False) -> bool:
        """Add the marker for ``state``. With ``exclusive``, only the first writer wins.

        Returns False when ``exclusive`` and the marker already existed.
        """
        if state not in _RANK:
            raise ValueError(f"no marker for state {state!r}")
        body = {"state": state, "at": utc_now(), "error": error}
        return self._put_json(keys.status_marker_key(upload_id, state), body, exclusive=exclusive)

    def marked_at(self, upload_id: str, state: str) -> datetime | None:
        """When the marker for ``state`` was written, or None without one."""
        marker = self._get_json(keys.status_marker_key(upload_id, state))
        if not marker or not marker.get("at"):
            return None
        return datetime.strptime(marker["at"], TIME_FORMAT).replace(tzinfo=timezone.utc)

    def unmark(self, upload_id: str, state: str) -> None:
        self._s3.delete_object(Bucket=self._bucket, Key=keys.status_marker_key(upload_id, state))

    def states(self, upload_id: str) -> set[str]:
        response = self._s3.list_objects_v2(
            Bucket=self._bucket, Prefix=keys.status_prefix(upload_id), MaxKeys=100
        )
        return {keys.state_from_marker_key(o["Key"]) for o in response.get("Contents", [])}

    def current(self, upload_id: str) -> Status | None:
        """The visible state, or None when no such upload was ever created."""
        found = self.state_of(upload_id)
        if found.state == PENDING and self.get_upload_record(upload_id) is None:
            return None
        return found

    def state_of(self, upload_id: str) -> Status:
        """The visible state of an upload known to exist (its record was read already)."""
        present = self.states(upload_id) & set(_RANK)
        if not present:
            return Status(upload_id, PENDING)
        state = max(present, key=_RANK.__getitem__)
        error = None
        if state == FAILED:
            marker = self._get_json(keys.status_marker_key(upload_id, FAILED)) or {}
            error = marker.get("error")
        return Status(upload_id, state, error)

    # --- manifest -----------------------------------------------------------------------------
    def put_manifest(self, upload_id: str, manifest: dict) -> bool:
        """Write the manifest once; returns False if another attempt already wrote it."""
        return self._put_json(keys.manifest_key(upload_id), manifest, exclusive=True)

    def get_manifest(self, upload_id: str) -> dict | None:
        return self._get_json(keys.manifest_key(upload_id))

    # --- plumbing -----------------------------------------------------------------------------
    def _put_json(self, key: str, obj: dict, *, exclusive: bool = False) -> bool:
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=json.dumps(obj, sort_keys=True).encode(),
                ContentType="application/json",
                **extra,
            )
        except Exception as exc:
            if exclusive and aws_error_code(exc) in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    def _get_json(self, key: str) -> dict | None:
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=key)
        except Exception as exc:
            if is_missing_object(exc):
                return None
            raise
        return json.loads(response["Body"].read())

