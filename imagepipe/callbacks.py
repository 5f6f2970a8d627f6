"""Completion callbacks: which URLs may be called back, and how a callback is signed.

A callback URL is checked twice: when the upload is created (``check_url``: a clear 400 for the
client) and again right before each delivery (``resolve_target``), because the name may resolve
elsewhere by then (DNS rebinding). Only ``https`` targets whose every address is public are
allowed, unless the stage allows private targets (the local stage, for tests), which also allows
plain ``http``. The delivery connects to an address vetted here, never re-resolving the name.

Signing follows the Standard Webhooks specification (https://www.standardwebhooks.com/), so a
receiver verifies with its reference libraries (``standardwebhooks`` on PyPI and npm):
``webhook-id`` is the same on every retry of one event (deduplicate on it), ``webhook-timestamp``
the Unix time of this attempt, and ``webhook-signature`` one ``v1,<base64 HMAC-SHA256>`` per
stage secret, space-separated, each over ``f"{id}.{timestamp}.".encode() + body`` with the
secret's key (the base64 after ``whsec_``). Several secrets sign at once while a receiver moves
from an old secret to a new one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# The specification's advice: keys of 24 to 64 random bytes.
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
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
                # The resolved address stays out of the message: it would map a private network.
                raise CallbackUrlError(f"callback host {host!r} is not a public address; "
                                       "private, loopback, link-local and reserved ranges "
                                       "are refused")
    return Target(url, scheme, host, port, path, addresses)


def is_public(address: str) -> bool:
    """Whether an address, and every IPv4 address embedded in it, is globally reachable.

    IPv6 can carry an IPv4 address that a gateway or the host itself reaches: IPv4-mapped
    (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``), NAT64 (``64:ff9b::/96``,
    ``64:ff9b:1::/48``), 6to4 (``2002::/16``) and Teredo; each embedded address must be public
    too, or ``64:ff9b::7f00:1`` would reach 127.0.0.1 through a NAT64 gateway.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    translated = _translated_ipv4(ip)
    if translated is not None:  # the IPv6 address is only another spelling of an IPv4 one
        return _globally_reachable(translated)
    tunnelled = [] if not isinstance(ip, ipaddress.IPv6Address) else [
        v4 for v4 in (ip.sixtofour, *(ip.teredo or ())) if v4 is not None]
    return _globally_reachable(ip) and all(_globally_reachable(v4) for v4 in tunnelled)


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _globally_reachable(ip: _IP) -> bool:
    return (ip.is_global and not ip.is_multicast and not ip.is_reserved
            and not ip.is_unspecified)


def _translated_ipv4(ip: _IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, IPv4-compatible or NAT64 address stands for."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _IPV4_COMPATIBLE and int(ip) > 1 or any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


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
    if not _HOSTNAME.fullmatch(ascii_host):
        raise CallbackUrlError(f"callback_url host {host!r} is not a valid host name")
    return ascii_host


# --- signing -----------------------------------------------------------------------------------

def signing_keys(secrets: str) -> tuple[bytes, ...]:
    """The keys of a stage's ``whsec_…`` secrets (space- or comma-separated); ``ValueError``
    naming the bad one's position, never its value, if one is malformed."""
    keys = []
    for n, secret in enumerate(secrets.replace(",", " ").split(), start=1):
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError(f"secret {n} does not start with {SECRET_PREFIX!r}")
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"secret {n} is not base64 after {SECRET_PREFIX!r}") from None
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise ValueError(f"secret {n} must hold {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes, "
                             f"not {len(key)}")
        keys.append(key)
    return tuple(keys)


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    import secrets

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(secrets: str, body: bytes, *, message_id: str,
                   now: float | None = None) -> dict[str, str]:
    """The request headers of one delivery attempt, signed with every one of ``secrets``."""
    timestamp = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        "User-Agent": "imagepipe-callbacks/1",
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(signature(key, message_id, timestamp, body)
                                   for key in signing_keys(secrets)),
    }
