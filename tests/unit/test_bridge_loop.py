"""The shared consumer loop's pieces without a broker: backoff, delivery bookkeeping, the hand-off
from worker threads to the I/O thread, and noticing a closed channel or a cancelled consumer.

pika's connection and channels are replaced by small fakes that record the frames the loop would
write; the integration tests (tests/integration/test_faults.py, test_bridge.py) run the same
code against the real RabbitMQ."""

from __future__ import annotations

import logging
import threading

import pika.exceptions
import pika.spec
import pytest

from bridge import backoff, loop
from bridge.backoff import ReconnectBackoff
from bridge.loop import ConsumerLoop, Delivery, Session, SessionLost
from imagepipe.settings import Settings

from ..conftest import free_port

# --- backoff -----------------------------------------------------------------------------------


def test_delay_doubles_per_attempt_up_to_the_cap():
    assert [backoff.delay(0.5, attempt, 3.0) for attempt in range(1, 6)] == [
        0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.delay(0.5, 0, 3.0) == 0.5  # attempt numbers start at 1; 0 is not a discount


def test_delay_of_a_huge_attempt_is_the_cap_not_an_overflow():
    assert backoff.delay(1.0, 10_000, 60.0) == 60.0


def _high(low, high):
    return high


def test_reconnect_waits_double_up_to_the_cap_with_jitter_below_each():
    drawn = []

    def uniform(low, high):
        drawn.append((low, high))
        return low

    waits = ReconnectBackoff(1.0, 5.0, uniform=uniform)
    assert [waits.next_delay(None) for _ in range(5)] == [0.5, 1.0, 2.0, 2.5, 2.5]
    assert drawn == [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (2.5, 5.0), (2.5, 5.0)]


def test_reconnect_backoff_starts_over_after_a_working_session():
    waits = ReconnectBackoff(1.0, 64.0, working_after_s=10.0, uniform=_high)
    # Three failed connects, a session that consumed for a minute, one more failed connect.
    delays = [waits.next_delay(consumed) for consumed in (None, None, None, 60.0, None)]
    assert delays == [1.0, 2.0, 4.0, 1.0, 2.0]


def test_a_session_the_broker_ends_at_once_does_not_reset_the_backoff():
    waits = ReconnectBackoff(1.0, 64.0, working_after_s=10.0, uniform=_high)
    # Connected and consuming each time, but cancelled within a second: still backing off.
    assert [waits.next_delay(0.5) for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]


def test_reconnect_backoff_refuses_a_cap_below_its_start():
    with pytest.raises(ValueError):
        ReconnectBackoff(5.0, 1.0)


# --- fakes for pika's connection and channels ----------------------------------------------------


class FakeImpl:
    """Stands in for pika's asynchronous channel: records ack/nack frames."""

    def __init__(self):
        self.frames: list[tuple] = []
        self.close_callbacks = []

    def basic_ack(self, delivery_tag):
        self.frames.append(("ack", delivery_tag))

    def basic_nack(self, delivery_tag, requeue):
        self.frames.append(("nack", delivery_tag, requeue))

    def add_on_close_callback(self, callback):
        self.close_callbacks.append(callback)


class FakeChannel:
    def __init__(self):
        self._impl = FakeImpl()
        self.is_open = True
        self.consumer_tags: list[str] = []

    @property
    def frames(self):
        return self._impl.frames

    def closed_by_broker(self, code: int, text: str) -> None:
        self.is_open = False
        for callback in self._impl.close_callbacks:
            callback(self, pika.exceptions.ChannelClosedByBroker(code, text))


class FakeConnection:
    """Queues thread-safe callbacks instead of running them; ``run_callbacks`` is the I/O turn."""

    def __init__(self):
        self.is_open = True
        self._callbacks = []
        self._lock = threading.Lock()

    def channel(self) -> FakeChannel:
        return FakeChannel()

    def add_callback_threadsafe(self, callback) -> None:
        if not self.is_open:
            raise pika.exceptions.ConnectionWrongStateError("closed")
        with self._lock:
            self._callbacks.append(callback)

    def run_callbacks(self) -> int:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        return len(callbacks)


def _delivery(session: Session, tag: int = 1, headers: dict | None = None) -> Delivery:
    channel = session.consume_channel
    delivery = Delivery(session, channel, tag, pika.spec.BasicProperties(
        message_id=f"m{tag}", headers=headers), b"{}")
    session._received()  # what the loop does when pika hands it a message
    return delivery


@pytest.fixture
def session() -> Session:
    session = Session(FakeConnection())
    session.consume_channel = session.channel()
    return session


# --- delivery bookkeeping ----------------------------------------------------------------------


def test_a_delivery_is_settled_once_on_its_own_channel(session):
    first, second = _delivery(session, 1), _delivery(session, 2)
    assert session.unsettled == 2

    assert first.ack() is True
    assert first.ack() is False  # a second settlement writes nothing
    assert first.nack() is False
    assert second.nack(requeue=True) is True
    assert session.consume_channel.frames == [("ack", 1), ("nack", 2, True)]
    assert session.unsettled == 0


def test_nothing_is_settled_on_a_closed_channel_or_after_the_session(session):
    stale = _delivery(session, 1)
    closed = _delivery(session, 2)
    session.current = False  # the loop reconnected: delivery tag 1 means nothing on a new channel
    assert stale.ack() is False
    session.current = True
    session.consume_channel.is_open = False
    assert closed.nack() is False
    assert session.consume_channel.frames == []
    assert session.unsettled == 0  # both count as dropped: the broker redelivers them


def test_a_drop_from_a_worker_racing_a_settle_counts_once(session):
    deliveries = [_delivery(session, tag) for tag in range(1, 201)]
    barrier = threading.Barrier(2)

    def drop_all():
        barrier.wait()
        for delivery in deliveries:
            delivery.drop()

    worker = threading.Thread(target=drop_all)
    worker.start()
    barrier.wait()
    acked = sum(delivery.ack() for delivery in deliveries)
    worker.join()
    assert session.unsettled == 0
    assert len(session.consume_channel.frames) == acked


def test_attempt_counts_the_quorum_queues_redeliveries(session):
    assert _delivery(session, 1).attempt == 1  # the first delivery has no x-delivery-count
    assert _delivery(session, 2, {"x-delivery-count": 2}).attempt == 3


# --- noticing what pika does not raise -------------------------------------------------------------


def test_a_channel_closed_by_the_broker_ends_the_session_with_its_reason(session):
    publish = session.channel()
    session.consumer_tag = "ctag"
    session.consume_channel.consumer_tags.append("ctag")
    session.check(expect_consumer=True)  # all well

    session.consume_channel.closed_by_broker(
        406, "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out")
    with pytest.raises(SessionLost, match="delivery acknowledgement .* timed out"):
        session.check(expect_consumer=True)
    assert publish.is_open


def test_a_consumer_cancelled_by_the_broker_ends_the_session(session):
    session.consumer_tag = "ctag"  # the broker's Basic.Cancel took it off consumer_tags
    with pytest.raises(SessionLost, match="cancelled the consumer"):
        session.check(expect_consumer=True)
    session.check(expect_consumer=False)  # after our own basic_cancel (stopping) that is fine


# --- the hand-off between the I/O thread and the workers ----------------------------------------


class RecordingHandler:
    def __init__(self):
        self.settled: list[tuple] = []
        self.dropped_results: list = []

    def open(self, session):
        pass

    def on_message(self, delivery):
        pass

    def settle(self, delivery, result):
        self.settled.append((delivery, result, threading.current_thread().name))
        delivery.ack()

    def dropped(self, delivery, result):
        self.dropped_results.append(result)


@pytest.fixture
def consumer():
    handler = RecordingHandler()
    consumer_loop = ConsumerLoop(Settings(bucket="b"), handler, queue="q", label="test",
                                 noun="jobs", connection_name="test", workers=2, prefetch=2)
    yield consumer_loop, handler
    consumer_loop._executor.shutdown(wait=True)


def _finish(consumer_loop: ConsumerLoop) -> None:
    """Wait for the workers (as the loop's drain does)."""
    consumer_loop._executor.shutdown(wait=True)


def test_work_runs_on_a_worker_and_is_settled_on_the_io_thread(consumer, session):
    consumer_loop, handler = consumer
    delivery = _delivery(session)
    worker_threads = []

    def work():
        worker_threads.append(threading.current_thread().name)
        return "resized"

    consumer_loop.submit(delivery, work)
    _finish(consumer_loop)
    assert handler.settled == []  # nothing touches the channel from the worker
    assert session.connection.run_callbacks() == 1  # the I/O thread's next turn

    [(settled, result, thread)] = handler.settled
    assert (settled, result) == (delivery, "resized")
    assert thread == threading.current_thread().name != worker_threads[0]
    assert worker_threads[0].startswith("test-work")
    assert session.consume_channel.frames == [("ack", 1)]
    assert session.unsettled == 0


def test_a_result_after_the_connection_closed_is_dropped(consumer, session):
    consumer_loop, handler = consumer
    delivery = _delivery(session)
    session.connection.is_open = False  # lost while the job ran

    consumer_loop.submit(delivery, lambda: "late")
    _finish(consumer_loop)
    assert handler.dropped_results == ["late"]
    assert handler.settled == []
    assert session.unsettled == 0


def test_a_result_for_a_previous_session_is_dropped_not_settled(consumer, session):
    consumer_loop, handler = consumer
    delivery = _delivery(session)
    consumer_loop.submit(delivery, lambda: "late")
    _finish(consumer_loop)
    session.current = False  # reconnected before the callback ran

    session.connection.run_callbacks()
    assert handler.dropped_results == ["late"] and handler.settled == []
    assert session.consume_channel.frames == []


def test_work_that_raises_is_requeued_and_logged(consumer, session, caplog):
    consumer_loop, handler = consumer
    delivery = _delivery(session)

    def broken():
        raise RuntimeError("bug")

    caplog.set_level(logging.ERROR, logger="bridge.loop")
    consumer_loop.submit(delivery, broken)
    _finish(consumer_loop)
    session.connection.run_callbacks()
    assert session.consume_channel.frames == [("nack", 1, True)]
    assert handler.settled == [] and handler.dropped_results == []
    assert "failed in a worker; requeued" in caplog.text


def test_reconnects_back_off_until_stopped(monkeypatch, caplog):
    settings = Settings(bucket="b", amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    consumer_loop = ConsumerLoop(settings, RecordingHandler(), queue="q", label="test",
                                 noun="jobs", connection_name="test", workers=1, prefetch=1,
                                 reconnect_initial_s=0.01, reconnect_max_s=0.04)
    attempts = []

    def connect(_parameters):
        attempts.append(True)
        if len(attempts) == 6:
            consumer_loop.stop()
        raise pika.exceptions.AMQPConnectionError("refused")

    monkeypatch.setattr(loop.amqp, "connect", connect)
    caplog.set_level(logging.WARNING, logger="bridge.loop")
    consumer_loop.run()

    delays = [record.args[-1] for record in caplog.records if "reconnecting in" in record.msg]
    assert len(delays) == 5 and len(attempts) == 6
    for delay, cap in zip(delays, [0.01, 0.02, 0.04, 0.04, 0.04]):
        assert cap / 2 <= delay <= cap
    assert not consumer_loop.healthy and consumer_loop.drained
