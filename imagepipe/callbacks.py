"""Completion callbacks: which URLs may be called back, and how a callback is signed.

A callback URL is checked twice: when the upload is created (``check_url``: a clear 400 for the
client) and again right before each delivery (``resolve_target``), because the name may resolve
elsewhere by then (DNS rebinding). Only ``https`` targets whose every address is public are
allowed, unless the stage allows private targets (the local stage, for tests), which also allows
plain ``http``. The delivery connects to an address vetted here, never re-resolving the name.

Signature (documented in the README): with ``t`` the Unix time in seconds, sent as
``X-Imagepipe-Timestamp``, the header ``X-Imagepipe-Signature`` is
``sha256=<hex HMAC-SHA256(secret, f"{t}.".encode() + body)>`` over the exact body bytes.
A receiver recomputes it, compares in constant time and refuses old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Imagepipe-Signature"
TIMESTAMP_HEADER = "X-Imagepipe-Timestamp"
EVENT_HEADER = "X-Imagepipe-Event"
DELIVERY_HEADER = "X-Imagepipe-Delivery"
SIGNATURE_PREFIX = "sha256="
# How old a signed timestamp a receiver should accept (our retries re-sign each attempt).
DEFAULT_TOLERANCE_S = 300
MAX_URL_CHARS = 2048
_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


class CallbackUrlError(ValueError):
    """The URL may not be called back; the message says why (safe to show the client)."""


@dataclass(frozen=True)
class Target:
    """A checked callback URL and the addresses it may be reached at."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]


def check_url(url, allow_private: bool) -> str:
    """The URL if it may be called back (resolving its host); else ``CallbackUrlError``."""
    resolve_target(url, allow_private)
    return url


def resolve_target(url, allow_private: bool, resolver=socket.getaddrinfo) -> Target:
    scheme, host, port, path = _parse(url, allow_private)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = (str(literal),)
    elif allow_private:
        addresses = (host,)  # any address will do: connect by name
    else:
        try:
            found = resolver(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise CallbackUrlError(f"callback host {host!r} does not resolve: {exc}") from None
        addresses = tuple(dict.fromkeys(info[4][0] for info in found))
        if not addresses:
            raise CallbackUrlError(f"callback host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise CallbackUrlError(f"callback host {host!r} is not a public address "
                                       f"({address}); private, loopback, link-local and "
                                       "reserved ranges are refused")
    return Target(url, scheme, host, port, path, addresses)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return ip.is_global and not ip.is_multicast


def _parse(url, allow_private: bool) -> tuple[str, str, int, str]:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise CallbackUrlError(f"callback_url must be a URL of 1..{MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise CallbackUrlError("callback_url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackUrlError(f"callback_url is not a valid URL: {exc}") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in schemes:
        raise CallbackUrlError(f"callback_url must use {' or '.join(schemes)}")
    if parts.username is not None or parts.password is not None:
        raise CallbackUrlError("callback_url must not carry credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackUrlError("callback_url has no host")
    host = _checked_host(host)
    scheme = parts.scheme.lower()
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return scheme, host, port or (443 if scheme == "https" else 80), path


def _checked_host(host: str) -> str:
    """An IP literal or a DNS name (an internationalised one in its ASCII form)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    if not _HOSTNAME.match(ascii_host):
        raise CallbackUrlError(f"callback_url host {host!r} is not a valid host name")
    return ascii_host


# --- signing -----------------------------------------------------------------------------------

def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + digest.hexdigest()


def signed_headers(secret: str, body: bytes, *, event_type: str, delivery_id: str,
                   now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        "User-Agent": "imagepipe-callbacks/1",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_id,
    }


def verify(secret: str, headers, body: bytes, *, tolerance_s: int = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """What a receiver does: the signature matches the body and the timestamp is recent."""
    lowered = {str(k).lower(): v for k, v in dict(headers).items()}
    try:
        timestamp = int(lowered[TIMESTAMP_HEADER.lower()])
        given = str(lowered[SIGNATURE_HEADER.lower()])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), given)
