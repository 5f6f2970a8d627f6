"""A dead-letter copy and a replay copy the original message's properties the same way."""

import pika

from bridge.settle import dead_letter_properties
from imagepipe_tools.dlq import replay_properties

ORIGINAL = pika.BasicProperties(
    content_type="application/json", content_encoding="utf-8", headers={"trace-id": "t"},
    delivery_mode=1, priority=3, correlation_id="c", reply_to="amq.rabbitmq.reply-to",
    expiration="60000", message_id="m", timestamp=1700000000, type="imagepipe.resize.v1",
    user_id="producer", app_id="uploads",
)
COPIED = ("content_type", "content_encoding", "priority", "correlation_id", "reply_to",
          "message_id", "timestamp", "type", "app_id")


def test_dead_letter_and_replay_keep_the_same_properties():
    dead = dead_letter_properties(ORIGINAL, {"code": "corrupt", "message": "x"}, 2)
    replayed = replay_properties(dead, 1)
    for copy in (dead, replayed):
        for name in COPIED:
            assert getattr(copy, name) == getattr(ORIGINAL, name), name
        assert copy.delivery_mode == 2
        assert copy.user_id is None and copy.expiration is None
    assert dead.headers["trace-id"] == replayed.headers["trace-id"] == "t"


def test_a_finished_jobs_event_carries_its_owner_and_callback():
    from bridge.settle import decide
    from imagepipe.messages import Invocation, InvocationResult, ResizeJob
    from imagepipe.settings import Settings

    uid = "0123456789abcdef0123456789abcdef"
    job = ResizeJob.for_upload(uid, "photos", "image/jpeg", callback_url="https://h.example/x",
                               owner="alice")
    done = InvocationResult(job_id=uid, upload_id=uid, status="done")

    event = decide(Settings(bucket="photos"), Invocation(job), done).event

    assert (event.owner, event.callback_url) == ("alice", "https://h.example/x")
