"""The upload API: hand out presigned uploads, verify what arrived, enqueue the resize job.

``UploadService`` has one method per HTTP route plus ``enqueue``, which both ``complete`` and the
S3 ObjectCreated handler call, so a job is published at most once whichever arrives first.
Every outcome a client can act on is an ``errors.ApiError`` (status, code, message); the HTTP adapter
only turns it into a response. Clients are injected: nothing is created at import time.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import unicodedata
from datetime import datetime, timezone

from imagepipe import callbacks, delivery, errors, formats, keys, logs, status
from imagepipe.auth import Caller, QuotaExceeded
from imagepipe.errors import ApiError, TransientError
from imagepipe.messages import TIME_FORMAT, ResizeJob, State, VariantInfo
from imagepipe.multipart import MultipartGone, MultipartUploads, PartPlan, PartsRejected
from imagepipe.quotas import TokenUploads
from imagepipe.settings import Settings
from imagepipe.status import MultipartRecord, UploadRecord

LOGGER = logging.getLogger(__name__)

POST = "POST"
PUT = "PUT"
MULTIPART = "MULTIPART"
METHODS = (POST, PUT, MULTIPART)
MAX_FILENAME_CHARS = 255
SHA256_BYTES = 32
# How long a client should wait before retrying when the broker is down: long enough for a
# broker restart or a failover, short enough that a user is still looking at the page.
BROKER_RETRY_AFTER_S = 5

_PATH_SEPARATORS = re.compile(r"[\\/]")


def limits_of(settings: Settings) -> dict:
    """What a client checks before asking for an upload (the server stays the authority):
    ``GET /limits``, and the limits in the stage's OpenAPI document."""
    return {
        "max_upload_bytes": settings.max_upload_bytes,
        "allowed_types": list(settings.allowed_types),
        "multipart_threshold_bytes": settings.multipart_threshold_bytes,
        "multipart_part_bytes": settings.multipart_part_bytes,
        "methods": list(METHODS),
    }


def parse_json_object(raw: bytes | str | None) -> dict:
    """The request body as a JSON object, or a 400 in our error format."""
    try:
        payload = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, errors.INVALID_JSON, "the request body is not valid JSON") from None
    except RecursionError:  # nested deeper than the parser goes: no request of ours is
        raise ApiError(400, errors.INVALID_JSON, "the request body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise ApiError(400, errors.INVALID_REQUEST, "the request body must be a JSON object")
    return payload


class UploadService:
    def __init__(self, settings: Settings, s3, publisher, status_store: status.StatusStore):
        self.settings = settings
        self.s3 = s3
        self.publisher = publisher
        self.status = status_store
        delivery.check(settings, needs_api_url=False)
        self.multipart = MultipartUploads(s3, settings.bucket, settings.presign_expires)
        self.token_uploads = TokenUploads(s3, settings.bucket)

    # --- GET /limits --------------------------------------------------------------------------
    def limits(self) -> dict:
        return limits_of(self.settings)

    # --- POST /uploads ------------------------------------------------------------------------
    def create_upload(self, payload: dict, collection_path: str = "/uploads",
                      caller: Caller | None = None) -> dict:
        """A presigned upload; with a ``caller`` (a stage with auth), owned by its ``sub`` and
        within its token's bounds."""
        request = self._validated_request(payload)
        upload_id = keys.new_upload_id()
        slot = self._within_token_bounds(caller, request["size"], upload_id)
        try:
            return self._create(upload_id, request, collection_path, caller)
        except BaseException:
            if slot:  # nothing was made: the token may use its slot again
                self.token_uploads.release(slot)
            raise

    def _within_token_bounds(self, caller: Caller | None, size: int, upload_id: str) -> str | None:
        """Check the token's bounds; the key of the upload slot it claimed, if it counts them."""
        if caller is None:
            return None
        caller.check_size(size)
        if caller.max_uploads is None or caller.token_id is None:
            return None
        slot = self.token_uploads.claim(caller.token_id, caller.max_uploads, upload_id)
        if slot is None:
            raise QuotaExceeded(f"this token allows at most {caller.max_uploads} uploads")
        return slot

    def _create(self, upload_id: str, request: dict, collection_path: str,
                caller: Caller | None) -> dict:
        multipart = None
        if request["method"] == PUT:
            upload = self._presigned_put(upload_id, request)
        elif request["method"] == MULTIPART:
            upload, multipart = self._presigned_multipart(upload_id, request)
        else:
            upload = self._presigned_post(upload_id, request)
        # The record is what makes the upload exist (status "pending"); write it only once the
        # presign worked, so a failure leaves nothing behind.
        self.status.put_upload_record(UploadRecord(
            upload_id=upload_id,
            filename=request["filename"],
            content_type=request["content_type"],
            size=request["size"],
            method=request["method"],
            callback_url=request["callback_url"],
            multipart=multipart,
            owner=caller.sub if caller is not None else None,
        ))
        LOGGER.info("upload %s created (%s, %d bytes, %s)", upload_id,
                    request["content_type"], request["size"], request["method"],
                    extra={logs.UPLOAD_ID: upload_id})
        return {
            "upload_id": upload_id,
            "upload": upload,
            "expires_in": self.settings.presign_expires,
            "status_url": f"{collection_path.rstrip('/')}/{upload_id}",
        }

    def _validated_request(self, payload: dict) -> dict:
        filename = _sanitised_filename(_required(payload, "filename", str))
        content_type = _required(payload, "content_type", str).strip().lower()
        if content_type not in self.settings.allowed_types:
            raise ApiError(400, errors.UNSUPPORTED_TYPE, f"content_type {content_type!r} is not one of "
                           f"{', '.join(self.settings.allowed_types)}")
        size = _whole_number(_required(payload, "size"))
        if size is None or size < 1:
            raise ApiError(400, errors.INVALID_SIZE, "size must be a positive whole number of bytes")
        if size > self.settings.max_upload_bytes:
            raise ApiError(400, errors.TOO_LARGE, f"size {size} is over the limit of "
                           f"{self.settings.max_upload_bytes} bytes")
        method = payload.get("method", POST)
        if method not in METHODS:
            raise ApiError(400, errors.UNSUPPORTED_METHOD, f"method must be one of {', '.join(METHODS)}")
        checksum = payload.get("checksum_sha256")
        if checksum is not None:
            _check_sha256(checksum)
            if method != PUT:
                # The POST policy carries no checksum condition; refusing beats letting the
                # client believe its checksum is enforced.
                raise ApiError(400, errors.INVALID_CHECKSUM, "checksum_sha256 needs method PUT")
        return {"filename": filename, "content_type": content_type, "size": size,
                "method": method, "checksum_sha256": checksum,
                "callback_url": self._checked_callback_url(payload.get("callback_url"))}

    def _checked_callback_url(self, url) -> str | None:
        if url is None:
            return None
        if not self.settings.callback_secret:
            raise ApiError(400, errors.BAD_CALLBACK_URL, "completion callbacks are not enabled on "
                           "this stage")
        prefixes = self.settings.callback_allowed_prefixes
        # With auth on the callers are users, not the stage's own backend: they may only name
        # the stage's receivers, so a stage that lists none takes no callback_url from them
        # (``make package`` refuses such a cloud stage; a local one answers this).
        if self.settings.auth_on and not prefixes:
            raise ApiError(400, errors.BAD_CALLBACK_URL, "this stage takes no callback_url: "
                           "with auth on, a target must start with one of the stage's "
                           "callback_allowed_prefixes, and it lists none")
        # Before the SSRF check, so a target outside the list costs no DNS lookup. A prefix
        # ends its host with "/", so "https://hooks.example/" cannot match another host.
        if prefixes and isinstance(url, str) and not url.startswith(prefixes):
            raise ApiError(400, errors.BAD_CALLBACK_URL, "callback_url is not one of this "
                           "stage's callback targets (callback_allowed_prefixes)")
        try:
            return callbacks.check_url(url, self.settings.callback_allow_private)
        except callbacks.CallbackUrlError as exc:
            raise ApiError(400, errors.BAD_CALLBACK_URL, str(exc)) from None

    def _presigned_post(self, upload_id: str, request: dict) -> dict:
        content_type = request["content_type"]
        post = self.s3.generate_presigned_post(
            Bucket=self.settings.bucket,
            Key=keys.original_key(upload_id),
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                # Exactly the declared size, as the PUT signs its Content-Length.
                ["content-length-range", request["size"], request["size"]],
            ],
            ExpiresIn=self.settings.presign_expires,
        )
        return {"method": POST, "url": post["url"], "fields": post["fields"]}

    def _presigned_put(self, upload_id: str, request: dict) -> dict:
        # Content-Type and Content-Length (and the checksum) are signed: S3 rejects any other body.
        params = {
            "Bucket": self.settings.bucket,
            "Key": keys.original_key(upload_id),
            "ContentType": request["content_type"],
            "ContentLength": request["size"],
        }
        headers = {"Content-Type": request["content_type"]}
        if request["checksum_sha256"] is not None:
            params["ChecksumSHA256"] = request["checksum_sha256"]
            headers["x-amz-checksum-sha256"] = request["checksum_sha256"]
        url = self.s3.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=self.settings.presign_expires
        )
        # Content-Length is left out: clients (browsers must) set it from the body.
        return {"method": PUT, "url": url, "headers": headers}

    def _presigned_multipart(self, upload_id: str,
                             request: dict) -> tuple[dict, MultipartRecord]:
        """The client's part URLs, and what the record keeps to resume and complete."""
        plan = PartPlan(request["size"], self.settings.multipart_part_bytes)
        key = keys.original_key(upload_id)
        s3_upload_id = self.multipart.start(key, request["content_type"])
        upload = {
            "method": MULTIPART,
            "part_bytes": plan.part_bytes,
            "part_count": plan.count,
            "parts": self._part_urls(key, s3_upload_id, plan, plan.numbers),
        }
        return upload, MultipartRecord(s3_upload_id, plan.part_bytes)

    def _part_urls(self, key: str, s3_upload_id: str, plan: PartPlan, numbers) -> list[dict]:
        return [{"part_number": n,
                 "url": self.multipart.part_url(key, s3_upload_id, n, plan.size_of(n))}
                for n in numbers]

    # --- POST /uploads/{id}/parts -------------------------------------------------------------
    def parts(self, upload_id: str, payload: dict | None = None,
              caller: Caller | None = None) -> dict:
        """What S3 holds of a pending multipart upload, and fresh URLs for the parts asked for
        (by default every part S3 does not have yet): resume after a dropped connection."""
        record, multipart = self._pending_multipart(upload_id, caller)
        plan = PartPlan(record.size, multipart.part_bytes)
        wanted = (payload or {}).get("part_numbers")
        if wanted is not None:
            wanted = _part_numbers(wanted, plan)
        key = keys.original_key(upload_id)
        try:
            uploaded = self.multipart.uploaded_parts(key, multipart.s3_upload_id)
        except MultipartGone:
            raise ApiError(409, errors.NOT_MULTIPART, "the multipart upload was already completed or "
                           "aborted") from None
        if wanted is None:
            have = {p["part_number"] for p in uploaded}
            wanted = [n for n in plan.numbers if n not in have]
        return {"upload_id": upload_id, "uploaded": uploaded,
                "parts": self._part_urls(key, multipart.s3_upload_id, plan, wanted)}

    def _pending_multipart(self, upload_id: str,
                           caller: Caller | None) -> tuple[UploadRecord, MultipartRecord]:
        record = self._upload_record(upload_id, caller)
        multipart = record.multipart
        if multipart is None:
            raise ApiError(409, errors.NOT_MULTIPART, f"upload {upload_id} is not a multipart upload")
        state = self.status.state_of(upload_id).state
        if state != State.PENDING:
            raise ApiError(409, errors.NOT_MULTIPART, f"upload {upload_id} is {state}: its multipart "
                           "upload is over")
        return record, multipart

    # --- POST /uploads/{id}/complete and S3 ObjectCreated --------------------------------------
    def complete(self, upload_id: str, payload: dict | None = None,
                 caller: Caller | None = None) -> dict:
        record = self._upload_record(upload_id, caller)
        current = self.status.state_of(upload_id)
        if record.multipart is not None and current.state == State.PENDING:
            self._complete_multipart(upload_id, record.size, record.multipart,
                                     (payload or {}).get("parts"))
        return self._enqueue(upload_id, record, current)

    def _complete_multipart(self, upload_id: str, size: int, multipart: MultipartRecord,
                            given) -> None:
        plan = PartPlan(size, multipart.part_bytes)
        key = keys.original_key(upload_id)
        try:
            parts = (_given_parts(given, plan) if given is not None
                     else self.multipart.uploaded_parts(key, multipart.s3_upload_id))
            missing = sorted(set(plan.numbers) - {p["part_number"] for p in parts})
            if missing:
                raise ApiError(409, errors.PARTS_MISSING, "parts not uploaded yet: "
                               f"{', '.join(map(str, missing))}")
            self.multipart.complete(key, multipart.s3_upload_id, parts)
        except MultipartGone:
            # Completed by an earlier call whose verify or publish failed: verify the object.
            LOGGER.info("upload %s: multipart upload already completed", upload_id)
        except PartsRejected as exc:
            raise ApiError(409, errors.INVALID_PARTS, f"S3 refused the parts ({exc.code}): "
                           f"{exc.message}; list them with POST /uploads/{upload_id}/parts "
                           "and upload the wrong ones again") from None

    def enqueue(self, upload_id: str) -> dict:
        """Verify the uploaded object and publish its resize job, at most once per upload."""
        return self._enqueue(upload_id, self._upload_record(upload_id),
                             self.status.state_of(upload_id))

    def _enqueue(self, upload_id: str, record: UploadRecord, current: status.Status) -> dict:
        if current.state == State.FAILED:
            error = current.error or {}
            raise ApiError(422, error.get("code", errors.INTERNAL),
                           error.get("message", "the upload failed"))
        if current.state == State.QUEUED and self._lost_in_queue(upload_id, record):
            return self._publish_again(upload_id, record)
        if current.state != State.PENDING:
            return {"upload_id": upload_id, "status": current.state}
        etag = self._verify_original(upload_id, record)
        if not self.status.mark(upload_id, State.QUEUED, exclusive=True):
            LOGGER.info("upload %s was enqueued by another caller", upload_id)
            return {"upload_id": upload_id, "status": self.status.state_of(upload_id).state}
        job = self._job(upload_id, record, etag)
        try:
            self.publisher.publish(job)
        except Exception as exc:
            # Back to pending, so the client's retry (or the S3 event's) can publish it: a
            # queued marker without a message would leave the upload stuck for good.
            self.status.unmark(upload_id, State.QUEUED)
            LOGGER.warning("upload %s not enqueued: %s", upload_id, exc)
            if isinstance(exc, TransientError):
                raise ApiError(503, exc.code, exc.public_message,
                               retry_after=BROKER_RETRY_AFTER_S) from exc
            raise
        LOGGER.info("upload %s enqueued as job %s", upload_id, job.job_id,
                    extra={logs.UPLOAD_ID: upload_id, logs.JOB_ID: job.job_id})
        return {"upload_id": upload_id, "status": State.QUEUED}

    def _job(self, upload_id: str, record: UploadRecord, etag: str) -> ResizeJob:
        """The resize job for an upload, from its record (the first publish and any later one)."""
        return ResizeJob.for_upload(upload_id, self.settings.bucket, record.content_type, etag,
                                    callback_url=record.callback_url, filename=record.filename,
                                    owner=record.owner)

    def _lost_in_queue(self, upload_id: str, record: UploadRecord) -> bool:
        """Queued (or last published again) long ago and never started: the caller that marked
        it may have died before its publish (a Lambda timeout), so no message may exist for it."""
        after = self.settings.requeue_stuck_after_s
        marked = self.status.marked_at(upload_id, State.QUEUED) if after else None
        if marked is None:
            return False
        requeued = record.requeued_at
        if requeued:
            marked = max(marked, datetime.strptime(requeued, TIME_FORMAT)
                         .replace(tzinfo=timezone.utc))
        return (datetime.now(timezone.utc) - marked).total_seconds() > after

    def _publish_again(self, upload_id: str, record: UploadRecord) -> dict:
        # At least once: if the first message was only stuck behind a long backlog, the job
        # runs twice; the second run answers from the manifest (a second job.done event).
        etag = self._verify_original(upload_id, record)
        try:
            self.publisher.publish(self._job(upload_id, record, etag))
        except TransientError as exc:  # the marker stays: the next call tries again
            LOGGER.warning("upload %s not published again: %s", upload_id, exc)
            raise ApiError(503, exc.code, exc.public_message,
                           retry_after=BROKER_RETRY_AFTER_S) from exc
        # When it was published again, so the next call waits another requeue_stuck_after_s
        # instead of publishing once more (the queued marker is never overwritten).
        self.status.put_upload_record(record.requeued())
        LOGGER.warning("upload %s was queued over %ds ago and never started: job published "
                       "again", upload_id, self.settings.requeue_stuck_after_s)
        return {"upload_id": upload_id, "status": State.QUEUED}

    def _verify_original(self, upload_id: str, record: UploadRecord) -> str:
        """Check the uploaded object; returns the ETag of what was checked."""
        key = keys.original_key(upload_id)
        try:
            head = self.s3.head_object(Bucket=self.settings.bucket, Key=key)
        except Exception as exc:
            if errors.is_missing_object(exc):
                raise ApiError(409, errors.OBJECT_MISSING,
                               "nothing was uploaded yet; upload the file, then complete") from None
            raise
        size = head["ContentLength"]
        if size == 0:
            self._fail(upload_id, errors.EMPTY_UPLOAD, "the uploaded file is empty")
        if size > self.settings.max_upload_bytes:
            self._fail(upload_id, errors.TOO_LARGE, f"the uploaded file is {size} bytes, over "
                       f"the limit of {self.settings.max_upload_bytes}")
        if size != record.size:
            # S3 enforces the signed size, but not every store does (nor moto): checked here too.
            self._fail(upload_id, errors.SIZE_MISMATCH, f"the uploaded file is {size} bytes, "
                       f"not the {record.size} declared")
        etag = head["ETag"]
        try:
            head_bytes = self.s3.get_object(
                Bucket=self.settings.bucket, Key=key, Range=f"bytes=0-{formats.SNIFF_BYTES - 1}",
                IfMatch=etag,
            )["Body"].read()
        except Exception as exc:
            if errors.aws_error_code(exc) in ("PreconditionFailed", "412"):
                raise ApiError(409, errors.OBJECT_CHANGED, "the file was replaced while it was being "
                               "verified; complete again") from None
            raise
        sniffed = formats.sniff(head_bytes)
        if sniffed is None or sniffed not in self.settings.allowed_types:
            self._fail(upload_id, errors.UNSUPPORTED_FORMAT,
                       "the uploaded file is not an image in an allowed format")
        if sniffed != record.content_type:
            self._fail(upload_id, errors.CONTENT_TYPE_MISMATCH,
                       f"the file is {sniffed}, but {record.content_type} was declared")
        return etag

    def _fail(self, upload_id: str, code: str, message: str) -> None:
        # The original stays in S3 (nothing is lost); the failed marker makes this final.
        error = {"code": code, "message": message}
        self.status.mark(upload_id, State.FAILED, error=error, exclusive=True)
        LOGGER.info("upload %s rejected: %s", upload_id, code)
        raise ApiError(422, code, message)

    # --- DELETE /uploads/{id} -----------------------------------------------------------------
    def cancel(self, upload_id: str, caller: Caller | None = None) -> dict:
        """Cancel a pending upload: status ``failed`` (``cancelled``), its multipart aborted."""
        record = self._upload_record(upload_id, caller)
        current = self.status.state_of(upload_id)
        if current.state == State.PENDING:
            error = {"code": errors.CANCELLED, "message": "the upload was cancelled by its client"}
            # The failed marker first: a complete racing this one then finds the upload over.
            if self.status.mark(upload_id, State.FAILED, error=error, exclusive=True):
                current = status.Status(upload_id, State.FAILED, error)
            else:  # failed first by a racing complete: its error is the answer
                current = self.status.state_of(upload_id)
            if record.multipart is not None:
                self.multipart.abort(keys.original_key(upload_id), record.multipart.s3_upload_id)
            LOGGER.info("upload %s cancelled", upload_id)
        elif current.state != State.FAILED:
            raise ApiError(409, errors.NOT_CANCELLABLE, f"upload {upload_id} is {current.state} and "
                           "can no longer be cancelled")
        # Neither state has variants: no manifest or presigned URL to fetch.
        return {"upload_id": upload_id, "status": current.state, "variants": [], "srcset": "",
                "error": current.error}

    # --- GET /uploads/{id} --------------------------------------------------------------------
    def get_status(self, upload_id: str, api_url: str | None = None,
                   caller: Caller | None = None) -> dict:
        """The upload's state and, once done, its variants with their URLs and a ``srcset`` of
        the width-based ones. ``api_url`` is where the request reached the API (the stable URLs
        point there when the stage does not name its public URL)."""
        if caller is not None:  # only its owner may know the upload exists
            self._upload_record(upload_id, caller)
        current = self.status.current(upload_id) if keys.is_upload_id(upload_id) else None
        if current is None:
            raise _not_found(upload_id)
        variants = []
        spec: tuple[dict, ...] = ()
        if current.state == State.DONE:
            manifest = self.status.get_manifest(upload_id)
            if manifest is not None:
                spec = manifest.spec
                variants = [self._variant_view(v, delivery.made_at(manifest, v), api_url)
                            for v in manifest.variants]
        return {
            "upload_id": upload_id,
            "status": current.state,
            "variants": variants,
            "srcset": delivery.srcset(variants, spec),
            "error": current.error,
        }

    def _variant_view(self, variant: VariantInfo, issued_at: str, api_url: str | None) -> dict:
        url = delivery.variant_url(self.settings, variant.key, issued_at, api_url=api_url,
                                   s3=self.s3)
        view = {name: getattr(variant, name) for name in ("name", "width", "height", "format",
                                                          "bytes")}
        return {**view, "url": url}

    # --- GET /v/{upload_id}/{name}.{ext} ------------------------------------------------------
    def variant_redirect(self, upload_id: str, filename: str, query: dict | None) -> dict:
        """Where a stable variant URL leads: ``{"location", "headers"}`` of a 302 to a fresh
        presigned GET. A URL this stage did not sign (or one past its ``exp``) is not found,
        exactly as an unknown upload is: it tells a guesser nothing."""
        try:
            delivery.verified_key(self.settings, upload_id, filename, query)
        except delivery.BadSignature as exc:
            LOGGER.info("stable URL refused for %r: %s", upload_id[:64], exc)
            raise _not_found(upload_id) from None
        # Only after the signature: an unsigned request costs no S3 read. A rerender may have
        # moved the variant; the manifest says where it is now.
        key = delivery.current_key(self.status.get_manifest(upload_id), upload_id, filename)
        location, headers = delivery.redirect(self.settings, self.s3, key)
        return {"location": location, "headers": headers}

    def _upload_record(self, upload_id: str, caller: Caller | None = None) -> UploadRecord:
        """The upload's record; to a ``caller`` who does not own it, the same 404 as for an
        upload that does not exist (nobody learns which ids are taken). An upload made while
        the stage had no auth has no owner, so nobody may reach it once auth is on."""
        record = self.status.get_upload_record(upload_id) if keys.is_upload_id(upload_id) else None
        if record is None or (caller is not None and record.owner != caller.sub):
            raise _not_found(upload_id)
        return record


def _not_found(upload_id: str) -> ApiError:
    return ApiError(404, errors.NOT_FOUND, f"no upload {upload_id[:64]!r}")


def _required(payload: dict, name: str, kind: type = object):
    if name not in payload or payload[name] is None:
        raise ApiError(400, errors.INVALID_REQUEST, f"field {name!r} is required")
    value = payload[name]
    if not isinstance(value, kind):
        raise ApiError(400, errors.INVALID_REQUEST, f"field {name!r} must be a {kind.__name__}")
    return value


def _part_numbers(value, plan: PartPlan) -> list[int]:
    numbers = [_whole_number(n) for n in value] if isinstance(value, list) else [None]
    if None in numbers:
        raise ApiError(400, errors.INVALID_REQUEST, "field 'part_numbers' must be a list of integers")
    value = numbers
    outside = [n for n in value if n not in plan.numbers]
    if outside:
        raise ApiError(400, errors.INVALID_REQUEST, f"part numbers must be 1..{plan.count}; got "
                       f"{', '.join(map(str, outside[:10]))}")
    return sorted(set(value))


def _given_parts(value, plan: PartPlan) -> list[dict]:
    """The client's ``[{"part_number", "etag"}]``, checked for shape and range."""
    if not isinstance(value, list) or not all(
            isinstance(p, dict) and _whole_number(p.get("part_number")) is not None
            and isinstance(p.get("etag"), str) and p["etag"] for p in value):
        raise ApiError(400, errors.INVALID_REQUEST, "field 'parts' must be a list of "
                       "{part_number: integer, etag: string}")
    numbers = [_whole_number(p["part_number"]) for p in value]
    _part_numbers(numbers, plan)
    if len(set(numbers)) != len(numbers):
        raise ApiError(400, errors.INVALID_REQUEST, "field 'parts' names a part more than once")
    return [{"part_number": n, "etag": p["etag"]} for n, p in zip(numbers, value)]


def _whole_number(value) -> int | None:
    """An integer as JSON means it (``5`` or ``5.0``), else None; never a boolean."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _sanitised_filename(filename: str) -> str:
    """The declared name, for display only: never part of a key, so a path or control
    characters in it can do no harm beyond this record."""
    if not filename.strip() or len(filename) > MAX_FILENAME_CHARS:
        raise ApiError(400, errors.INVALID_REQUEST,
                       f"field 'filename' must be 1..{MAX_FILENAME_CHARS} characters")
    base = _PATH_SEPARATORS.split(filename)[-1]
    printable = "".join(c for c in base if not unicodedata.category(c).startswith("C"))
    cleaned = printable.strip()[:MAX_FILENAME_CHARS]
    if not cleaned:
        raise ApiError(400, errors.INVALID_REQUEST, "field 'filename' must name a file")
    return cleaned


def _check_sha256(checksum) -> None:
    try:
        digest = base64.b64decode(checksum, validate=True) if isinstance(checksum, str) else b""
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != SHA256_BYTES:
        raise ApiError(400, errors.INVALID_CHECKSUM,
                       "checksum_sha256 must be the base64 of a 32-byte SHA-256 digest")

