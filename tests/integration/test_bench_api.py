"""The ``api`` bench section runs against the real RabbitMQ and leaves nothing behind."""

from __future__ import annotations

import pika

from imagepipe_dev.bench import BenchContext, api
from tests.conftest import AMQP_URL


def test_api_section_measures_every_route_and_cleans_up(monkeypatch):
    monkeypatch.setenv("AMQP_URL", AMQP_URL)
    lines: list[str] = []
    declared: list = []
    queued: list[int] = []
    real_declare, real_delete = api._declare, api._delete
    monkeypatch.setattr(api, "_declare", lambda s: (declared.append(s), real_declare(s)))
    monkeypatch.setattr(api, "_delete", lambda s: (queued.append(_depth(s.resize_queue)),
                                                   real_delete(s)))

    result = api.run(BenchContext(quick=True, say=lines.append))

    summary = result["summary"]
    for route in ("presign", "complete", "status"):
        assert 0 < summary[f"{route}_p50_ms"] <= summary[f"{route}_p99_ms"]
        assert summary[f"{route}_p50_vs_baseline"] == (
            summary[f"{route}_p50_ms"] / summary["baseline_p50_ms"])
        assert result["details"][route]["calls"] == 100
    assert summary["worst_p99_ms"] == max(summary[f"{r}_p99_ms"]
                                          for r in ("presign", "complete", "status"))
    assert any(line.startswith("complete ") for line in lines)
    assert queued == [100]  # every complete published one job
    assert not _exists(declared[0].resize_queue)  # and the queue is gone afterwards


def _depth(queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def _exists(queue: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False
    finally:
        if connection.is_open:
            connection.close()
