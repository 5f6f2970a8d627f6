"""A missing credential or region is one line, found without any AWS call."""

import botocore.session
import pytest

from infra.deploy import credentials

NO_FILES = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def aws_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in NO_FILES.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_credentials_and_region_from_the_environment(aws_env):
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    aws_env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert credentials.check(botocore.session.get_session()) == "eu-west-1"


def test_aws_region_is_enough_for_the_region(aws_env):
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    aws_env.setenv("AWS_REGION", "eu-central-1")
    assert credentials.check(botocore.session.get_session()) == "eu-central-1"


def test_missing_credentials_is_one_line(aws_env):
    aws_env.setenv("AWS_REGION", "eu-west-1")
    with pytest.raises(credentials.MissingCredentials) as caught:
        credentials.check(botocore.session.get_session())
    message = str(caught.value)
    assert "no AWS credentials" in message and "\n" not in message


def test_missing_region_is_one_line(aws_env):
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(credentials.MissingCredentials, match="no AWS region"):
        credentials.check(botocore.session.get_session())


def test_make_deploy_without_credentials_stops_before_packaging(aws_env, capsys, monkeypatch):
    from infra.deploy import __main__ as cli

    aws_env.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setattr(cli.package, "package", lambda *a, **k: pytest.fail("packaged"))
    assert cli.main(["deploy", "--stage", "prod"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                   "AWS_SECRET_ACCESS_KEY (or run `aws sso login`)"]


def test_make_deploy_without_docker_stops_before_packaging(aws_env, capsys, monkeypatch):
    from infra.deploy import __main__ as cli

    aws_env.setenv("AWS_REGION", "eu-west-1")
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setattr(cli.bridge_image.shutil, "which", lambda name: None)
    monkeypatch.setattr(cli.package, "package", lambda *a, **k: pytest.fail("packaged"))
    assert cli.main(["deploy", "--stage", "prod"]) == cli.EXIT_CONFIG
    assert capsys.readouterr().err.strip() == (
        "error: docker is not installed (make deploy builds the bridge image with it)")
