"""The bridge's ``lambda`` invoker against a fake Lambda Invoke endpoint and the real RabbitMQ.

A lambda bridge only waits on Invoke, so its default concurrency must not follow the CPU count:
these tests count the invocations the fake endpoint has in flight at once.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from bridge.invokers import LambdaInvoker
from imagepipe import keys
from imagepipe.messages import DONE, ResizeJob
from imagepipe_dev.fake_lambda import FakeLambda

pytestmark = pytest.mark.broker

FUNCTION = "imagepipe-test-resize"


@pytest.mark.timeout(120)
def test_lambda_invoker_runs_more_invocations_at_once_than_cores(broker_settings, probe,
                                                                   run_bridge, monkeypatch):
    cores = os.cpu_count() or 1
    settings = dataclasses.replace(broker_settings, invoker="lambda", resize_function=FUNCTION)
    assert settings.workers == 0, "the default concurrency is what is under test"
    jobs = [ResizeJob.for_upload(keys.new_upload_id(), settings.bucket, "image/jpeg")
            for _ in range(4 * cores + 8)]
    with FakeLambda(delay_s=1.0) as fake:
        # What the deployed bridge's boto3 client reads; the invoker makes its own client.
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake.url)
        probe.watch_results()
        for job in jobs:
            probe.publish(job)
        bridge = run_bridge(settings, LambdaInvoker(settings))
        events = probe.events_until_each_of([job.job_id for job in jobs], timeout=60)
        bridge.stop()

    assert {event.job_id for event in events} == {job.job_id for job in jobs}
    assert {event.status for event in events} == {DONE}
    assert fake.functions == {FUNCTION}
    assert fake.invocations == len(jobs)
    assert fake.max_in_flight > cores, (
        f"at most {fake.max_in_flight} invocations at once on {cores} cores")
    assert probe.ready(settings.resize_queue) == 0
    assert probe.ready(settings.dead_letter_queue) == 0


@pytest.mark.timeout(60)
def test_lambda_invoker_stays_within_the_reserved_concurrency(broker_settings, probe,
                                                               run_bridge, monkeypatch):
    settings = dataclasses.replace(broker_settings, invoker="lambda", resize_function=FUNCTION,
                                   resize_reserved_concurrency=3)
    jobs = [ResizeJob.for_upload(keys.new_upload_id(), settings.bucket, "image/jpeg")
            for _ in range(9)]
    with FakeLambda(delay_s=0.5) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake.url)
        probe.watch_results()
        for job in jobs:
            probe.publish(job)
        bridge = run_bridge(settings, LambdaInvoker(settings))
        events = probe.events_until_each_of([job.job_id for job in jobs], timeout=30)
        bridge.stop()

    assert {event.job_id for event in events} == {job.job_id for job in jobs}
    assert fake.max_in_flight == 3
