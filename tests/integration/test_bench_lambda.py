"""The ``lambda`` bench section runs a real pinned bridge against the fake Invoke endpoint and the
real RabbitMQ, and leaves no queue behind. Its numbers are checked for shape, not speed."""

from __future__ import annotations

import os

import pika
import pytest

from imagepipe_dev.bench import BenchContext
from imagepipe_dev.bench import lambda_invoker
from tests.conftest import AMQP_URL

pytestmark = pytest.mark.broker


@pytest.mark.timeout(180)
def test_lambda_section_runs_the_default_concurrency_against_the_cpu_count(monkeypatch):
    monkeypatch.setenv("AMQP_URL", AMQP_URL)
    monkeypatch.setattr(lambda_invoker, "JOBS_QUICK", 64)
    monkeypatch.setattr(lambda_invoker, "BASELINE_WAVES", 1)
    topologies = []
    real_topology = lambda_invoker._Topology

    def recording_topology(*args, **kwargs):
        topologies.append(real_topology(*args, **kwargs))
        return topologies[-1]

    monkeypatch.setattr(lambda_invoker, "_Topology", recording_topology)
    lines: list[str] = []

    result = lambda_invoker.run(BenchContext(quick=True, say=lines.append))

    details = result["details"]
    cores = os.cpu_count() or 1
    assert details["baseline_cpu_count_workers"]["max_in_flight"] == cores
    assert details["default"]["max_in_flight"] == 64
    assert details["default"]["jobs"] == 64
    assert result["summary"]["vs_cpu_count_workers"] > 1
    assert any("default (64 workers)" in line for line in lines)
    assert len(topologies) == 2
    for topology in topologies:
        assert not _exists(topology.settings.resize_queue)
        assert not _exists(topology.events_queue)


def _exists(queue: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()
