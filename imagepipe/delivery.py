"""Variant delivery: the URL of each variant, and the headers a variant is stored with.

The stage's ``delivery`` setting picks how variants are reached:

- ``redirect`` (the default): a stable URL of the upload function,
  ``{api}/v/{upload_id}/{name}.{ext}?sig=...``, signed with the stage's key so that it cannot
  be guessed or altered. It never expires unless the stage sets a lifetime (then an ``exp``
  parameter is signed too). The function answers it with a 302 to a fresh, short-lived
  presigned GET; the redirect itself may be cached privately for a little less than that. It
  needs no header, so it works in an ``<img>`` tag. Several keys may be valid at once: the
  first signs, any verifies, so a key can be rotated. A stage with no key falls back to
  ``presigned`` (and says so in its log). The URL names the variant's file, not its key: the
  function finds the current key in the manifest, so a URL a page kept still works after a
  rerender (``python -m imagepipe backfill``) moved the variant under its fingerprint.
- ``cdn`` (cloud): ``https://{distribution}/{key}`` (``variants/{upload_id}/{name}.{ext}``, or
  under the fingerprint folder once re-rendered: a new key, a new URL), a CloudFront
  distribution reading the private bucket through Origin Access Control. Public but
  unguessable, and cached at the edge: the objects are immutable under their keys.
- ``presigned``: no stable URL. Every read of ``GET /uploads/{id}`` presigns a new GET, valid
  for ``download_expires``.

``variant_url`` makes every URL a client sees (the manifest, the result events, the callbacks
and ``GET /uploads/{id}``), so they are the same string everywhere and on every read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
import unicodedata
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

from imagepipe import keys
from imagepipe.errors import ConfigError
from imagepipe.messages import TIME_FORMAT, Manifest, VariantInfo
from imagepipe.settings import (
    ENV_CDN_DOMAIN,
    ENV_DELIVERY_KEYS,
    ENV_PUBLIC_API_URL,
    Settings,
)

LOGGER = logging.getLogger(__name__)

REDIRECT = "redirect"
CDN = "cdn"
PRESIGNED = "presigned"
# The route of the stable URLs; it answers without authentication (an <img> sends no header).
ROUTE_PREFIX = "/v/"
SIGNATURE_PARAM = "sig"
EXPIRES_PARAM = "exp"
# 128 bits of HMAC-SHA256: unguessable, and a short URL (22 base64url characters).
SIGNATURE_BYTES = 16
# Objects never change under their key: cached for a year where the URL is public and stable.
PUBLIC_CACHE_CONTROL = "public, max-age=31536000, immutable"
PRIVATE_CACHE_CONTROL = "private"
MAX_STEM_CHARS = 120
_PATH_SEPARATORS = re.compile(r"[\\/]")
_UNSAFE_IN_NAME = re.compile(r'["\\/:*?<>|;]')
_ASCII_UNSAFE = re.compile(r"[^A-Za-z0-9 ._()+,=@~-]")


class BadSignature(LookupError):
    """A stable URL that was not made by this stage (or has expired): answered as not found."""


def mode(settings: Settings) -> str:
    """The delivery in effect: ``redirect`` needs a key, else the stage delivers ``presigned``."""
    if settings.delivery == REDIRECT and not settings.delivery_keys:
        return PRESIGNED
    return settings.delivery


def check(settings: Settings, *, needs_api_url: bool) -> None:
    """Refuse at start a stage whose delivery cannot make its URLs (``needs_api_url``: a
    component that has no request to learn the API's address from, i.e. the resize)."""
    if settings.delivery == REDIRECT and not settings.delivery_keys:
        LOGGER.warning("delivery is redirect but %s is not set: variant URLs are presigned "
                       "(they expire after download_expires)", ENV_DELIVERY_KEYS)
    if mode(settings) == REDIRECT and needs_api_url and not settings.public_api_url:
        raise ConfigError(f"{ENV_PUBLIC_API_URL} is required with delivery redirect: the "
                          "variant URLs in manifests and events point at the API")
    if mode(settings) == CDN and not settings.cdn_domain:
        raise ConfigError(f"{ENV_CDN_DOMAIN} is required with delivery cdn")


# --- the URL of a variant -----------------------------------------------------------------------

def variant_url(settings: Settings, key: str, issued_at: str, *, api_url: str | None = None,
                s3=None) -> str | None:
    """The URL of the variant stored at ``key``.

    ``issued_at`` is when the variant was made (``made_at``): a lifetime counts from it, so the
    URL is the same on every read. ``api_url`` is where this request reached the API, used when
    the stage does not name its public URL. In ``presigned`` mode the URL is a new presigned GET
    when ``s3`` is given, and None otherwise (nothing stable to put in a message).
    """
    delivery = mode(settings)
    if delivery == CDN:
        if not settings.cdn_domain:
            raise ConfigError(f"{ENV_CDN_DOMAIN} is required with delivery cdn")
        return f"https://{settings.cdn_domain.rstrip('/')}/{key}"
    if delivery == PRESIGNED:
        return None if s3 is None else presigned_get(settings, s3, key, settings.download_expires)
    base = (settings.public_api_url or api_url or "").rstrip("/")
    if not base:
        raise ConfigError(f"{ENV_PUBLIC_API_URL} is required with delivery redirect")
    upload_id, filename = _parts_of(key)
    expires = _expires_at(settings, issued_at)
    signature = sign(settings.delivery_keys[0], upload_id, filename, expires)
    query = {SIGNATURE_PARAM: signature}
    if expires is not None:
        query = {EXPIRES_PARAM: str(expires), **query}
    return f"{base}{ROUTE_PREFIX}{upload_id}/{filename}?{urlencode(query)}"


def presigned_get(settings: Settings, s3, key: str, expires_in: int) -> str:
    return s3.generate_presigned_url(
        "get_object", Params={"Bucket": settings.bucket, "Key": key}, ExpiresIn=expires_in)


def sign(key: str, upload_id: str, filename: str, expires: int | None) -> str:
    """The URL-safe, truncated HMAC-SHA256 of a stable URL's path (and expiry)."""
    message = f"{ROUTE_PREFIX}{upload_id}/{filename}"
    if expires is not None:
        message += f"?{EXPIRES_PARAM}={expires}"
    digest = hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _expires_at(settings: Settings, issued_at: str) -> int | None:
    if not settings.delivery_url_lifetime_s:
        return None
    issued = datetime.strptime(issued_at, TIME_FORMAT).replace(tzinfo=timezone.utc)
    return int(issued.timestamp()) + settings.delivery_url_lifetime_s


def _parts_of(key: str) -> tuple[str, str]:
    """``variants/{upload_id}/[{fingerprint}/]{name}.{ext}`` -> (upload_id, ``{name}.{ext}``):
    the URL names the file, not the key, so it outlives a rerender (see ``current_key``)."""
    return keys.filename_of_variant_key(key)  # refuses anything else


def made_at(manifest: Manifest, variant: VariantInfo) -> str:
    """When ``variant`` was made, for its URL's lifetime: a variant a rerender made (it lives
    under its fingerprint) counts from the manifest's last revision, any other from the first.
    A variant re-rendered by an earlier revision and left alone since counts from the latest
    one too (the manifest keeps one time per revision): its lifetime is longer, never shorter."""
    rerendered = variant.key != keys.variant_key(manifest.upload_id, variant.name, variant.format)
    return manifest.updated_at if rerendered and manifest.updated_at else manifest.created_at


def current_key(manifest: Manifest | None, upload_id: str, filename: str) -> str:
    """The key a stable URL's ``{name}.{ext}`` leads to now: the manifest's variant of that
    file name (a rerender moved it under its fingerprint), else where a first render puts it."""
    for variant in manifest.variants if manifest is not None else ():
        try:
            if keys.filename_of_variant_key(variant.key) == (upload_id, filename):
                return variant.key
        except keys.InvalidKey:
            continue
    return keys.variant_key_from_filename(upload_id, filename)


# --- answering a stable URL ---------------------------------------------------------------------

def verified_key(settings: Settings, upload_id: str, filename: str, query: dict | None,
                 now: float | None = None) -> str:
    """The variant key a stable URL names, once its signature is checked (in constant time,
    against every key) and its expiry, if any, has not passed; else ``BadSignature``."""
    query = query or {}
    if mode(settings) != REDIRECT:
        raise BadSignature("this stage has no stable URLs")
    try:
        key = keys.variant_key_from_filename(upload_id, filename)
    except keys.InvalidKey:
        raise BadSignature("not a variant") from None
    given = query.get(SIGNATURE_PARAM)
    expires_text = query.get(EXPIRES_PARAM)
    if not isinstance(given, str) or not given:
        raise BadSignature("no signature")
    expires = None
    if expires_text is not None:
        if not (isinstance(expires_text, str) and expires_text.isdigit()):
            raise BadSignature("bad expiry")
        expires = int(expires_text)
    matched = False
    for secret in settings.delivery_keys:  # every key, whatever matched: no timing hint
        matched |= hmac.compare_digest(sign(secret, upload_id, filename, expires), given)
    if not matched:
        raise BadSignature("bad signature")
    if expires is not None and (time.time() if now is None else now) >= expires:
        raise BadSignature("expired")
    return key


def redirect(settings: Settings, s3, key: str) -> tuple[str, dict[str, str]]:
    """Where a verified stable URL sends the browser, and the redirect's headers: a fresh
    presigned GET, cacheable (privately) for a little less than it lives."""
    lifetime = settings.redirect_expires_s
    location = presigned_get(settings, s3, key, lifetime)
    return location, {"Location": location,
                      "Cache-Control": f"private, max-age={lifetime * 4 // 5}",
                      "Referrer-Policy": "no-referrer"}


# --- what a variant is stored with --------------------------------------------------------------

def object_headers(settings: Settings, original_filename: str | None, variant_name: str,
                   image_format: str) -> dict[str, str]:
    """``CacheControl`` and ``ContentDisposition`` for ``put_object``: public caching only
    where URLs are public and stable (``cdn``)."""
    cache = PUBLIC_CACHE_CONTROL if mode(settings) == CDN else PRIVATE_CACHE_CONTROL
    filename = keys.variant_filename(variant_name, image_format)
    return {"CacheControl": cache,
            "ContentDisposition": content_disposition(original_filename, filename)}


def download_filename(original_filename: str | None, variant_filename: str) -> str:
    """``{original's stem}-{variant}.{ext}``: "Été 2024.heic" and ``md.jpg`` give
    "Été 2024-md.jpg"; without a usable original name just the variant's file name."""
    stem = _stem(original_filename)
    return f"{stem}-{variant_filename}" if stem else variant_filename


def content_disposition(original_filename: str | None, variant_filename: str) -> str:
    """``inline`` with a safe file name (RFC 6266): an ASCII ``filename`` for every client and
    ``filename*=UTF-8''...`` when the name has other characters."""
    name = download_filename(original_filename, variant_filename)
    stem = _stem(original_filename)
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    ascii_stem = _ASCII_UNSAFE.sub("_", ascii_stem).strip(" ._")
    ascii_name = f"{ascii_stem}-{variant_filename}" if ascii_stem else variant_filename
    header = f'inline; filename="{ascii_name}"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


def _stem(original_filename: str | None) -> str:
    """The original's name without folders, extension, control characters, quotes or
    separators (it is the client's, and ends up in a header and on a user's disk)."""
    name = _PATH_SEPARATORS.split(original_filename or "")[-1]
    stem = name.rsplit(".", 1)[0] if name.rfind(".") > 0 else name
    stem = unicodedata.normalize("NFC", stem)
    stem = "".join(c for c in stem if not unicodedata.category(c).startswith("C"))
    return _UNSAFE_IN_NAME.sub("_", stem).strip(" .")[:MAX_STEM_CHARS].strip(" .")


# --- responsive images --------------------------------------------------------------------------

def srcset(variants: list[dict], spec: list[dict] | tuple[dict, ...]) -> str:
    """``"url 256w, url 512w, ..."`` of the width-based (``fit``) variants, narrowest first; one
    candidate per width (a small source gives several fit variants of the same size)."""
    fit = {s.get("name") for s in spec if s.get("mode") == "fit"}
    by_width: dict[int, str] = {}
    for variant in sorted(variants, key=lambda v: (v["width"], v.get("bytes", 0))):
        if variant.get("name") in fit and variant.get("url") and variant["width"] not in by_width:
            by_width[variant["width"]] = variant["url"]
    return ", ".join(f"{url} {width}w" for width, url in by_width.items())
