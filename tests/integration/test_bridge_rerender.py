"""The bridge's rerender queue against the real RabbitMQ: its own consumer on a share of the
workers, its events, its dead letters and their replay. The invoker is a slow fake here (what is
measured is the bridge); tests/integration/test_rerender_priority.py runs the real resize."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from imagepipe.broker import (
    HEADER_ATTEMPTS,
    HEADER_ERROR_CODE,
    HEADER_REPLAYS,
    work_queue_arguments,
)
from imagepipe.messages import DONE, FAILED, Invocation, InvocationResult, ResizeJob
from imagepipe.status import StatusStore
from imagepipe_tools.dlq import DeadLetterQueue, match_all

from .conftest import wait_for

pytestmark = pytest.mark.broker

EVENTS = ("job.*", "variants.*")


class SlowInvoker:
    """Answers after ``seconds`` (failed for the jobs in ``fail``), counting what runs at once."""

    def __init__(self, seconds: float, fail=()):
        self.seconds = seconds
        self.fail = set(fail)
        self.lock = threading.Lock()
        self.running = {"live": 0, "rerender": 0}
        self.most = {"live": 0, "rerender": 0, "total": 0}
        self.finished: list[str] = []  # "live" / "rerender", in order

    def invoke(self, invocation: Invocation) -> InvocationResult:
        kind = "rerender" if invocation.job.is_rerender else "live"
        with self.lock:
            self.running[kind] += 1
            self.most[kind] = max(self.most[kind], self.running[kind])
            self.most["total"] = max(self.most["total"], sum(self.running.values()))
        try:
            time.sleep(self.seconds)
        finally:
            with self.lock:
                self.running[kind] -= 1
                self.finished.append(kind)
        job = invocation.job
        if job.job_id in self.fail:
            return InvocationResult(job_id=job.job_id, upload_id=job.upload_id, status=FAILED,
                                    error={"code": "corrupt", "message": "injected"})
        return InvocationResult(job_id=job.job_id, upload_id=job.upload_id, status=DONE)

    def close(self, wait: bool = True) -> None:
        pass


def _jobs(settings, count: int, rerender: bool) -> list[ResizeJob]:
    from imagepipe import keys

    jobs = [ResizeJob.for_upload(keys.new_upload_id(), settings.bucket, "image/jpeg")
            for _ in range(count)]
    return [dataclasses.replace(j, rerender=("md",)) for j in jobs] if rerender else jobs


@pytest.mark.timeout(90)
def test_rerender_jobs_run_on_their_share_and_live_jobs_keep_the_rest(broker_settings, probe,
                                                                      run_bridge):
    settings = dataclasses.replace(broker_settings, workers=4, rerender_workers=2)
    invoker = SlowInvoker(0.3)
    rerenders, lives = _jobs(settings, 20, True), _jobs(settings, 6, False)
    probe.watch_results(routing_keys=EVENTS)
    for job in rerenders:
        probe.publisher.publish_rerender(job)
    # What the backfill publishes: persistent, typed, on the rerender queue only.
    method, props, body = probe.channel.basic_get(settings.rerender_queue, auto_ack=False)
    assert (props.type, props.message_id, props.content_type, props.delivery_mode) == (
        "imagepipe.rerender.v1", rerenders[0].job_id, "application/json", 2)
    assert ResizeJob.decode(body) == rerenders[0]
    probe.channel.basic_nack(method.delivery_tag, requeue=True)
    wait_for(lambda: probe.ready(settings.rerender_queue) == 20, 5, what="the job back")
    assert probe.ready(settings.resize_queue) == 0

    runner = run_bridge(settings, invoker)
    wait_for(lambda: invoker.running["rerender"] == 2, 10, what="rerender jobs to run")
    for job in lives:
        probe.publish(job)

    got = probe.event_messages(26, timeout=60)
    keys = {event.job_id: (props.type, event.routing_key) for props, event in got}
    assert {keys[j.job_id] for j in rerenders} == {("imagepipe.variants.changed",
                                                    "variants.changed")}
    assert {keys[j.job_id] for j in lives} == {("imagepipe.job.done", "job.done")}
    assert invoker.most["rerender"] == 2  # its share, never more, while 18 more waited
    assert invoker.most["total"] <= 4
    assert invoker.most["live"] >= 2  # the rest of the workers were the live jobs'
    # The live jobs did not queue behind the rerender backlog: all six were done while most
    # of it was still waiting.
    last_live = max(i for i, kind in enumerate(invoker.finished) if kind == "live")
    assert invoker.finished[last_live + 1:].count("rerender") >= 6
    runner.stop()
    assert probe.ready(settings.rerender_queue) == probe.ready(settings.resize_queue) == 0


@pytest.mark.timeout(60)
def test_stopping_drains_both_consumers(broker_settings, probe, run_bridge):
    settings = dataclasses.replace(broker_settings, workers=2)  # one for rerender jobs
    invoker = SlowInvoker(1.0)
    probe.watch_results(routing_keys=EVENTS)
    runner = run_bridge(settings, invoker)
    for job in _jobs(settings, 3, True):
        probe.publisher.publish_rerender(job)
    for job in _jobs(settings, 3, False):
        probe.publish(job)
    wait_for(lambda: invoker.running == {"live": 1, "rerender": 1}, 10,
             what="a job of each kind to run")

    runner.stop()

    assert runner.bridge.drained and not runner.bridge.healthy
    # The two that ran were settled; the rest went back to their own queues, none lost.
    running_then = probe.event_messages(2, timeout=5)
    assert sorted(event.routing_key for _, event in running_then) == ["job.done",
                                                                       "variants.changed"]
    settled = len(invoker.finished)
    assert settled >= 2
    left = probe.ready(settings.resize_queue) + probe.ready(settings.rerender_queue)
    assert left == 6 - settled
    assert probe.ready(settings.rerender_queue) >= 1 and probe.ready(settings.resize_queue) >= 1


@pytest.mark.timeout(60)
def test_a_failed_rerender_is_dead_lettered_with_its_cause_and_replayed_to_its_queue(
    storage, probe, run_bridge
):
    settings = storage.settings
    [job] = _jobs(settings, 1, True)
    store = StatusStore(storage.s3, settings.bucket)
    store.mark(job.upload_id, "done")  # a rerender's upload is done, and stays so
    invoker = SlowInvoker(0.05, fail={job.job_id})
    probe.watch_results(routing_keys=EVENTS)
    runner = run_bridge(settings, invoker)

    probe.publisher.publish_rerender(job)

    [(props, event)] = probe.event_messages(1)
    assert (props.type, event.routing_key, event.error["code"]) == (
        "imagepipe.variants.failed", "variants.failed", "corrupt")
    runner.stop()
    [(dead_props, body)] = _peek_dead(probe)
    assert dead_props.headers[HEADER_ERROR_CODE] == "corrupt"
    assert dead_props.headers[HEADER_ATTEMPTS] == 1
    assert dead_props.type == "imagepipe.rerender.v1"
    assert ResizeJob.decode(body) == job

    [outcome] = DeadLetterQueue(settings, status_store=store).replay(match_all)

    assert outcome.action == "replayed"
    assert probe.ready(settings.dead_letter_queue) == 0
    assert probe.ready(settings.resize_queue) == 0
    method, props, body = probe.channel.basic_get(settings.rerender_queue, auto_ack=True)
    assert method is not None and ResizeJob.decode(body) == job
    assert (props.type, props.headers[HEADER_REPLAYS]) == ("imagepipe.rerender.v1", 1)
    assert store.states(job.upload_id) == {"done"}  # the replay left the status alone


@pytest.mark.timeout(60)
def test_the_broker_dead_letters_a_rerender_job_past_its_delivery_limit_like_a_live_one(
    broker_settings, probe
):
    settings = broker_settings  # delivery_limit=3: four deliveries, then the dead-letter queue
    # The same arguments as the work queue, or this declare would fail with 406.
    probe.channel.queue_declare(settings.rerender_queue, durable=True,
                                arguments=work_queue_arguments(settings))
    [job] = _jobs(settings, 1, True)
    probe.publisher.publish_rerender(job)
    for _ in range(settings.delivery_limit + 1):  # a bridge that crashed on it every time
        method = wait_for(lambda: probe.channel.basic_get(settings.rerender_queue)[0], 5,
                          what="a delivery")
        probe.channel.basic_nack(method.delivery_tag, requeue=True)

    [letter] = wait_for(lambda: DeadLetterQueue(settings).list(), 10, what="the dead letter")
    assert (letter.code, letter.dead_lettered_by, letter.job) == ("delivery_limit", "broker", job)
    assert settings.rerender_queue in letter.message
    [outcome] = DeadLetterQueue(settings).replay(match_all, reset_status=False)
    assert outcome.action == "replayed"
    assert probe.ready(settings.rerender_queue) == 1 and probe.ready(settings.resize_queue) == 0


def _peek_dead(probe) -> list:
    """The dead letters, given back to the queue (the replay below takes them)."""
    got = []
    channel = probe.connection.channel()
    while (taken := channel.basic_get(probe.settings.dead_letter_queue, auto_ack=False))[0]:
        got.append((taken[1], taken[2]))
    channel.close()  # unacked: back to the queue
    wait_for(lambda: probe.ready(probe.settings.dead_letter_queue) == len(got), 5,
             what="the dead letters back")
    return got
