"""The bridge against the real RabbitMQ, with S3 on a moto server."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import uuid

import pytest

from bridge.consumer import Bridge
from bridge.invokers import LocalInvoker
from imagepipe import keys
from imagepipe.errors import ConfigError
from imagepipe.status import StatusStore

from ..conftest import ROOT
from .conftest import (
    InlineInvoker,
    RecordingInvoker,
    attempts_of_one_done_job,
    close_broker_connection,
    jpeg_bytes,
    retry_result,
    wait_for,
)

pytestmark = pytest.mark.broker


def _status(storage, upload_id):
    return StatusStore(storage.s3, storage.settings.bucket).current(upload_id)


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
def test_transient_failure_is_retried_until_done(storage, probe, run_bridge):
    attempts = attempts_of_one_done_job(
        storage, probe, run_bridge,
        behave=lambda inv: retry_result(inv) if inv.attempt <= 2 else None,
    )
    assert attempts == [1, 2, 3]


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


@pytest.mark.timeout(30)
def test_conflicting_queue_arguments_are_a_config_error(broker_settings):
    # The fixture declared the queue with delivery_limit=3; a bridge configured otherwise
    # would fail the same way on every reconnect, so it stops instead.
    settings = dataclasses.replace(broker_settings, delivery_limit=7)
    bridge = Bridge(settings, InlineInvoker(settings))
    with pytest.raises(ConfigError, match="PRECONDITION_FAILED"):
        bridge.run()


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
