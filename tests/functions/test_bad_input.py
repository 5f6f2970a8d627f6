"""Bad input found in review: each answer is a 4xx with a reason, never a 500 or an internal
detail, and nothing that was not asked for happens."""

from __future__ import annotations

import dataclasses

import pytest
from botocore.exceptions import ClientError

from imagepipe import keys

from .api_helpers import JPEG, assert_error, complete, create, post_json, upload

CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1/%2F"
DEEP = b"[" * 1000 + b"]" * 1000
DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
def test_deeply_nested_json_is_a_400_on_every_post_route(make_api, offline_settings, body):
    api = make_api(offline_settings)
    upload_id = create(api)
    for path in ("/uploads", f"/uploads/{upload_id}/parts", f"/uploads/{upload_id}/complete"):
        assert_error(post_json(api, path, raw=body), 400, "invalid_json")


def test_a_post_upload_must_be_the_size_it_declared(make_api, offline_settings, s3_mock, store):
    api = make_api(offline_settings)
    upload_id = create(api, size=100, method="POST")
    upload(s3_mock, upload_id, JPEG + b"\x00" * 5_000_000)  # moto enforces no policy

    error = assert_error(complete(api, upload_id), 422, "size_mismatch")

    assert "100" in error["message"]
    assert store.current(upload_id).state == "failed"
    assert store.current(upload_id).error["code"] == "size_mismatch"


def test_an_upload_id_with_a_trailing_newline_is_unknown(make_api, offline_settings, s3_mock):
    api = make_api(offline_settings)
    upload_id = create(api)
    upload(s3_mock, upload_id, JPEG)
    assert not keys.is_upload_id(upload_id + "\n")
    for method, path in (("GET", ""), ("POST", "/complete"), ("DELETE", "")):
        response = api.http.request(method, f"/uploads/{upload_id}%0A{path}", headers={}, body=b"")
        assert_error(response, 404, "not_found")


def test_a_broker_outage_answers_a_plain_message(make_api, settings, s3_mock):
    down = make_api(dataclasses.replace(settings, amqp_url=CLOSED_BROKER))
    upload_id = create(down)
    upload(s3_mock, upload_id, JPEG)

    error = assert_error(complete(down, upload_id), 503, "broker_unavailable")

    assert error["message"] == "the job queue is unavailable; retry later"
    assert "Error" not in error["message"] and "127.0.0.1" not in error["message"]


def test_a_failed_job_shows_no_internal_detail(api, settings, s3_mock, monkeypatch):
    """An S3 AccessDenied (naming the role) while resizing: status says only what failed."""
    from imagepipe import resize
    from imagepipe.messages import Invocation, ResizeJob

    upload_id = create(api)
    upload(s3_mock, upload_id, JPEG)
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "User: arn:aws:sts::"
                                    "123456789012:assumed-role/resize is not authorized"}},
                         "GetObject")

    def refuse(*args, **kwargs):
        raise denied

    runtime = resize.Runtime(settings, s3_mock[0])
    monkeypatch.setattr(resize, "_make_variants", refuse)
    job = ResizeJob.for_upload(upload_id, s3_mock[1], "image/jpeg")
    result = resize.process(Invocation(job, attempt=5, max_attempts=5), runtime)

    assert result.status == "failed" and "arn:aws" in result.error["message"]  # for the DLQ
    shown = api.http.get(f"/uploads/{upload_id}").json_body
    assert shown["status"] == "failed"
    assert shown["error"] == {"code": "s3_unavailable",
                              "message": "storage was unavailable (gave up after 5 attempts)"}


def test_a_job_naming_another_bucket_touches_no_status(api, settings, s3_mock, store):
    from imagepipe import resize
    from imagepipe.messages import Invocation, ResizeJob

    upload_id = create(api)  # a real upload of this stage
    job = ResizeJob.for_upload(upload_id, "someone-elses-bucket", "image/jpeg")

    result = resize.process(Invocation(job, attempt=5, max_attempts=5),
                            resize.Runtime(settings, s3_mock[0]))

    assert (result.status, result.error["code"]) == ("failed", "bad_message")
    assert store.current(upload_id).state == "pending"
