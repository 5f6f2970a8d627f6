"""The broker's credentials come from Secrets Manager (moto), once, at the edge."""

import json

import boto3
import pytest
from moto import mock_aws

from imagepipe import settings as settings_edge
from imagepipe.errors import ConfigError
from imagepipe.settings import ENV_AMQP_SECRET_ARN, ENV_AMQP_URL, ENV_BUCKET, Settings

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
