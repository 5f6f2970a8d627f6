"""Reliability under faults and load (issue 4): no job lost, none done twice, nothing stuck.

Every scenario runs against the real RabbitMQ and moto's S3 server; faults come from outside
the code under test (a SIGKILLed ``python -m bridge``, an S3 proxy that answers 503 or holds a
request, ``rabbitmqctl``, a broker-side channel error). One test per numbered scenario of the
issue, named ``test_NN_...``:

==  ==========================================================  ====================================
 1  SIGKILL the bridge mid-job, before the ack                  test_01_*
 2  crash after variants and manifest, before the ack            test_02_*
 3  broker drops every connection with 100 jobs in flight        test_03_*
 4  always-transient job: retried to the limit, dead-lettered    test_04_*
 5  permanent failures and unreadable bodies: straight to DLQ    test_05_*
 6  a job longer than the heartbeat                              test_06_* (30 s version: soak)
 7  the broker closes the channel; health reports it             test_07_* (consumer timeout: soak)
 8  two and three bridges on one queue, 200 jobs                 test_08_*
 9  SIGTERM during a burst; the drain has a time bound           test_09_*
10  transient S3 faults retried inside the resize call           test_10_*
11  upload API with the broker down or the queue missing: 503    test_11_* and tests/functions/
                                                                 test_upload_api.py::
                                                                 test_broker_down_is_503_and_a_retry_succeeds,
                                                                 test_missing_queue_is_503_not_a_lost_job
12  a burst of jobs with the local invoker, RSS bounded          test_12_* (1,000 jobs: soak)
==  ==========================================================  ====================================
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import os
import signal
import threading
import time
import urllib.parse

import pika
import pytest
import requests

from bridge.consumer import Bridge
from bridge.observability import BridgeMetrics, ObservabilityServer
from imagepipe import keys, messages
from imagepipe.broker import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_CODE,
    HEADER_ERROR_MESSAGE,
    JobPublisher,
    declare_topology,
    delivery_count,
)
from imagepipe.errors import ApiError, TransientError
from imagepipe.spec import parse_variants
from imagepipe.status import StatusStore
from imagepipe.uploads import UploadService

from ..conftest import ROOT, free_port, unique_name
from .conftest import (
    BrokerProbe,
    InlineInvoker,
    RecordingInvoker,
    attempts_of_one_done_job,
    jpeg_bytes,
    wait_for,
)
from .faults import (
    BridgeProcess,
    S3FaultProxy,
    private_rabbitmq,
    rabbitmqctl,
    rss_kib,
    vhost_url,
)

pytestmark = pytest.mark.broker

VARIANT_NAMES = ("xl", "lg", "md", "sm", "thumb")  # the default spec, in the order it is written


@dataclasses.dataclass
class Faulty:
    """S3 for the code under test goes through ``proxy``; the test itself talks to moto."""

    settings: object
    proxy: S3FaultProxy
    storage: object

    @property
    def store(self) -> StatusStore:
        return StatusStore(self.storage.s3, self.settings.bucket)


@pytest.fixture
def faulty(storage):
    proxy = S3FaultProxy(storage.settings.s3_endpoint_url)
    settings = dataclasses.replace(storage.settings, s3_endpoint_url=proxy.url)
    yield Faulty(settings, proxy, storage)
    proxy.close()


@pytest.fixture
def vhost_storage(storage):
    """``storage`` on a virtual host of its own, so the test may drop all of its connections."""
    vhost = unique_name("imagepipe-test-vhost")
    user = urllib.parse.urlsplit(storage.settings.amqp_url).username or "guest"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        settings = dataclasses.replace(
            storage.settings, amqp_url=vhost_url(storage.settings.amqp_url, vhost)
        )
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        declare_topology(connection.channel(), settings)
        connection.close()
        yield dataclasses.replace(storage, settings=settings), vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


def _assert_queues_empty(probe, settings) -> None:
    assert probe.ready(settings.resize_queue) == 0
    assert probe.ready(settings.dead_letter_queue) == 0


# --- 1. SIGKILL mid-job ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_01_sigkill_mid_job_is_redelivered_and_done_once(faulty, probe):
    settings = dataclasses.replace(faulty.settings, workers=1)
    upload_id = faulty.storage.put_original(jpeg_bytes(1200, 800))
    # The job stops inside the resize, after its first variant, before the ack.
    held = faulty.proxy.hold("PUT", rf"^variants/{upload_id}/lg\.")
    probe.watch_results()
    first = BridgeProcess(settings).wait_consuming()
    second = None
    try:
        probe.publish(faulty.storage.job(upload_id))
        wait_for(held.held.is_set, 60, what="the job to reach its second variant")
        assert faulty.proxy.count("PUT", rf"^variants/{upload_id}/xl\.", 200) == 1
        first.kill()
        held.release()

        second = BridgeProcess(settings).wait_consuming()
        [event] = probe.events(1, timeout=60)
        assert (event.job_id, event.status) == (upload_id, "done")
        assert {v.key for v in event.variants} == {
            keys.variant_key(upload_id, name, "jpeg") for name in VARIANT_NAMES
        }
        for variant in event.variants:  # the same keys, complete images
            assert faulty.storage.image(variant.key).size == (variant.width, variant.height)
        assert faulty.store.state_of(upload_id).state == "done"
        # "done" was reached once: one done marker write, one result event.
        assert faulty.proxy.count("PUT", rf"^status/{upload_id}/done\.json$", 200) == 1
        assert probe.no_more_events(wait=1.0)
        assert second.terminate() == 0
    finally:
        first.close()
        if second is not None:
            second.close()
    assert f"job={upload_id}" in second.log.text() and "attempt=2/" in second.log.text()
    _assert_queues_empty(probe, settings)


# --- 2. crash after the work, before the ack ----------------------------------------------------


@pytest.mark.timeout(120)
def test_02_crash_after_the_manifest_is_not_redone(faulty, probe):
    settings = dataclasses.replace(faulty.settings, workers=1)
    upload_id = faulty.storage.put_original(jpeg_bytes(1200, 800))
    # Variants and manifest (the completion marker) are written; the bridge dies before the ack.
    held = faulty.proxy.hold("PUT", rf"^status/{upload_id}/done\.json$")
    probe.watch_results()
    first = BridgeProcess(settings).wait_consuming()
    second = None
    try:
        probe.publish(faulty.storage.job(upload_id))
        wait_for(held.held.is_set, 60, what="the job to write its done marker")
        assert faulty.proxy.count("PUT", rf"^manifests/{upload_id}\.json$", 200) == 1
        first.kill()
        held.release()

        second = BridgeProcess(settings).wait_consuming()
        [event] = probe.events(1, timeout=60)
        assert (event.job_id, event.status) == (upload_id, "done")
        assert len(event.variants) == len(VARIANT_NAMES)
        assert faulty.store.state_of(upload_id).state == "done"
        assert probe.no_more_events(wait=1.0)
        assert second.terminate() == 0
    finally:
        first.close()
        if second is not None:
            second.close()
    # The retry answered from the manifest: it neither read the original again nor rewrote a
    # variant or the manifest (written with If-None-Match: *, so it could not be overwritten).
    assert faulty.proxy.count("GET", rf"^originals/{upload_id}$") == 1
    assert faulty.proxy.count("PUT", rf"^variants/{upload_id}/") == len(VARIANT_NAMES)
    assert faulty.proxy.count("PUT", rf"^manifests/{upload_id}\.json$") == 1
    assert faulty.proxy.count("PUT", rf"^status/{upload_id}/done\.json$", 200) == 1
    assert "attempt=2/" in second.log.text()
    _assert_queues_empty(probe, settings)


# --- 3. the broker drops every connection -------------------------------------------------------


@pytest.mark.timeout(180)
def test_03_all_connections_dropped_with_100_jobs_in_flight(vhost_storage):
    storage, vhost = vhost_storage
    settings = dataclasses.replace(storage.settings, workers=2)
    upload_ids = [storage.put_original(jpeg_bytes(320, 240)) for _ in range(100)]
    results_queue = unique_name("results")
    probe = BrokerProbe(settings)
    probe.watch_results(results_queue)
    bridge = BridgeProcess(settings).wait_consuming()
    try:
        for upload_id in upload_ids:
            probe.publish(storage.job(upload_id))
        before = probe.events(10, timeout=60)
        probe.close()

        rabbitmqctl("close_all_connections", "--vhost", vhost, "test: the broker drops all")

        probe = BrokerProbe(settings)
        probe.watch_results(results_queue)
        finished_before = {e.job_id for e in before}
        after = probe.events_until_each_of(set(upload_ids) - finished_before, timeout=120)
        assert bridge.terminate() == 0
    finally:
        probe.close()
        bridge.close()
    log = bridge.log.text()
    events = before + after
    assert {e.status for e in events} == {"done"}
    assert {e.job_id for e in events} == set(upload_ids)
    store = StatusStore(storage.s3, settings.bucket)
    assert {store.state_of(i).state for i in upload_ids} == {"done"}
    probe = BrokerProbe(settings)
    try:
        _assert_queues_empty(probe, settings)
    finally:
        probe.close()
    # One reconnect of each job consumer (work queue, rerender queue: a connection each), and no
    # channel error after it: a delivery tag of the old channel acked on the new one would have
    # made the broker close it (406 PRECONDITION_FAILED, unknown tag).
    assert log.count("bridge: broker connection lost") == 1, log
    assert log.count("rerender: broker connection lost") == 1, log
    assert "dropped" in log, "no job was in flight when the connections dropped"
    assert "PRECONDITION_FAILED" not in log and "unknown delivery tag" not in log, log


@pytest.mark.timeout(30)
def test_03_reconnect_backoff_doubles_with_jitter_up_to_its_cap(broker_settings, caplog):
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"  # nothing listens there
    settings = dataclasses.replace(broker_settings, amqp_url=closed)
    bridge = Bridge(settings, InlineInvoker(settings), reconnect_initial_s=0.1,
                    reconnect_max_s=0.4)
    caplog.set_level(logging.WARNING, logger="bridge.loop")
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    wait_for(lambda: len(_reconnect_delays(caplog)) >= 8, 20, what="eight reconnect attempts")
    bridge.stop()
    thread.join(10)
    assert not thread.is_alive()
    delays = _reconnect_delays(caplog)[:8]
    # Each delay is drawn from [backoff/2, backoff]; backoff doubles from 0.1 up to 0.4.
    for delay, backoff in zip(delays, [0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]):
        assert backoff / 2 <= delay <= backoff, delays
    assert len(set(delays[2:])) > 1, "no jitter"


def _reconnect_delays(caplog) -> list[float]:
    # The delay as the work queue's consumer drew it (the log line rounds it); the rerender
    # queue's consumer backs off on its own, with the same rule.
    return [record.args[-1] for record in caplog.records
            if "reconnecting in" in str(record.msg) and record.args[0] == "bridge"]


# --- 4. always transient ------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["s3_always_failing", "invoker_down", "invoker_down_for_good"])
def test_04_always_transient_job_is_retried_to_the_limit_then_failed(faulty, probe, run_bridge,
                                                                     fault):
    settings = faulty.settings
    poisoned = faulty.storage.put_original(jpeg_bytes(640, 480))
    others = [faulty.storage.put_original(jpeg_bytes(320, 240)) for _ in range(3)]
    if fault == "s3_always_failing":  # a real S3 fault the SDK's own retries do not outlast
        faulty.proxy.fail("GET", rf"^originals/{poisoned}$", 500, times=1000)

    def behave(invocation):
        if fault == "s3_always_failing" or invocation.job.job_id != poisoned:
            return None
        if invocation.give_up is None or fault == "invoker_down_for_good":
            raise ConnectionError("resize function unreachable")
        return None  # the function answers the bridge's "give up" call: it records the failure

    invoker = RecordingInvoker(InlineInvoker(settings), behave=behave)
    probe.watch_results()
    runner = run_bridge(settings, invoker)

    probe.publish(faulty.storage.job(poisoned))
    for upload_id in others:
        probe.publish(faulty.storage.job(upload_id))

    [(props, body)] = probe.dead_letters(1, timeout=60)
    max_attempts = settings.delivery_limit + 1
    code = "s3_unavailable" if fault == "s3_always_failing" else "invoke_failed"
    assert props.message_id == poisoned
    assert props.headers[HEADER_ERROR_CODE] == code
    assert props.headers[HEADER_ATTEMPTS] == max_attempts
    assert f"gave up after {max_attempts} attempts" in props.headers[HEADER_ERROR_MESSAGE]
    assert delivery_count(props) == 0  # a replay starts again at attempt 1
    assert messages.ResizeJob.decode(body).job_id == poisoned
    expected_attempts = list(range(1, max_attempts + 1))
    if fault != "s3_always_failing":
        expected_attempts.append(max_attempts)  # the "give up" call
    assert invoker.attempts[poisoned] == expected_attempts
    events = {e.job_id: e for e in probe.events(1 + len(others))}
    assert (events[poisoned].status, events[poisoned].error["code"]) == ("failed", code)
    assert [events[i].status for i in others] == ["done"] * len(others)  # kept flowing
    status = faulty.store.state_of(poisoned)
    if fault == "invoker_down_for_good":
        # Nothing could write the status (the bridge may only invoke the function); the dead
        # letter carries the cause, and a replay after the fix resolves it.
        assert status.state == "pending"
    else:
        assert (status.state, status.error["code"]) == ("failed", code)
        assert f"gave up after {max_attempts} attempts" in status.error["message"]
    runner.stop()
    assert probe.ready(settings.resize_queue) == 0


# --- 5. permanent failures and unreadable messages ---------------------------------------------


def _truncated_jpeg() -> bytes:
    data = jpeg_bytes(640, 480)
    return data[: len(data) // 2]


@pytest.mark.timeout(60)
def test_05_permanent_failures_are_dead_lettered_without_retries(faulty, probe, run_bridge):
    settings = faulty.settings
    storage = faulty.storage
    cases = {
        storage.put_original(b"<html>not an image</html>"): "unsupported_format",
        storage.put_original(_truncated_jpeg()): "truncated",
        keys.new_upload_id(): "source_missing",  # the original was never uploaded
    }
    invoker = RecordingInvoker(InlineInvoker(settings))
    probe.watch_results()
    runner = run_bridge(settings, invoker)

    for upload_id in cases:
        probe.publish(storage.job(upload_id))

    letters = probe.dead_letters(len(cases))
    assert {p.message_id: p.headers[HEADER_ERROR_CODE] for p, _ in letters} == cases
    for props, body in letters:
        assert props.headers[HEADER_ATTEMPTS] == 1  # permanent: no retries
        assert props.headers[HEADER_ERROR_MESSAGE]
        assert props.delivery_mode == 2
        assert messages.ResizeJob.decode(body).job_id == props.message_id  # the original body
    events = {e.job_id: e for e in probe.events(len(cases))}
    assert {i: (e.status, e.error["code"]) for i, e in events.items()} == {
        i: ("failed", code) for i, code in cases.items()
    }
    for upload_id, code in cases.items():
        status = faulty.store.state_of(upload_id)
        assert (status.state, status.error["code"]) == ("failed", code)
        assert invoker.attempts[upload_id] == [1]
    runner.stop()
    _assert_queues_empty(probe, settings)


@pytest.mark.timeout(60)
def test_05_undecodable_bodies_are_dead_lettered_and_consuming_goes_on(storage, probe,
                                                                       run_bridge):
    settings = storage.settings
    upload_id = storage.put_original(jpeg_bytes(320, 240))
    probe.watch_results()
    runner = run_bridge(settings, InlineInvoker(settings))
    bad_bodies = {
        "not-json": b"{this is not json",
        "future-schema": messages.encode({"v": 99, "job_id": "from-the-future"}),
    }

    for message_id, body in bad_bodies.items():
        probe.publish_raw(body, message_id)
    probe.publish(storage.job(upload_id))

    letters = {props.message_id: (props, body) for props, body in probe.dead_letters(2)}
    assert {i: p.headers[HEADER_ERROR_CODE] for i, (p, _) in letters.items()} == {
        "not-json": "bad_message", "future-schema": "unknown_schema_version",
    }
    assert {i: body for i, (_, body) in letters.items()} == bad_bodies
    [event] = probe.events(1)
    assert (event.job_id, event.status) == (upload_id, "done")
    assert runner.bridge.healthy
    runner.stop()
    _assert_queues_empty(probe, settings)


# --- 6. a job longer than the heartbeat ---------------------------------------------------------


@pytest.mark.timeout(60)
def test_06_a_job_longer_than_the_heartbeat_is_acked(storage, probe, run_bridge):
    def slow(invocation):
        time.sleep(6)  # several heartbeat timeouts: a blocked I/O thread would lose the connection

    attempts = attempts_of_one_done_job(storage, probe, run_bridge, behave=slow, heartbeat=1)
    assert attempts == [1]  # acked on the first delivery: no StreamLostError, no redelivery


@pytest.mark.soak
@pytest.mark.timeout(180)
def test_06_soak_a_30s_job_with_a_2s_heartbeat_is_acked(storage, probe, run_bridge):
    attempts = attempts_of_one_done_job(
        storage, probe, run_bridge, behave=lambda invocation: time.sleep(30), timeout=90,
        heartbeat=2,
    )
    assert attempts == [1]


# --- 7. the broker closes the channel ----------------------------------------------------------


class _Sampler:
    """Samples a value in a thread; keeps the sequence of distinct consecutive values."""

    def __init__(self, read, interval: float = 0.02):
        self.values: list = []
        self._read, self._interval = read, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if not self.values or self.values[-1] != value:
                self.values.append(value)
            self._stop.wait(self._interval)

    def stop(self) -> list:
        self._stop.set()
        self._thread.join(5)
        return self.values


def _healthz(base: str) -> int:
    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code
    except requests.RequestException:
        return 0


@pytest.mark.timeout(60)
def test_07_channel_closed_by_the_broker_is_reopened_and_health_reports_it(storage, probe,
                                                                           run_bridge):
    # A channel-level error from the broker: the results exchange is gone, so publishing the
    # job's event gets the publishing channel closed with 404 NOT_FOUND.
    settings = storage.settings
    upload_id = storage.put_original(jpeg_bytes(320, 240))
    watching = threading.Event()

    def behave(invocation):
        if invocation.attempt == 2:
            watching.wait(30)  # until the test listens on the re-declared exchange

    invoker = RecordingInvoker(InlineInvoker(settings), behave=behave)
    metrics = BridgeMetrics()
    server = ObservabilityServer(metrics, "127.0.0.1", free_port())
    base = f"http://127.0.0.1:{server.port}"
    try:
        # A reconnect delay of 1-2 s leaves the unhealthy state long enough to be seen.
        runner = run_bridge(settings, invoker, reconnect_initial_s=2.0, observer=metrics)
        flag = _Sampler(lambda: runner.bridge.healthy)
        http = _Sampler(lambda: _healthz(base), interval=0.05)
        probe.channel.exchange_delete(settings.results_exchange)

        probe.publish(storage.job(upload_id))

        wait_for(lambda: invoker.attempts.get(upload_id) == [1, 2], 30,
                 what="the bridge to reopen its channels and get the job again")
        probe.watch_results()
        watching.set()
        [event] = probe.events(1)
        assert (event.job_id, event.status) == (upload_id, "done")
        wait_for(lambda: runner.bridge.healthy, 10, what="the bridge to be healthy")
        time.sleep(0.2)
        assert flag.stop() == [True, False, True]
        assert http.stop() == [200, 503, 200]
        runner.stop()
    finally:
        server.close()
    _assert_queues_empty(probe, settings)


@pytest.mark.soak
@pytest.mark.timeout(300)
def test_07_soak_consumer_timeout_closes_the_channel_and_the_bridge_recovers(
    storage, tmp_path, run_bridge
):
    # RabbitMQ 3.10 has no per-queue consumer timeout and checks it about once a minute, so
    # this needs a node of its own (a short global timeout would hit everyone on a shared
    # broker) and a minute or more.
    with private_rabbitmq(tmp_path / "rabbitmq", "consumer_timeout = 2000\n") as url:
        settings = dataclasses.replace(storage.settings, amqp_url=url)
        connection = pika.BlockingConnection(pika.URLParameters(url))
        declare_topology(connection.channel(), settings)
        connection.close()
        upload_id = storage.put_original(jpeg_bytes(320, 240))
        runner = None

        def behave(invocation):
            if invocation.attempt == 1:  # holds its delivery unacked until the broker objects
                wait_for(lambda: not runner.bridge.healthy, 150, interval=0.1,
                         what="the consumer timeout")

        invoker = RecordingInvoker(InlineInvoker(settings), behave=behave)
        probe = BrokerProbe(settings)
        try:
            probe.watch_results()
            runner = run_bridge(settings, invoker, reconnect_initial_s=1.0)
            flag = _Sampler(lambda: runner.bridge.healthy)

            probe.publish(storage.job(upload_id))

            [event] = probe.events(1, timeout=200)
            assert (event.job_id, event.status) == (upload_id, "done")
            assert invoker.attempts[upload_id] == [1, 2]  # attempt 1's late result was dropped
            wait_for(lambda: runner.bridge.healthy, 10, what="the bridge to be healthy")
            assert flag.stop() == [True, False, True]
            runner.stop()
            assert probe.ready(settings.resize_queue) == 0
        finally:
            probe.close()


def _published(probe, job) -> bool:
    try:
        probe.publish(job)
    except TransientError:  # the queue does not exist (yet)
        return False
    return True


@pytest.mark.timeout(60)
def test_07_consumer_cancelled_by_the_broker_is_noticed_and_restarted(storage, probe,
                                                                      run_bridge):
    # Deleting the queue makes the broker cancel the consumer. Like a consumer timeout, pika's
    # BlockingConnection does not raise for it, and the bridge must notice on its own.
    settings = storage.settings
    upload_id = storage.put_original(jpeg_bytes(320, 240))
    probe.watch_results()
    runner = run_bridge(settings, InlineInvoker(settings), reconnect_initial_s=0.1)

    probe.channel.queue_delete(settings.resize_queue)
    # Publishing is mandatory, so it only succeeds once the bridge has re-declared the queue.
    wait_for(lambda: _published(probe, storage.job(upload_id)), 10, interval=0.1,
             what="the bridge to re-declare the queue")

    [event] = probe.events(1)  # ...and to consume from it again
    assert (event.job_id, event.status) == (upload_id, "done")
    assert runner.bridge.healthy
    runner.stop()
    _assert_queues_empty(probe, settings)


# --- 8. competing bridges ------------------------------------------------------------------------

SMALL_SPEC = parse_variants([
    {"name": "md", "mode": "fit", "width": 128, "height": 128, "format": "jpeg"},
    {"name": "thumb", "mode": "cover", "width": 32, "height": 32, "format": "jpeg"},
])


def _unacked(queue: str) -> int:
    for line in rabbitmqctl("list_queues", "name", "messages_unacknowledged", "-q",
                            "--no-table-headers").splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    raise AssertionError(f"queue {queue} not listed")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("bridges", [2, 3])
def test_08_competing_bridges_do_each_job_exactly_once(faulty, probe, run_bridge, bridges):
    settings = dataclasses.replace(faulty.settings, workers=2, prefetch=3, variants=SMALL_SPEC)
    jobs = 200
    image = jpeg_bytes(256, 192)
    upload_ids = [faulty.storage.put_original(image) for _ in range(jobs)]
    gate = threading.Event()
    invokers = [
        RecordingInvoker(InlineInvoker(settings), behave=lambda invocation: None if gate.wait(60) else None)
        for _ in range(bridges)
    ]
    probe.watch_results()
    for invoker in invokers:
        run_bridge(settings, invoker)

    for upload_id in upload_ids:
        probe.publish(faulty.storage.job(upload_id))

    # With every worker held, each bridge holds exactly its prefetch of unacked messages.
    held = bridges * settings.prefetch_count
    try:
        wait_for(lambda: probe.ready(settings.resize_queue) == jobs - held, 30, interval=0.1,
                 what=f"{held} deliveries to be held")
        # The broker's own count (its statistics lag a little).
        wait_for(lambda: _unacked(settings.resize_queue) == held, 15, interval=0.5,
                 what=f"the broker to count {held} unacked")
        assert probe.ready(settings.resize_queue) == jobs - held  # and no more were taken
    finally:
        gate.set()

    events = probe.events(jobs, timeout=150)
    assert probe.no_more_events(wait=1.0)
    assert {e.status for e in events} == {"done"}
    assert sorted(e.job_id for e in events) == sorted(upload_ids)  # each exactly once
    per_job = collections.Counter()
    for invoker in invokers:
        assert invoker.attempts, "a bridge got no job"
        for job_id, attempts in invoker.attempts.items():
            per_job[job_id] += len(attempts)
    assert set(per_job.values()) == {1}
    proxy = faulty.proxy
    assert proxy.count("PUT", r"^manifests/") == jobs
    assert proxy.count("PUT", r"^status/[0-9a-f]+/done\.json$", 200) == jobs
    assert proxy.count("GET", r"^originals/") == jobs
    _assert_queues_empty(probe, settings)


# --- 9. SIGTERM during a burst -------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_09_sigterm_finishes_the_job_in_flight_and_takes_nothing_new(faulty, probe):
    settings = dataclasses.replace(faulty.settings, workers=1, prefetch=2)
    upload_ids = [faulty.storage.put_original(jpeg_bytes(320, 240)) for _ in range(5)]
    running, *waiting = upload_ids
    held = faulty.proxy.hold("PUT", rf"^variants/{running}/md\.", then_forward=True)
    probe.watch_results()
    bridge = BridgeProcess(settings).wait_consuming()
    try:
        for upload_id in upload_ids:
            probe.publish(faulty.storage.job(upload_id))
        wait_for(held.held.is_set, 30, what="the first job to run")
        # One job runs, one waits in the bridge (prefetch 2), three wait in the queue.
        wait_for(lambda: probe.ready(settings.resize_queue) == 3, 10, what="the prefetch")

        bridge.process.send_signal(signal.SIGTERM)
        wait_for(lambda: bridge.log.contains("no new jobs"), 10, what="the bridge to stop taking")
        held.release()
        returncode = bridge.process.wait(30)
    finally:
        held.release()
        bridge.close()
    log = bridge.log.text()
    assert returncode == 0, log
    [event] = probe.events(1, timeout=5)
    assert (event.job_id, event.status) == (running, "done")
    assert probe.no_more_events()
    assert faulty.store.state_of(running).state == "done"
    assert f"job={waiting[0]}" in log and "outcome=released" in log  # handed back, not run
    assert {faulty.store.state_of(i).state for i in waiting} == {"pending"}
    assert probe.ready(settings.resize_queue) == len(waiting)  # nothing lost, nothing taken
    assert probe.ready(settings.dead_letter_queue) == 0


@pytest.mark.timeout(90)
def test_09_the_drain_is_bounded_by_its_timeout(faulty, probe):
    settings = dataclasses.replace(faulty.settings, workers=1, prefetch=1, drain_timeout_s=1.0)
    upload_id = faulty.storage.put_original(jpeg_bytes(320, 240))
    held = faulty.proxy.hold("PUT", rf"^variants/{upload_id}/md\.")  # a job that hangs
    probe.watch_results()
    bridge = BridgeProcess(settings).wait_consuming()
    try:
        probe.publish(faulty.storage.job(upload_id))
        wait_for(held.held.is_set, 30, what="the job to run")

        bridge.process.send_signal(signal.SIGTERM)
        returncode = bridge.process.wait(30)
        # The resize worker was stopped with the bridge: nothing of its group is left.
        wait_for(lambda: not _group_alive(bridge.pid), 10, what="the workers to exit")
    finally:
        held.release()
        bridge.close()
    log = bridge.log.text()
    assert returncode == 3, log
    assert "drain timeout" in log
    assert probe.no_more_events()
    # The unfinished job went back to the queue, for another bridge (or this one, restarted).
    assert probe.ready(settings.resize_queue) == 1
    assert probe.ready(settings.dead_letter_queue) == 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- 10. transient S3 faults inside the resize call ---------------------------------------------


@pytest.mark.timeout(90)
def test_10_transient_s3_faults_are_retried_inside_the_resize_call(faulty, probe, run_bridge):
    settings = faulty.settings
    upload_id = faulty.storage.put_original(jpeg_bytes(640, 480))
    proxy = faulty.proxy
    proxy.fail("GET", rf"^originals/{upload_id}$", 503, times=2)  # SlowDown: throttled
    proxy.fail("PUT", rf"^variants/{upload_id}/md\.", 500, times=2)  # InternalError
    proxy.fail("PUT", rf"^manifests/{upload_id}\.json$", 503, times=1)
    invoker = RecordingInvoker(InlineInvoker(settings))
    probe.watch_results()
    runner = run_bridge(settings, invoker)

    probe.publish(faulty.storage.job(upload_id))

    [event] = probe.events(1, timeout=60)
    assert (event.job_id, event.status) == (upload_id, "done")
    # One invocation: botocore retried each faulty request with backoff, the queue did not.
    assert invoker.attempts[upload_id] == [1]
    assert proxy.count("GET", rf"^originals/{upload_id}$", 503) == 2
    assert proxy.count("GET", rf"^originals/{upload_id}$", 200) == 1
    assert proxy.count("PUT", rf"^variants/{upload_id}/md\.", 500) == 2
    assert proxy.count("PUT", rf"^variants/{upload_id}/md\.", 200) == 1
    assert proxy.count("PUT", rf"^manifests/{upload_id}\.json$", 200) == 1
    assert faulty.storage.image(keys.variant_key(upload_id, "md", "jpeg")).size == (512, 384)
    assert faulty.store.state_of(upload_id).state == "done"
    runner.stop()
    _assert_queues_empty(probe, settings)


# --- 11. the upload API publishing while the broker misbehaves -----------------------------------


@pytest.mark.timeout(60)
def test_11_upload_api_survives_dropped_connections_and_503s_without_the_queue(vhost_storage):
    # 503 with the broker down and with the queue never declared: tests/functions/
    # test_upload_api.py. Here a warm upload function loses its connection, then its queue.
    storage, vhost = vhost_storage
    settings = storage.settings
    store = StatusStore(storage.s3, settings.bucket)
    publisher = JobPublisher(settings)
    service = UploadService(settings, storage.s3, publisher, store)

    def uploaded() -> str:
        photo = jpeg_bytes(320, 240)
        upload_id = service.create_upload(
            {"filename": "a.jpg", "content_type": "image/jpeg", "size": len(photo)})["upload_id"]
        storage.s3.put_object(Bucket=settings.bucket, Key=keys.original_key(upload_id), Body=photo)
        return upload_id

    probe = BrokerProbe(settings)
    try:
        first = uploaded()
        assert service.complete(first)["status"] == "queued"  # the connection is now warm

        rabbitmqctl("close_all_connections", "--vhost", vhost, "test: the broker drops all")
        second = uploaded()
        assert service.complete(second)["status"] == "queued"  # published on a new connection

        probe = BrokerProbe(settings)
        assert probe.ready(settings.resize_queue) == 2
        probe.channel.queue_delete(settings.resize_queue)
        third = uploaded()
        with pytest.raises(ApiError) as refused:
            service.complete(third)  # mandatory + confirms: the broker cannot route it
        assert (refused.value.status, refused.value.code) == (503, "broker_unavailable")
        assert store.state_of(third).state == "pending"  # not marked queued: a retry publishes
    finally:
        publisher.close()
        probe.close()


# --- 12. a burst with the local invoker ------------------------------------------------------------


class _RssSampler:
    """Peak and per-sample resident memory of a process and its children, from /proc."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.samples: list[tuple[int, int]] = []  # (bridge KiB, bridge + workers KiB)
        self._pid, self._interval = pid, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                own = rss_kib(self._pid)
                children = _children(self._pid)
                total = own + sum(_rss_or_zero(int(c)) for c in children)
            except OSError:  # the process is gone
                return
            self.samples.append((own, total))
            self._stop.wait(self._interval)

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def _children(pid: int) -> set[int]:
    # Per thread: the resize workers are started by whichever bridge thread first submits.
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found.update(int(child) for child in listing.read().split())
        except OSError:  # the thread ended meanwhile
            pass
    return found


def _rss_or_zero(pid: int) -> int:
    try:
        return rss_kib(pid)
    except OSError:
        return 0


def _parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@pytest.mark.parametrize("jobs", [
    pytest.param(100, marks=pytest.mark.timeout(180)),
    pytest.param(1000, marks=[pytest.mark.soak, pytest.mark.timeout(1800)]),
])
def test_12_burst_with_the_local_invoker(storage, probe, jobs):
    settings = dataclasses.replace(storage.settings, workers=2)  # the 2 cores
    image = jpeg_bytes(640, 480)
    burst = {}
    for _ in range(jobs):
        upload_id = storage.put_original(image)
        burst[upload_id] = None
    probe.watch_results()
    bridge = BridgeProcess(settings).wait_consuming()
    rss = _RssSampler(bridge.pid)
    try:
        for upload_id in burst:
            burst[upload_id] = storage.job(upload_id)  # submitted_at: now
            probe.publish(burst[upload_id])
        events = probe.events(jobs, timeout=jobs * 1.5)
        samples = rss.stop()
        assert bridge.terminate() == 0
    finally:
        rss.stop()
        bridge.close()
    assert probe.no_more_events()
    assert {e.status for e in events} == {"done"}
    assert sorted(e.job_id for e in events) == sorted(burst)  # all done, none twice
    _assert_queues_empty(probe, settings)

    submitted = {i: _parse_time(job.submitted_at) for i, job in burst.items()}
    finished = {e.job_id: _parse_time(e.finished_at) for e in events}
    latencies = [(finished[i] - submitted[i]).total_seconds() for i in burst]
    wall = (max(finished.values()) - min(submitted.values())).total_seconds()
    bridge_kib = [own for own, _ in samples]
    report = {
        "jobs": jobs,
        "workers": settings.worker_count,
        "wall_s": round(wall, 2),
        "jobs_per_s": round(jobs / wall, 2),
        "latency_s": {name: round(_percentile(latencies, q), 3)
                      for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
        "bridge_rss_mib": {"first": round(bridge_kib[0] / 1024, 1),
                           "peak": round(max(bridge_kib) / 1024, 1),
                           "last": round(bridge_kib[-1] / 1024, 1)},
        "bridge_and_workers_peak_rss_mib": round(max(t for _, t in samples) / 1024, 1),
    }
    print(json.dumps(report))
    out = ROOT / ".run" / "soak"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"burst-{jobs}.json").write_text(json.dumps(report, indent=2) + "\n")
    # Bounded: past the first fifth of the burst the bridge process grows by no more than
    # allocator noise, however many jobs follow.
    warm = bridge_kib[len(bridge_kib) // 5:]
    assert max(warm) - warm[0] < 32 * 1024, report
