"""Settings: read once at the edge (a handler, the bridge's main, a CLI) into a frozen object.

Every environment variable the project reads is named here and nowhere else. Core code receives
a ``Settings`` and never looks at ``os.environ`` itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

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
ENV_RESIZE_FUNCTION = "IMAGEPIPE_RESIZE_FUNCTION"
ENV_WORKERS = "IMAGEPIPE_WORKERS"
ENV_PREFETCH = "IMAGEPIPE_PREFETCH"
ENV_RETRY_BACKOFF = "IMAGEPIPE_RETRY_BACKOFF_S"
ENV_ALLOWED_ORIGINS = "IMAGEPIPE_ALLOWED_ORIGINS"
ENV_DRAIN_TIMEOUT = "IMAGEPIPE_DRAIN_TIMEOUT_S"
ENV_REQUEUE_STUCK_AFTER = "IMAGEPIPE_REQUEUE_STUCK_AFTER_S"
ENV_METRICS_PORT = "IMAGEPIPE_METRICS_PORT"
ENV_METRICS_HOST = "IMAGEPIPE_METRICS_HOST"

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_RESIZE_QUEUE = "imagepipe.resize"
DEFAULT_DEAD_LETTER_QUEUE = "imagepipe.resize.dead"
DEFAULT_DEAD_LETTER_EXCHANGE = "imagepipe.resize.dlx"
DEFAULT_RESULTS_EXCHANGE = "imagepipe.results"
DEFAULT_DELIVERY_LIMIT = 5
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
DEFAULT_ALLOWED_TYPES = ("image/jpeg", "image/png", "image/webp")
DEFAULT_MAX_PIXELS = 50_000_000
# S3 accepts up to 7 days for SigV4; uploads are short-lived by contract.
MAX_PRESIGN_EXPIRES = 600
DEFAULT_PRESIGN_EXPIRES = 600
DEFAULT_DOWNLOAD_EXPIRES = 3600
INVOKERS = ("local", "lambda")
# Below the usual stop grace periods (Kubernetes and ECS: 30 s), so the bridge hands back what
# is left itself instead of being SIGKILLed.
DEFAULT_DRAIN_TIMEOUT_S = 25.0
DEFAULT_REQUEUE_STUCK_AFTER_S = 900
DEFAULT_METRICS_HOST = "127.0.0.1"


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
    workers: int = 0  # 0: one per core
    prefetch: int = 0  # 0: twice the workers
    retry_backoff_s: float = 0.5
    allowed_origins: tuple[str, ...] = ()  # browser origins allowed to upload (CORS)
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S  # the bridge's shutdown bound
    # `complete` publishes again for an upload queued this long ago that never started; 0: off
    requeue_stuck_after_s: int = DEFAULT_REQUEUE_STUCK_AFTER_S
    metrics_port: int = 0  # the bridge's /healthz and /metrics; 0: off
    metrics_host: str = DEFAULT_METRICS_HOST

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
        if self.invoker == "lambda" and not self.resize_function:
            raise ConfigError(f"{ENV_RESIZE_FUNCTION} is required with the lambda invoker")
        if not self.allowed_types:
            raise ConfigError(f"{ENV_ALLOWED_TYPES} must name at least one type")
        if self.requeue_stuck_after_s < 0:
            raise ConfigError(f"{ENV_REQUEUE_STUCK_AFTER} must be 0 (off) or positive")
        if not self.drain_timeout_s > 0:
            raise ConfigError(f"{ENV_DRAIN_TIMEOUT} must be a positive number of seconds")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"{ENV_METRICS_PORT} must be 0 (off) or a port up to 65535")

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
            "metrics_host": ENV_METRICS_HOST,
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
            "requeue_stuck_after_s": ENV_REQUEUE_STUCK_AFTER,
            "metrics_port": ENV_METRICS_PORT,
        }
        for attr, name in numbers.items():
            if env.get(name):
                kwargs[attr] = _int(name, env[name])
        seconds = {"retry_backoff_s": ENV_RETRY_BACKOFF, "drain_timeout_s": ENV_DRAIN_TIMEOUT}
        for attr, name in seconds.items():
            if env.get(name):
                try:
                    kwargs[attr] = float(env[name])
                except ValueError:
                    raise ConfigError(f"{name} must be a number") from None
        if env.get(ENV_ALLOWED_TYPES):
            kwargs["allowed_types"] = tuple(
                t.strip() for t in env[ENV_ALLOWED_TYPES].split(",") if t.strip()
            )
        if env.get(ENV_ALLOWED_ORIGINS):
            kwargs["allowed_origins"] = tuple(
                o.strip() for o in env[ENV_ALLOWED_ORIGINS].split(",") if o.strip()
            )
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
            ENV_WORKERS: str(self.workers),
            ENV_PREFETCH: str(self.prefetch),
            ENV_RETRY_BACKOFF: str(self.retry_backoff_s),
            ENV_DRAIN_TIMEOUT: str(self.drain_timeout_s),
            ENV_REQUEUE_STUCK_AFTER: str(self.requeue_stuck_after_s),
            ENV_ALLOWED_ORIGINS: ",".join(self.allowed_origins),
            ENV_METRICS_PORT: str(self.metrics_port),
            ENV_METRICS_HOST: self.metrics_host,
        }
        if self.s3_endpoint_url:
            env[ENV_S3_ENDPOINT_URL] = self.s3_endpoint_url
        if self.resize_function:
            env[ENV_RESIZE_FUNCTION] = self.resize_function
        return env


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
