"""The bridge's /healthz and /metrics, scraped over HTTP while a real bridge works the real
RabbitMQ (S3 on moto)."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bridge.observability import BridgeMetrics, ObservabilityServer
from imagepipe.broker import HEADER_ERROR_CODE

from ..conftest import ROOT, free_port
from .conftest import (
    InlineInvoker,
    RecordingInvoker,
    close_broker_connection,
    jpeg_bytes,
    retry_result,
    wait_for,
)

pytestmark = pytest.mark.broker


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics as {(name, sorted labels): value}."""
    response = requests.get(f"{base}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def health(base: str) -> tuple[int, dict]:
    response = requests.get(f"{base}/healthz", timeout=5)
    return response.status_code, response.json()


@pytest.fixture
def metrics_server(storage):
    metrics = BridgeMetrics(storage.settings)
    server = ObservabilityServer(metrics, "127.0.0.1", free_port())
    yield metrics, f"http://127.0.0.1:{server.port}"
    server.close()
    metrics.close()


@pytest.mark.timeout(90)
def test_health_and_metrics_follow_the_bridge(storage, probe, run_bridge, metrics_server):
    settings = storage.settings
    metrics, base = metrics_server
    assert health(base) == (503, {"status": "unavailable", "reason": "starting"})

    good = [storage.put_original(jpeg_bytes(320, 240)) for _ in range(2)]
    flaky = storage.put_original(jpeg_bytes(320, 240))
    broken = storage.put_original(b"not an image at all")
    invoker = RecordingInvoker(
        InlineInvoker(settings),
        behave=lambda inv: retry_result(inv) if inv.job.job_id == flaky and inv.attempt == 1
        else None,
    )
    name = f"bridge-test-{uuid.uuid4().hex[:12]}"
    probe.watch_results()
    runner = run_bridge(settings, invoker, observer=metrics, connection_name=name,
                        reconnect_initial_s=2.0)
    assert health(base) == (200, {"status": "ok", "reason": "consuming"})

    for upload_id in (*good, flaky, broken):
        probe.publish(storage.job(upload_id))
    probe.events(4)

    samples = scrape(base)
    jobs = {outcome: samples[("imagepipe_bridge_jobs_total", (("outcome", outcome),))]
            for outcome in ("done", "failed", "retry", "released", "dropped")}
    assert jobs == {"done": 3, "failed": 1, "retry": 1, "released": 0, "dropped": 0}
    assert samples[("imagepipe_bridge_redeliveries_total", ())] == 1
    assert samples[("imagepipe_bridge_dead_lettered_total",
                    (("code", "unsupported_format"),))] == 1
    assert samples[("imagepipe_bridge_job_duration_seconds_count", (("outcome", "done"),))] == 3
    assert samples[("imagepipe_bridge_job_duration_seconds_sum", (("outcome", "done"),))] > 0
    assert samples[("imagepipe_bridge_in_flight", ())] == 0
    assert samples[("imagepipe_bridge_consuming", ())] == 1
    assert samples[("imagepipe_bridge_reconnects_total", ())] == 0
    queue = (("queue", settings.resize_queue),)
    dead = (("queue", settings.dead_letter_queue),)
    assert samples[("imagepipe_queue_messages", queue)] == 0
    assert samples[("imagepipe_queue_consumers", queue)] == 1
    [(props, _)] = probe.dead_letters(1)  # drains it: the depth must follow
    assert props.headers[HEADER_ERROR_CODE] == "unsupported_format"
    assert scrape(base)[("imagepipe_queue_messages", dead)] == 0

    close_broker_connection(name)
    status, body = wait_for(lambda: (got := health(base))[0] == 503 and got, 10, interval=0.05,
                            what="/healthz to report the lost connection")
    assert body["status"] == "unavailable" and "connection lost" in body["reason"]
    wait_for(lambda: health(base)[0] == 200, 15, what="the bridge to reconnect")
    assert scrape(base)[("imagepipe_bridge_reconnects_total", ())] == 1

    runner.stop()
    assert health(base) == (503, {"status": "unavailable", "reason": "stopped"})
    assert requests.get(f"{base}/nope", timeout=5).status_code == 404


@pytest.mark.timeout(60)
def test_python_m_bridge_serves_metrics_on_the_configured_port(storage, probe):
    settings = dataclasses.replace(storage.settings, health_port=free_port(), workers=1)
    base = f"http://127.0.0.1:{settings.health_port}"
    upload_id = storage.put_original(jpeg_bytes(320, 240))
    probe.watch_results()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge"], cwd=ROOT, env={**os.environ, **settings.to_env()},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: _answers(base) and health(base)[0] == 200, 20,
                 what="the bridge's /healthz")
        probe.publish(storage.job(upload_id))
        [event] = probe.events(1, timeout=30)
        assert event.status == "done"
        done = ("imagepipe_bridge_jobs_total", (("outcome", "done"),))
        wait_for(lambda: scrape(base)[done] == 1, 5, what="the done counter")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


@pytest.mark.timeout(30)
def test_health_port_in_use_is_a_config_error(broker_settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **dataclasses.replace(broker_settings, health_port=port).to_env()}
        completed = subprocess.run([sys.executable, "-m", "bridge"], cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=30)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "IMAGEPIPE_HEALTH_PORT" in lines[0], completed.stderr


def _answers(base: str) -> bool:
    try:
        requests.get(f"{base}/healthz", timeout=1)
    except requests.ConnectionError:
        return False
    return True


@pytest.mark.timeout(30)
def test_queue_depth_is_left_out_for_a_missing_queue_or_an_unreachable_broker(broker_settings):
    missing_work_queue = dataclasses.replace(broker_settings,
                                             resize_queue=f"no-such-queue-{uuid.uuid4().hex}")
    unreachable = dataclasses.replace(broker_settings,
                                      amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    seen = {}
    for name, settings in (("missing", missing_work_queue), ("unreachable", unreachable)):
        metrics = BridgeMetrics(settings)
        server = ObservabilityServer(metrics, "127.0.0.1", free_port())
        try:
            seen[name] = {labels for (metric, labels) in scrape(f"http://127.0.0.1:{server.port}")
                          if metric == "imagepipe_queue_messages"}
        finally:
            server.close()
            metrics.close()
    assert seen["missing"] == {(("queue", broker_settings.rerender_queue),),
                               (("queue", broker_settings.dead_letter_queue),)}
    assert seen["unreachable"] == set()
