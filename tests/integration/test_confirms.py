"""``bridge.confirms`` against the real RabbitMQ: what the bridge relies on from pika's
asynchronous channel under a ``BlockingConnection``, and a refused result event in a bridge."""

from __future__ import annotations

import time

import pika
import pytest

from bridge import confirms
from bridge.confirms import PipelinedPublisher
from imagepipe.status import StatusStore

from ..conftest import AMQP_URL, unique_name
from .conftest import InlineInvoker, jpeg_bytes, wait_for

pytestmark = pytest.mark.broker


@pytest.fixture
def connection():
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    yield connection
    if connection.is_open:
        connection.close()


def _pump(connection, done, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)


@pytest.mark.timeout(30)
def test_every_publish_is_confirmed_once_in_order_and_lands(connection):
    queue = unique_name("confirms")
    setup = connection.channel()
    setup.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        publisher = PipelinedPublisher(connection, connection.channel())
        confirmed: list[tuple[int, bool]] = []
        for number in range(500):
            publisher.publish("", queue, str(number).encode(),
                              pika.BasicProperties(delivery_mode=2),
                              lambda ok, number=number: confirmed.append((number, ok)))
        assert publisher.unconfirmed > 0  # nothing waited for a confirm
        _pump(connection, lambda: publisher.unconfirmed == 0)
        assert confirmed == [(number, True) for number in range(500)]
        assert setup.queue_declare(queue, passive=True).method.message_count == 500
    finally:
        setup.queue_delete(queue)


@pytest.mark.timeout(30)
def test_acking_inside_a_confirm_callback_does_not_reenter_the_loop(connection):
    queue = unique_name("confirms")
    channel = connection.channel()
    channel.queue_declare(queue, exclusive=True)
    for number in range(50):
        channel.basic_publish("", queue, str(number).encode())
    deliveries = [channel.basic_get(queue)[0].delivery_tag for _ in range(50)]
    publisher = PipelinedPublisher(connection, connection.channel())
    for tag in deliveries:  # ack each delivery once its "event" is confirmed
        publisher.publish("", queue + ".nowhere", b"event", pika.BasicProperties(),
                          lambda ok, tag=tag: confirms.ack(channel, tag))
    _pump(connection, lambda: publisher.unconfirmed == 0)
    assert publisher.unconfirmed == 0
    connection.process_data_events(time_limit=0.2)  # the acks go out on the loop's next turn
    channel.close()  # had any delivery stayed unacked, closing would requeue it
    check = connection.channel()
    assert check.queue_declare(queue, passive=True).method.message_count == 0


@pytest.mark.timeout(30)
def test_a_publish_the_broker_rejects_closes_the_channel_and_confirms_nothing(connection):
    publisher = PipelinedPublisher(connection, connection.channel())
    called: list[bool] = []
    publisher.publish(unique_name("no-such-exchange"), "x", b"lost?", pika.BasicProperties(),
                      called.append)
    _pump(connection, lambda: not publisher.is_open)
    assert not publisher.is_open and called == []  # the bridge then reconnects; nothing acked
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        publisher.publish("", "x", b"", pika.BasicProperties(), called.append)


@pytest.mark.timeout(60)
def test_a_result_event_the_broker_refuses_is_never_acked(storage, probe, run_bridge):
    # A subscriber's queue that refuses every message makes the broker nack the event.
    settings = storage.settings
    full = probe.channel.queue_declare(
        "", exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    ).method.queue
    probe.channel.queue_bind(full, settings.results_exchange, routing_key="job.*")
    upload_id = storage.put_original(jpeg_bytes(64, 64))
    runner = run_bridge(settings, InlineInvoker(settings))

    probe.publish(storage.job(upload_id))

    # Never acked, so the broker redelivers it until its delivery limit, then dead-letters it.
    wait_for(lambda: probe.ready(settings.dead_letter_queue) == 1, 30, what="a dead letter")
    [(properties, _)] = probe.dead_letters(1)
    assert properties.message_id == upload_id
    assert properties.headers["x-first-death-reason"] == "delivery_limit"
    assert StatusStore(storage.s3, settings.bucket).current(upload_id).state == "done"
    runner.stop()
    assert probe.ready(settings.resize_queue) == 0
