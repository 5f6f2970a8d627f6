"""The v1 message schemas, pinned by golden JSON: a change here is a contract change."""

import json
from pathlib import Path

import pytest

from imagepipe.errors import PermanentError
from imagepipe.messages import (
    Invocation,
    InvocationResult,
    ResizeJob,
    ResultEvent,
    VariantInfo,
    decode,
)

GOLDEN = Path(__file__).parent / "golden"
UID = "0123456789abcdef0123456789abcdef"
JOB = ResizeJob(job_id=UID, upload_id=UID, bucket="photos", source_key=f"originals/{UID}",
                content_type="image/jpeg", submitted_at="2026-11-28T05:00:00.000000Z",
                source_etag='"9e107d9d372bb6826bd81d3542a419d6"')
THUMB = VariantInfo(name="thumb", key=f"variants/{UID}/thumb.jpg", width=150, height=150,
                    format="jpeg", bytes=4242)


def golden(name):
    return (GOLDEN / name).read_bytes().strip()


def test_resize_job_matches_golden_and_round_trips():
    assert JOB.encode() == golden("resize_job.v1.json")
    assert ResizeJob.decode(golden("resize_job.v1.json")) == JOB


def test_invocation_and_result_match_golden():
    invocation = Invocation(JOB, attempt=2, max_attempts=6)
    assert json.loads(golden("invocation.v1.json")) == invocation.to_dict()
    assert Invocation.from_dict(invocation.to_dict()) == invocation
    assert not invocation.is_final_attempt and Invocation(JOB, 6, 6).is_final_attempt
    result = InvocationResult(job_id=UID, upload_id=UID, status="done", variants=(THUMB,),
                              duration_ms=812)
    assert json.loads(golden("invocation_result.v1.json")) == result.to_dict()
    assert InvocationResult.from_dict(result.to_dict()) == result


def test_give_up_invocation_matches_golden():
    error = {"code": "invoke_failed", "message": "lambda resize: throttled (gave up after 6 attempts)"}
    invocation = Invocation(JOB, attempt=6, max_attempts=6, give_up=error)
    assert json.loads(golden("invocation_give_up.v1.json")) == invocation.to_dict()
    assert Invocation.from_dict(invocation.to_dict()) == invocation
    with pytest.raises(PermanentError):
        Invocation.from_dict({**invocation.to_dict(), "give_up": "no"})


def test_result_event_matches_golden():
    failed = InvocationResult(job_id=UID, upload_id=UID, status="failed",
                              error={"code": "truncated", "message": "image data is truncated"},
                              duration_ms=15)
    event = ResultEvent.from_result(failed)
    event = ResultEvent(**{**event.__dict__, "finished_at": "2026-11-28T05:00:01.000000Z"})
    assert event.routing_key == "job.failed"
    assert event.encode() == golden("result_event_failed.v1.json")
    assert ResultEvent.from_dict(json.loads(event.encode())) == event
    with pytest.raises(ValueError):
        ResultEvent.from_result(InvocationResult(UID, UID, "retry"))


@pytest.mark.parametrize("body, code", [
    (b"not json", "bad_message"),
    (b"[1, 2]", "bad_message"),
    (b'{"v": 2, "job_id": "x"}', "unknown_schema_version"),
    (b'{"job_id": "x"}', "unknown_schema_version"),
    (b"\xff\xfe", "bad_message"),
])
def test_undecodable_bodies_are_permanent_errors(body, code):
    with pytest.raises(PermanentError) as caught:
        ResizeJob.decode(body)
    assert caught.value.code == code


def test_job_fields_are_validated():
    good = json.loads(JOB.encode())
    for field in ("job_id", "bucket", "content_type"):
        broken = {k: v for k, v in good.items() if k != field}
        with pytest.raises(PermanentError, match=field):
            ResizeJob.from_dict(broken)
    with pytest.raises(PermanentError, match="source_key"):
        ResizeJob.from_dict({**good, "source_key": "originals/" + "f" * 32})
    with pytest.raises(PermanentError, match="upload_id"):
        ResizeJob.from_dict({**good, "upload_id": "../x"})
    assert decode(JOB.encode())["v"] == 1
    with pytest.raises(PermanentError, match="source_etag"):
        ResizeJob.from_dict({**good, "source_etag": 42})


def test_source_etag_is_optional():
    body = {k: v for k, v in json.loads(JOB.encode()).items() if k != "source_etag"}
    assert ResizeJob.from_dict(body).source_etag is None


# --- callback_url: optional within v1 ------------------------------------------------------------

CALLBACK = "https://hooks.example.com/imagepipe?account=42"


def test_job_with_a_callback_matches_golden_and_older_jobs_still_read():
    job = ResizeJob(**{**JOB.__dict__, "callback_url": CALLBACK})
    assert job.encode() == golden("resize_job_callback.v1.json")
    assert ResizeJob.decode(golden("resize_job_callback.v1.json")) == job
    # A job without a callback encodes exactly as before the field existed.
    assert "callback_url" not in json.loads(JOB.encode())
    assert ResizeJob.decode(golden("resize_job.v1.json")).callback_url is None
    with pytest.raises(PermanentError, match="callback_url"):
        ResizeJob.from_dict({**json.loads(job.encode()), "callback_url": 7})


def test_done_event_carries_the_jobs_callback_and_matches_golden():
    done = InvocationResult(job_id=UID, upload_id=UID, status="done", variants=(THUMB,),
                            duration_ms=812)
    event = ResultEvent.from_result(done, callback_url=CALLBACK)
    event = ResultEvent(**{**event.__dict__, "finished_at": "2026-11-28T05:00:01.000000Z"})
    assert (event.routing_key, event.type) == ("job.done", "imagepipe.job.done")
    assert event.encode() == golden("result_event_done_callback.v1.json")
    assert ResultEvent.from_dict(json.loads(event.encode())) == event
    old = ResultEvent.from_dict(json.loads(golden("result_event_failed.v1.json")))
    assert old.callback_url is None


@pytest.mark.parametrize("change, reason", [
    ({"job_id": "f" * 32}, "job_id is not the upload_id"),
    ({"content_type": "image/" + "x" * 300}, "content_type"),
    ({"bucket": "b" * 64}, "bucket"),
    ({"callback_url": "https://x.example/" + "a" * 2048}, "callback_url"),
    ({"filename": "a" * 256}, "filename"),
    ({"owner": "o" * 256}, "owner"),
])
def test_a_forged_job_is_refused_before_anything_reads_it(change, reason):
    body = json.dumps({**json.loads(golden("resize_job.v1.json")), **change})
    with pytest.raises(PermanentError, match=reason):
        ResizeJob.decode(body)


def test_oversized_and_deeply_nested_bodies_are_bad_messages():
    huge = json.dumps({**json.loads(golden("resize_job.v1.json")), "job_id": "a" * 5_000_000})
    with pytest.raises(PermanentError, match="over"):
        ResizeJob.decode(huge)
    with pytest.raises(PermanentError, match="nested"):
        ResizeJob.decode("[" * 100_000 + "]" * 100_000)


def test_a_job_of_another_bucket_is_refused_when_the_bucket_is_known():
    body = golden("resize_job.v1.json")
    assert ResizeJob.decode(body, bucket="photos").bucket == "photos"
    with pytest.raises(PermanentError, match="another bucket"):
        ResizeJob.decode(body, bucket="other-stage-photos")


# --- a variant's url: optional within v1 ----------------------------------------------------------

STABLE_URL = f"https://api.example.com/api/v/{UID}/thumb.jpg?sig=Zm9vYmFyYmF6cXV4cXV1eA"


def test_done_event_with_variant_urls_matches_golden_and_older_events_still_read():
    thumb = VariantInfo(**{**THUMB.__dict__, "url": STABLE_URL})
    done = InvocationResult(job_id=UID, upload_id=UID, status="done", variants=(thumb,),
                            duration_ms=812)
    event = ResultEvent(**{**ResultEvent.from_result(done).__dict__,
                           "finished_at": "2026-11-28T05:00:01.000000Z"})
    assert event.encode() == golden("result_event_done_url.v1.json")
    assert ResultEvent.from_dict(json.loads(event.encode())) == event
    assert InvocationResult.from_dict(done.to_dict()) == done
    # A variant without a url encodes exactly as before the field existed, and reads back.
    assert "url" not in THUMB.to_dict()
    old = ResultEvent.from_dict(json.loads(golden("result_event_done_callback.v1.json")))
    assert old.variants[0].url is None
    with pytest.raises(PermanentError, match="url"):
        VariantInfo.from_dict({**thumb.to_dict(), "url": 7})


def test_job_with_the_originals_filename_matches_golden_and_older_jobs_still_read():
    job = ResizeJob(**{**JOB.__dict__, "filename": "Été à Zürich.heic"})
    assert job.encode() == golden("resize_job_filename.v1.json")
    assert ResizeJob.decode(golden("resize_job_filename.v1.json")) == job
    assert "filename" not in json.loads(JOB.encode())
    assert ResizeJob.decode(golden("resize_job.v1.json")).filename is None
    with pytest.raises(PermanentError, match="filename"):
        ResizeJob.from_dict({**json.loads(job.encode()), "filename": ["x"]})


# --- owner: optional within v1 (stages with auth) ------------------------------------------------

def test_job_with_an_owner_matches_golden_and_older_jobs_still_read():
    job = ResizeJob(**{**JOB.__dict__, "callback_url": CALLBACK, "owner": "alice"})
    assert job.encode() == golden("resize_job_owner.v1.json")
    assert ResizeJob.decode(golden("resize_job_owner.v1.json")) == job
    assert "owner" not in json.loads(JOB.encode())
    assert ResizeJob.decode(golden("resize_job_callback.v1.json")).owner is None
    with pytest.raises(PermanentError, match="owner"):
        ResizeJob.from_dict({**json.loads(job.encode()), "owner": ["alice"]})


def test_done_event_carries_the_jobs_owner_and_matches_golden():
    done = InvocationResult(job_id=UID, upload_id=UID, status="done", variants=(THUMB,),
                            duration_ms=812)
    event = ResultEvent.from_result(done, callback_url=CALLBACK, owner="alice")
    event = ResultEvent(**{**event.__dict__, "finished_at": "2026-11-28T05:00:01.000000Z"})
    assert event.encode() == golden("result_event_done_owner.v1.json")
    assert ResultEvent.from_dict(json.loads(event.encode())) == event
    assert ResultEvent.from_dict(json.loads(golden("result_event_done_callback.v1.json"))).owner is None


# --- rerender (backfill): optional within v1 -----------------------------------------------------

def test_rerender_job_matches_golden_and_older_jobs_are_live_jobs():
    job = ResizeJob(**{**JOB.__dict__, "rerender": ("lg", "webp"), "prune": ("old",)})
    assert job.encode() == golden("resize_job_rerender.v1.json")
    assert ResizeJob.decode(golden("resize_job_rerender.v1.json")) == job
    assert job.is_rerender and job.message_type == "imagepipe.rerender.v1"
    live = ResizeJob.decode(golden("resize_job.v1.json"))
    assert not live.is_rerender and live.prune == () and live.message_type == "imagepipe.resize.v1"
    assert "rerender" not in json.loads(JOB.encode()) and "prune" not in json.loads(JOB.encode())


@pytest.mark.parametrize("change", [
    {"rerender": "lg"},
    {"rerender": ["lg", "lg"]},
    {"rerender": ["../x"]},
    {"rerender": ["lg\n"]},
    {"rerender": [f"v{i}" for i in range(65)]},
    {"prune": ["old"]},  # prune only with rerender
    {"rerender": [], "prune": [7]},
])
def test_malformed_rerender_fields_are_bad_messages(change):
    body = json.dumps({**json.loads(golden("resize_job.v1.json")), **change})
    with pytest.raises(PermanentError) as caught:
        ResizeJob.decode(body)
    assert caught.value.code == "bad_message"


def test_rerender_event_has_its_own_type_and_routing_key():
    thumb = VariantInfo(**{**THUMB.__dict__, "url": STABLE_URL, "fingerprint": "7520f16c60449a34"})
    done = InvocationResult(job_id=UID, upload_id=UID, status="done", variants=(thumb,),
                            duration_ms=90)
    event = ResultEvent(**{**ResultEvent.from_result(done, rerender=True).__dict__,
                           "finished_at": "2026-12-04T05:00:01.000000Z"})
    assert event.routing_key == "variants.changed" and event.type == "imagepipe.variants.changed"
    assert event.encode() == golden("result_event_variants_changed.v1.json")
    assert ResultEvent.from_dict(json.loads(event.encode())) == event
    failed = ResultEvent.from_result(
        InvocationResult(job_id=UID, upload_id=UID, status="failed",
                         error={"code": "decode_failed", "message": "x"}), rerender=True)
    assert (failed.routing_key, failed.type) == ("variants.failed", "imagepipe.variants.failed")
    assert ResultEvent.from_result(done).routing_key == "job.done"
