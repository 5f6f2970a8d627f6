"""Rerender jobs in the bridge's pure parts: which queue they go to (publish and replay), what
their result events and callbacks look like. The broker side: tests/integration/
test_bridge_rerender.py and test_rerender_priority.py."""

from __future__ import annotations

import dataclasses

import pika

from bridge import callbacks
from bridge.settle import decide, event_properties
from imagepipe.broker import job_properties, job_queue
from imagepipe.messages import (
    DONE,
    FAILED,
    Invocation,
    InvocationResult,
    ResizeJob,
    VariantInfo,
)
from imagepipe.settings import Settings
from imagepipe_tools.dlq import replay_queue

UID = "b" * 32
LIVE = ResizeJob.for_upload(UID, "photos", "image/jpeg")
RERENDER = dataclasses.replace(LIVE, rerender=("md",))
SETTINGS = Settings(bucket="photos", resize_queue="work", rerender_queue="again")


def test_a_rerender_job_is_published_to_its_queue_with_its_type():
    assert job_queue(SETTINGS, LIVE) == "work"
    assert job_queue(SETTINGS, RERENDER) == "again"
    props = job_properties(RERENDER)
    assert (props.type, props.message_id, props.content_type, props.delivery_mode) == (
        "imagepipe.rerender.v1", UID, "application/json", 2)
    assert job_properties(LIVE).type == "imagepipe.resize.v1"


def test_a_dead_rerender_job_is_replayed_to_the_rerender_queue():
    typed = pika.BasicProperties(type="imagepipe.rerender.v1")
    untyped = pika.BasicProperties()
    assert replay_queue(SETTINGS, untyped, RERENDER) == "again"  # the body tells
    assert replay_queue(SETTINGS, typed, LIVE) == "again"  # or the type does
    assert replay_queue(SETTINGS, untyped, LIVE) == "work"


def _result(status: str) -> InvocationResult:
    error = None if status == DONE else {"code": "corrupt", "message": "bad data"}
    return InvocationResult(job_id=UID, upload_id=UID, status=status, error=error,
                            variants=() if error else (VariantInfo(
                                name="md", key=f"variants/{UID}/0123456789abcdef/md.jpg",
                                width=512, height=341, format="jpeg", bytes=10),))


def test_a_rerender_ends_in_variants_changed_or_failed_events():
    for status, key in ((DONE, "variants.changed"), (FAILED, "variants.failed")):
        settlement = decide(SETTINGS, Invocation(RERENDER, 1, 4), _result(status))
        assert settlement.event is not None
        assert settlement.event.routing_key == key
        assert event_properties(settlement.event).type == f"imagepipe.{key}"
    live = decide(SETTINGS, Invocation(LIVE, 1, 4), _result(DONE)).event
    assert live is not None and live.routing_key == "job.done"
    assert event_properties(live).type == "imagepipe.job.done"


def test_callbacks_for_rerenders_only_when_the_stage_asks():
    assert callbacks.routing_keys(SETTINGS) == ("job.done", "job.failed")
    asked = dataclasses.replace(SETTINGS, rerender_callbacks=True)
    assert callbacks.routing_keys(asked) == ("job.done", "job.failed", "variants.changed")


def test_a_rerender_callback_has_its_own_stable_webhook_id():
    done = decide(SETTINGS, Invocation(LIVE, 1, 4), _result(DONE)).event
    changed = decide(SETTINGS, Invocation(RERENDER, 1, 4), _result(DONE)).event
    again = decide(SETTINGS, Invocation(RERENDER, 2, 4), _result(DONE)).event
    assert done is not None and changed is not None and again is not None
    assert callbacks.webhook_id(done) == f"{UID}.done"
    # Not the upload's own id (a receiver would drop it as a duplicate), and the same for the
    # same rerender delivered twice.
    assert callbacks.webhook_id(changed).startswith(f"{UID}.variants.changed.")
    assert callbacks.webhook_id(changed) == callbacks.webhook_id(again)
    other = dataclasses.replace(changed, variants=(dataclasses.replace(
        changed.variants[0], key=f"variants/{UID}/fedcba9876543210/md.jpg"),))
    assert callbacks.webhook_id(other) != callbacks.webhook_id(changed)
    assert b'"type":"imagepipe.variants.changed"' in callbacks.callback_body(changed)
