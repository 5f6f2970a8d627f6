"""Who may call the API: bearer JWTs, verified with PyJWT against an injected key source.

A stage runs with auth off (``mode`` ``none``, the local default) or ``jwt``: then every route
but the public ones needs ``Authorization: Bearer <JWT>``. The token must carry ``exp``,
``sub``, ``aud``, ``iss`` and ``iat`` (or ``nbf``), name this stage's issuer and audience, be
signed by one of its keys and live no longer than the stage allows (``exp`` minus ``iat``).

Keys come from a ``KeySource``: ``SharedSecret`` (HS256, an app backend minting its own tokens)
or ``JwksKeys`` (RS256/ES256 from an OIDC provider's JWKS URL, fetched and cached by
``jwt.PyJWKClient``). Everything here is a pure function of the token, the policy, the keys
and the clock; the HTTP adapter only maps ``Unauthorized`` (401 with ``WWW-Authenticate``),
``QuotaExceeded`` (403) and ``KeysUnavailable`` (503) to responses.

A token may bound what it allows with the claim ``"imagepipe": {"max_uploads": N,
"max_bytes": M}``: at most N uploads made with it (counted by its ``jti``) and at most M bytes
per file.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import jwt

from imagepipe import errors
from imagepipe.settings import AUTH_JWT, AUTH_MODES, AUTH_NONE, DEFAULT_AUTH_MAX_TTL_S, Settings

LOGGER = logging.getLogger(__name__)

MODE_NONE = AUTH_NONE
MODE_JWT = AUTH_JWT
MODES = AUTH_MODES
DEFAULT_MAX_TTL_S = DEFAULT_AUTH_MAX_TTL_S
# Clocks of the token's issuer and of this function may disagree by this much.
CLOCK_SKEW_S = 30
# RFC 7518: an HS256 key is at least as long as the hash (256 bits).
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 8192
MAX_SUB_CHARS = 255
MAX_JTI_CHARS = 255
HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
REQUIRED_CLAIMS = ("exp", "sub", "aud", "iss")
CLAIM = "imagepipe"  # the optional bounds claim

# The API error codes of each refusal (spelled in ``errors`` with every other code).
UNAUTHORIZED = errors.UNAUTHORIZED
QUOTA_EXCEEDED = errors.QUOTA_EXCEEDED
AUTH_UNAVAILABLE = errors.AUTH_UNAVAILABLE


class Unauthorized(Exception):
    """No usable token: 401. ``error`` is RFC 6750's: ``invalid_request`` (no or a malformed
    header) or ``invalid_token`` (expired, wrong audience, bad signature ...)."""

    def __init__(self, message: str, error: str = "invalid_token"):
        super().__init__(message)
        self.message = message
        self.error = error

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of the 401."""
        detail = self.message.replace("\\", "").replace('"', "'")
        return f'Bearer error="{self.error}", error_description="{detail}"'


class QuotaExceeded(Exception):
    """The token's ``imagepipe`` bounds refuse this upload: 403."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class KeysUnavailable(Exception):
    """The identity provider's keys could not be fetched: not the caller's fault, 503."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Caller:
    """Who a verified token speaks for, and the bounds it carries."""

    sub: str
    jti: str | None = None
    issuer: str = ""
    max_uploads: int | None = None
    max_bytes: int | None = None

    @property
    def token_id(self) -> str | None:
        """A key-safe id of the token for counting its uploads: the same ``jti`` of two
        subjects or issuers never shares a count. None without a ``jti``."""
        if self.jti is None:
            return None
        return hashlib.sha256(f"{self.issuer}\0{self.sub}\0{self.jti}".encode()).hexdigest()[:32]

    def check_size(self, size: int) -> None:
        if self.max_bytes is not None and size > self.max_bytes:
            raise QuotaExceeded(f"this token allows files of at most {self.max_bytes} bytes")


@dataclass(frozen=True)
class Policy:
    """What a stage accepts, besides the keys: issuer, audience, longest lifetime."""

    issuer: str
    audience: str
    max_ttl_s: int = DEFAULT_MAX_TTL_S


class KeySource(Protocol):
    algorithms: tuple[str, ...]

    def key_for(self, token: str, header: dict):
        """The key that verifies ``token`` (whose unverified header is ``header``)."""


class SharedSecret:
    """HS256 with one shared secret (an app backend, or ``python -m imagepipe token``)."""

    algorithms: tuple[str, ...] = HMAC_ALGORITHMS

    def __init__(self, secret: str):
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"an HS256 secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "SharedSecret(***)"

    def key_for(self, token: str, header: dict):
        return self._secret


class JwksKeys:
    """RS256/ES256 keys from a JWKS URL, by ``kid``.

    ``jwt.PyJWKClient`` keeps the whole set for ``lifespan`` seconds (so a removed key stops
    working within that time) and fetches it again at once for an unknown ``kid`` (a rotation),
    but at most once per ``cooldown_s``: tokens with made-up ``kid`` values cannot make every
    request a fetch. A fetch waits at most ``timeout_s``.
    """

    algorithms: tuple[str, ...] = PUBLIC_KEY_ALGORITHMS

    def __init__(self, url: str, *, lifespan_s: float = 300, cooldown_s: float = 30,
                 timeout_s: float = 5):
        self.url = url
        self._client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=lifespan_s,
                                       cooldown_duration=cooldown_s, timeout=timeout_s)

    def key_for(self, token: str, header: dict):
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("the token names no signing key (kid)")
        try:
            return self._client.get_signing_key(kid)  # a PyJWK: decode checks its algorithm too
        except jwt.PyJWKClientConnectionError as exc:
            LOGGER.warning("JWKS %s could not be fetched: %s", self.url, exc)
            raise KeysUnavailable("the identity provider's keys cannot be fetched; "
                                  "try again later") from None
        except (jwt.PyJWKClientError, jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
            if "matches" in str(exc):
                raise Unauthorized("the token is signed with an unknown key") from None
            LOGGER.warning("JWKS %s is unusable: %s", self.url, exc)
            raise KeysUnavailable("the identity provider's keys are unusable") from None


@dataclass(frozen=True)
class Verifier:
    """A stage's policy and keys: who an ``Authorization`` header speaks for."""

    policy: Policy
    keys: KeySource

    def caller(self, authorization: str | None) -> Caller:
        return verify(bearer_token(authorization), self.policy, self.keys)


class EitherKeys:
    """Both sources on one stage (users' tokens from an identity provider, a backend's own
    HS256 ones): the token's ``alg`` picks the source, so an HS256 token is only ever checked
    with the shared secret and an RS256/ES256 one only with the provider's keys."""

    algorithms: tuple[str, ...] = HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS

    def __init__(self, shared: SharedSecret, provider: JwksKeys):
        self._shared, self._provider = shared, provider

    def key_for(self, token: str, header: dict):
        source = self._shared if header.get("alg") in HMAC_ALGORITHMS else self._provider
        return source.key_for(token, header)


def verifier(settings: Settings) -> Verifier | None:
    """The stage's verifier; None when its API needs no token (``auth_mode`` ``none``)."""
    if not settings.auth_on:
        return None
    policy = Policy(settings.auth_issuer, settings.auth_audience, settings.auth_max_ttl_s)
    provider = JwksKeys(settings.auth_jwks_url) if settings.auth_jwks_url else None
    shared = SharedSecret(settings.auth_secret) if settings.auth_secret else None
    if provider and shared:
        return Verifier(policy, EitherKeys(shared, provider))
    return Verifier(policy, provider or shared)  # type: ignore[arg-type]


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not authorization:
        raise Unauthorized("this API needs an Authorization: Bearer token", "invalid_request")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'",
                           "invalid_request")
    return token


def verify(token: str, policy: Policy, keys: KeySource) -> Caller:
    """The caller a token speaks for, or ``Unauthorized`` saying what is wrong with it."""
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("the token is too long")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.InvalidTokenError, RecursionError):  # a deeply nested header is no JWT either
        raise Unauthorized("the token is not a JWT") from None
    if header.get("alg") not in keys.algorithms:
        raise Unauthorized(f"the token must be signed with {' or '.join(keys.algorithms)}")
    key = keys.key_for(token, header)
    try:
        claims = jwt.decode(token, key, algorithms=list(keys.algorithms),
                            audience=policy.audience, issuer=policy.issuer,
                            options={"require": list(REQUIRED_CLAIMS)}, leeway=CLOCK_SKEW_S)
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("the token is not meant for this API (aud)") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("the token is from another issuer (iss)") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("the token is not valid yet") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the token's signature does not verify") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"the token is invalid: {exc}") from None
    _check_lifetime(claims, policy.max_ttl_s)
    return _caller(claims, policy.issuer)


def _check_lifetime(claims: dict, max_ttl_s: int) -> None:
    start = claims.get("iat", claims.get("nbf"))
    if not _is_number(claims["exp"]):
        raise Unauthorized("the token's 'exp' must be a number")
    if not _is_number(start):
        raise Unauthorized("the token needs an 'iat' (or 'nbf') claim, so its lifetime is known")
    if claims["exp"] - start > max_ttl_s:
        raise Unauthorized(f"the token lives longer than this API allows ({max_ttl_s} s)")


def _caller(claims: dict, issuer: str) -> Caller:
    sub, jti = claims["sub"], claims.get("jti")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS:
        raise Unauthorized(f"the token's 'sub' must be 1..{MAX_SUB_CHARS} characters")
    if jti is not None and (not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS):
        raise Unauthorized(f"the token's 'jti' must be 1..{MAX_JTI_CHARS} characters")
    bounds = claims.get(CLAIM, {})
    if not isinstance(bounds, dict):
        raise Unauthorized(f"the token's {CLAIM!r} claim must be an object")
    limits = {name: bounds.get(name) for name in ("max_uploads", "max_bytes")}
    for name, value in limits.items():
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and value >= 0):
            raise Unauthorized(f"the token's {CLAIM}.{name} must be a whole number")
    if limits["max_uploads"] is not None and jti is None:
        raise Unauthorized(f"a token with {CLAIM}.max_uploads needs a 'jti' to count them by")
    return Caller(sub=sub, jti=jti, issuer=issuer, **limits)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def mint(secret: str, *, sub: str, issuer: str, audience: str, ttl_s: int = 900,
         max_uploads: int | None = None, max_bytes: int | None = None,
         jti: str | None = None, now: float | None = None) -> str:
    """An HS256 token as an app backend would mint it (the ``token`` command, tests)."""
    import secrets as _secrets

    issued = int(time.time() if now is None else now)
    claims: dict = {"iss": issuer, "aud": audience, "sub": sub, "iat": issued,
                    "exp": issued + ttl_s, "jti": jti or _secrets.token_hex(16)}
    bounds = {name: value for name, value in (("max_uploads", max_uploads),
                                              ("max_bytes", max_bytes)) if value is not None}
    if bounds:
        claims[CLAIM] = bounds
    SharedSecret(secret)  # refuses a short secret
    return jwt.encode(claims, secret, algorithm="HS256")
