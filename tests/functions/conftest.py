"""Load a Chalice function's app.py and give it a ``chalice.test.Client`` for given Settings."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from imagepipe.settings import Settings
from imagepipe.status import StatusStore

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
STAGE = "test"


def load_app_module(function: str):
    """Import functions/<function>/app.py under a unique module name (both files are app.py)."""
    path = FUNCTIONS / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"imagepipe_function_{function}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_project(tmp_path: Path, settings: Settings) -> Path:
    """A project dir whose .chalice/config.json gives the stage the settings' environment."""
    config = {
        "version": "2.0",
        "app_name": "imagepipe-test",
        "stages": {STAGE: {"environment_variables": settings.to_env()}},
    }
    (tmp_path / ".chalice").mkdir(parents=True, exist_ok=True)
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.fixture
def chalice_client(tmp_path):
    """``chalice_client(module, settings)`` -> a test Client over that app with those settings."""
    from chalice.test import Client

    clients = []

    def make(module, settings: Settings):
        # One project dir per client: Chalice reads config.json lazily.
        project = write_project(tmp_path / f"project-{len(clients)}", settings)
        client = Client(module.app, stage_name=STAGE, project_dir=str(project))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


# --- the upload API over moto S3 and the real RabbitMQ ---------------------------------------

@pytest.fixture
def settings(s3_mock, broker_settings) -> Settings:
    return dataclasses.replace(broker_settings, bucket=s3_mock[1])


@pytest.fixture
def offline_settings(s3_mock) -> Settings:
    """For tests that never publish: no queues to declare, and a publish would fail (503)."""
    return Settings(bucket=s3_mock[1], amqp_url="amqp://guest:guest@127.0.0.1:1/%2F")


@pytest.fixture
def make_api(chalice_client):
    """``make_api(settings)`` -> a test client over a freshly loaded upload app."""
    modules = []

    def make(settings: Settings):
        module = load_app_module("upload")
        modules.append(module)
        client = chalice_client(module, settings)
        client.app_module = module  # for the few tests that reach into the warm service
        return client

    yield make
    for module in modules:
        if module._service is not None:
            module._service.publisher.close()


@pytest.fixture
def api(make_api, settings):
    return make_api(settings)


@pytest.fixture
def store(s3_mock) -> StatusStore:
    s3, bucket = s3_mock
    return StatusStore(s3, bucket)
