"""Operator commands find their settings with nothing exported: the environment's, else the
running local stack's (``.run/stack.env.json``), else the checkout's ``local`` stage."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagepipe.errors import ConfigError
from imagepipe.settings import Settings
from imagepipe_tools import cli, stack_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A checkout: the repository's chalicefile.json in a folder of its own."""
    root = tmp_path / "checkout"
    (root / "photos" / "deep").mkdir(parents=True)
    shutil.copy(ROOT / "chalicefile.json", root / "chalicefile.json")
    return root


def record_stack(checkout: Path, pid: int | None, **overrides) -> dict[str, str]:
    """What `make dev` leaves in .run/: its settings and a pid file per process."""
    settings = Settings(bucket="dev-photos", stage="local",
                        amqp_url="amqp://guest:guest@127.0.0.1:5999/%2F",
                        s3_endpoint_url="http://127.0.0.1:9123", resize_queue="dev.resize",
                        **overrides)
    run_dir = checkout / stack_env.RUN_DIR
    run_dir.mkdir(exist_ok=True)
    stack_env.write_stack_env(run_dir, settings.to_env())
    if pid is not None:
        (run_dir / "s3.pid").write_text(f"{pid}\n")
    return settings.to_env()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_environment_wins_when_it_names_a_bucket(checkout):
    record_stack(checkout, pid=os.getpid())
    environ = {"IMAGEPIPE_BUCKET": "prod-photos", "IMAGEPIPE_RESIZE_QUEUE": "prod.resize"}

    chosen = stack_env.operator_settings(environ, cwd=checkout)

    assert chosen.source == stack_env.FROM_ENVIRONMENT
    assert chosen.settings.bucket == "prod-photos"
    assert chosen.settings.resize_queue == "prod.resize"
    assert chosen.credentials == {}  # never fake credentials against a real account


def test_a_running_local_stack_is_used_from_anywhere_in_the_checkout(checkout):
    record_stack(checkout, pid=os.getpid())

    chosen = stack_env.operator_settings({}, cwd=checkout / "photos" / "deep")

    assert chosen.settings.bucket == "dev-photos"
    assert chosen.settings.amqp_url == "amqp://guest:guest@127.0.0.1:5999/%2F"
    assert chosen.settings.s3_endpoint_url == "http://127.0.0.1:9123"
    assert chosen.settings.resize_queue == "dev.resize"
    assert "running local stack" in chosen.source
    assert str(checkout / ".run" / "stack.env.json") in chosen.source
    assert chosen.credentials == stack_env.LOCAL_AWS_CREDENTIALS


def test_what_the_environment_sets_still_wins_over_the_stack(checkout):
    record_stack(checkout, pid=os.getpid())
    environ = {"AMQP_URL": "amqp://guest:guest@10.0.0.9:5672/%2F", "IMAGEPIPE_BUCKET": ""}

    chosen = stack_env.operator_settings(environ, cwd=checkout)

    assert chosen.settings.amqp_url == "amqp://guest:guest@10.0.0.9:5672/%2F"
    assert chosen.settings.bucket == "dev-photos"  # an empty variable names no bucket


def test_a_stack_that_was_killed_is_not_used_the_local_stage_is(checkout):
    record_stack(checkout, pid=dead_pid())

    chosen = stack_env.operator_settings({}, cwd=checkout)

    manifest = json.loads((checkout / "chalicefile.json").read_text())
    local = manifest["stages"]["local"]
    assert chosen.settings.bucket == local["bucket"]
    assert chosen.settings.amqp_url == local["amqp_url"]
    assert chosen.settings.s3_endpoint_url == local["s3_endpoint_url"]
    assert "'local' stage" in chosen.source and "no local stack is running" in chosen.source
    assert chosen.credentials == stack_env.LOCAL_AWS_CREDENTIALS


def test_without_a_stack_the_local_stage_is_used(checkout):
    chosen = stack_env.operator_settings({}, cwd=checkout / "photos")

    assert chosen.settings.bucket == "imagepipe-local"
    assert chosen.settings.stage == "local"
    assert str(checkout / "chalicefile.json") in chosen.source


def test_outside_any_checkout_the_missing_bucket_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(stack_env, "__file__", str(tmp_path / "site" / "a" / "b" / "x.py"))

    with pytest.raises(ConfigError, match="IMAGEPIPE_BUCKET is required"):
        stack_env.operator_settings({}, cwd=tmp_path)


def test_the_dev_stack_writes_what_the_operator_commands_read(tmp_path):
    from imagepipe_dev import stack

    env = Settings(bucket="b").to_env()
    stack_env.write_stack_env(tmp_path, env)

    assert stack.load_stack_env(tmp_path) == env == stack_env.read_stack_env(tmp_path)
    assert stack.FAKE_AWS == stack_env.LOCAL_AWS_CREDENTIALS


def test_verbose_commands_say_where_their_settings_came_from(checkout, monkeypatch, capsys):
    record_stack(checkout, pid=os.getpid())
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("IMAGEPIPE_BUCKET", raising=False)
    monkeypatch.delenv("AMQP_URL", raising=False)
    for name in stack_env.LOCAL_AWS_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)

    settings = cli.operator_settings(argparse.Namespace(verbose=True, command="dlq"))

    assert settings.bucket == "dev-photos"
    err = capsys.readouterr().err
    assert err.startswith("imagepipe dlq: settings from the running local stack (")
    # boto3 signs moto's requests (a replay resets the job's status in S3) with these.
    assert os.environ["AWS_ACCESS_KEY_ID"] == "local"

    cli.operator_settings(argparse.Namespace(verbose=False, command="dlq"))
    assert capsys.readouterr().err == ""
