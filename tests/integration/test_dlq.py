"""The dead-letter queue tools against the real RabbitMQ, with a real bridge and S3 on moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pika
import pytest

from imagepipe import keys
from imagepipe.broker import HEADER_DELIVERY_COUNT, HEADER_ERROR_CODE, HEADER_REPLAYS
from imagepipe_tools.dlq import DeadLetterQueue, match_all, match_jobs
from imagepipe.status import StatusStore

from ..conftest import ROOT
from .conftest import InlineInvoker, jpeg_bytes, wait_for

pytestmark = pytest.mark.broker


def dlq_cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.to_env()}  # PYTHONPATH: tests/conftest.py
    result = subprocess.run(
        [sys.executable, "-m", "imagepipe", "dlq", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def dead_letter_directly(probe, body: bytes, message_id: str, headers: dict | None = None):
    """Put a message straight into the dead-letter queue, as a bridge or the broker would."""
    probe.channel.confirm_delivery()
    probe.channel.basic_publish(
        exchange=probe.settings.dead_letter_exchange,
        routing_key=probe.settings.dead_letter_queue,
        body=body,
        properties=pika.BasicProperties(delivery_mode=2, message_id=message_id, headers=headers),
        mandatory=True,
    )


@pytest.mark.timeout(90)
def test_failed_job_is_listed_with_its_cause_and_replayed_to_done_after_a_fix(
    storage, probe, run_bridge
):
    settings = storage.settings
    broken = storage.put_original(b"<html>uploaded by mistake</html>")
    missing = keys.new_upload_id()
    store = StatusStore(storage.s3, settings.bucket)
    probe.watch_results()
    run_bridge(settings, InlineInvoker(settings))
    for upload_id in (broken, missing):
        probe.publish(storage.job(upload_id))
    wait_for(lambda: probe.ready(settings.dead_letter_queue) == 2, 20, what="two dead letters")
    assert {e.job_id: e.status for e in probe.events(2)} == {broken: "failed", missing: "failed"}
    assert store.current(broken).state == "failed"

    listed = dlq_cli(settings, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["job_id"]: row for row in json_lines(listed.stdout)}
    assert {i: row["error"]["code"] for i, row in rows.items()} == {
        broken: "unsupported_format", missing: "source_missing",
    }
    assert all(row["dead_lettered_by"] == "bridge" and row["attempts"] == 1
               and row["replayable"] and row["dead_lettered_at"].endswith("Z")
               for row in rows.values())
    assert "2 shown, 2 in" in listed.stderr
    text = dlq_cli(settings, "list")
    assert f"{broken}  unsupported_format  attempts=1  by=bridge" in text.stdout
    assert probe.ready(settings.dead_letter_queue) == 2  # listing took nothing away

    # The fix: the right bytes are now where the job reads them.
    storage.s3.put_object(Bucket=settings.bucket, Key=keys.original_key(broken),
                          Body=jpeg_bytes(640, 480))
    replayed = dlq_cli(settings, "replay", "--job", broken)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"{broken}: replayed"
    assert replayed.stderr.strip() == f"1 replayed in {settings.dead_letter_queue}"

    [event] = probe.events(1)
    assert (event.job_id, event.status) == (broken, "done")
    assert store.current(broken).state == "done"
    assert "failed" not in store.states(broken)  # the replay cleared the old failure
    assert {v.name for v in event.variants} == {"xl", "lg", "md", "sm", "thumb"}
    assert probe.ready(settings.dead_letter_queue) == 1  # only the other job is left
    [remaining] = DeadLetterQueue(settings).list()
    assert remaining.job_id == missing

    unknown = dlq_cli(settings, "replay", "--job", "no-such-job", "--json")
    assert unknown.returncode == 1
    assert json_lines(unknown.stdout) == [{"job_id": "no-such-job", "message_id": None,
                                           "action": "not_found",
                                           "reason": "not in the dead-letter queue"}]
    assert probe.ready(settings.dead_letter_queue) == 1


@pytest.mark.timeout(60)
def test_broker_dead_letter_is_explained_and_replayed_as_a_fresh_job(storage, probe):
    settings = storage.settings  # delivery limit 3: the 4th delivery is the last
    upload_id = storage.put_original(jpeg_bytes(320, 240))
    probe.publish(storage.job(upload_id))
    # A bridge that dies on every attempt, as the broker sees it: delivered, never acked.
    for _ in range(settings.delivery_limit + 1):
        method = wait_for(lambda: probe.channel.basic_get(settings.resize_queue)[0], 10,
                          what="a delivery")
        probe.channel.basic_nack(method.delivery_tag, requeue=True)
    wait_for(lambda: probe.ready(settings.dead_letter_queue) == 1, 10, what="a dead letter")

    [letter] = DeadLetterQueue(settings).list()
    assert (letter.job_id, letter.code, letter.dead_lettered_by) == (
        upload_id, "delivery_limit", "broker")
    assert settings.resize_queue in letter.message and letter.dead_lettered_at

    queue = DeadLetterQueue(settings, status_store=StatusStore(storage.s3, settings.bucket))
    [outcome] = queue.replay(match_all)
    assert outcome.action == "replayed"
    assert probe.ready(settings.dead_letter_queue) == 0
    method, properties, _ = wait_for(
        lambda: (got := probe.channel.basic_get(settings.resize_queue, auto_ack=True))[0] and got,
        10, what="the replayed job")
    headers = properties.headers
    assert headers[HEADER_REPLAYS] == 1
    assert "x-death" not in headers and HEADER_ERROR_CODE not in headers
    assert int(headers.get(HEADER_DELIVERY_COUNT, 0)) == 0  # attempt 1 again
    assert properties.message_id == upload_id and properties.delivery_mode == 2


@pytest.mark.timeout(60)
def test_replay_dry_run_skips_and_discard(storage, probe):
    settings = storage.settings
    job = storage.job(storage.put_original(jpeg_bytes(64, 64)))
    dead_letter_directly(probe, job.encode(), job.job_id,
                         {HEADER_ERROR_CODE: "s3_unavailable", "x-imagepipe-attempts": 4})
    dead_letter_directly(probe, job.encode(), job.job_id,  # an at-least-once duplicate
                         {HEADER_ERROR_CODE: "s3_unavailable", "x-imagepipe-attempts": 4})
    dead_letter_directly(probe, b"{not json", "garbage", {HEADER_ERROR_CODE: "bad_message"})
    queue = DeadLetterQueue(settings, status_store=StatusStore(storage.s3, settings.bucket))

    planned = queue.replay(match_all, dry_run=True)
    assert sorted(o.action for o in planned) == ["skipped", "would_replay", "would_replay"]
    assert probe.ready(settings.dead_letter_queue) == 3
    assert probe.ready(settings.resize_queue) == 0

    done = {(o.letter.message_id, o.action) for o in queue.replay(match_all)}
    assert done == {(job.job_id, "replayed"), (job.job_id, "duplicate_removed"),
                    ("garbage", "skipped")}
    assert probe.ready(settings.resize_queue) == 1  # the job once, not twice
    assert probe.ready(settings.dead_letter_queue) == 1  # the garbage stays until discarded

    [garbage] = queue.list()
    assert (garbage.job, garbage.body_error["code"]) == (None, "bad_message")
    assert [o.action for o in queue.discard(match_jobs(["garbage"]))] == ["discarded"]
    assert probe.ready(settings.dead_letter_queue) == 0


@pytest.mark.timeout(60)
def test_replay_to_a_missing_work_queue_keeps_the_dead_letter_and_the_failed_status(
    storage, probe
):
    settings = storage.settings
    upload_id = storage.put_original(jpeg_bytes(64, 64))
    store = StatusStore(storage.s3, settings.bucket)
    store.mark(upload_id, "processing")
    store.mark(upload_id, "failed", error={"code": "s3_unavailable", "message": "gave up"})
    dead_letter_directly(probe, storage.job(upload_id).encode(), upload_id,
                         {HEADER_ERROR_CODE: "s3_unavailable"})
    probe.channel.queue_delete(settings.resize_queue)

    result = dlq_cli(settings, "replay", "--all")
    assert result.returncode == 1
    assert result.stdout.strip().startswith(f"{upload_id}: failed (work queue")
    assert probe.ready(settings.dead_letter_queue) == 1
    status = store.current(upload_id)
    assert (status.state, status.error["code"]) == ("failed", "s3_unavailable")


def test_each_command_checks_the_queue_and_reads_its_depth_with_one_declare(
    storage, probe, monkeypatch
):
    settings = storage.settings
    dead_letter_directly(probe, b"{not json", "garbage", {HEADER_ERROR_CODE: "bad_message"})
    declares = []
    original = pika.adapters.blocking_connection.BlockingChannel.queue_declare

    def counting(channel, queue, *args, **kwargs):
        declares.append(queue)
        return original(channel, queue, *args, **kwargs)

    monkeypatch.setattr(pika.adapters.blocking_connection.BlockingChannel, "queue_declare",
                        counting)
    queue = DeadLetterQueue(settings)
    assert queue.depth() == 1
    assert declares == [settings.dead_letter_queue]
    declares.clear()
    # One declare opens the scan; the rest wait for the quorum queue to take the message back.
    assert [letter.message_id for letter in queue.list()] == ["garbage"]
    assert len(declares) >= 2
    declares.clear()
    assert [o.action for o in queue.discard(match_all)] == ["discarded"]
    # Opening + the (immediate) wait for nothing to come back: no second depth read.
    assert declares == [settings.dead_letter_queue] * 2


@pytest.mark.timeout(60)
def test_the_commands_use_the_running_local_stack_with_nothing_exported(storage, probe, tmp_path):
    """`make dev` records its settings in .run/; `imagepipe dlq` inside the checkout reads them
    when the environment names no bucket (here: no IMAGEPIPE_*, AMQP_URL or AWS_* at all)."""
    import shutil

    from imagepipe_tools import stack_env

    settings = storage.settings
    checkout = tmp_path / "checkout"
    (checkout / "photos").mkdir(parents=True)
    shutil.copy(ROOT / "chalicefile.json", checkout / "chalicefile.json")
    run_dir = checkout / stack_env.RUN_DIR
    run_dir.mkdir()
    stack_env.write_stack_env(run_dir, settings.to_env())
    (run_dir / "bridge.pid").write_text(f"{os.getpid()}\n")  # a live process of "the stack"
    upload_id = storage.put_original(jpeg_bytes(64, 64))
    store = StatusStore(storage.s3, settings.bucket)
    store.mark(upload_id, "failed", error={"code": "s3_unavailable", "message": "gave up"})
    dead_letter_directly(probe, storage.job(upload_id).encode(), upload_id,
                         {HEADER_ERROR_CODE: "s3_unavailable"})
    bare = {name: value for name, value in os.environ.items()
            if not name.startswith(("IMAGEPIPE_", "AWS_")) and name != "AMQP_URL"}

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "imagepipe", "-v", "dlq", *args],
                                cwd=checkout / "photos", env=bare, capture_output=True,
                                text=True, timeout=60)
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result

    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{upload_id}  s3_unavailable")
    assert f"settings from the running local stack ({run_dir / 'stack.env.json'})" in listed.stderr

    replayed = run("replay", "--job", upload_id)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"{upload_id}: replayed"
    assert probe.ready(settings.resize_queue) == 1
    # The failed marker was removed from moto's S3, signed with the local stack's credentials.
    markers = storage.s3.list_objects_v2(Bucket=settings.bucket, Prefix=f"status/{upload_id}/")
    assert [o["Key"] for o in markers.get("Contents", [])] == []
