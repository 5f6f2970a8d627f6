"""How many uploads one bearer token has made, counted in S3 so the functions stay stateless.

A token whose ``imagepipe.max_uploads`` is N may make N uploads. Each upload claims a numbered
slot object, ``tokens/{token_id}/uploads/{n}`` for n in 1..N, written with ``If-None-Match: *``:
S3 lets exactly one writer create each key, so two requests racing for the last slot cannot both
win, and no more than N slots can ever exist. A claim lists the slots taken to start near the
first free one, then tries each next number until one is created or N is reached. Listing is
only a hint (a racing claim may add a slot after it): the conditional write is the authority.

A claim whose upload then fails to be made is released again (best effort); a slot that stays
taken errs on the side of fewer uploads. Slots outlive the token (at most a day): the bucket's
lifecycle rule for ``tokens/`` removes them.
"""

from __future__ import annotations

import logging

from imagepipe import keys
from imagepipe.errors import aws_error_code

LOGGER = logging.getLogger(__name__)
# S3 answers a conditional write that raced another on the same key with this (409): retry it.
CONFLICT = "ConditionalRequestConflict"
MAX_CONFLICTS = 3


class TokenUploads:
    def __init__(self, s3, bucket: str):
        self._s3 = s3
        self._bucket = bucket

    def taken(self, token_id: str) -> int:
        """How many slots the token's uploads hold (a racing claim may add one at once)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self._bucket, Prefix=keys.token_uploads_prefix(token_id))
        return sum(page.get("KeyCount", 0) for page in pages)

    def claim(self, token_id: str, max_uploads: int, upload_id: str) -> str | None:
        """Take a free slot for ``upload_id``: its key, or None when all ``max_uploads`` are
        taken."""
        number, conflicts = self.taken(token_id) + 1, 0
        while number <= max_uploads:
            key = keys.token_upload_key(token_id, number)
            try:
                self._s3.put_object(Bucket=self._bucket, Key=key, Body=upload_id.encode(),
                                    ContentType="text/plain", IfNoneMatch="*")
                return key
            except Exception as exc:
                code = aws_error_code(exc)
                if code == CONFLICT and conflicts < MAX_CONFLICTS:
                    conflicts += 1  # S3: a write to the same key was in flight; try it again
                    continue
                if code not in ("PreconditionFailed", "412"):
                    raise
            number += 1  # taken by a racing claim (or an earlier one the listing missed)
        return None

    def release(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self._bucket, Key=key)
        except Exception:
            LOGGER.warning("upload slot %s could not be released", key, exc_info=True)
