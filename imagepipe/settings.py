"""Settings: read once at the edge (a handler, the bridge's main, a CLI) into a frozen object.

Every environment variable the project reads is named here and nowhere else. Core code receives
a ``Settings`` and never looks at ``os.environ`` itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

from imagepipe import bucket_cors, callbacks
from imagepipe.errors import ConfigError
from imagepipe.spec import DEFAULT_VARIANTS, Variant, parse_variants

# --- environment variable names (the only place they are spelled) ---------------------------
ENV_STAGE = "IMAGEPIPE_STAGE"
ENV_BUCKET = "IMAGEPIPE_BUCKET"
ENV_REGION = "AWS_REGION"
ENV_S3_ENDPOINT_URL = "IMAGEPIPE_S3_ENDPOINT_URL"
ENV_AMQP_URL = "AMQP_URL"
ENV_RESIZE_QUEUE = "IMAGEPIPE_RESIZE_QUEUE"
ENV_DEAD_LETTER_QUEUE = "IMAGEPIPE_DEAD_LETTER_QUEUE"
ENV_DEAD_LETTER_EXCHANGE = "IMAGEPIPE_DEAD_LETTER_EXCHANGE"
ENV_RESULTS_EXCHANGE = "IMAGEPIPE_RESULTS_EXCHANGE"
ENV_DELIVERY_LIMIT = "IMAGEPIPE_DELIVERY_LIMIT"
ENV_MAX_UPLOAD_BYTES = "IMAGEPIPE_MAX_UPLOAD_BYTES"
ENV_ALLOWED_TYPES = "IMAGEPIPE_ALLOWED_TYPES"
ENV_MAX_PIXELS = "IMAGEPIPE_MAX_PIXELS"
ENV_VARIANTS = "IMAGEPIPE_VARIANTS"
ENV_PRESIGN_EXPIRES = "IMAGEPIPE_PRESIGN_EXPIRES"
ENV_DOWNLOAD_EXPIRES = "IMAGEPIPE_DOWNLOAD_EXPIRES"
ENV_INVOKER = "IMAGEPIPE_INVOKER"
ENV_IMAGING_ENGINE = "IMAGEPIPE_IMAGING_ENGINE"
ENV_RESIZE_FUNCTION = "IMAGEPIPE_RESIZE_FUNCTION"
ENV_WORKERS = "IMAGEPIPE_WORKERS"
ENV_PREFETCH = "IMAGEPIPE_PREFETCH"
ENV_RETRY_BACKOFF = "IMAGEPIPE_RETRY_BACKOFF_S"
ENV_ALLOWED_ORIGINS = "IMAGEPIPE_ALLOWED_ORIGINS"
ENV_MULTIPART_THRESHOLD = "IMAGEPIPE_MULTIPART_THRESHOLD_BYTES"
ENV_MULTIPART_PART_BYTES = "IMAGEPIPE_MULTIPART_PART_BYTES"
ENV_CALLBACK_SECRET = "IMAGEPIPE_CALLBACK_SECRET"
ENV_CALLBACK_ALLOW_PRIVATE = "IMAGEPIPE_CALLBACK_ALLOW_PRIVATE"
ENV_CALLBACK_QUEUE = "IMAGEPIPE_CALLBACK_QUEUE"
ENV_CALLBACK_DEAD_LETTER_QUEUE = "IMAGEPIPE_CALLBACK_DEAD_LETTER_QUEUE"
ENV_CALLBACK_ATTEMPTS = "IMAGEPIPE_CALLBACK_ATTEMPTS"
ENV_CALLBACK_BACKOFF = "IMAGEPIPE_CALLBACK_BACKOFF_S"
ENV_CALLBACK_TIMEOUT = "IMAGEPIPE_CALLBACK_TIMEOUT_S"
ENV_AMQP_SECRET_ARN = "IMAGEPIPE_AMQP_SECRET_ARN"
ENV_HEALTH_PORT = "IMAGEPIPE_HEALTH_PORT"
ENV_HEALTH_HOST = "IMAGEPIPE_HEALTH_HOST"
ENV_DRAIN_TIMEOUT = "IMAGEPIPE_DRAIN_TIMEOUT_S"
ENV_REQUEUE_STUCK_AFTER = "IMAGEPIPE_REQUEUE_STUCK_AFTER_S"

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_RESIZE_QUEUE = "imagepipe.resize"
DEFAULT_DEAD_LETTER_QUEUE = "imagepipe.resize.dead"
DEFAULT_DEAD_LETTER_EXCHANGE = "imagepipe.resize.dlx"
DEFAULT_RESULTS_EXCHANGE = "imagepipe.results"
DEFAULT_DELIVERY_LIMIT = 5
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
DEFAULT_ALLOWED_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
DEFAULT_MAX_PIXELS = 50_000_000
# S3 accepts up to 7 days for SigV4; uploads are short-lived by contract.
MAX_PRESIGN_EXPIRES = 600
DEFAULT_PRESIGN_EXPIRES = 600
DEFAULT_DOWNLOAD_EXPIRES = 3600
DEFAULT_MULTIPART_THRESHOLD = 16 * 1024 * 1024
DEFAULT_MULTIPART_PART_BYTES = 8 * 1024 * 1024
# S3's own limits: every part but the last is at least 5 MiB; at most 10,000 parts.
S3_MIN_PART_BYTES = 5 * 1024 * 1024
S3_MAX_PARTS = 10_000
INVOKERS = ("local", "lambda")
# pillow: the default and the Lambda package's; vips: optional (pyvips), faster on JPEG photos.
IMAGING_ENGINES = ("pillow", "vips")
DEFAULT_CALLBACK_QUEUE = "imagepipe.callbacks"
DEFAULT_CALLBACK_DEAD_LETTER_QUEUE = "imagepipe.callbacks.dead"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
DEFAULT_HEALTH_HOST = "127.0.0.1"
# Below the usual stop grace periods (Kubernetes and ECS: 30 s), so the bridge hands back what
# is left itself instead of being SIGKILLed.
DEFAULT_DRAIN_TIMEOUT_S = 25.0
DEFAULT_REQUEUE_STUCK_AFTER_S = 900


@dataclass(frozen=True)
class Settings:
    bucket: str
    stage: str = "local"
    region: str = "us-east-1"
    s3_endpoint_url: str | None = None
    amqp_url: str = DEFAULT_AMQP_URL
    resize_queue: str = DEFAULT_RESIZE_QUEUE
    dead_letter_queue: str = DEFAULT_DEAD_LETTER_QUEUE
    dead_letter_exchange: str = DEFAULT_DEAD_LETTER_EXCHANGE
    results_exchange: str = DEFAULT_RESULTS_EXCHANGE
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    allowed_types: tuple[str, ...] = DEFAULT_ALLOWED_TYPES
    max_pixels: int = DEFAULT_MAX_PIXELS
    variants: tuple[Variant, ...] = field(default=DEFAULT_VARIANTS)
    presign_expires: int = DEFAULT_PRESIGN_EXPIRES
    download_expires: int = DEFAULT_DOWNLOAD_EXPIRES
    invoker: str = "local"
    resize_function: str | None = None
    imaging_engine: str = "pillow"
    workers: int = 0  # 0: one per core
    prefetch: int = 0  # 0: twice the workers
    retry_backoff_s: float = 0.5
    allowed_origins: tuple[str, ...] = ()  # browser origins allowed to upload (CORS)
    multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD  # clients go multipart above
    multipart_part_bytes: int = DEFAULT_MULTIPART_PART_BYTES
    # Completion callbacks are on when a secret signs them: one or more `whsec_` Standard
    # Webhooks secrets (space-separated; each signs, for rotation). repr=False keeps them out of logs.
    callback_secret: str = field(default="", repr=False)
    # Allow callback targets on loopback/private networks and plain http: local stages only.
    callback_allow_private: bool = False
    callback_queue: str = DEFAULT_CALLBACK_QUEUE
    callback_dead_letter_queue: str = DEFAULT_CALLBACK_DEAD_LETTER_QUEUE
    callback_attempts: int = 6
    callback_backoff_s: float = 1.0  # first retry delay; doubles per attempt, capped
    callback_timeout_s: float = 10.0  # per attempt: connect, send, read the answer
    # In the cloud the broker's user and password live in Secrets Manager, never in the
    # environment: ``amqp_url`` is then the endpoint alone (see ``load``).
    amqp_secret_arn: str | None = None
    health_port: int = 0  # the bridge's /healthz and /metrics; 0: off
    health_host: str = DEFAULT_HEALTH_HOST
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S  # the bridge's shutdown bound
    # `complete` publishes again for an upload queued this long ago that never started; 0: off
    requeue_stuck_after_s: int = DEFAULT_REQUEUE_STUCK_AFTER_S

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ConfigError(f"{ENV_BUCKET} is required")
        if not 1 <= self.presign_expires <= MAX_PRESIGN_EXPIRES:
            raise ConfigError(
                f"{ENV_PRESIGN_EXPIRES} must be 1..{MAX_PRESIGN_EXPIRES} seconds, "
                f"got {self.presign_expires}"
            )
        if self.max_upload_bytes < 1:
            raise ConfigError(f"{ENV_MAX_UPLOAD_BYTES} must be positive")
        if self.delivery_limit < 1:
            raise ConfigError(f"{ENV_DELIVERY_LIMIT} must be at least 1")
        if self.invoker not in INVOKERS:
            raise ConfigError(f"{ENV_INVOKER} must be one of {', '.join(INVOKERS)}")
        if self.imaging_engine not in IMAGING_ENGINES:
            raise ConfigError(f"{ENV_IMAGING_ENGINE} must be one of {', '.join(IMAGING_ENGINES)}")
        if self.invoker == "lambda" and not self.resize_function:
            raise ConfigError(f"{ENV_RESIZE_FUNCTION} is required with the lambda invoker")
        if not self.allowed_types:
            raise ConfigError(f"{ENV_ALLOWED_TYPES} must name at least one type")
        if self.multipart_threshold_bytes < 1:
            raise ConfigError(f"{ENV_MULTIPART_THRESHOLD} must be positive")
        if self.multipart_part_bytes < S3_MIN_PART_BYTES:
            raise ConfigError(f"{ENV_MULTIPART_PART_BYTES} must be at least {S3_MIN_PART_BYTES} "
                              "(S3's minimum part size)")
        try:
            callbacks.signing_keys(self.callback_secret)
        except ValueError as exc:
            raise ConfigError(f"{ENV_CALLBACK_SECRET}: {exc} (one or more Standard Webhooks "
                              "secrets, whsec_<base64 of 24-64 random bytes>)") from None
        if self.callback_attempts < 1:
            raise ConfigError(f"{ENV_CALLBACK_ATTEMPTS} must be at least 1")
        if self.callback_timeout_s <= 0 or self.callback_backoff_s < 0:
            raise ConfigError(f"{ENV_CALLBACK_TIMEOUT} must be positive and "
                              f"{ENV_CALLBACK_BACKOFF} not negative")
        if -(-self.max_upload_bytes // self.multipart_part_bytes) > S3_MAX_PARTS:
            raise ConfigError(f"{ENV_MULTIPART_PART_BYTES} is too small: the largest upload "
                              f"would need more than {S3_MAX_PARTS} parts")
        if not 0 <= self.health_port <= 65535:
            raise ConfigError(f"{ENV_HEALTH_PORT} must be 0 (off) or a port up to 65535")
        if self.requeue_stuck_after_s < 0:
            raise ConfigError(f"{ENV_REQUEUE_STUCK_AFTER} must be 0 (off) or positive")
        if not self.drain_timeout_s > 0:
            raise ConfigError(f"{ENV_DRAIN_TIMEOUT} must be a positive number of seconds")
        # Normalised once (no trailing slash, no duplicates), so the API's CORS check and the
        # bucket's CORS rule compare the same origins. Checked where they are read (``from_env``)
        # and where the bucket rule is built, not here: ``make package`` renders a stage whose
        # unset origin is a placeholder.
        object.__setattr__(self, "allowed_origins",
                           bucket_cors.normalised_origins(self.allowed_origins))

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    @property
    def prefetch_count(self) -> int:
        return self.prefetch or 2 * self.worker_count

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        kwargs: dict = {"bucket": env.get(ENV_BUCKET, "")}
        text = {
            "stage": ENV_STAGE,
            "region": ENV_REGION,
            "s3_endpoint_url": ENV_S3_ENDPOINT_URL,
            "amqp_url": ENV_AMQP_URL,
            "resize_queue": ENV_RESIZE_QUEUE,
            "dead_letter_queue": ENV_DEAD_LETTER_QUEUE,
            "dead_letter_exchange": ENV_DEAD_LETTER_EXCHANGE,
            "results_exchange": ENV_RESULTS_EXCHANGE,
            "invoker": ENV_INVOKER,
            "resize_function": ENV_RESIZE_FUNCTION,
            "imaging_engine": ENV_IMAGING_ENGINE,
            "callback_secret": ENV_CALLBACK_SECRET,
            "callback_queue": ENV_CALLBACK_QUEUE,
            "callback_dead_letter_queue": ENV_CALLBACK_DEAD_LETTER_QUEUE,
            "amqp_secret_arn": ENV_AMQP_SECRET_ARN,
            "health_host": ENV_HEALTH_HOST,
        }
        for attr, name in text.items():
            if env.get(name):
                kwargs[attr] = env[name]
        numbers = {
            "delivery_limit": ENV_DELIVERY_LIMIT,
            "max_upload_bytes": ENV_MAX_UPLOAD_BYTES,
            "max_pixels": ENV_MAX_PIXELS,
            "presign_expires": ENV_PRESIGN_EXPIRES,
            "download_expires": ENV_DOWNLOAD_EXPIRES,
            "workers": ENV_WORKERS,
            "prefetch": ENV_PREFETCH,
            "multipart_threshold_bytes": ENV_MULTIPART_THRESHOLD,
            "multipart_part_bytes": ENV_MULTIPART_PART_BYTES,
            "callback_attempts": ENV_CALLBACK_ATTEMPTS,
            "health_port": ENV_HEALTH_PORT,
            "requeue_stuck_after_s": ENV_REQUEUE_STUCK_AFTER,
        }
        for attr, name in numbers.items():
            if env.get(name):
                kwargs[attr] = _int(name, env[name])
        decimals = {
            "retry_backoff_s": ENV_RETRY_BACKOFF,
            "callback_backoff_s": ENV_CALLBACK_BACKOFF,
            "callback_timeout_s": ENV_CALLBACK_TIMEOUT,
            "drain_timeout_s": ENV_DRAIN_TIMEOUT,
        }
        for attr, name in decimals.items():
            if env.get(name):
                try:
                    kwargs[attr] = float(env[name])
                except ValueError:
                    raise ConfigError(f"{name} must be a number") from None
        if ENV_CALLBACK_ALLOW_PRIVATE in env:
            kwargs["callback_allow_private"] = _bool(ENV_CALLBACK_ALLOW_PRIVATE,
                                                     env[ENV_CALLBACK_ALLOW_PRIVATE])
        if env.get(ENV_ALLOWED_TYPES):
            kwargs["allowed_types"] = tuple(
                t.strip() for t in env[ENV_ALLOWED_TYPES].split(",") if t.strip()
            )
        if env.get(ENV_ALLOWED_ORIGINS):
            origins = [o.strip() for o in env[ENV_ALLOWED_ORIGINS].split(",") if o.strip()]
            try:
                kwargs["allowed_origins"] = bucket_cors.validated_origins(origins)
            except ConfigError as exc:
                reason = str(exc).removeprefix("allowed_origins: ")
                raise ConfigError(f"{ENV_ALLOWED_ORIGINS}: {reason}") from None
        if env.get(ENV_VARIANTS):
            try:
                raw = json.loads(env[ENV_VARIANTS])
            except ValueError as exc:
                raise ConfigError(f"{ENV_VARIANTS} is not valid JSON: {exc}") from None
            kwargs["variants"] = parse_variants(raw)
        return cls(**kwargs)

    def to_env(self) -> dict[str, str]:
        """The environment that ``from_env`` reads back into an equal ``Settings``."""
        env = {
            ENV_STAGE: self.stage,
            ENV_BUCKET: self.bucket,
            ENV_REGION: self.region,
            ENV_AMQP_URL: self.amqp_url,
            ENV_RESIZE_QUEUE: self.resize_queue,
            ENV_DEAD_LETTER_QUEUE: self.dead_letter_queue,
            ENV_DEAD_LETTER_EXCHANGE: self.dead_letter_exchange,
            ENV_RESULTS_EXCHANGE: self.results_exchange,
            ENV_DELIVERY_LIMIT: str(self.delivery_limit),
            ENV_MAX_UPLOAD_BYTES: str(self.max_upload_bytes),
            ENV_ALLOWED_TYPES: ",".join(self.allowed_types),
            ENV_MAX_PIXELS: str(self.max_pixels),
            ENV_VARIANTS: json.dumps([v.to_dict() for v in self.variants], separators=(",", ":")),
            ENV_PRESIGN_EXPIRES: str(self.presign_expires),
            ENV_DOWNLOAD_EXPIRES: str(self.download_expires),
            ENV_INVOKER: self.invoker,
            ENV_IMAGING_ENGINE: self.imaging_engine,
            ENV_WORKERS: str(self.workers),
            ENV_PREFETCH: str(self.prefetch),
            ENV_RETRY_BACKOFF: str(self.retry_backoff_s),
            ENV_DRAIN_TIMEOUT: str(self.drain_timeout_s),
            ENV_REQUEUE_STUCK_AFTER: str(self.requeue_stuck_after_s),
            ENV_ALLOWED_ORIGINS: ",".join(self.allowed_origins),
            ENV_MULTIPART_THRESHOLD: str(self.multipart_threshold_bytes),
            ENV_MULTIPART_PART_BYTES: str(self.multipart_part_bytes),
            ENV_CALLBACK_ALLOW_PRIVATE: "true" if self.callback_allow_private else "false",
            ENV_CALLBACK_QUEUE: self.callback_queue,
            ENV_CALLBACK_DEAD_LETTER_QUEUE: self.callback_dead_letter_queue,
            ENV_CALLBACK_ATTEMPTS: str(self.callback_attempts),
            ENV_CALLBACK_BACKOFF: str(self.callback_backoff_s),
            ENV_CALLBACK_TIMEOUT: str(self.callback_timeout_s),
            ENV_HEALTH_PORT: str(self.health_port),
            ENV_HEALTH_HOST: self.health_host,
        }
        if self.s3_endpoint_url:
            env[ENV_S3_ENDPOINT_URL] = self.s3_endpoint_url
        if self.resize_function:
            env[ENV_RESIZE_FUNCTION] = self.resize_function
        if self.callback_secret:
            env[ENV_CALLBACK_SECRET] = self.callback_secret
        if self.amqp_secret_arn:
            env[ENV_AMQP_SECRET_ARN] = self.amqp_secret_arn
        return env


def load(environ: Mapping[str, str] | None = None, secrets_client_factory=None) -> Settings:
    """The settings of a deployed component: ``Settings.from_env`` plus the broker credentials.

    An edge (a handler's first call, the bridge's main) calls this once and keeps the result,
    so the secret is read once per cold start. Without ``IMAGEPIPE_AMQP_SECRET_ARN`` nothing
    but the environment is read.
    """
    settings = Settings.from_env(environ)
    if not settings.amqp_secret_arn:
        return settings
    if secrets_client_factory is None:
        from imagepipe import aws

        secrets_client_factory = aws.secrets_client
    return with_broker_credentials(settings, secrets_client_factory(settings))


def with_broker_credentials(settings: Settings, secrets_client) -> Settings:
    """``settings`` with the user and password of the secret put into ``amqp_url``.

    The secret is the JSON ``{"username": ..., "password": ...}`` that the infra stack generates
    for the Amazon MQ broker; ``amqp_url`` is the broker's endpoint (``amqps://host:5671``).
    """
    from dataclasses import replace
    from urllib.parse import quote, urlsplit, urlunsplit

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
        raise ConfigError(f"{ENV_AMQP_URL} must be a broker URL, got {settings.amqp_url!r}")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return replace(settings, amqp_url=urlunsplit(parts._replace(netloc=netloc)))


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None


def _bool(name: str, value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")
