"""The upload function's HTTP contract and S3 handler: chalice.test.Client over moto S3 and the
real RabbitMQ (unique queue names per test)."""

import base64
import dataclasses
import hashlib
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest

from imagepipe import keys
from imagepipe.messages import TIME_FORMAT, Manifest, ResizeJob, VariantInfo
from imagepipe.status import Status
from tests.conftest import CALLBACK_SECRET

from ..conftest import unique_name
from .api_helpers import BMP, GIF, JPEG, PNG, WEBP
from .api_helpers import assert_error as _assert_error
from .api_helpers import complete as _complete
from .api_helpers import create as _create
from .api_helpers import drain as _drain
from .api_helpers import objects as _objects
from .api_helpers import post_json as _post_json
from .api_helpers import upload as _upload
from .conftest import load_app_module

CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1/%2F"


# --- POST /uploads -----------------------------------------------------------------------------

def test_create_post_upload(api, s3_mock):
    response = _post_json(api, "/uploads", {"filename": "cat.jpg", "content_type": "image/jpeg",
                                            "size": 5000})

    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    body = response.json_body
    upload_id = body["upload_id"]
    assert keys.is_upload_id(upload_id)
    assert body["upload"]["method"] == "POST"
    assert body["upload"]["url"]
    assert body["upload"]["fields"]["key"] == keys.original_key(upload_id)
    assert body["upload"]["fields"]["Content-Type"] == "image/jpeg"
    assert body["expires_in"] == 600
    assert body["status_url"] == f"/uploads/{upload_id}"
    assert _objects(s3_mock, "uploads/") == [keys.upload_record_key(upload_id)]
    status = api.http.get(body["status_url"])
    assert status.status_code == 200
    assert status.json_body == {"upload_id": upload_id, "status": "pending", "variants": [],
                                "srcset": "", "error": None}


def test_create_put_upload(api):
    checksum = base64.b64encode(hashlib.sha256(JPEG).digest()).decode()

    response = _post_json(api, "/uploads", {"filename": "cat.jpg", "content_type": "image/jpeg",
                                            "size": len(JPEG), "method": "PUT",
                                            "checksum_sha256": checksum})

    assert response.status_code == 201
    upload = response.json_body["upload"]
    assert upload["method"] == "PUT"
    assert upload["headers"] == {"Content-Type": "image/jpeg", "x-amz-checksum-sha256": checksum}
    assert urlsplit(upload["url"]).path.endswith(keys.original_key(response.json_body["upload_id"]))


def test_status_url_keeps_the_api_gateway_stage_prefix(s3_mock, settings, monkeypatch):
    # chalice.test.Client cannot send a path other than the route's, so call the handler with
    # the event API Gateway sends for POST https://.../api/uploads.
    module = load_app_module("upload")
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    event = {
        "requestContext": {"httpMethod": "POST", "resourcePath": "/uploads",
                           "path": "/api/uploads", "identity": {"sourceIp": "1.2.3.4"}},
        "headers": {"content-type": "application/json"},
        "pathParameters": None,
        "multiValueQueryStringParameters": None,
        "stageVariables": None,
        "body": json.dumps({"filename": "a.png", "content_type": "image/png", "size": 10}),
        "isBase64Encoded": False,
    }

    response = module.app(event, None)

    assert response["statusCode"] == 201
    body = json.loads(response["body"])
    assert body["status_url"] == f"/api/uploads/{body['upload_id']}"


# One request per error code here; every field rule is in tests/unit/test_upload_policy.py.
@pytest.mark.parametrize("raw, code, field", [
    (b"{not json", "invalid_json", None),
    (b'{"content_type": "image/jpeg", "size": 10}', "invalid_request", "filename"),
    (b'{"filename": "a.bmp", "content_type": "image/bmp", "size": 10}', "unsupported_type", None),
    (b'{"filename": "a.jpg", "content_type": "image/jpeg", "size": true}', "invalid_size", None),
    (b'{"filename": "a.jpg", "content_type": "image/jpeg", "size": 26214401}', "too_large", None),
    (b'{"filename": "a.jpg", "content_type": "image/jpeg", "size": 10, "method": "GET"}',
     "unsupported_method", None),
    (b'{"filename": "a.jpg", "content_type": "image/jpeg", "size": 10, "method": "PUT", '
     b'"checksum_sha256": "not base64!"}', "invalid_checksum", None),
])
def test_create_rejects_bad_requests(api, s3_mock, raw, code, field):
    response = _post_json(api, "/uploads", raw=raw)

    error = _assert_error(response, 400, code)
    if field:
        assert field in error["message"]
    assert _objects(s3_mock, "") == []


def test_create_answers_in_our_format_whatever_the_content_type(api):
    response = _post_json(api, "/uploads", raw=b"<form/>", content_type="text/plain")

    _assert_error(response, 400, "invalid_json")


def test_unexpected_failure_is_a_500_in_our_format(make_api, settings):
    api = make_api(dataclasses.replace(settings, bucket=unique_name("no-such-bucket")))

    response = _post_json(api, "/uploads", {"filename": "a.jpg", "content_type": "image/jpeg",
                                            "size": 10})

    error = _assert_error(response, 500, "internal_error")
    assert "Traceback" not in error["message"]


def test_settings_are_read_for_cors_only_when_the_request_has_an_origin(
        make_api, settings, monkeypatch):
    api = make_api(settings)
    calls = []

    def broken_service():
        calls.append(1)
        raise RuntimeError("bad settings")

    monkeypatch.setattr(api.app_module, "service", broken_service)

    # Every API view reads the settings once itself (GET /openapi.json for the stage's limits);
    # the CORS headers read them again only for a request that names an Origin.
    assert api.http.get("/openapi.json").status_code == 500
    assert calls == [1]
    response = api.http.get("/openapi.json", headers={"Origin": "https://x.example"})
    assert response.status_code == 500
    assert "Access-Control-Allow-Origin" not in response.headers
    assert calls == [1, 1, 1]


# --- POST /uploads/{id}/complete ---------------------------------------------------------------

def test_complete_publishes_one_persistent_job(api, s3_mock, settings, store):
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)

    response = _complete(api, upload_id)

    assert response.status_code == 202
    assert response.headers["Content-Type"] == "application/json"
    assert response.json_body == {"upload_id": upload_id, "status": "queued"}
    assert store.current(upload_id).state == "queued"
    [(properties, body)] = _drain(settings)
    job = ResizeJob.decode(body)
    assert properties.message_id == job.job_id == upload_id
    assert properties.delivery_mode == 2
    assert (job.bucket, job.source_key, job.content_type) == (
        settings.bucket, keys.original_key(upload_id), "image/jpeg")
    # The job pins the verified bytes: the resize reads exactly what was checked.
    s3, bucket = s3_mock
    assert job.source_etag == s3.head_object(Bucket=bucket, Key=job.source_key)["ETag"]


@pytest.mark.parametrize("content_type, body", [
    ("image/png", PNG), ("image/webp", WEBP), ("image/gif", GIF)])
def test_complete_queues_every_default_allowed_type(api, s3_mock, settings, content_type, body):
    upload_id = _create(api, filename="a", content_type=content_type, size=len(body))
    _upload(s3_mock, upload_id, body)

    assert _complete(api, upload_id).status_code == 202
    [(_, job_body)] = _drain(settings)
    assert ResizeJob.decode(job_body).content_type == content_type


def test_second_complete_does_not_publish_again(api, s3_mock, settings):
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)

    first = _complete(api, upload_id)
    second = _complete(api, upload_id)

    assert first.status_code == second.status_code == 202
    assert second.json_body == {"upload_id": upload_id, "status": "queued"}
    assert len(_drain(settings)) == 1


def test_racing_completes_publish_once(api, s3_mock, settings, monkeypatch):
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)
    assert _complete(api, upload_id).status_code == 202
    # The second caller read "pending" before the first marked it queued: only the exclusive
    # queued marker stands between it and a second job.
    status_store = api.app_module._service.status
    monkeypatch.setattr(status_store, "current", lambda _id: Status(_id, "pending"))

    response = _complete(api, upload_id)

    assert response.status_code == 202
    assert len(_drain(settings)) == 1


@pytest.mark.parametrize("state", ["processing", "done"])
def test_complete_reports_later_states_without_publishing(api, s3_mock, settings, store, state):
    upload_id = _create(api)
    # No original: once processed it may be gone (a lifecycle rule), and that is no error.
    store.mark(upload_id, "queued")
    store.mark(upload_id, state)

    response = _complete(api, upload_id)

    assert response.status_code == 202
    assert response.json_body == {"upload_id": upload_id, "status": state}
    assert _drain(settings) == []


@pytest.mark.parametrize("upload_id", ["nope", "0" * 32])
def test_complete_unknown_upload_is_404(api, upload_id):
    _assert_error(_complete(api, upload_id), 404, "not_found")


def test_complete_before_upload_is_409_and_changes_nothing(api, settings, store):
    upload_id = _create(api)

    _assert_error(_complete(api, upload_id), 409, "object_missing")

    assert store.current(upload_id).state == "pending"
    assert _drain(settings) == []


@pytest.mark.parametrize("declared, content, code", [
    ("image/jpeg", b"", "empty_upload"),
    ("image/jpeg", b"<html>not an image</html>", "unsupported_format"),
    ("image/jpeg", BMP, "unsupported_format"),
    ("image/png", JPEG, "content_type_mismatch"),
    ("image/jpeg", b"\xff\xd8", "unsupported_format"),
])
def test_complete_rejects_bad_content_and_keeps_it(api, s3_mock, settings, store, declared,
                                                   content, code):
    upload_id = _create(api, content_type=declared, size=max(len(content), 1))
    _upload(s3_mock, upload_id, content)

    _assert_error(_complete(api, upload_id), 422, code)

    current = store.current(upload_id)
    assert current.state == "failed"
    assert current.error["code"] == code
    assert _objects(s3_mock, "originals/") == [keys.original_key(upload_id)]
    assert _drain(settings) == []
    # A failed upload stays failed: completing again repeats the recorded error.
    _assert_error(_complete(api, upload_id), 422, code)
    status = api.http.get(f"/uploads/{upload_id}").json_body
    assert (status["status"], status["error"]["code"]) == ("failed", code)


def test_complete_rejects_an_upload_over_the_limit(make_api, s3_mock, settings, store):
    api = make_api(dataclasses.replace(settings, max_upload_bytes=100))
    upload_id = _create(api, size=100)
    _upload(s3_mock, upload_id, JPEG[:101])

    _assert_error(_complete(api, upload_id), 422, "too_large")

    assert store.current(upload_id).error["code"] == "too_large"
    assert _drain(settings) == []


def test_broker_down_is_503_and_a_retry_succeeds(make_api, s3_mock, settings, store):
    down = make_api(dataclasses.replace(settings, amqp_url=CLOSED_BROKER))
    upload_id = _create(down)
    _upload(s3_mock, upload_id, JPEG)

    response = _complete(down, upload_id)

    _assert_error(response, 503, "broker_unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert store.current(upload_id).state == "pending"
    assert "queued" not in store.states(upload_id)
    # The broker is back (a new warm Lambda with the working URL): the same call now works.
    up = make_api(settings)
    retry = _complete(up, upload_id)
    assert retry.status_code == 202
    assert retry.json_body["status"] == "queued"
    assert len(_drain(settings)) == 1


def test_missing_queue_is_503_not_a_lost_job(make_api, s3_mock, settings, store):
    api = make_api(dataclasses.replace(settings, resize_queue=unique_name("never-declared")))
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)

    _assert_error(_complete(api, upload_id), 503, "broker_unavailable")

    assert store.current(upload_id).state == "pending"


# --- GET /uploads/{id} -------------------------------------------------------------------------

@pytest.mark.parametrize("upload_id", ["nope", "f" * 32])
def test_status_of_unknown_upload_is_404(api, upload_id):
    _assert_error(api.http.get(f"/uploads/{upload_id}"), 404, "not_found")


def test_status_lists_variants_with_download_urls_when_done(api, s3_mock, settings, store):
    upload_id = _create(api)
    variant_key = keys.variant_key(upload_id, "md", "jpeg")
    store.mark(upload_id, "queued")
    store.mark(upload_id, "processing")
    store.put_manifest(Manifest(
        job_id=upload_id, upload_id=upload_id, source={"key": keys.original_key(upload_id)},
        spec=(), variants=(VariantInfo(name="md", key=variant_key, width=512, height=341,
                                       format="jpeg", bytes=4321),)))
    store.mark(upload_id, "done")

    response = api.http.get(f"/uploads/{upload_id}")

    assert response.status_code == 200
    body = response.json_body
    assert (body["upload_id"], body["status"], body["error"]) == (upload_id, "done", None)
    [variant] = body["variants"]
    url = variant.pop("url")
    assert variant == {"name": "md", "width": 512, "height": 341, "format": "jpeg", "bytes": 4321}
    parts = urlsplit(url)
    assert parts.path.endswith(variant_key)
    assert dict(parse_qsl(parts.query))["X-Amz-Expires"] == str(settings.download_expires)


def test_status_hides_variants_until_done(api, store):
    upload_id = _create(api)
    store.mark(upload_id, "queued")
    store.mark(upload_id, "processing")

    body = api.http.get(f"/uploads/{upload_id}").json_body

    assert (body["status"], body["variants"], body["error"]) == ("processing", [], None)


# --- S3 ObjectCreated --------------------------------------------------------------------------

def _object_created(client, bucket, key):
    event = client.events.generate_s3_event(bucket=bucket, key=key)
    return client.lambda_.invoke("on_object_created", event).payload


def test_object_created_enqueues_once_and_complete_does_not_again(api, s3_mock, settings):
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)

    result = _object_created(api, settings.bucket, keys.original_key(upload_id))

    assert result == {"records": [{"key": keys.original_key(upload_id), "result": "queued"}]}
    again = _complete(api, upload_id)
    assert again.status_code == 202
    assert again.json_body["status"] == "queued"
    [(properties, _)] = _drain(settings)
    assert properties.message_id == upload_id


@pytest.mark.parametrize("key, result", [
    ("uploads/0123456789abcdef0123456789abcdef.json", "ignored"),
    ("variants/0123456789abcdef0123456789abcdef/md.jpg", "ignored"),
    ("originals/../../etc/passwd", "ignored"),
    ("originals/0123456789abcdef0123456789abcdef", "not_found"),
])
def test_object_created_ignores_keys_that_are_not_known_originals(api, settings, key, result):
    assert _object_created(api, settings.bucket, key) == {
        "records": [{"key": key, "result": result}]
    }
    assert _drain(settings) == []


@pytest.mark.parametrize("event", [{}, {"Records": None}, {"Records": [{"s3": "garbage"}, 7]},
                                   {"Records": {"not": "a list"}}])
def test_object_created_survives_malformed_events(api, settings, event):
    result = api.lambda_.invoke("on_object_created", event).payload

    assert all(record["result"] == "ignored" for record in result["records"])
    assert _drain(settings) == []


def test_object_created_ignores_other_buckets(api, s3_mock, settings, store):
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)

    result = _object_created(api, "someone-elses-bucket", keys.original_key(upload_id))

    assert result["records"][0]["result"] == "ignored"
    assert store.current(upload_id).state == "pending"


def test_object_created_records_a_bad_upload_as_failed(api, s3_mock, settings, store):
    executable = b"MZ\x90\x00 an executable"
    upload_id = _create(api, size=len(executable))
    _upload(s3_mock, upload_id, executable)

    result = _object_created(api, settings.bucket, keys.original_key(upload_id))

    assert result["records"][0]["result"] == "unsupported_format"
    assert store.current(upload_id).error["code"] == "unsupported_format"
    assert _drain(settings) == []


def test_object_created_raises_while_the_broker_is_down_so_lambda_retries(
        make_api, s3_mock, settings, store):
    api = make_api(dataclasses.replace(settings, amqp_url=CLOSED_BROKER))
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)

    with pytest.raises(RuntimeError, match="retrying"):
        _object_created(api, settings.bucket, keys.original_key(upload_id))

    assert store.current(upload_id).state == "pending"


# --- repair: queued, but the publish never happened ----------------------------------------------

def _leave_queued_marker(s3_mock, upload_id, minutes_ago):
    """What an upload function that died between its queued marker and its publish left."""
    s3, bucket = s3_mock
    at = (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).strftime(TIME_FORMAT)
    s3.put_object(Bucket=bucket, Key=keys.status_marker_key(upload_id, "queued"),
                  Body=json.dumps({"state": "queued", "at": at, "error": None}).encode())


def test_complete_publishes_again_for_an_upload_queued_long_ago_that_never_started(
    api, s3_mock, settings, store
):
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)
    _leave_queued_marker(s3_mock, upload_id, minutes_ago=settings.requeue_stuck_after_s / 60 + 1)

    response = _complete(api, upload_id)

    assert response.status_code == 202
    assert response.json_body == {"upload_id": upload_id, "status": "queued"}
    [(properties, body)] = _drain(settings)
    assert ResizeJob.decode(body).job_id == properties.message_id == upload_id


def test_the_job_published_again_keeps_its_callback_url(make_api, s3_mock, settings):
    api = make_api(dataclasses.replace(settings, callback_secret=CALLBACK_SECRET))
    hook = "https://93.184.216.34/hooks/imagepipe"
    upload_id = _create(api, callback_url=hook)
    _upload(s3_mock, upload_id, JPEG)
    _leave_queued_marker(s3_mock, upload_id, minutes_ago=settings.requeue_stuck_after_s / 60 + 1)

    assert _complete(api, upload_id).status_code == 202

    [(_, body)] = _drain(settings)
    assert ResizeJob.decode(body).callback_url == hook


def test_a_second_complete_right_after_a_publish_again_publishes_nothing(
    api, s3_mock, settings
):
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)
    _leave_queued_marker(s3_mock, upload_id, minutes_ago=settings.requeue_stuck_after_s / 60 + 1)
    assert _complete(api, upload_id).status_code == 202
    assert len(_drain(settings)) == 1

    again = _complete(api, upload_id)
    late_event = _object_created(api, settings.bucket, keys.original_key(upload_id))

    assert again.json_body == {"upload_id": upload_id, "status": "queued"}
    assert late_event["records"][0]["result"] == "queued"
    assert _drain(settings) == []


def test_complete_does_not_publish_again_for_a_recently_queued_upload(api, s3_mock, settings):
    upload_id = _create(api)
    _upload(s3_mock, upload_id, JPEG)
    _leave_queued_marker(s3_mock, upload_id, minutes_ago=1)  # probably waiting in the queue

    response = _complete(api, upload_id)

    assert response.json_body == {"upload_id": upload_id, "status": "queued"}
    assert _drain(settings) == []
