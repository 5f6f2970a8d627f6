"""Status derived from add-only markers in S3 (in-process moto)."""

from imagepipe import keys
from imagepipe.status import StatusStore


def test_state_follows_the_highest_marker(s3_mock):
    s3, bucket = s3_mock
    store = StatusStore(s3, bucket)
    uid = keys.new_upload_id()
    assert store.current(uid) is None
    store.put_upload_record(uid, {"filename": "a.jpg"})
    assert store.current(uid).state == "pending"
    assert store.mark(uid, "queued", exclusive=True)
    assert not store.mark(uid, "queued", exclusive=True)  # a second enqueue loses
    assert store.current(uid).state == "queued"
    store.mark(uid, "processing")
    assert store.current(uid).state == "processing"
    store.mark(uid, "failed", error={"code": "truncated", "message": "m"})
    failed = store.current(uid)
    assert (failed.state, failed.error) == ("failed", {"code": "truncated", "message": "m"})
    store.mark(uid, "done")  # a replay that succeeded outranks the earlier failure
    assert store.current(uid) == store.current(uid).__class__(uid, "done", None)


def test_unmark_restores_the_previous_state(s3_mock):
    s3, bucket = s3_mock
    store = StatusStore(s3, bucket)
    uid = keys.new_upload_id()
    store.put_upload_record(uid, {})
    store.mark(uid, "queued", exclusive=True)
    store.unmark(uid, "queued")
    assert store.current(uid).state == "pending"
    assert store.mark(uid, "queued", exclusive=True)


def test_manifest_is_written_once(s3_mock):
    s3, bucket = s3_mock
    store = StatusStore(s3, bucket)
    uid = keys.new_upload_id()
    assert store.get_manifest(uid) is None
    assert store.put_manifest(uid, {"attempt": 1})
    assert not store.put_manifest(uid, {"attempt": 2})
    assert store.get_manifest(uid) == {"attempt": 1}
