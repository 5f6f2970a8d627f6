import pytest

from imagepipe import cors
from imagepipe import settings as s
from imagepipe.errors import ConfigError
from imagepipe.settings import Settings
from imagepipe.spec import DEFAULT_VARIANTS, Variant
from tests.conftest import CALLBACK_SECRET


def test_defaults_are_the_documented_contract():
    settings = Settings.from_env({s.ENV_BUCKET: "photos"})
    assert settings.resize_queue == "imagepipe.resize"
    assert settings.dead_letter_queue == "imagepipe.resize.dead"
    assert settings.results_exchange == "imagepipe.results"
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.delivery_limit == 5
    assert settings.presign_expires <= 600
    assert settings.variants == DEFAULT_VARIANTS


def test_to_env_round_trips():
    original = Settings(bucket="b", stage="prod", s3_endpoint_url="http://127.0.0.1:9",
                        resize_queue="q", delivery_limit=2, allowed_types=("image/png",),
                        variants=(Variant("a", "cover", 10, 20, "webp", 70),),
                        invoker="lambda", resize_function="fn", workers=3, prefetch=7,
                        retry_backoff_s=1.5, allowed_origins=("https://x.example",),
                        health_port=9464, health_host="0.0.0.0", drain_timeout_s=7.5,
                        requeue_stuck_after_s=60, imaging_engine="vips")
    assert Settings.from_env(original.to_env()) == original


def test_allowed_origins_are_normalised_once_for_every_consumer():
    settings = Settings.from_env({s.ENV_BUCKET: "b",
                                  s.ENV_ALLOWED_ORIGINS: "https://x.example/, https://x.example"})

    assert settings.allowed_origins == ("https://x.example",)
    assert cors.is_allowed("https://x.example", settings.allowed_origins)
    assert Settings(bucket="b", allowed_origins=("https://x.example/",)) == settings


def test_a_wildcard_origin_is_refused_where_the_origins_are_read():
    with pytest.raises(ConfigError, match="IMAGEPIPE_ALLOWED_ORIGINS.*wildcard"):
        Settings.from_env({s.ENV_BUCKET: "b", s.ENV_ALLOWED_ORIGINS: "*"})


def test_settings_are_frozen():
    settings = Settings(bucket="b")
    with pytest.raises(AttributeError):
        settings.bucket = "other"


@pytest.mark.parametrize("env, message", [
    ({}, "IMAGEPIPE_BUCKET"),
    ({s.ENV_BUCKET: "b", s.ENV_PRESIGN_EXPIRES: "3600"}, "IMAGEPIPE_PRESIGN_EXPIRES"),
    ({s.ENV_BUCKET: "b", s.ENV_MAX_UPLOAD_BYTES: "lots"}, "IMAGEPIPE_MAX_UPLOAD_BYTES"),
    ({s.ENV_BUCKET: "b", s.ENV_INVOKER: "carrier-pigeon"}, "IMAGEPIPE_INVOKER"),
    ({s.ENV_BUCKET: "b", s.ENV_INVOKER: "lambda"}, "IMAGEPIPE_RESIZE_FUNCTION"),
    ({s.ENV_BUCKET: "b", s.ENV_IMAGING_ENGINE: "gpu"}, "IMAGEPIPE_IMAGING_ENGINE"),
    ({s.ENV_BUCKET: "b", s.ENV_VARIANTS: "{"}, "IMAGEPIPE_VARIANTS"),
    ({s.ENV_BUCKET: "b", s.ENV_HEALTH_PORT: "70000"}, "IMAGEPIPE_HEALTH_PORT"),
    ({s.ENV_BUCKET: "b", s.ENV_HEALTH_PORT: "http"}, "IMAGEPIPE_HEALTH_PORT"),
    ({s.ENV_BUCKET: "b", s.ENV_DRAIN_TIMEOUT: "0"}, "IMAGEPIPE_DRAIN_TIMEOUT_S"),
    ({s.ENV_BUCKET: "b", s.ENV_DRAIN_TIMEOUT: "soon"}, "IMAGEPIPE_DRAIN_TIMEOUT_S"),
    ({s.ENV_BUCKET: "b", s.ENV_VARIANTS: '[{"name": "x", "width": 0}]'}, "width"),
    ({s.ENV_BUCKET: "b", s.ENV_MULTIPART_PART_BYTES: str(5 * 1024 * 1024 - 1)},
     "IMAGEPIPE_MULTIPART_PART_BYTES"),
    ({s.ENV_BUCKET: "b", s.ENV_MAX_UPLOAD_BYTES: str(10_001 * 5 * 1024 * 1024),
      s.ENV_MULTIPART_PART_BYTES: str(5 * 1024 * 1024)}, "10000 parts"),
    ({s.ENV_BUCKET: "b", s.ENV_MULTIPART_THRESHOLD: "0"}, "IMAGEPIPE_MULTIPART_THRESHOLD_BYTES"),
    ({s.ENV_BUCKET: "b", s.ENV_ALLOWED_ORIGINS: "https://*.example"}, "IMAGEPIPE_ALLOWED_ORIGINS"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_worker_and_prefetch_defaults_follow_cores(monkeypatch):
    monkeypatch.setattr(s.os, "cpu_count", lambda: 4)
    settings = Settings(bucket="b")
    assert settings.worker_count == 4 and settings.prefetch_count == 8
    assert Settings(bucket="b", workers=1, prefetch=3).prefetch_count == 3


def test_multipart_defaults_and_round_trip():
    settings = Settings(bucket="b")
    assert settings.multipart_threshold_bytes == 16 * 1024 * 1024
    assert settings.multipart_part_bytes == 8 * 1024 * 1024
    changed = Settings(bucket="b", multipart_threshold_bytes=1, multipart_part_bytes=6 * 2**20)
    assert Settings.from_env(changed.to_env()) == changed


def test_callback_settings_round_trip_and_keep_the_secret_out_of_repr():
    settings = Settings(bucket="b", callback_secret=CALLBACK_SECRET, callback_allow_private=True,
                        callback_queue="cq", callback_dead_letter_queue="cdq",
                        callback_attempts=2, callback_backoff_s=0.1, callback_timeout_s=3)
    assert Settings.from_env(settings.to_env()) == settings
    assert CALLBACK_SECRET not in repr(settings) and "whsec" not in repr(settings)
    assert Settings(bucket="b").callback_secret == ""  # callbacks are off by default
    with pytest.raises(ConfigError, match="IMAGEPIPE_CALLBACK_ALLOW_PRIVATE"):
        Settings.from_env({s.ENV_BUCKET: "b", s.ENV_CALLBACK_ALLOW_PRIVATE: "maybe"})
