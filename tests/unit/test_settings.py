import pytest

from imagepipe import cors
from imagepipe import settings as s
from imagepipe.errors import ConfigError
from imagepipe.settings import Settings
from imagepipe.spec import DEFAULT_VARIANTS, Variant
from tests.conftest import CALLBACK_SECRET


def test_defaults_are_the_documented_contract():
    settings = Settings.from_env({"IMAGEPIPE_BUCKET": "photos"})
    assert settings.resize_queue == "imagepipe.resize"
    assert settings.dead_letter_queue == "imagepipe.resize.dead"
    assert settings.results_exchange == "imagepipe.results"
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.delivery_limit == 5
    assert settings.presign_expires <= 600
    assert settings.variants == DEFAULT_VARIANTS
    assert settings.imaging_engine == "vips"


def test_to_env_round_trips():
    original = Settings(bucket="b", stage="prod", s3_endpoint_url="http://127.0.0.1:9",
                        resize_queue="q", delivery_limit=2, allowed_types=("image/png",),
                        variants=(Variant("a", "cover", 10, 20, "webp", 70),),
                        invoker="lambda", resize_function="fn", workers=3, prefetch=7,
                        retry_backoff_s=1.5, allowed_origins=("https://x.example",),
                        health_port=9464, health_host="0.0.0.0", drain_timeout_s=7.5,
                        requeue_stuck_after_s=60, imaging_engine="pillow")
    assert Settings.from_env(original.to_env()) == original


def test_allowed_origins_are_normalised_once_for_every_consumer():
    settings = Settings.from_env({"IMAGEPIPE_BUCKET": "b",
                                  "IMAGEPIPE_ALLOWED_ORIGINS": "https://x.example/, https://x.example"})

    assert settings.allowed_origins == ("https://x.example",)
    assert cors.is_allowed("https://x.example", settings.allowed_origins)
    assert Settings(bucket="b", allowed_origins=("https://x.example/",)) == settings


def test_a_wildcard_origin_is_refused_where_the_origins_are_read():
    with pytest.raises(ConfigError, match="IMAGEPIPE_ALLOWED_ORIGINS.*wildcard"):
        Settings.from_env({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_ALLOWED_ORIGINS": "*"})


def test_settings_are_frozen():
    settings = Settings(bucket="b")
    with pytest.raises(AttributeError):
        settings.bucket = "other"


@pytest.mark.parametrize("env, message", [
    ({}, "IMAGEPIPE_BUCKET"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_PRESIGN_EXPIRES": "3600"}, "IMAGEPIPE_PRESIGN_EXPIRES"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_MAX_UPLOAD_BYTES": "lots"}, "IMAGEPIPE_MAX_UPLOAD_BYTES"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_INVOKER": "carrier-pigeon"}, "IMAGEPIPE_INVOKER"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_INVOKER": "lambda"}, "IMAGEPIPE_RESIZE_FUNCTION"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_IMAGING_ENGINE": "gpu"}, "IMAGEPIPE_IMAGING_ENGINE"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_VARIANTS": "{"}, "IMAGEPIPE_VARIANTS"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_HEALTH_PORT": "70000"}, "IMAGEPIPE_HEALTH_PORT"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_HEALTH_PORT": "http"}, "IMAGEPIPE_HEALTH_PORT"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_DRAIN_TIMEOUT_S": "0"}, "IMAGEPIPE_DRAIN_TIMEOUT_S"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_DRAIN_TIMEOUT_S": "soon"}, "IMAGEPIPE_DRAIN_TIMEOUT_S"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_VARIANTS": '[{"name": "x", "width": 0}]'}, "width"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_MULTIPART_PART_BYTES": str(5 * 1024 * 1024 - 1)},
     "IMAGEPIPE_MULTIPART_PART_BYTES"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_MAX_UPLOAD_BYTES": str(10_001 * 5 * 1024 * 1024),
      "IMAGEPIPE_MULTIPART_PART_BYTES": str(5 * 1024 * 1024)}, "10000 parts"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_CALLBACK_SECRET": "s3cr3t"}, "IMAGEPIPE_CALLBACK_SECRET"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_MULTIPART_THRESHOLD_BYTES": "0"},
     "IMAGEPIPE_MULTIPART_THRESHOLD_BYTES"),
    ({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_ALLOWED_ORIGINS": "https://*.example"},
     "IMAGEPIPE_ALLOWED_ORIGINS"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_worker_and_prefetch_defaults_follow_cores(monkeypatch):
    monkeypatch.setattr(s.os, "cpu_count", lambda: 4)
    settings = Settings(bucket="b")
    assert settings.worker_count == 4 and settings.prefetch_count == 8
    assert Settings(bucket="b", workers=1, prefetch=3).prefetch_count == 3


def test_lambda_invoker_concurrency_does_not_follow_cores(monkeypatch):
    # A lambda bridge only waits on Invoke: one core drives many invocations at once.
    monkeypatch.setattr(s.os, "cpu_count", lambda: 1)
    settings = Settings(bucket="b", invoker="lambda", resize_function="f")
    assert settings.worker_count == s.DEFAULT_LAMBDA_WORKERS == 64
    assert settings.prefetch_count == 128
    assert Settings(bucket="b", invoker="local").worker_count == 1


def test_lambda_default_concurrency_stays_within_the_reserved_concurrency():
    lambda_ = {"bucket": "b", "invoker": "lambda", "resize_function": "f"}
    assert Settings(**lambda_, resize_reserved_concurrency=10).worker_count == 10
    assert Settings(**lambda_, resize_reserved_concurrency=500).worker_count == 64
    assert Settings(**lambda_, resize_reserved_concurrency=500, workers=200).worker_count == 200
    env = {"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_INVOKER": "lambda",
           "IMAGEPIPE_RESIZE_FUNCTION": "f", "IMAGEPIPE_RESIZE_RESERVED_CONCURRENCY": "8",
           "IMAGEPIPE_WORKERS": "9"}
    with pytest.raises(ConfigError, match="IMAGEPIPE_WORKERS .*IMAGEPIPE_RESIZE_RESERVED"):
        Settings.from_env(env)


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
        Settings.from_env({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_CALLBACK_ALLOW_PRIVATE": "maybe"})


@pytest.mark.parametrize("value", ["0", "-5", str(365 * 24 * 3600), str(7 * 24 * 3600 + 1)])
def test_download_expires_outside_one_second_to_seven_days_fails_at_load(value):
    # S3 refuses a SigV4 presigned URL that lives longer than 7 days; 0 or less never works.
    with pytest.raises(ConfigError, match=r"IMAGEPIPE_DOWNLOAD_EXPIRES must be 1\.\.604800 s"):
        Settings.from_env({"IMAGEPIPE_BUCKET": "b", "IMAGEPIPE_DOWNLOAD_EXPIRES": value})


@pytest.mark.parametrize("value", [1, 7 * 24 * 3600])
def test_download_expires_accepts_its_bounds(value):
    settings = Settings.from_env({"IMAGEPIPE_BUCKET": "b",
                                  "IMAGEPIPE_DOWNLOAD_EXPIRES": str(value)})
    assert settings.download_expires == value


@pytest.mark.parametrize("name, value", [
    ("IMAGEPIPE_WORKERS", "-1"), ("IMAGEPIPE_PREFETCH", "-1"), ("IMAGEPIPE_MAX_PIXELS", "0"),
    ("IMAGEPIPE_RETRY_BACKOFF_S", "-0.5"), ("IMAGEPIPE_CALLBACK_TIMEOUT_S", "0"),
    ("IMAGEPIPE_REQUEUE_STUCK_AFTER_S", "-1"), ("IMAGEPIPE_DELIVERY_LIMIT", "0"),
])
def test_numbers_out_of_bounds_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"{name} must be"):
        Settings.from_env({"IMAGEPIPE_BUCKET": "b", name: value})


def test_repr_shows_no_credential():
    settings = Settings(bucket="b", callback_secret=CALLBACK_SECRET,
                        amqp_url="amqps://imagepipe:p%40ss-w0rd@b-1.mq.example:5671/%2F")

    shown = repr(settings)

    assert CALLBACK_SECRET not in shown and "whsec_" not in shown
    assert "p%40ss-w0rd" not in shown and "imagepipe:" not in shown
    assert "amqps://***@b-1.mq.example:5671/%2F" in shown  # where the broker is stays visible
    assert str(settings) == shown


def test_every_field_has_one_variable_that_round_trips():
    names = s.env_names()
    assert len(names) == len(set(names)) == len(s.Settings.__dataclass_fields__)
    assert "AMQP_URL" in names and "IMAGEPIPE_DOWNLOAD_EXPIRES" in names
    # Every variable is read: set each to a value other than its default and read it back.
    changed = Settings(bucket="b", stage="prod", region="eu-west-1",
                       s3_endpoint_url="http://127.0.0.1:9", amqp_url="amqp://h:1/%2F",
                       amqp_secret_arn="arn:x", resize_queue="rq", dead_letter_queue="dq",
                       dead_letter_exchange="dx", results_exchange="rx", delivery_limit=2,
                       max_upload_bytes=100, allowed_types=("image/png",), max_pixels=10,
                       variants=(Variant("a", "cover", 10, 20, "webp", 70),),
                       presign_expires=60, download_expires=120,
                       allowed_origins=("https://x.example",), invoker="lambda",
                       resize_function="fn", imaging_engine="pillow", workers=3, prefetch=7,
                       resize_reserved_concurrency=5,
                       retry_backoff_s=1.5, drain_timeout_s=7.5, requeue_stuck_after_s=60,
                       multipart_threshold_bytes=1, multipart_part_bytes=6 * 2**20,
                       callback_secret=CALLBACK_SECRET, callback_allow_private=True,
                       callback_allowed_prefixes=("https://hooks.example/",), callback_queue="cq",
                       callback_dead_letter_queue="cdq", callback_attempts=2,
                       callback_backoff_s=0.1, callback_timeout_s=3, rerender_queue="rrq",
                       rerender_workers=2, rerender_callbacks=True, health_port=9464,
                       health_host="0.0.0.0", delivery="cdn", delivery_keys=("k1", "k0"),
                       delivery_url_lifetime_s=86400, redirect_expires_s=60,
                       public_api_url="https://api.example.com", cdn_domain="d.example.net",
                       auth_mode="jwt", auth_issuer="https://idp",
                       auth_audience="imagepipe", auth_jwks_url="https://idp/jwks.json",
                       auth_secret="h" * 32, auth_secret_arn="arn:auth", auth_max_ttl_s=600)
    default = Settings(bucket="b")
    for name in s.Settings.__dataclass_fields__:
        if name != "bucket":
            assert getattr(changed, name) != getattr(default, name), name
    assert set(changed.to_env()) == set(names)
    assert Settings.from_env(changed.to_env()) == changed


def test_documented_defaults_are_the_defaults():
    rows = {name: default for name, default, _ in s.documentation()}
    assert set(rows) == set(s.env_names())
    assert rows["IMAGEPIPE_ALLOWED_TYPES"] == "`image/jpeg,image/png,image/webp,image/gif`"
    assert rows["IMAGEPIPE_DOWNLOAD_EXPIRES"] == "`3600`"
    assert rows["IMAGEPIPE_BUCKET"] == "(required)"


def test_settings_import_nothing_that_imports_them():
    # aws builds its clients from Settings; settings importing aws (even lazily) was a cycle.
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(s))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    imported |= {f"{node.module}.{alias.name}" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert not {name for name in imported if name and name.startswith("imagepipe.aws")}


def test_defaults_are_readable_by_field_name():
    assert s.default("resize_queue") == "imagepipe.resize" == Settings(bucket="b").resize_queue
    with pytest.raises(KeyError):
        s.default("no_such_setting")


def test_callback_allowed_prefixes_are_read_and_must_end_their_host():
    name = s.env_name("callback_allowed_prefixes")
    env = {"IMAGEPIPE_BUCKET": "b",
           name: "https://hooks.example.com/imagepipe/, https://a.example/"}
    settings = Settings.from_env(env)
    assert settings.callback_allowed_prefixes == ("https://hooks.example.com/imagepipe/",
                                                  "https://a.example/")
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings(bucket="b").callback_allowed_prefixes == ()
    for bad in ("https://hooks.example.com", "hooks.example.com/x", "ftp://h/x", "https:///x",
                "https://h/x?q=1"):
        with pytest.raises(ConfigError, match=name):
            Settings(bucket="b", callback_allowed_prefixes=(bad,))
