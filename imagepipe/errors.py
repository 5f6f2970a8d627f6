"""Errors and their retry meaning, and every reason code a user or a client can see.

A ``JobError`` carries a stable reason ``code`` (part of the public contract: it appears in the
status document, result events and dead-lettered messages), a human ``message`` and whether it is
``permanent`` (retrying cannot help: reject to the dead-letter exchange, status ``failed``) or
transient (retry with backoff up to the delivery limit).

``classify`` is the one function that maps any exception to that meaning; around decoding an
upload, ``decode_error`` first says which exceptions mean the file's data is bad.

An ``ApiError`` is what the upload API answers: an HTTP status with a reason code (one of the
codes below) in ``{"error": {"code", "message"}}``. The API client parses that body with
``ApiError.from_body`` and reports the same codes, plus its own for failures no server saw.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys

# --- reason codes -----------------------------------------------------------------------------
# permanent: the input is bad
UNSUPPORTED_FORMAT = "unsupported_format"
TOO_MANY_PIXELS = "too_many_pixels"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
TOO_LARGE = "too_large"
EMPTY_UPLOAD = "empty_upload"
SIZE_MISMATCH = "size_mismatch"  # the upload is not the size its creator declared
CONTENT_TYPE_MISMATCH = "content_type_mismatch"
SOURCE_MISSING = "source_missing"
SOURCE_CHANGED = "source_changed"
BAD_MESSAGE = "bad_message"
UNKNOWN_SCHEMA = "unknown_schema_version"
# transient: the world is briefly unwell
S3_UNAVAILABLE = "s3_unavailable"
BROKER_UNAVAILABLE = "broker_unavailable"
INVOKE_FAILED = "invoke_failed"
INTERNAL = "internal_error"
# a completion callback could not be delivered (after its retries, or refused for good)
CALLBACK_FAILED = "callback_failed"

# --- API error codes (beyond the job reason codes above) --------------------------------------
INVALID_JSON = "invalid_json"
INVALID_REQUEST = "invalid_request"
UNSUPPORTED_TYPE = "unsupported_type"
INVALID_SIZE = "invalid_size"
UNSUPPORTED_METHOD = "unsupported_method"
INVALID_CHECKSUM = "invalid_checksum"
NOT_FOUND = "not_found"
OBJECT_MISSING = "object_missing"
OBJECT_CHANGED = "object_changed"
NOT_MULTIPART = "not_multipart"
PARTS_MISSING = "parts_missing"
INVALID_PARTS = "invalid_parts"
BAD_CALLBACK_URL = "bad_callback_url"
NOT_CANCELLABLE = "not_cancellable"
ORIGIN_NOT_ALLOWED = "origin_not_allowed"  # a refused CORS preflight
# Bearer tokens (imagepipe.auth), on a stage with auth: no usable token (401), over the token's
# bounds (403), the identity provider's keys out of reach (503).
UNAUTHORIZED = "unauthorized"
QUOTA_EXCEEDED = "quota_exceeded"
AUTH_UNAVAILABLE = "auth_unavailable"
# The reason code in the status of an upload its client cancelled (and of a client stopped
# by its user).
CANCELLED = "cancelled"

# --- codes of failures only the API client sees (no server answered them) ---------------------
NETWORK_ERROR = "network_error"
HTTP_ERROR = "http_error"  # an answer without our error body (a proxy, S3)
TIMEOUT = "timeout"
UPLOAD_INCOMPLETE = "upload_incomplete"

_MISSING_AWS_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

# Faults of ours or of the services we call: their messages name roles, hosts and exception
# reprs. Clients (the status document, result events, callbacks, API answers) get the code and
# this plain message; the detail stays in the logs and the dead letter's headers.
PUBLIC_MESSAGES = {
    S3_UNAVAILABLE: "storage was unavailable",
    BROKER_UNAVAILABLE: "the job queue is unavailable; retry later",
    INVOKE_FAILED: "the resize function could not be run",
    INTERNAL: "an internal error occurred",
    CALLBACK_FAILED: "the callback could not be delivered",
}


class ImagepipeError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ImagepipeError):
    """Settings, the deploy manifest or the variant spec are invalid (names the bad field)."""


class JobError(ImagepipeError):
    permanent: bool = False

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}

    @property
    def public_message(self) -> str:
        return PUBLIC_MESSAGES.get(self.code, self.message)


def public(error: dict | None) -> dict | None:
    """An error as clients may see it: the code, and for a fault of ours a plain message."""
    if error is None or error.get("code") not in PUBLIC_MESSAGES:
        return error
    # How many attempts were made is ours to tell; what failed inside them is not.
    _, gave_up_after, attempts = str(error.get("message", "")).rpartition(_GAVE_UP)
    suffix = f"{_GAVE_UP}{attempts}" if gave_up_after else ""
    return {**error, "message": PUBLIC_MESSAGES[error["code"]] + suffix}


class ApiError(ImagepipeError):
    """An outcome the API's client gets as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """True when the same call can succeed later without the client changing anything."""
        return self.status >= 500

    def to_body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    @classmethod
    def from_body(cls, status: int, body) -> "ApiError | None":
        """The error a response body in our format describes, or None for any other body."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or "code" not in error or "message" not in error:
            return None
        return cls(status, str(error["code"]), str(error["message"]))


class PermanentError(JobError):
    permanent = True


class TransientError(JobError):
    permanent = False


def classify(exc: BaseException) -> JobError:
    """Map any exception raised while handling a job to a ``JobError`` with its retry meaning.

    Unknown exceptions are transient: a retry costs little, and after the delivery limit the job
    is dead-lettered with its cause rather than lost.
    """
    if isinstance(exc, JobError):
        return exc
    aws = _classify_aws(exc)
    if aws is not None:
        return aws
    pil = _classify_pillow(exc)
    if pil is not None:
        return pil
    if isinstance(exc, MemoryError):
        return PermanentError(TOO_LARGE, "image needs more memory than this worker has")
    if isinstance(exc, (socket.timeout, TimeoutError, ConnectionError)):
        return TransientError(S3_UNAVAILABLE, f"network error: {exc}")
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.ECONNREFUSED):
        return TransientError(S3_UNAVAILABLE, f"network error: {exc}")
    return TransientError(INTERNAL, f"{type(exc).__name__}: {exc}")


def invoke_failed(cause: BaseException | str) -> TransientError:
    """The single mapping for "the resize function could not be run or gave no usable answer".

    This is never a permanent error. A missing function, a denied permission, a throttle, a
    crashed worker or a garbled reply all come from the platform, not from the job. An operator
    can fix them, and then a retry or a replay from the dead-letter queue succeeds.
    ``classify`` is not used for these: its AWS mapping is about S3 objects (a 404 there means
    the upload is missing, which is permanent).
    """
    if isinstance(cause, TransientError) and cause.code == INVOKE_FAILED:
        return cause
    if isinstance(cause, BaseException):
        cause = f"{type(cause).__name__}: {cause}"
    return TransientError(INVOKE_FAILED, cause)


def bad_message(exc: BaseException) -> PermanentError:
    """The error for a message body that could not be decoded into a job.

    The same body fails to decode on every delivery, so this is permanent (``bad_message``,
    naming the decode failure). A ``PermanentError`` raised by the decoder (``bad_message`` or
    ``unknown_schema_version``) is returned as it is.
    """
    if isinstance(exc, PermanentError):
        return exc
    return PermanentError(BAD_MESSAGE, f"{type(exc).__name__}: {exc}")


_GAVE_UP = " (gave up after "


def gave_up(message: str, attempts: int) -> str:
    """The message of a transient error that ran out of attempts (then final, like a permanent one)."""
    return f"{message}{_GAVE_UP}{attempts} attempts)"


def aws_error_code(exc: BaseException) -> str:
    """The error code of a botocore ``ClientError`` (``NoSuchKey``, ``PreconditionFailed``, …),
    or "" for any other exception."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def is_missing_object(exc: BaseException) -> bool:
    return aws_error_code(exc) in _MISSING_AWS_CODES


def _classify_aws(exc: BaseException) -> JobError | None:
    botocore_exceptions = sys.modules.get("botocore.exceptions")
    if botocore_exceptions is None:
        return None
    if isinstance(exc, botocore_exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = aws_error_code(exc)
        if code in _MISSING_AWS_CODES:
            return PermanentError(SOURCE_MISSING, "the uploaded object does not exist")
        if code in ("PreconditionFailed", "412"):
            return PermanentError(SOURCE_CHANGED, "the original was replaced after it was verified")
        # Throttling, 5xx and also access errors: an operator can fix a policy, then the
        # redelivery (or a replay from the dead-letter queue) succeeds.
        return TransientError(S3_UNAVAILABLE, f"S3 {code}: {error.get('Message', '')}")
    if isinstance(
        exc,
        (
            botocore_exceptions.EndpointConnectionError,
            botocore_exceptions.ConnectionClosedError,
            botocore_exceptions.ReadTimeoutError,
            botocore_exceptions.ConnectTimeoutError,
        ),
    ):
        return TransientError(S3_UNAVAILABLE, str(exc))
    return None


def _classify_pillow(exc: BaseException) -> JobError | None:
    # Pillow is only loaded where images are decoded; the upload function never imports it.
    pil_image = sys.modules.get("PIL.Image")
    if pil_image is None:
        return None
    if isinstance(exc, pil_image.DecompressionBombError):
        return PermanentError(TOO_MANY_PIXELS, str(exc))
    if isinstance(exc, pil_image.UnidentifiedImageError):
        return PermanentError(UNSUPPORTED_FORMAT, "not an image in an allowed format")
    return None


def decode_error(exc: BaseException) -> JobError | None:
    """What an exception raised while *decoding* an upload (reading its header or its pixels)
    means, or None when it is not about the image's data (then ``classify`` decides).

    Pillow's decoders report bad data as OSError, SyntaxError, ValueError or EOFError, and its
    plugins, parsing a hostile header, also raise IndexError, KeyError, struct.error or
    ArithmeticError (found by fuzzing). Only around decoding do these mean a bad file: raised
    by an encoder they are a fault of ours or of the encoder, which ``classify`` leaves
    transient (``internal_error``) rather than blame the user's file.
    """
    pil = _classify_pillow(exc)
    if pil is not None:
        return pil
    if isinstance(exc, _PILLOW_DATA_ERRORS) and _from_pillow(exc):
        return data_error(str(exc), truncated=isinstance(exc, EOFError))
    return None


def data_error(text: str, *, truncated: bool = False) -> PermanentError:
    """The one rule for a decoder's complaint about the data: ``truncated`` when it ran out
    of data (or says so), else ``corrupt``. Used for Pillow's and libvips' decoders."""
    lowered = text.lower()
    if truncated or "truncated" in lowered or "premature end" in lowered:
        return PermanentError(TRUNCATED, f"image data is truncated: {text}")
    return PermanentError(CORRUPT, f"image data is corrupt: {text}")


_PILLOW_DATA_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, ArithmeticError,
)


def _from_pillow(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("PIL."):
            return True
        tb = tb.tb_next
    return False
