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
 7  the broker closes the channel; health reports it             test_07_*
 8  two and three bridges on one queue, 200 jobs                 test_08_*
 9  SIGTERM during a burst; the drain has a time bound           test_09_*
10  transient S3 faults retried inside the resize call           test_10_*
11  upload API with the broker down or the queue missing: 503    tests/functions/test_upload_api.py::
                                                                 test_broker_down_is_503_and_a_retry_succeeds,
                                                                 test_missing_queue_is_503_not_a_lost_job
12  a burst of jobs with the local invoker, RSS bounded          test_12_* (1,000 jobs: soak)
==  ==========================================================  ====================================
"""

from __future__ import annotations

import dataclasses
import urllib.parse

import pytest

import pika

from imagepipe import keys
from imagepipe.broker import declare_topology
from imagepipe.status import StatusStore

from ..conftest import unique_name
from .conftest import BrokerProbe, InlineInvoker, RecordingInvoker, jpeg_bytes, wait_for
from .faults import BridgeProcess, S3FaultProxy, rabbitmqctl, vhost_url

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
        assert faulty.store.current(upload_id).state == "done"
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
        assert faulty.store.current(upload_id).state == "done"
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
    assert {store.current(i).state for i in upload_ids} == {"done"}
    probe = BrokerProbe(settings)
    try:
        _assert_queues_empty(probe, settings)
    finally:
        probe.close()
    # One reconnect, and no channel error after it: a delivery tag of the old channel acked on
    # the new one would have made the broker close it (406 PRECONDITION_FAILED, unknown tag).
    assert log.count("broker connection lost") == 1, log
    assert "dropped" in log, "no job was in flight when the connections dropped"
    assert "PRECONDITION_FAILED" not in log and "unknown delivery tag" not in log, log


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
    assert faulty.store.current(upload_id).state == "done"
    runner.stop()
    _assert_queues_empty(probe, settings)
