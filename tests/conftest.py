"""Shared fixtures: fake AWS credentials, moto (in-process and server), unique broker names."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# This checkout's core and tools come first, here and in every process a test starts (the
# bridge, the CLI, the local stack), whatever else is installed.
CODE_PATHS = [str(ROOT), str(ROOT / "tools")]
for _path in reversed(CODE_PATHS):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ["PYTHONPATH"] = os.pathsep.join(CODE_PATHS + [p for p in os.environ.get(
    "PYTHONPATH", "").split(os.pathsep) if p and p not in CODE_PATHS])

# Never let a test reach real AWS, whatever the developer's environment holds.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)

from imagepipe.settings import DEFAULT_AMQP_URL, ENV_AMQP_URL, Settings  # noqa: E402

AMQP_URL = os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL)
# A Standard Webhooks secret for stages with callbacks on (32 bytes of "t").
CALLBACK_SECRET = "whsec_dHR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0dHR0dHQ="


def pytest_configure(config):
    config.addinivalue_line("markers", "broker: needs the real RabbitMQ")
    config.addinivalue_line("markers", "e2e: starts the local stack as subprocesses")
    config.addinivalue_line("markers", "soak: long-running fault or load test; `make soak`, not `make test`")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bucket_name() -> str:
    return unique_name("imagepipe")


@pytest.fixture
def s3_mock(bucket_name):
    """In-process moto S3 with one empty bucket: yields (client, bucket)."""
    from moto import mock_aws

    from imagepipe.aws import s3_client

    with mock_aws():
        client = s3_client(Settings(bucket=bucket_name))
        client.create_bucket(Bucket=bucket_name)
        yield client, bucket_name


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server on a free port for tests that need S3 over HTTP."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def broker_settings(bucket_name):
    """Settings with unique queue/exchange names; the topology is declared and removed after."""
    import pika

    from imagepipe.broker import declare_topology

    name = unique_name("imagepipe-test")
    settings = Settings(
        bucket=bucket_name,
        amqp_url=AMQP_URL,
        resize_queue=f"{name}.resize",
        rerender_queue=f"{name}.rerender",
        dead_letter_queue=f"{name}.resize.dead",
        dead_letter_exchange=f"{name}.resize.dlx",
        results_exchange=f"{name}.results",
        delivery_limit=3,
        retry_backoff_s=0.05,
    )
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    declare_topology(channel, settings)
    connection.close()
    yield settings
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for queue in (settings.resize_queue, settings.rerender_queue, settings.dead_letter_queue):
        channel.queue_delete(queue)
    for exchange in (settings.dead_letter_exchange, settings.results_exchange):
        channel.exchange_delete(exchange)
    connection.close()
