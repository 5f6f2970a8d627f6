"""CORS for the HTTP API: which browser origins may call it, and the headers that say so.

The allowed origins are the stage's ``allowed_origins`` (the same list the bucket's CORS rules
use). An origin is allowed only by exact match; the answer names that one origin (never ``*``)
and varies on ``Origin``, so a cache never hands one origin's answer to another.
"""

from __future__ import annotations

PREFLIGHT_MAX_AGE_S = 600
# The request headers the API reads (Authorization: the bearer token on a stage with auth);
# browsers add the CORS-safelisted ones themselves.
ALLOWED_HEADERS = ("Authorization", "Content-Type")
# Headers a page may read from a response: Retry-After tells it when to try a 503 again,
# WWW-Authenticate why its token was refused.
EXPOSED_HEADERS = ("Retry-After", "WWW-Authenticate")


def is_allowed(origin: str | None, allowed_origins: tuple[str, ...]) -> bool:
    return bool(origin) and origin in allowed_origins


def response_headers(origin: str | None, allowed_origins: tuple[str, ...]) -> dict[str, str]:
    """Headers for an actual (non-preflight) response to a request from ``origin``."""
    if not origin:
        return {}
    if not is_allowed(origin, allowed_origins):
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
        "Vary": "Origin",
    }


def preflight_headers(origin: str | None, allowed_origins: tuple[str, ...],
                      methods: list[str]) -> dict[str, str] | None:
    """Headers for a preflight from ``origin`` to a path with ``methods``; None: refuse it."""
    if not is_allowed(origin, allowed_origins):
        return None
    return {
        "Access-Control-Allow-Origin": str(origin),
        "Access-Control-Allow-Methods": ", ".join(sorted({*methods, "OPTIONS"})),
        "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        "Vary": "Origin",
    }
