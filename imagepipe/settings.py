"""Settings: read once at the edge (a handler, the bridge's main, a CLI) into a frozen object.

Every environment variable the project reads is a field of ``Settings`` and is spelled once,
there: the field's ``EnvVar`` names the variable, how its text is read and written, its bounds
and what it means. ``from_env``, ``to_env``, ``env_names`` and the configuration table in
``docs/configuration.md`` (``documentation``) are derived from the fields. Core code receives a
``Settings`` and never looks at ``os.environ`` itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from imagepipe import bucket_cors, callbacks
from imagepipe.errors import ConfigError
from imagepipe.spec import DEFAULT_VARIANTS, Variant, parse_variants

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_MAX_PIXELS = 50_000_000
# S3 accepts up to 7 days for SigV4; uploads are short-lived by contract.
MAX_PRESIGN_EXPIRES = 600
# A SigV4 presigned URL lives at most 7 days; S3 refuses a longer X-Amz-Expires.
MAX_DOWNLOAD_EXPIRES = 7 * 24 * 3600
# S3's own limits: every part but the last is at least 5 MiB; at most 10,000 parts.
S3_MIN_PART_BYTES = 5 * 1024 * 1024
S3_MAX_PARTS = 10_000
INVOKERS = ("local", "lambda")
# A `lambda` bridge's threads only wait on Invoke (about 1 s for a 12 MP photo), so its default
# concurrency is sized for throughput (~64 jobs/s per bridge), not for cores.
DEFAULT_LAMBDA_WORKERS = 64
# vips: the default, in the Lambda package and requirements.txt (pyvips + pyvips-binary);
# pillow: what runs where libvips cannot (``imaging.start_engine``), or when asked for.
IMAGING_ENGINES = ("vips", "pillow")
DEFAULT_IMAGING_ENGINE = "vips"
# How variant URLs are made (see ``imagepipe.delivery``).
DELIVERY_MODES = ("redirect", "cdn", "presigned")
# Who may call the API (imagepipe.auth): nobody needs a token, or a JWT from the stage's issuer.
AUTH_NONE = "none"
AUTH_JWT = "jwt"
AUTH_MODES = (AUTH_NONE, AUTH_JWT)
DEFAULT_AUTH_MAX_TTL_S = 3600
MAX_AUTH_MAX_TTL_S = 24 * 3600
# RFC 7518: an HS256 key is at least as long as its hash (256 bits).
MIN_AUTH_SECRET_BYTES = 32
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_MIB = 1024 * 1024


# --- how a value is read from, and written to, its environment variable ---------------------

@dataclass(frozen=True)
class Kind:
    parse: Callable[[str, str], Any]  # (variable name, non-empty text) -> value
    format: Callable[[Any], str]  # value -> text that ``parse`` reads back


def _text(name: str, text: str) -> str:
    return text


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {text!r}") from None


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {text!r}") from None


def _bool(name: str, text: str) -> bool:
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {text!r}")


def _list(name: str, text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _origins(name: str, text: str) -> tuple[str, ...]:
    try:
        return bucket_cors.validated_origins(_list(name, text))
    except ConfigError as exc:
        raise ConfigError(f"{name}: {str(exc).removeprefix('allowed_origins: ')}") from None


def _variants(name: str, text: str) -> tuple[Variant, ...]:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    try:
        return parse_variants(raw)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


TEXT = Kind(_text, str)
INT = Kind(_int, str)
NUMBER = Kind(_float, str)
BOOL = Kind(_bool, lambda value: "true" if value else "false")
LIST = Kind(_list, ",".join)
ORIGINS = Kind(_origins, ",".join)
VARIANTS = Kind(_variants, lambda value: json.dumps([v.to_dict() for v in value],
                                                    separators=(",", ":")))


def _webhook_secrets(value: str) -> None:
    try:
        callbacks.signing_keys(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (one or more Standard Webhooks secrets, "
                         "whsec_<base64 of 24-64 random bytes>)") from None


def _callback_prefixes(prefixes) -> None:
    for prefix in prefixes:
        parts = urlsplit(prefix)
        if parts.scheme not in ("https", "http") or not parts.hostname or \
                not parts.path.startswith("/") or parts.query or parts.fragment:
            raise ValueError(f"{prefix!r} must be https://host[:port]/path... (at least the / "
                             "after the host)")


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


@dataclass(frozen=True)
class EnvVar:
    """One setting's environment variable: its name, how it reads, its bounds, what it means."""

    name: str
    doc: str
    kind: Kind = TEXT
    default_doc: str | None = None  # for the docs, where the default value alone says too little
    minimum: float | None = None
    above: float | None = None  # an exclusive lower bound (a positive duration)
    maximum: float | None = None
    unit: str = ""
    choices: tuple[str, ...] = ()
    required: bool = False
    secret: bool = False  # never in repr; in the cloud read from the secret `<name>_ARN` names
    # A secret's SecretString that is a JSON object holds the value in this field (the shape the
    # Secrets Manager console's key/value editor writes); None: the string is the value.
    secret_field: str | None = None
    redact: Callable[[str], str] | None = None  # what repr shows instead of the value
    validate: Callable[[Any], None] | None = None  # raises ValueError saying what is wrong

    def check(self, value) -> None:
        if self.required and not value:
            raise ConfigError(f"{self.name} is required")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(self.choices)}, "
                              f"got {value!r}")
        if self.bounds and value is not None and not (
                (self.minimum is None or value >= self.minimum)
                and (self.above is None or value > self.above)
                and (self.maximum is None or value <= self.maximum)):
            raise ConfigError(f"{self.name} must be {self.bounds}, got {value}")
        if self.validate:
            try:
                self.validate(value)
            except ValueError as exc:
                raise ConfigError(f"{self.name}: {exc}") from None

    @property
    def bounds(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is not None and self.maximum is not None:
            return f"{_number(self.minimum)}..{_number(self.maximum)}{unit}"
        if self.minimum is not None:
            return f"at least {_number(self.minimum)}{unit}"
        if self.above is not None:
            return f"more than {_number(self.above)}{unit}"
        if self.maximum is not None:
            return f"at most {_number(self.maximum)}{unit}"
        return ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def setting(name: str, default: Any, doc: str, **options: Any) -> Any:
    """A ``Settings`` field read from the environment variable ``name``."""
    var = EnvVar(name, doc, **options)
    return field(default=default, repr=not var.secret, metadata={"env": var})


def _env_var(f) -> EnvVar:
    return f.metadata["env"]


@dataclass(frozen=True, repr=False)
class Settings:
    bucket: str = setting("IMAGEPIPE_BUCKET", "", "the bucket", required=True,
                          default_doc="(required)")
    stage: str = setting("IMAGEPIPE_STAGE", "local", "stage name")
    region: str = setting("AWS_REGION", "us-east-1", "region")
    s3_endpoint_url: str | None = setting(
        "IMAGEPIPE_S3_ENDPOINT_URL", None,
        "an S3 endpoint (moto locally; path-style addressing)", default_doc="AWS")
    # In the cloud the broker's user and password live in Secrets Manager, never in the
    # environment: ``amqp_url`` is then the endpoint alone (see ``load``).
    amqp_url: str = setting("AMQP_URL", DEFAULT_AMQP_URL, "the broker",
                            redact=_without_credentials)
    amqp_secret_arn: str | None = setting(
        "IMAGEPIPE_AMQP_SECRET_ARN", None,
        "in the cloud: the Secrets Manager secret (`{\"username\", \"password\"}`) whose "
        "credentials are put into `AMQP_URL` (then just the broker endpoint) once at start",
        default_doc="none")
    resize_queue: str = setting("IMAGEPIPE_RESIZE_QUEUE", "imagepipe.resize", "work queue")
    dead_letter_queue: str = setting("IMAGEPIPE_DEAD_LETTER_QUEUE", "imagepipe.resize.dead",
                                     "dead-letter queue")
    dead_letter_exchange: str = setting("IMAGEPIPE_DEAD_LETTER_EXCHANGE",
                                        "imagepipe.resize.dlx", "dead-letter exchange")
    results_exchange: str = setting("IMAGEPIPE_RESULTS_EXCHANGE", "imagepipe.results",
                                    "results exchange")
    delivery_limit: int = setting(
        "IMAGEPIPE_DELIVERY_LIMIT", 5,
        "quorum `x-delivery-limit` (deliveries = limit + 1); part of the queue's arguments, so "
        "all bridges must agree", kind=INT, minimum=1)
    max_upload_bytes: int = setting("IMAGEPIPE_MAX_UPLOAD_BYTES", 25 * _MIB,
                                    "upload size limit", kind=INT, minimum=1,
                                    default_doc="25 MiB")
    allowed_types: tuple[str, ...] = setting(
        "IMAGEPIPE_ALLOWED_TYPES", ("image/jpeg", "image/png", "image/webp", "image/gif"),
        "allowed upload types, comma-separated (checked on content)", kind=LIST)
    max_pixels: int = setting("IMAGEPIPE_MAX_PIXELS", DEFAULT_MAX_PIXELS,
                              "decoded size limit (width × height)", kind=INT, minimum=1,
                              default_doc="50,000,000")
    variants: tuple[Variant, ...] = setting("IMAGEPIPE_VARIANTS", DEFAULT_VARIANTS,
                                            "the variant spec as JSON", kind=VARIANTS,
                                            default_doc="the default spec")
    presign_expires: int = setting("IMAGEPIPE_PRESIGN_EXPIRES", 600, "upload URL lifetime",
                                   kind=INT, minimum=1, maximum=MAX_PRESIGN_EXPIRES, unit="s")
    download_expires: int = setting(
        "IMAGEPIPE_DOWNLOAD_EXPIRES", 3600,
        "variant URL lifetime (a presigned URL lives at most 7 days)",
        kind=INT, minimum=1, maximum=MAX_DOWNLOAD_EXPIRES, unit="s")
    allowed_origins: tuple[str, ...] = setting(
        "IMAGEPIPE_ALLOWED_ORIGINS", (),
        "browser origins allowed to upload (bucket CORS and the API's), comma-separated "
        "`scheme://host[:port]`; a trailing `/` is dropped, a wildcard or path fails at load. "
        "For `make dev` they are added to the local stage's origins",
        kind=ORIGINS, default_doc="none")
    invoker: str = setting("IMAGEPIPE_INVOKER", "local",
                           "bridge invoker: `local` (process pool) or `lambda`",
                           choices=INVOKERS)
    resize_function: str | None = setting(
        "IMAGEPIPE_RESIZE_FUNCTION", None,
        "Lambda function name for the `lambda` invoker (required with it)", default_doc="—")
    imaging_engine: str = setting(
        "IMAGEPIPE_IMAGING_ENGINE", DEFAULT_IMAGING_ENGINE,
        "`vips` (libvips: the resize Lambda package and `requirements.txt` carry it) or "
        "`pillow`. Decided once at start: where libvips cannot run, the "
        "resize runtime logs a warning with the reason and uses Pillow's engine (same variants, "
        "slower); an unknown name stops it", choices=IMAGING_ENGINES)
    workers: int = setting("IMAGEPIPE_WORKERS", 0,
                           "concurrent jobs per bridge; for `lambda`, your share of the "
                           "function's concurrency (a `lambda` bridge only waits on Invoke, so "
                           "its default does not follow cores)", kind=INT, minimum=0,
                           default_doc=f"`local`: one per core; `lambda`: "
                                       f"{DEFAULT_LAMBDA_WORKERS}, at most the reserved "
                                       "concurrency (`0`)")
    prefetch: int = setting("IMAGEPIPE_PREFETCH", 0, "unacked messages per bridge", kind=INT,
                            minimum=0, default_doc="2 × workers (`0`)")
    resize_reserved_concurrency: int = setting(
        "IMAGEPIPE_RESIZE_RESERVED_CONCURRENCY", 0,
        "the resize function's reserved concurrency, where one is set: a `lambda` bridge runs "
        "at most this many invocations at once (more would be throttled and retried); with "
        "several bridge tasks set `IMAGEPIPE_WORKERS` to their share; 0: none reserved",
        kind=INT, minimum=0, default_doc="none (`0`)")
    retry_backoff_s: float = setting("IMAGEPIPE_RETRY_BACKOFF_S", 0.5,
                                     "first retry delay (doubles per attempt, capped)",
                                     kind=NUMBER, minimum=0, unit="s")
    # Below the usual stop grace periods (Kubernetes and ECS: 30 s), so the bridge hands back
    # what is left itself instead of being SIGKILLed.
    drain_timeout_s: float = setting(
        "IMAGEPIPE_DRAIN_TIMEOUT_S", 25.0,
        "on SIGTERM the bridge stops taking jobs and lets those in flight finish, for at most "
        "this long; then it closes its connection (the broker redelivers the rest), stops its "
        "workers and exits with code 3. Keep it below your stop grace period (Kubernetes and "
        "ECS default to 30 s)", kind=NUMBER, above=0, unit="s")
    requeue_stuck_after_s: int = setting(
        "IMAGEPIPE_REQUEUE_STUCK_AFTER_S", 900,
        "`complete` publishes the job again for an upload queued longer ago than this that "
        "never started; 0: never", kind=INT, minimum=0, unit="s")
    multipart_threshold_bytes: int = setting(
        "IMAGEPIPE_MULTIPART_THRESHOLD_BYTES", 16 * _MIB,
        "clients upload in parts above this size", kind=INT, minimum=1, default_doc="16 MiB")
    multipart_part_bytes: int = setting(
        "IMAGEPIPE_MULTIPART_PART_BYTES", 8 * _MIB,
        "part size (S3's minimum is 5 MiB; at most 10,000 parts for the largest upload)",
        kind=INT, minimum=S3_MIN_PART_BYTES, default_doc="8 MiB")
    # Completion callbacks are on when a secret signs them.
    callback_secret: str = setting(
        "IMAGEPIPE_CALLBACK_SECRET", "",
        "signs completion callbacks ([Standard Webhooks](webhooks.md)); set it to turn them on: "
        "one or more `whsec_<base64 of 24-64 random bytes>` secrets, space-separated (each "
        "signs, for rotation). In the cloud `IMAGEPIPE_CALLBACK_SECRET_ARN` names the Secrets "
        "Manager secret that holds it instead ([network.md](network.md#secrets))",
        secret=True, validate=_webhook_secrets, default_doc="none (callbacks off)")
    callback_allow_private: bool = setting(
        "IMAGEPIPE_CALLBACK_ALLOW_PRIVATE", False,
        "allow callback targets on private/loopback networks and plain `http` (local stages "
        "only)", kind=BOOL)
    callback_allowed_prefixes: tuple[str, ...] = setting(
        "IMAGEPIPE_CALLBACK_ALLOWED_PREFIXES", (),
        "when set, a `callback_url` must start with one of these comma-separated "
        "`https://host[:port]/path...` prefixes, the stage's own receivers (each ends its host "
        "with `/`, so `https://hooks.example/` admits no other host)", kind=LIST,
        validate=_callback_prefixes, default_doc="none (any public https URL)")
    callback_queue: str = setting("IMAGEPIPE_CALLBACK_QUEUE", "imagepipe.callbacks",
                                  "the callback dispatcher's queue")
    callback_dead_letter_queue: str = setting("IMAGEPIPE_CALLBACK_DEAD_LETTER_QUEUE",
                                              "imagepipe.callbacks.dead",
                                              "callbacks given up on")
    callback_attempts: int = setting("IMAGEPIPE_CALLBACK_ATTEMPTS", 6, "attempts per callback",
                                     kind=INT, minimum=1)
    callback_backoff_s: float = setting(
        "IMAGEPIPE_CALLBACK_BACKOFF_S", 1.0,
        "first callback retry delay (doubles per attempt, capped at 60 s)",
        kind=NUMBER, minimum=0, unit="s")
    callback_timeout_s: float = setting(
        "IMAGEPIPE_CALLBACK_TIMEOUT_S", 10.0,
        "per callback attempt: connect, send, read the answer", kind=NUMBER, above=0, unit="s")
    # Backfill (docs/backfill.md): rerender jobs wait on a queue of their own and take at most
    # ``rerender_workers`` of a bridge's workers, so live uploads always find one free.
    rerender_queue: str = setting("IMAGEPIPE_RERENDER_QUEUE", "imagepipe.rerender",
                                  "the rerender (backfill) jobs' queue")
    rerender_workers: int = setting(
        "IMAGEPIPE_RERENDER_WORKERS", 0,
        "rerender jobs one bridge runs at once, out of its workers (live jobs keep the rest); "
        "0: a quarter of the workers, at least 1 and at most workers - 1 where there are two "
        "or more", kind=INT, minimum=0, default_doc="a quarter of the workers (`0`)")
    rerender_callbacks: bool = setting(
        "IMAGEPIPE_RERENDER_CALLBACKS", False,
        "also send the upload's callback (event type `imagepipe.variants.changed`) when a "
        "rerender changed its variants", kind=BOOL)
    health_port: int = setting("IMAGEPIPE_HEALTH_PORT", 0,
                               "the bridge's `/healthz` and `/metrics` port; 0: off",
                               kind=INT, minimum=0, maximum=65535)
    health_host: str = setting("IMAGEPIPE_HEALTH_HOST", "127.0.0.1",
                               "the address they listen on (`0.0.0.0` to be scraped from "
                               "outside the host or container)")
    delivery: str = setting(
        "IMAGEPIPE_DELIVERY", "redirect",
        "how clients reach variants: `redirect` (stable signed URLs of the API that redirect "
        "to a fresh presigned GET; without `IMAGEPIPE_DELIVERY_KEYS` the stage falls back to "
        "`presigned`), `cdn` (a CloudFront distribution, cloud stages) or `presigned` (a new "
        "presigned GET on every read, valid `IMAGEPIPE_DOWNLOAD_EXPIRES`)",
        choices=DELIVERY_MODES)
    delivery_keys: tuple[str, ...] = setting(
        "IMAGEPIPE_DELIVERY_KEYS", (),
        "the HMAC keys of the stable variant URLs, comma-separated: the first signs, any "
        "verifies, so a key can be rotated. In the cloud `IMAGEPIPE_DELIVERY_KEYS_ARN` names "
        "the Secrets Manager secret that holds them; `make deploy` generates one for a "
        "`redirect` stage that names none ([network.md](network.md#secrets))",
        kind=LIST, secret=True, default_doc="none")
    delivery_url_lifetime_s: int = setting(
        "IMAGEPIPE_DELIVERY_URL_LIFETIME_S", 0,
        "how long a stable variant URL works, from when its variant was made (its signature "
        "then covers an `exp`); 0: for ever", kind=INT, minimum=0, unit="s")
    redirect_expires_s: int = setting(
        "IMAGEPIPE_REDIRECT_EXPIRES_S", 300,
        "lifetime of the presigned GET a stable URL redirects to (browsers may reuse the "
        "redirect for 80% of it)", kind=INT, minimum=1, maximum=MAX_DOWNLOAD_EXPIRES, unit="s")
    public_api_url: str | None = setting(
        "IMAGEPIPE_PUBLIC_API_URL", None,
        "the API's public URL, where stable variant URLs point; the resize function needs it "
        "(`make deploy` passes the API's endpoint), the API uses the request's address without "
        "it", default_doc="none")
    cdn_domain: str | None = setting(
        "IMAGEPIPE_CDN_DOMAIN", None,
        "the CloudFront distribution in front of `variants/` with `delivery` `cdn` (set by "
        "`make deploy`)", default_doc="none")

    # Who may call the API (docs/auth.md). With ``jwt`` every private route needs a bearer token
    # from ``auth_issuer`` for ``auth_audience``, checked with the JWKS at ``auth_jwks_url``
    # (RS256/ES256) or the shared ``auth_secret`` (HS256; in the cloud read at start from the
    # secret ``auth_secret_arn`` names, like every secret setting: see ``load``).
    auth_mode: str = setting(
        "IMAGEPIPE_AUTH_MODE", AUTH_NONE,
        "who may call the API: `none` (anyone), or `jwt` (a bearer token on every route but "
        "`GET /limits`, `GET /openapi.json`, the demo page and preflights; docs/auth.md)",
        choices=AUTH_MODES)
    auth_issuer: str = setting("IMAGEPIPE_AUTH_ISSUER", "",
                               "with `jwt`: the tokens' issuer (`iss`), exactly",
                               default_doc="none")
    auth_audience: str = setting("IMAGEPIPE_AUTH_AUDIENCE", "",
                                 "with `jwt`: the tokens' audience (`aud`)", default_doc="none")
    auth_jwks_url: str | None = setting(
        "IMAGEPIPE_AUTH_JWKS_URL", None,
        "with `jwt`: the identity provider's JWKS (RS256/ES256 keys, cached, rotated by `kid`)",
        default_doc="none")
    auth_secret: str = setting(
        "IMAGEPIPE_AUTH_SECRET", "",
        f"with `jwt`: the HS256 shared secret (at least {MIN_AUTH_SECRET_BYTES} bytes; local "
        "stages: in the cloud use `IMAGEPIPE_AUTH_SECRET_ARN`)", secret=True,
        secret_field="secret", default_doc="none")
    # The ``<NAME>_ARN`` of ``auth_secret``, declared as a setting of its own (unlike the other
    # secrets') because a jwt stage must name a key source when it is checked, before ``load``
    # has read the secret, and a stage's ``auth.secret_arn`` in chalicefile.json sets it.
    auth_secret_arn: str | None = setting(
        "IMAGEPIPE_AUTH_SECRET_ARN", None,
        "in the cloud: the Secrets Manager secret holding the HS256 secret (its string, or JSON "
        "`{\"secret\"}`), read once at start", default_doc="none")
    auth_max_ttl_s: int = setting(
        "IMAGEPIPE_AUTH_MAX_TTL_S", DEFAULT_AUTH_MAX_TTL_S,
        "the longest token lifetime accepted (`exp` − `iat`)", kind=INT, minimum=60,
        maximum=MAX_AUTH_MAX_TTL_S, unit="s")

    def __post_init__(self) -> None:
        for f in fields(self):
            _env_var(f).check(getattr(self, f.name))
        self._check_auth()
        if self.invoker == "lambda" and not self.resize_function:
            raise ConfigError(f"{env_name('resize_function')} is required with the lambda "
                              "invoker")
        if (self.invoker == "lambda" and self.resize_reserved_concurrency
                and self.workers > self.resize_reserved_concurrency):
            raise ConfigError(f"{env_name('workers')} ({self.workers}) is more than the resize "
                              f"function's reserved concurrency "
                              f"({env_name('resize_reserved_concurrency')}="
                              f"{self.resize_reserved_concurrency}): the rest would be throttled")
        # A stage in chalicefile.json lists them; frozen settings compare as tuples.
        object.__setattr__(self, "callback_allowed_prefixes",
                           tuple(self.callback_allowed_prefixes))
        if not self.allowed_types:
            raise ConfigError(f"{env_name('allowed_types')} must name at least one type")
        if -(-self.max_upload_bytes // self.multipart_part_bytes) > S3_MAX_PARTS:
            raise ConfigError(f"{env_name('multipart_part_bytes')} is too small: the largest "
                              f"upload would need more than {S3_MAX_PARTS} parts")
        # Normalised once (no trailing slash, no duplicates), so the API's CORS check and the
        # bucket's CORS rule compare the same origins. Checked where they are read (``from_env``)
        # and where the bucket rule is built, not here: ``make package`` renders a stage whose
        # unset origin is a placeholder.
        object.__setattr__(self, "allowed_origins",
                           bucket_cors.normalised_origins(self.allowed_origins))

    def _check_auth(self) -> None:
        if self.auth_mode != AUTH_JWT:
            return
        for name in ("auth_issuer", "auth_audience"):
            if not getattr(self, name):
                raise ConfigError(f"{env_name(name)} is required with "
                                  f"{env_name('auth_mode')}=jwt")
        # Either or both: users' tokens from an identity provider, a backend's own HS256 ones.
        if not (self.auth_jwks_url or self.auth_secret or self.auth_secret_arn):
            raise ConfigError(f"{env_name('auth_mode')}=jwt needs {env_name('auth_jwks_url')} "
                              f"(RS256/ES256 from a JWKS), {env_name('auth_secret')} (HS256) "
                              f"or {env_name('auth_secret_arn')}, or both kinds")
        if self.auth_secret and len(self.auth_secret.encode()) < MIN_AUTH_SECRET_BYTES:
            raise ConfigError(f"{env_name('auth_secret')} must be at least "
                              f"{MIN_AUTH_SECRET_BYTES} bytes (HS256)")

    @property
    def auth_on(self) -> bool:
        return self.auth_mode == AUTH_JWT

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            var, value = _env_var(f), getattr(self, f.name)
            if var.secret:
                continue
            if var.redact and value:
                value = var.redact(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def rerender_worker_count(self) -> int:
        """Rerender jobs one bridge runs at once: ``rerender_workers`` (at most the workers), or
        a quarter of the workers, leaving at least one to live jobs where there are two."""
        total = self.worker_count
        if self.rerender_workers:
            return min(self.rerender_workers, total)
        return max(1, min(total // 4, total - 1))

    @property
    def worker_count(self) -> int:
        """Jobs one bridge runs at once: ``workers``, or the invoker's default."""
        if self.workers:
            return self.workers
        if self.invoker == "lambda":
            reserved = self.resize_reserved_concurrency
            return min(DEFAULT_LAMBDA_WORKERS, reserved) if reserved else DEFAULT_LAMBDA_WORKERS
        return os.cpu_count() or 1

    @property
    def prefetch_count(self) -> int:
        return self.prefetch or 2 * self.worker_count

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """The settings in ``environ`` (default ``os.environ``); unset or empty: the default."""
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            var = _env_var(f)
            if env.get(var.name):
                values[f.name] = var.kind.parse(var.name, env[var.name])
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that ``from_env`` reads back into an equal ``Settings``.

        A setting with no value (``None``, empty text, an empty list) is left out: ``from_env``
        reads an empty variable as unset anyway, and an empty secret variable would look like
        one sitting in plain in a template.
        """
        env = {}
        for f in fields(self):
            var, value = _env_var(f), getattr(self, f.name)
            text = "" if value is None else var.kind.format(value)
            if text != "":
                env[var.name] = text
        return env


def env_var(field_name: str) -> EnvVar:
    """The environment variable of the ``Settings`` field ``field_name``."""
    return _ENV_VARS[field_name]


def env_name(field_name: str) -> str:
    return env_var(field_name).name


def default(field_name: str) -> Any:
    """The default value of the ``Settings`` field ``field_name`` (e.g. a queue's name)."""
    return Settings.__dataclass_fields__[field_name].default


def env_names() -> tuple[str, ...]:
    """Every environment variable the project's settings read, in the order of the fields."""
    return tuple(var.name for var in _ENV_VARS.values())


def documentation() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every setting, as ``docs/configuration.md`` shows them."""
    rows = []
    for f in fields(Settings):
        var = _env_var(f)
        default = var.default_doc
        if default is None:
            default = f"`{var.kind.format(f.default)}`"
        meaning = var.doc
        if var.bounds and var.bounds != "at least 0" + (f" {var.unit}" if var.unit else ""):
            meaning += f"; {var.bounds}"
        rows.append((var.name, default, meaning))
    return rows


_ENV_VARS = {f.name: _env_var(f) for f in fields(Settings)}

# The names other modules use, derived from the fields (spelled once, above).
ENV_BUCKET = env_name("bucket")
ENV_REGION = env_name("region")
ENV_AMQP_URL = env_name("amqp_url")
ENV_AMQP_SECRET_ARN = env_name("amqp_secret_arn")
ENV_HEALTH_PORT = env_name("health_port")
ENV_DELIVERY_KEYS = env_name("delivery_keys")
ENV_PUBLIC_API_URL = env_name("public_api_url")
ENV_CDN_DOMAIN = env_name("cdn_domain")
ENV_CALLBACK_SECRET = env_name("callback_secret")
SECRET_ARN_SUFFIX = "_ARN"


def secret_arn_env(name: str) -> str:
    """The variable naming the Secrets Manager secret that holds the secret setting ``name``."""
    return name + SECRET_ARN_SUFFIX


# The settings whose values are secrets (``secret=True``). In the cloud none sits in an
# environment variable: for each, ``<NAME>_ARN`` names a Secrets Manager secret whose
# SecretString ``load`` reads in its place at start (the bridge's ECS task gets the value
# itself, through ``secrets``/``valueFrom``).
SECRET_ENV = tuple(var.name for var in _ENV_VARS.values() if var.secret)


def load(environ: Mapping[str, str] | None = None, secrets_client_factory=None) -> Settings:
    """The settings of a deployed component: ``Settings.from_env`` plus its secrets.

    Each secret setting (``SECRET_ENV``) whose ``<NAME>_ARN`` is set is read from that Secrets
    Manager secret (its SecretString is the value); the broker's user and password come from
    ``IMAGEPIPE_AMQP_SECRET_ARN``. An edge (a handler's first call, the bridge's main) calls
    this once and keeps the result, so secrets are read once per cold start, with one client.
    With no ``*_ARN`` set nothing but the environment is read.
    """
    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    arns = {name: env[secret_arn_env(name)] for name in SECRET_ENV
            if env.get(secret_arn_env(name))}
    if not (settings.amqp_secret_arn or arns):
        return settings
    client = (secrets_client_factory or _secrets_manager)(settings)
    if arns:
        values = read_secrets(client, arns, env)
        try:
            settings = Settings.from_env({**env, **values})
        except ConfigError as exc:  # a value the setting refuses: say where it came from
            raise ConfigError(f"{exc} (read from Secrets Manager: "
                              f"{', '.join(secret_arn_env(name) for name in values)})") from None
    if settings.amqp_secret_arn:
        settings = with_broker_credentials(settings, client)
    return settings


def read_secrets(secrets_client, arns: Mapping[str, str], environ: Mapping[str, str]) -> dict:
    """``{NAME: value}`` of each secret setting ``NAME`` from the secret ``arns[NAME]``.

    A setting given both ways is refused rather than one silently winning: the plain variable
    is the leak this exists to prevent. Messages name the variable and the secret, never a value.
    """
    values = {}
    for name, arn in arns.items():
        where = f"{secret_arn_env(name)}: secret {arn}"
        if environ.get(name):
            raise ConfigError(f"{name} and {secret_arn_env(name)} are both set: keep the value "
                              "in Secrets Manager only")
        try:
            text = secrets_client.get_secret_value(SecretId=arn).get("SecretString")
        except Exception as exc:
            raise ConfigError(f"{where} cannot be read: {exc}") from None
        text = _secret_value(_SECRET_FIELDS.get(name), text)
        if not isinstance(text, str) or not text.strip():
            field_name = _SECRET_FIELDS.get(name)
            raise ConfigError(f"{where} must hold the value as its SecretString" + (
                f" (or as the field {field_name!r} of a JSON object)" if field_name else ""))
        values[name] = text.strip()
    return values


def _secret_value(field_name: str | None, text):
    """The value in a SecretString: the string itself, or for a setting with a
    ``secret_field``, that field of a JSON object (None when the object lacks it)."""
    if not field_name or not isinstance(text, str):
        return text
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return parsed.get(field_name) if isinstance(parsed, dict) else text


_SECRET_FIELDS = {var.name: var.secret_field for var in _ENV_VARS.values() if var.secret_field}


def load_auth_secret(settings: Settings, secrets_client_factory=None) -> Settings:
    """``settings`` (of a stage, not of an environment: ``imagepipe token``) with the HS256
    secret read from ``auth_secret_arn`` the way ``load`` reads it."""
    if not settings.auth_secret_arn:
        return settings
    name = env_name("auth_secret")
    client = (secrets_client_factory or _secrets_manager)(settings)
    values = read_secrets(client, {name: settings.auth_secret_arn}, {})
    return replace(settings, auth_secret=values[name])


def _secrets_manager(settings: Settings):
    # Made here rather than in ``imagepipe.aws`` so that settings import nothing that imports
    # them back: ``aws`` builds its clients from ``Settings``.
    import boto3

    return boto3.client("secretsmanager", region_name=settings.region)


def with_broker_credentials(settings: Settings, secrets_client) -> Settings:
    """``settings`` with the user and password of the secret put into ``amqp_url``.

    The secret is the JSON ``{"username": ..., "password": ...}`` that the infra stack generates
    for the Amazon MQ broker; ``amqp_url`` is the broker's endpoint (``amqps://host:5671``).
    """
    where = f"secret {settings.amqp_secret_arn}"
    try:
        response = secrets_client.get_secret_value(SecretId=settings.amqp_secret_arn)
    except Exception as exc:
        raise ConfigError(f"{where}: cannot be read: {exc}") from None
    try:
        secret = json.loads(response["SecretString"])
        user, password = secret["username"], secret["password"]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: must be JSON with username and password") from None
    parts = urlsplit(settings.amqp_url)
    if not parts.hostname:
        raise ConfigError(f"{ENV_AMQP_URL} must be a broker URL, "
                          f"got {_without_credentials(settings.amqp_url)!r}")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return replace(settings, amqp_url=urlunsplit(parts._replace(netloc=netloc)))
