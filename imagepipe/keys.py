"""The S3 key grammar: every object key the pipeline reads or writes is made and parsed here.

Layout of the bucket (one prefix per kind, so IAM policies and S3 notifications can target each)::

    uploads/{upload_id}.json                 upload record: what the client declared
    originals/{upload_id}                    the uploaded bytes (written by the browser)
    status/{upload_id}/{state}.json          one marker per state reached (queued, processing,
                                             done, failed); only ever added, so writers never race
    manifests/{upload_id}.json               what the resize made; written last, the completion marker
    variants/{upload_id}/{name}.{ext}        the resized images, as first made
    variants/{upload_id}/{fp}/{name}.{ext}   a variant made again by a rerender (``backfill``),
                                             under its definition's fingerprint: a new key, so
                                             the old set stays whole until the manifest moves on
    tokens/{token_id}/uploads/{n}            the n-th upload (1-based, zero-padded) made with one
                                             bearer token; written once each (``quotas``)

``upload_id`` is 32 lowercase hex characters made by the server (never the client's filename);
``token_id`` is 32 lowercase hex characters too, a hash of the token's issuer, subject and jti
(``auth.Caller.token_id``), never the client's text.
Keys are deterministic: a redelivered job rewrites exactly the same keys.
"""

from __future__ import annotations

import re
import secrets

UPLOAD_ID_PATTERN = re.compile(r"[0-9a-f]{32}")  # always with fullmatch: "$" admits "\n"
FINGERPRINT_PATTERN = re.compile(r"[0-9a-f]{16}")  # ``fingerprint.FINGERPRINT_CHARS``
# A variant name (``spec``: lowercase letters, digits, ``_``, ``-``) and an extension; fullmatch.
_VARIANT_FILENAME = re.compile(r"([a-z0-9][a-z0-9_-]{0,31})\.([a-z]{2,5})")

UPLOADS_PREFIX = "uploads/"
ORIGINALS_PREFIX = "originals/"
STATUS_PREFIX = "status/"
MANIFESTS_PREFIX = "manifests/"
VARIANTS_PREFIX = "variants/"
TOKENS_PREFIX = "tokens/"

FORMAT_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif"}


class InvalidKey(ValueError):
    pass


def new_upload_id() -> str:
    return secrets.token_hex(16)


def is_upload_id(value: str) -> bool:
    return isinstance(value, str) and bool(UPLOAD_ID_PATTERN.fullmatch(value))


def _checked(upload_id: str) -> str:
    if not is_upload_id(upload_id):
        raise InvalidKey(f"not an upload id: {upload_id!r}")
    return upload_id


def upload_record_key(upload_id: str) -> str:
    return f"{UPLOADS_PREFIX}{_checked(upload_id)}.json"


def original_key(upload_id: str) -> str:
    return f"{ORIGINALS_PREFIX}{_checked(upload_id)}"


def status_prefix(upload_id: str) -> str:
    return f"{STATUS_PREFIX}{_checked(upload_id)}/"


def status_marker_key(upload_id: str, state: str) -> str:
    return f"{status_prefix(upload_id)}{state}.json"


def state_from_marker_key(key: str) -> str:
    """``status/{id}/done.json`` → ``done``."""
    if not key.startswith(STATUS_PREFIX) or not key.endswith(".json"):
        raise InvalidKey(f"not a status marker key: {key!r}")
    return key.rsplit("/", 1)[-1][: -len(".json")]


def manifest_key(upload_id: str) -> str:
    return f"{MANIFESTS_PREFIX}{_checked(upload_id)}.json"


def variant_key(upload_id: str, variant_name: str, image_format: str,
                fingerprint: str | None = None) -> str:
    """Where a variant is stored: with ``fingerprint`` (a rerender), in that fingerprint's
    folder, so it never overwrites the object a reader of the previous manifest may load."""
    filename = variant_filename(variant_name, image_format)
    if fingerprint is None:
        return f"{variants_prefix(upload_id)}{filename}"
    if not FINGERPRINT_PATTERN.fullmatch(fingerprint or ""):
        raise InvalidKey(f"not a variant fingerprint: {fingerprint!r}")
    return f"{variants_prefix(upload_id)}{fingerprint}/{filename}"


def variants_prefix(upload_id: str) -> str:
    return f"{VARIANTS_PREFIX}{_checked(upload_id)}/"


def filename_of_variant_key(key: str) -> tuple[str, str]:
    """``variants/{id}/[{fp}/]{name}.{ext}`` -> (upload_id, ``{name}.{ext}``); ``InvalidKey``
    for any other key."""
    parts = key.split("/") if isinstance(key, str) else []
    if not (len(parts) in (3, 4) and f"{parts[0]}/" == VARIANTS_PREFIX):
        raise InvalidKey(f"not a variant key: {str(key)[:120]!r}")
    if len(parts) == 4 and not FINGERPRINT_PATTERN.fullmatch(parts[2]):
        raise InvalidKey(f"not a variant key: {key[:120]!r}")
    upload_id, filename = parts[1], parts[-1]
    variant_key_from_filename(upload_id, filename)  # checks both
    return upload_id, filename


def variant_filename(variant_name: str, image_format: str) -> str:
    """``{name}.{ext}``: the last segment of a variant's key (and of its stable URL)."""
    try:
        ext = FORMAT_EXTENSIONS[image_format]
    except KeyError:
        raise InvalidKey(f"no extension for format {image_format!r}") from None
    return f"{variant_name}.{ext}"


def variant_key_from_filename(upload_id: str, filename: str) -> str:
    """The key of ``{name}.{ext}`` under an upload; ``InvalidKey`` for anything else (a path,
    an unknown extension), so a request can never name another prefix."""
    match = _VARIANT_FILENAME.fullmatch(filename or "")
    if not match or match.group(2) not in FORMAT_EXTENSIONS.values():
        raise InvalidKey(f"not a variant file name: {filename[:80]!r}")
    return f"{VARIANTS_PREFIX}{_checked(upload_id)}/{filename}"


def upload_id_from_original_key(key: str) -> str:
    """The inverse of ``original_key``, for S3 ObjectCreated notifications."""
    if not key.startswith(ORIGINALS_PREFIX):
        raise InvalidKey(f"not an original's key: {key!r}")
    return _checked(key[len(ORIGINALS_PREFIX):])


def token_uploads_prefix(token_id: str) -> str:
    if not is_upload_id(token_id):  # the same shape: 32 hex characters
        raise InvalidKey(f"not a token id: {token_id!r}")
    return f"{TOKENS_PREFIX}{token_id}/uploads/"


def token_upload_key(token_id: str, number: int) -> str:
    """The key of the ``number``-th upload made with a token; sorts by number."""
    if not isinstance(number, int) or number < 1:
        raise InvalidKey(f"not an upload number: {number!r}")
    return f"{token_uploads_prefix(token_id)}{number:010d}"
