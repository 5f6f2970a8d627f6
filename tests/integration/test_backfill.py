"""``imagepipe backfill`` against the real RabbitMQ (unique queue names) and moto's S3: the exact
rerender jobs that land on the rerender queue, and nothing more on a second run."""

from __future__ import annotations

import json
from dataclasses import replace

import pika
import pytest
from moto import mock_aws

from imagepipe.aws import s3_client
from imagepipe.messages import CONTENT_TYPE, RERENDER_JOB_TYPE, ResizeJob, State
from imagepipe.spec import DEFAULT_VARIANTS, Variant
from imagepipe_dev.bench.backfill import changed_spec, seed_photo
from imagepipe_tools import cli
from tests.conftest import AMQP_URL, unique_name

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

ENGINE = "pillow"
WEBP = Variant("webp", "fit", 800, 800, format="webp")
CURRENT = DEFAULT_VARIANTS + (WEBP,)
OLD = changed_spec(DEFAULT_VARIANTS, "md") + (Variant("old", "fit", 300, 300),)


@pytest.fixture
def stage(broker_settings, bucket_name, monkeypatch):
    """A stage with its own queues (``broker_settings``: declared, and deleted after) and a moto
    bucket; its settings in the environment, where the command reads them."""
    settings = replace(broker_settings, variants=CURRENT, imaging_engine=ENGINE)
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        with mock_aws():
            s3 = s3_client(settings)
            s3.create_bucket(Bucket=bucket_name)
            yield settings, s3, connection.channel()
    finally:
        connection.close()


def _drain(channel, queue: str) -> list[tuple[object, bytes]]:
    taken = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return taken
        taken.append((properties, body))


def _backfill(capsys, *args: str) -> tuple[int, dict]:
    status = cli.main(["backfill", "--json", *args])
    return status, json.loads(capsys.readouterr().out)


def test_backfill_publishes_exactly_the_rerender_jobs_then_nothing_more(stage, capsys):
    settings, s3, channel = stage
    bucket = settings.bucket
    first = seed_photo(s3, bucket, OLD, record={"filename": "cat.jpg", "owner": "alice",
                                                "callback_url": "https://example.com/h"})
    second = seed_photo(s3, bucket, OLD, fingerprinted=False)  # made before fingerprints
    fresh = seed_photo(s3, bucket, CURRENT)
    busy = seed_photo(s3, bucket, OLD, state=State.PROCESSING)

    status, dry = _backfill(capsys, "--dry-run", "--prune")
    assert status == 0 and dry["jobs_planned"] == 2 and dry["skipped_not_done"] == 1
    assert _drain(channel, settings.rerender_queue) == []  # a dry run publishes nothing

    status, summary = _backfill(capsys, "--prune")
    assert status == 0
    assert (summary["scanned"], summary["up_to_date"], summary["jobs_published"],
            summary["pruned"], summary["stale"], summary["missing"], summary["extra"]) == (
        4, 1, 2, 2, {"md": 3}, {"webp": 3}, {"old": 3})
    landed = _drain(channel, settings.rerender_queue)
    jobs = {}
    for properties, body in landed:
        job = ResizeJob.decode(body, bucket=bucket)
        assert properties.type == RERENDER_JOB_TYPE
        assert properties.delivery_mode == 2  # persistent
        assert properties.content_type == CONTENT_TYPE
        assert properties.message_id == job.job_id == job.upload_id
        jobs[job.upload_id] = job
    assert set(jobs) == {first, second} and fresh not in jobs and busy not in jobs
    for upload_id in (first, second):
        body = jobs[upload_id].to_dict()
        assert (body["rerender"], body["prune"], body["source_key"]) == (
            ["md", "webp"], ["old"], f"originals/{upload_id}")
    assert (jobs[first].filename, jobs[first].owner, jobs[first].callback_url) == (
        "cat.jpg", "alice", "https://example.com/h")
    assert _drain(channel, settings.resize_queue) == []  # never the live work queue

    # What the worker writes once it re-made them; the busy photo's live job finishes too.
    for upload_id in (first, second):
        seed_photo(s3, bucket, CURRENT, upload_id=upload_id)
    status, again = _backfill(capsys, "--prune")
    assert status == 0 and again["jobs_published"] == 0 and again["skipped_not_done"] == 1
    assert _drain(channel, settings.rerender_queue) == []
    seed_photo(s3, bucket, CURRENT, upload_id=busy)
    status, last = _backfill(capsys, "--prune")
    assert (status, last["up_to_date"], last["jobs_published"]) == (0, 4, 0)


def test_a_missing_rerender_queue_fails_the_run_with_exit_1(stage, capsys, monkeypatch):
    settings, s3, _channel = stage
    seed_photo(s3, settings.bucket, OLD)
    monkeypatch.setenv("IMAGEPIPE_RERENDER_QUEUE", unique_name("imagepipe-nowhere"))
    status, summary = _backfill(capsys)
    assert status == cli.EXIT_FAILED
    assert summary["jobs_published"] == 0 and "does not exist" in summary["stopped"]
