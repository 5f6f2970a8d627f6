"""The broker's credentials come from Secrets Manager (moto), once, at the edge."""

import json

import boto3
import pytest
from moto import mock_aws

from imagepipe import settings as settings_edge
from imagepipe.errors import ConfigError
from imagepipe.settings import (ENV_AMQP_SECRET_ARN, ENV_AMQP_URL, ENV_BUCKET, ENV_CALLBACK_SECRET,
                                Settings)

ENDPOINT = "amqps://b-1234.mq.us-east-1.amazonaws.com:5671"


@pytest.fixture
def secrets(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def _secret(client, value) -> str:
    body = value if isinstance(value, str) else json.dumps(value)
    return client.create_secret(Name="imagepipe-test-broker", SecretString=body)["ARN"]


def test_url_gets_user_and_password_from_the_secret(secrets):
    arn = _secret(secrets, {"username": "imagepipe", "password": "p@ss/w:rd"})
    env = {ENV_BUCKET: "b", ENV_AMQP_URL: ENDPOINT, ENV_AMQP_SECRET_ARN: arn}
    calls = []

    def factory(settings):
        calls.append(settings.amqp_secret_arn)
        return secrets

    loaded = settings_edge.load(env, factory)
    assert loaded.amqp_url == "amqps://imagepipe:p%40ss%2Fw%3Ard@b-1234.mq.us-east-1.amazonaws.com:5671"
    assert calls == [arn]
    import pika  # the URL pika gets back has the original password

    params = pika.URLParameters(loaded.amqp_url)
    assert params.credentials.password == "p@ss/w:rd"
    assert params.ssl_options is not None and params.port == 5671


def test_without_a_secret_nothing_but_the_environment_is_read():
    def factory(settings):
        raise AssertionError("no client is made without a secret")

    loaded = settings_edge.load({ENV_BUCKET: "b"}, factory)
    assert loaded == Settings.from_env({ENV_BUCKET: "b"})


def test_secret_arn_round_trips_through_the_environment():
    settings = Settings(bucket="b", amqp_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:x")
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize("value", ["not json", {"username": "only"}, ["a"]])
def test_malformed_secret_is_a_config_error_without_the_value(secrets, value):
    arn = _secret(secrets, value)
    env = {ENV_BUCKET: "b", ENV_AMQP_URL: ENDPOINT, ENV_AMQP_SECRET_ARN: arn}
    with pytest.raises(ConfigError, match="username and password") as caught:
        settings_edge.load(env, lambda s: secrets)
    assert "only" not in str(caught.value)


def test_missing_secret_is_a_config_error(secrets):
    env = {ENV_BUCKET: "b", ENV_AMQP_URL: ENDPOINT,
           ENV_AMQP_SECRET_ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone"}
    with pytest.raises(ConfigError, match="cannot be read"):
        settings_edge.load(env, lambda s: secrets)


# --- the HS256 auth secret ------------------------------------------------------------------------

AUTH_ENV = {ENV_BUCKET: "b", "IMAGEPIPE_AUTH_MODE": "jwt", "IMAGEPIPE_AUTH_ISSUER": "https://app",
            "IMAGEPIPE_AUTH_AUDIENCE": "imagepipe"}


@pytest.mark.parametrize("stored", ["h" * 40, {"secret": "h" * 40}])
def test_the_auth_secret_is_read_from_its_arn_at_load(secrets, stored):
    arn = _secret(secrets, stored)

    loaded = settings_edge.load({**AUTH_ENV, "IMAGEPIPE_AUTH_SECRET_ARN": arn},
                                lambda settings: secrets)

    assert loaded.auth_secret == "h" * 40
    assert "h" * 40 not in repr(loaded)
    assert "IMAGEPIPE_AUTH_SECRET" not in Settings.from_env(
        {**AUTH_ENV, "IMAGEPIPE_AUTH_SECRET_ARN": arn}).to_env()


@pytest.mark.parametrize("stored, says", [
    ("short", "at least 32 bytes .*IMAGEPIPE_AUTH_SECRET_ARN"),
    ({"secret": "short"}, "at least 32 bytes"),
    ({"key": "h" * 40}, "field 'secret' of a JSON object"),
])
def test_an_unusable_auth_secret_fails_at_load(secrets, stored, says):
    arn = _secret(secrets, stored)
    with pytest.raises(ConfigError, match=says) as caught:
        settings_edge.load({**AUTH_ENV, "IMAGEPIPE_AUTH_SECRET_ARN": arn}, lambda s: secrets)
    assert "short" not in str(caught.value) and "h" * 40 not in str(caught.value)


def test_the_auth_secret_is_one_of_the_secret_settings_read_the_generic_way(secrets):
    """Its ``<NAME>_ARN`` is the generic one, read with the other secrets by one client."""
    assert "IMAGEPIPE_AUTH_SECRET" in settings_edge.SECRET_ENV
    assert settings_edge.secret_arn_env("IMAGEPIPE_AUTH_SECRET") == "IMAGEPIPE_AUTH_SECRET_ARN"
    auth = _secret(secrets, "a" * 40)
    keys = secrets.create_secret(Name="imagepipe-test-keys", SecretString="k-new,k-old")["ARN"]
    made = []

    loaded = settings_edge.load({**AUTH_ENV, "IMAGEPIPE_AUTH_SECRET_ARN": auth,
                                 "IMAGEPIPE_DELIVERY_KEYS_ARN": keys},
                                lambda s: made.append(s) or secrets)

    assert (loaded.auth_secret, loaded.delivery_keys) == ("a" * 40, ("k-new", "k-old"))
    assert len(made) == 1
    with pytest.raises(ConfigError, match="both set"):
        settings_edge.load({**AUTH_ENV, "IMAGEPIPE_AUTH_SECRET_ARN": auth,
                            "IMAGEPIPE_AUTH_SECRET": "b" * 40}, lambda s: secrets)


def test_the_token_command_reads_a_stages_auth_secret_the_same_way(secrets):
    arn = _secret(secrets, {"secret": "c" * 40})
    stage = Settings(bucket="b", auth_mode="jwt", auth_issuer="https://app",
                     auth_audience="imagepipe", auth_secret_arn=arn)

    assert settings_edge.load_auth_secret(stage, lambda s: secrets).auth_secret == "c" * 40


@pytest.mark.parametrize("env, says", [
    ({"IMAGEPIPE_AUTH_MODE": "oauth"}, "IMAGEPIPE_AUTH_MODE"),
    ({**AUTH_ENV}, "needs IMAGEPIPE_AUTH_JWKS_URL"),
    ({**AUTH_ENV, "IMAGEPIPE_AUTH_SECRET": "short"}, "32 bytes"),
    ({**AUTH_ENV, "IMAGEPIPE_AUTH_ISSUER": "", "IMAGEPIPE_AUTH_SECRET": "s" * 40},
     "IMAGEPIPE_AUTH_ISSUER"),
    ({"IMAGEPIPE_AUTH_MAX_TTL_S": "0"}, "IMAGEPIPE_AUTH_MAX_TTL_S"),
])
def test_auth_settings_are_checked_at_load(env, says):
    with pytest.raises(ConfigError, match=says):
        Settings.from_env({ENV_BUCKET: "b", **env})
# --- every secret setting: <NAME>_ARN names the Secrets Manager secret that holds it ----------

CALLBACK_SECRET = "whsec_" + __import__("base64").b64encode(b"k" * 32).decode()


def test_a_secret_setting_is_read_from_the_secret_its_arn_names(secrets):
    arn = secrets.create_secret(Name="imagepipe-test-callback", SecretString=CALLBACK_SECRET)["ARN"]
    broker = _secret(secrets, {"username": "imagepipe", "password": "hunter22"})
    env = {ENV_BUCKET: "b", ENV_AMQP_URL: ENDPOINT, ENV_AMQP_SECRET_ARN: broker,
           settings_edge.secret_arn_env(ENV_CALLBACK_SECRET): arn}
    made = []

    loaded = settings_edge.load(env, lambda s: made.append(s) or secrets)

    assert loaded.callback_secret == CALLBACK_SECRET
    assert loaded.amqp_url.startswith("amqps://imagepipe:hunter22@")
    assert len(made) == 1  # one client for every secret
    # Nothing secret in the repr: no callback secret, no broker password.
    shown = repr(loaded)
    assert CALLBACK_SECRET not in shown and "hunter22" not in shown and "imagepipe:" not in shown
    assert "amqps://***@b-1234.mq.us-east-1.amazonaws.com:5671" in shown


def test_every_secret_setting_has_an_arn_variable_and_none_is_in_the_repr():
    assert ENV_CALLBACK_SECRET in settings_edge.SECRET_ENV
    settings = Settings.from_env({ENV_BUCKET: "b", ENV_CALLBACK_SECRET: CALLBACK_SECRET,
                                  ENV_AMQP_URL: "amqp://user:pa55word@host:5672/%2F"})
    assert CALLBACK_SECRET not in repr(settings) and "pa55word" not in repr(settings)
    assert "amqp://***@host:5672/%2F" in repr(settings)
    assert settings_edge.secret_arn_env(ENV_CALLBACK_SECRET) == "IMAGEPIPE_CALLBACK_SECRET_ARN"


def test_a_secret_given_both_in_plain_and_by_arn_is_refused_without_its_value(secrets):
    arn = secrets.create_secret(Name="imagepipe-test-both", SecretString=CALLBACK_SECRET)["ARN"]
    env = {ENV_BUCKET: "b", ENV_CALLBACK_SECRET: CALLBACK_SECRET,
           settings_edge.secret_arn_env(ENV_CALLBACK_SECRET): arn}
    with pytest.raises(ConfigError, match="both set") as caught:
        settings_edge.load(env, lambda s: secrets)
    assert CALLBACK_SECRET not in str(caught.value)


@pytest.mark.parametrize("value", ["   ", "whsec_not-base64!", "plain-password"])
def test_a_bad_secret_value_fails_at_load_without_showing_it(secrets, value):
    arn = secrets.create_secret(Name="imagepipe-test-bad", SecretString=value)["ARN"]
    env = {ENV_BUCKET: "b", settings_edge.secret_arn_env(ENV_CALLBACK_SECRET): arn}
    with pytest.raises(ConfigError) as caught:
        settings_edge.load(env, lambda s: secrets)
    assert ENV_CALLBACK_SECRET in str(caught.value)
    if value.strip():
        assert value not in str(caught.value)


def test_an_unreadable_secret_names_the_variable(secrets):
    env = {ENV_BUCKET: "b", settings_edge.secret_arn_env(ENV_CALLBACK_SECRET):
           "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone"}
    with pytest.raises(ConfigError, match="IMAGEPIPE_CALLBACK_SECRET_ARN: .*cannot be read"):
        settings_edge.load(env, lambda s: secrets)
