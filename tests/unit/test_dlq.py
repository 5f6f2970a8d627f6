"""Reading a dead letter's cause, and the properties a replayed job is published with."""

from __future__ import annotations

import datetime

import pika
import pytest

from imagepipe.broker import HEADER_DELIVERY_COUNT, HEADER_REPLAYS
from imagepipe_tools.cli import build_parser
from imagepipe_tools.dlq import describe, match_jobs, replay_properties
from imagepipe.messages import ResizeJob

JOB = ResizeJob.for_upload("a" * 32, "photos", "image/jpeg")


def _props(headers, message_id=JOB.job_id):
    return pika.BasicProperties(headers=headers, message_id=message_id, delivery_mode=2,
                                content_type="application/json", type="imagepipe.resize.v1")


def test_a_bridge_dead_letter_carries_its_cause_in_headers():
    letter = describe(_props({"x-imagepipe-error-code": "corrupt",
                              "x-imagepipe-error-message": "bad huffman table",
                              "x-imagepipe-attempts": 1,
                              "x-imagepipe-dead-lettered-at": "2026-11-28T05:00:00.000000Z"}),
                      JOB.encode())
    assert (letter.job_id, letter.code, letter.message, letter.attempts) == (
        JOB.job_id, "corrupt", "bad huffman table", 1)
    assert letter.dead_lettered_by == "bridge" and letter.job == JOB
    assert letter.dead_lettered_at == "2026-11-28T05:00:00.000000Z"
    assert letter.to_dict()["replayable"] is True


def test_a_broker_dead_letter_is_explained_from_x_death():
    when = datetime.datetime(2026, 11, 28, 5, 0, tzinfo=datetime.timezone.utc)
    letter = describe(_props({"x-death": [{"count": 1, "reason": "delivery_limit",
                                           "queue": "imagepipe.resize", "time": when}],
                              "x-imagepipe-replays": 2}), JOB.encode())
    assert (letter.code, letter.dead_lettered_by, letter.attempts) == (
        "delivery_limit", "broker", None)
    assert "imagepipe.resize" in letter.message
    assert letter.dead_lettered_at == "2026-11-28T05:00:00+00:00"
    assert letter.replays == 2


@pytest.mark.parametrize("body, code", [(b"\xff not json", "bad_message"),
                                        (b'{"v": 7}', "unknown_schema_version")])
def test_an_unreadable_body_is_reported_not_raised(body, code):
    letter = describe(_props(None, message_id="m-1"), body)
    assert letter.job is None and letter.job_id == "m-1"
    assert letter.body_error["code"] == code
    assert letter.code == "unknown" and letter.dead_lettered_by == "unknown"
    assert letter.to_dict()["replayable"] is False


def test_a_replay_drops_the_past_life_and_counts_the_replay():
    original = _props({"x-imagepipe-error-code": "s3_unavailable", "x-imagepipe-attempts": 6,
                       "x-imagepipe-dead-lettered-at": "2026-11-28T05:00:00.000000Z",
                       HEADER_DELIVERY_COUNT: 5, "x-death": [], "x-first-death-reason": "x",
                       "trace-id": "keep-me"})
    properties = replay_properties(original, 3)
    assert properties.headers == {"trace-id": "keep-me", HEADER_REPLAYS: 3}
    assert (properties.message_id, properties.delivery_mode, properties.type) == (
        JOB.job_id, 2, "imagepipe.resize.v1")


def test_jobs_are_matched_by_job_id_or_message_id():
    readable = describe(_props(None), JOB.encode())
    unreadable = describe(_props(None, message_id="m-1"), b"{")
    assert match_jobs([JOB.job_id])(readable) and not match_jobs([JOB.job_id])(unreadable)
    assert match_jobs(["m-1"])(unreadable)


@pytest.mark.parametrize("argv", [["dlq", "replay"], ["dlq", "replay", "--all", "--job", "x"],
                                  ["dlq", "discard"], ["dlq", "list", "--limit", "0"]])
def test_replay_and_discard_need_an_explicit_choice(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2


def test_the_cli_reads_settings_like_the_bridge(monkeypatch):
    # settings.load, not Settings.from_env: it adds the broker credentials from their secret.
    import argparse

    from imagepipe import settings
    from imagepipe_tools.cli import dlq as cli_dlq
    from imagepipe.settings import Settings

    loaded = Settings(bucket="photos", amqp_url="amqps://user:pw@broker:5671")
    monkeypatch.setenv("IMAGEPIPE_BUCKET", "photos")
    monkeypatch.setattr(settings, "load", lambda environ=None: loaded)
    queue = cli_dlq._queue(argparse.Namespace(verbose=True, command="dlq"))
    assert queue._settings is loaded
