"""The bridge against the real RabbitMQ, with S3 on a moto server."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from PIL import Image

from bridge.consumer import Bridge
from bridge.invokers import LocalInvoker
from imagepipe import keys, messages
from imagepipe.broker import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_CODE,
    HEADER_ERROR_MESSAGE,
    delivery_count,
)
from imagepipe.errors import ConfigError, TransientError
from imagepipe.spec import parse_variants
from imagepipe.status import StatusStore

from ..conftest import ROOT
from .conftest import (
    InlineInvoker,
    RecordingInvoker,
    close_broker_connection,
    jpeg_bytes,
    retry_result,
    wait_for,
)

pytestmark = pytest.mark.broker


def _status(storage, upload_id):
    return StatusStore(storage.s3, storage.settings.bucket).current(upload_id)


def _published(probe, job) -> bool:
    try:
        probe.publish(job)
    except TransientError:  # the queue does not exist (yet)
        return False
    return True


def _assert_queues_empty(probe, settings):
    """Call after the bridge has stopped: an unacked message would be back in the queue."""
    assert probe.ready(settings.resize_queue) == 0
    assert probe.ready(settings.dead_letter_queue) == 0


@pytest.mark.timeout(60)
def test_job_is_resized_by_local_worker_processes(storage, probe, run_bridge):
    settings = storage.settings
    upload_id = storage.put_original(jpeg_bytes(1200, 800))
    probe.watch_results()
    runner = run_bridge(settings, LocalInvoker(settings))

    probe.publish(storage.job(upload_id))

    [event] = probe.events(1, timeout=30)
    assert (event.status, event.job_id, event.upload_id) == ("done", upload_id, upload_id)
    expected = {"xl": (1200, 800), "lg": (1024, 683), "md": (512, 341), "sm": (256, 171),
                "thumb": (150, 150)}
    assert {v.name: (v.width, v.height) for v in event.variants} == expected
    for variant in event.variants:
        assert variant.key == keys.variant_key(upload_id, variant.name, "jpeg")
        assert storage.image(variant.key).size == expected[variant.name]
    assert _status(storage, upload_id).state == "done"
    runner.stop()
    assert probe.no_more_events()
    _assert_queues_empty(probe, settings)


@pytest.mark.timeout(60)
def test_permanent_failures_are_dead_lettered_with_their_cause(storage, probe, run_bridge):
    settings = storage.settings
    not_an_image = storage.put_original(b"<html>not an image</html>")
    missing = keys.new_upload_id()  # a job whose original was never uploaded
    probe.watch_results()
    runner = run_bridge(settings, InlineInvoker(settings))

    for upload_id in (not_an_image, missing):
        probe.publish(storage.job(upload_id))

    letters = probe.dead_letters(2)
    codes = {props.message_id: props.headers[HEADER_ERROR_CODE] for props, _ in letters}
    assert codes == {not_an_image: "unsupported_format", missing: "source_missing"}
    for props, body in letters:
        assert props.headers[HEADER_ATTEMPTS] == 1  # permanent: no retries
        assert props.headers[HEADER_ERROR_MESSAGE]
        assert props.delivery_mode == 2
        assert messages.ResizeJob.decode(body).job_id == props.message_id  # the original body
    events = {e.job_id: e for e in probe.events(2)}
    assert {i: (e.status, e.error["code"]) for i, e in events.items()} == {
        not_an_image: ("failed", "unsupported_format"), missing: ("failed", "source_missing"),
    }
    for upload_id, code in ((not_an_image, "unsupported_format"), (missing, "source_missing")):
        status = _status(storage, upload_id)
        assert (status.state, status.error["code"]) == ("failed", code)
    runner.stop()
    assert probe.ready(settings.resize_queue) == 0


def _attempts_of_one_done_job(storage, probe, run_bridge, behave, **bridge_kwargs) -> list[int]:
    """Run one real job through a bridge whose invoker first calls ``behave``; returns the
    attempt numbers it saw, once the job is done and the bridge stopped with nothing left."""
    settings = storage.settings
    upload_id = storage.put_original(jpeg_bytes(640, 480))
    invoker = RecordingInvoker(InlineInvoker(settings), behave=behave)
    probe.watch_results()
    runner = run_bridge(settings, invoker, **bridge_kwargs)

    probe.publish(storage.job(upload_id))

    [event] = probe.events(1, timeout=30)
    assert (event.job_id, event.status) == (upload_id, "done")
    assert _status(storage, upload_id).state == "done"
    runner.stop()
    assert probe.no_more_events()
    _assert_queues_empty(probe, storage.settings)
    return invoker.attempts[upload_id]


@pytest.mark.timeout(60)
def test_transient_failure_is_retried_until_done(storage, probe, run_bridge):
    attempts = _attempts_of_one_done_job(
        storage, probe, run_bridge,
        behave=lambda inv: retry_result(inv) if inv.attempt <= 2 else None,
    )
    assert attempts == [1, 2, 3]


@pytest.mark.timeout(60)
def test_heartbeats_survive_a_job_longer_than_the_heartbeat(storage, probe, run_bridge):
    def slow(invocation):
        time.sleep(6)  # several heartbeat timeouts: a blocked I/O thread would lose the connection

    attempts = _attempts_of_one_done_job(storage, probe, run_bridge, behave=slow, heartbeat=1)
    assert attempts == [1]  # acked on the first delivery, never redelivered


@pytest.mark.timeout(60)
@pytest.mark.parametrize("failure", ["raises", "returns_retry"])
def test_always_transient_job_is_dead_lettered_after_the_delivery_limit(
    storage, probe, run_bridge, failure
):
    settings = storage.settings
    poisoned = storage.put_original(jpeg_bytes(640, 480))  # a fine image; the invoker fails
    others = [storage.put_original(jpeg_bytes(320, 240)) for _ in range(2)]

    def behave(invocation):
        if invocation.job.job_id != poisoned:
            return None
        if failure == "raises":
            raise ConnectionError("resize function unreachable")
        return retry_result(invocation, "s3_unavailable")

    invoker = RecordingInvoker(InlineInvoker(settings), behave=behave)
    probe.watch_results()
    runner = run_bridge(settings, invoker)

    for upload_id in (poisoned, *others):
        probe.publish(storage.job(upload_id))

    [(props, body)] = probe.dead_letters(1)
    max_attempts = settings.delivery_limit + 1
    expected_code = "invoke_failed" if failure == "raises" else "s3_unavailable"
    assert props.message_id == poisoned
    assert props.headers[HEADER_ERROR_CODE] == expected_code
    assert props.headers[HEADER_ATTEMPTS] == max_attempts
    assert f"gave up after {max_attempts} attempts" in props.headers[HEADER_ERROR_MESSAGE]
    # A replay from the dead-letter queue starts again at attempt 1.
    assert delivery_count(props) == 0
    assert messages.ResizeJob.decode(body).job_id == poisoned
    assert invoker.attempts[poisoned] == list(range(1, max_attempts + 1))
    events = {e.job_id: e for e in probe.events(3)}
    assert events[poisoned].status == "failed"
    assert events[poisoned].error["code"] == expected_code
    assert [events[i].status for i in others] == ["done", "done"]
    runner.stop()
    _assert_queues_empty(probe, settings)


@pytest.mark.timeout(60)
def test_undecodable_messages_are_dead_lettered_and_consuming_goes_on(storage, probe, run_bridge):
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
    runner.stop()
    _assert_queues_empty(probe, settings)


@pytest.mark.timeout(60)
def test_results_from_a_lost_connection_are_dropped_and_the_job_redelivered(
    storage, probe, run_bridge
):
    settings = storage.settings  # two worker threads: the redelivery runs while attempt 1 hangs
    upload_id = storage.put_original(jpeg_bytes(320, 240))
    first_attempt_running, release_first_attempt = threading.Event(), threading.Event()

    def behave(invocation):
        if invocation.attempt == 1:
            first_attempt_running.set()
            release_first_attempt.wait(30)
        return None

    invoker = RecordingInvoker(InlineInvoker(settings), behave=behave)
    name = f"bridge-test-{uuid.uuid4().hex[:12]}"
    probe.watch_results()
    runner = run_bridge(settings, invoker, connection_name=name, reconnect_initial_s=0.1)
    bridge = runner.bridge

    probe.publish(storage.job(upload_id))
    wait_for(first_attempt_running.is_set, 15, what="attempt 1 to start")
    close_broker_connection(name)

    [event] = probe.events(1)  # attempt 2, on the new connection
    assert (event.job_id, event.status) == (upload_id, "done")
    assert bridge.healthy
    release_first_attempt.set()  # attempt 1 finishes too; its delivery tag is stale
    assert probe.no_more_events(wait=1.0)
    assert invoker.attempts[upload_id] == [1, 2]
    runner.stop()
    _assert_queues_empty(probe, settings)


@pytest.mark.timeout(60)
def test_bridge_recovers_when_the_broker_cancels_its_consumer(storage, probe, run_bridge):
    # Deleting the queue makes the broker cancel the consumer. Like a consumer timeout, pika's
    # BlockingConnection does not raise for it, and the bridge must notice on its own.
    settings = storage.settings
    upload_id = storage.put_original(jpeg_bytes(320, 240))
    probe.watch_results()
    runner = run_bridge(settings, InlineInvoker(settings), reconnect_initial_s=0.1)
    bridge = runner.bridge

    probe.channel.queue_delete(settings.resize_queue)
    # Publishing is mandatory, so it only succeeds once the bridge has re-declared the queue.
    wait_for(lambda: _published(probe, storage.job(upload_id)), 10, interval=0.1,
             what="the bridge to re-declare the queue")

    [event] = probe.events(1)  # ...and to consume from it again
    assert (event.job_id, event.status) == (upload_id, "done")
    assert bridge.healthy
    runner.stop()
    _assert_queues_empty(probe, settings)


@pytest.mark.timeout(30)
def test_conflicting_queue_arguments_are_a_config_error(broker_settings):
    # The fixture declared the queue with delivery_limit=3; a bridge configured otherwise
    # would fail the same way on every reconnect, so it stops instead.
    settings = dataclasses.replace(broker_settings, delivery_limit=7)
    bridge = Bridge(settings, InlineInvoker(settings))
    with pytest.raises(ConfigError, match="PRECONDITION_FAILED"):
        bridge.run()


# --- `python -m bridge` as a process ----------------------------------------------------------


def _big_jpeg() -> bytes:
    # Noise makes the WebP encodes slow enough that SIGTERM surely lands mid-job.
    image = Image.effect_noise((3000, 2000), 40).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


class _Lines:
    """Collects a process's stderr lines in a thread, so its pipe never fills up."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def contains(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def text(self) -> str:
        self._thread.join(5)
        return "".join(self.lines)


@pytest.mark.timeout(90)
def test_sigterm_lets_the_job_in_flight_finish(storage, probe):
    settings = dataclasses.replace(
        storage.settings,
        workers=1,
        variants=parse_variants([
            {"name": "big", "mode": "fit", "width": 2800, "height": 2800, "format": "webp"},
            {"name": "large", "mode": "fit", "width": 2400, "height": 2400, "format": "webp"},
        ]),
    )
    upload_id = storage.put_original(_big_jpeg())
    store = StatusStore(storage.s3, settings.bucket)
    probe.watch_results()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge"], cwd=ROOT, env={**os.environ, **settings.to_env()},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    stderr = _Lines(process.stderr)
    try:
        wait_for(lambda: stderr.contains("consuming"), 20, what="the bridge to consume")
        probe.publish(storage.job(upload_id))
        states = wait_for(
            lambda: (found := store.states(upload_id)) and "processing" in found and found,
            20, interval=0.02, what="the job to start",
        )
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = stderr.text()
    assert "done" not in states, "the job finished before SIGTERM; the test proves nothing"
    assert returncode == 0, log
    [event] = probe.events(1, timeout=5)
    assert (event.job_id, event.status) == (upload_id, "done")
    assert store.current(upload_id).state == "done"
    assert f"job={upload_id}" in log and "outcome=done" in log
    assert "SIGTERM received" in log
    _assert_queues_empty(probe, settings)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("setting", "env"),
    [
        ("IMAGEPIPE_BUCKET", {}),
        ("AMQP_URL", {"IMAGEPIPE_BUCKET": "photos",
                      "AMQP_URL": "amqp://guest:secret@127.0.0.1:99999/%2F"}),
    ],
)
def test_config_error_exits_2_with_one_line(setting, env):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("IMAGEPIPE_") and k != "AMQP_URL"}
    completed = subprocess.run(
        [sys.executable, "-m", "bridge"], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=30,
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0], completed.stderr
    assert "Traceback" not in completed.stderr
    assert "secret" not in completed.stderr
