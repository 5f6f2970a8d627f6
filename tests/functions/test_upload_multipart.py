"""Presigned multipart uploads through the upload API: create, resume, complete, cancel.

moto implements multipart uploads (parts, listing, completion, EntityTooSmall) but checks no
presigned signature, so the part URLs are also read back: method, key, uploadId, partNumber,
expiry and the signed Content-Length.
"""

import dataclasses
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from imagepipe import keys
from imagepipe.messages import ResizeJob
from imagepipe.settings import S3_MIN_PART_BYTES

from ..unit.test_upload_policy import _put_signature_matches
from .api_helpers import JPEG, assert_error, create, drain, post_json

PART = S3_MIN_PART_BYTES
SIZE = 2 * PART + 1234  # three parts, the last one short


def _multipart(settings):
    return dataclasses.replace(settings, multipart_part_bytes=PART,
                               multipart_threshold_bytes=PART, max_upload_bytes=3 * PART)


@pytest.fixture
def mp_settings(settings):
    return _multipart(settings)


@pytest.fixture
def mp_api(make_api, mp_settings):
    return make_api(mp_settings)


@pytest.fixture
def offline_mp_api(make_api, offline_settings):
    """For tests that never publish a job."""
    return make_api(_multipart(offline_settings))


def _file(size=SIZE) -> bytes:
    return JPEG + b"\x00" * (size - len(JPEG))


def _create_multipart(api, size=SIZE):
    response = post_json(api, "/uploads", {"filename": "big.jpg", "content_type": "image/jpeg",
                                           "size": size, "method": "MULTIPART"})
    assert response.status_code == 201, response.body
    return response.json_body


def _put_part(url, data, number, part_bytes=PART):
    """What a browser does with one part URL: PUT its byte range, keep the ETag."""
    response = requests.put(url, data=data[(number - 1) * part_bytes:number * part_bytes],
                            timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["ETag"]


def _open_multipart_uploads(s3_mock):
    s3, bucket = s3_mock
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_limits_tell_clients_what_to_check(offline_mp_api, offline_settings):
    response = offline_mp_api.http.get("/limits")

    assert response.status_code == 200
    assert response.json_body == {
        "max_upload_bytes": 3 * PART,
        "allowed_types": list(offline_settings.allowed_types),
        "multipart_threshold_bytes": PART,
        "multipart_part_bytes": PART,
        "methods": ["POST", "PUT", "MULTIPART"],
    }


def test_multipart_create_presigns_one_put_per_part(offline_mp_api, offline_settings, s3_mock):
    mp_api, mp_settings = offline_mp_api, _multipart(offline_settings)
    before = time.time()

    body = _create_multipart(mp_api)

    upload_id = body["upload_id"]
    upload = body["upload"]
    assert (upload["method"], upload["part_bytes"], upload["part_count"]) == ("MULTIPART", PART, 3)
    assert [p["part_number"] for p in upload["parts"]] == [1, 2, 3]
    [s3_upload] = _open_multipart_uploads(s3_mock)
    assert s3_upload["Key"] == keys.original_key(upload_id)
    for part, length in zip(upload["parts"], [PART, PART, 1234]):
        url = urlsplit(part["url"])
        query = dict(parse_qsl(url.query))
        assert f"{url.netloc}{url.path}" == (
            f"{mp_settings.bucket}.s3.amazonaws.com/{keys.original_key(upload_id)}")
        assert query["uploadId"] == s3_upload["UploadId"]
        assert query["partNumber"] == str(part["part_number"])
        assert int(query["X-Amz-Expires"]) == mp_settings.presign_expires == body["expires_in"]
        signed_at = time.mktime(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")) - time.timezone
        assert before - 2 <= signed_at <= time.time() + 2
        # Signed for PUT with exactly this part's length: S3 takes no other body.
        assert query["X-Amz-SignedHeaders"] == "content-length;host"
        assert _put_signature_matches(part["url"], {"Content-Length": length})
        assert not _put_signature_matches(part["url"], {"Content-Length": length + 1})
    status = mp_api.http.get(body["status_url"]).json_body
    assert status["status"] == "pending"


def test_multipart_upload_completes_verifies_and_enqueues(mp_api, mp_settings, s3_mock):
    body = _create_multipart(mp_api)
    upload_id = body["upload_id"]
    data = _file()
    for part in body["upload"]["parts"]:
        _put_part(part["url"], data, part["part_number"])

    response = mp_api.http.post(f"/uploads/{upload_id}/complete")

    assert response.status_code == 202, response.body
    assert response.json_body == {"upload_id": upload_id, "status": "queued"}
    s3, bucket = s3_mock
    stored = s3.get_object(Bucket=bucket, Key=keys.original_key(upload_id))
    assert stored["ContentLength"] == SIZE
    assert stored["ContentType"] == "image/jpeg"
    assert stored["Body"].read() == data
    [(_, message)] = drain(mp_settings)
    job = ResizeJob.decode(message)
    assert job.upload_id == upload_id
    assert job.source_etag == s3.head_object(Bucket=bucket, Key=job.source_key)["ETag"]
    assert _open_multipart_uploads(s3_mock) == []
    # complete again: nothing more is published, the answer is the same
    again = mp_api.http.post(f"/uploads/{upload_id}/complete")
    assert (again.status_code, again.json_body["status"]) == (202, "queued")
    assert drain(mp_settings) == []


def test_resume_lists_uploaded_parts_and_presigns_the_rest(make_api, settings):
    mp_api = make_api(_multipart(settings))
    body = _create_multipart(mp_api)
    upload_id = body["upload_id"]
    data = _file()
    urls = {p["part_number"]: p["url"] for p in body["upload"]["parts"]}
    etags = {n: _put_part(urls[n], data, n) for n in (1, 3)}

    resumed = post_json(mp_api, f"/uploads/{upload_id}/parts", {})

    assert resumed.status_code == 200, resumed.body
    assert resumed.json_body["uploaded"] == [
        {"part_number": 1, "etag": etags[1], "size": PART},
        {"part_number": 3, "etag": etags[3], "size": 1234},
    ]
    [missing] = resumed.json_body["parts"]
    assert missing["part_number"] == 2
    assert dict(parse_qsl(urlsplit(missing["url"]).query))["partNumber"] == "2"
    # the client may ask again for a part it has (its connection dropped mid-part)
    again = post_json(mp_api, f"/uploads/{upload_id}/parts", {"part_numbers": [3, 1, 3]})
    assert [p["part_number"] for p in again.json_body["parts"]] == [1, 3]
    # no body at all means the default too
    bare = mp_api.http.post(f"/uploads/{upload_id}/parts")
    assert [p["part_number"] for p in bare.json_body["parts"]] == [2]

    etags[2] = _put_part(missing["url"], data, 2)
    parts = [{"part_number": n, "etag": etag} for n, etag in sorted(etags.items())]
    done = post_json(mp_api, f"/uploads/{upload_id}/complete", {"parts": parts})
    assert done.status_code == 202, done.body


def test_complete_with_parts_missing_is_409_naming_them(mp_api, mp_settings, store):
    body = _create_multipart(mp_api)
    upload_id = body["upload_id"]
    first = body["upload"]["parts"][0]
    _put_part(first["url"], _file(), 1)

    error = assert_error(mp_api.http.post(f"/uploads/{upload_id}/complete"), 409, "parts_missing")

    assert "2, 3" in error["message"]
    assert store.current(upload_id).state == "pending"
    assert drain(mp_settings) == []


def test_complete_with_a_wrong_etag_is_409_and_resumable(mp_api, mp_settings):
    body = _create_multipart(mp_api)
    upload_id = body["upload_id"]
    data = _file()
    etags = [_put_part(p["url"], data, p["part_number"]) for p in body["upload"]["parts"]]
    parts = [{"part_number": n, "etag": e} for n, e in enumerate(etags, 1)]
    parts[1]["etag"] = '"0123456789abcdef0123456789abcdef"'

    error = assert_error(post_json(mp_api, f"/uploads/{upload_id}/complete", {"parts": parts}),
                         409, "invalid_parts")

    assert "parts" in error["message"]
    # without the client's list the server takes what S3 has, which is right
    assert mp_api.http.post(f"/uploads/{upload_id}/complete").status_code == 202
    assert len(drain(mp_settings)) == 1


def test_complete_rejects_a_malformed_part_list(offline_mp_api):
    upload_id = _create_multipart(offline_mp_api)["upload_id"]
    for payload in [
        {"parts": "all of them"},
        {"parts": [{"part_number": 1}]},
        {"parts": [{"part_number": 4, "etag": '"x"'}]},
        {"parts": [{"part_number": 1, "etag": '"x"'}, {"part_number": 1, "etag": '"y"'}]},
    ]:
        response = post_json(offline_mp_api, f"/uploads/{upload_id}/complete", payload)

        assert_error(response, 400, "invalid_request")


def test_parts_rejects_part_numbers_outside_the_plan(offline_mp_api):
    upload_id = _create_multipart(offline_mp_api)["upload_id"]
    for payload in [{"part_numbers": [0]}, {"part_numbers": [4]}, {"part_numbers": "1"},
                    {"part_numbers": [True]}, {"part_numbers": [1.5]}]:
        response = post_json(offline_mp_api, f"/uploads/{upload_id}/parts", payload)

        assert_error(response, 400, "invalid_request")


def test_parts_of_unknown_plain_or_finished_uploads(mp_api):
    assert_error(mp_api.http.post(f"/uploads/{'f' * 32}/parts"), 404, "not_found")
    plain = create(mp_api)
    assert_error(mp_api.http.post(f"/uploads/{plain}/parts"), 409, "not_multipart")
    body = _create_multipart(mp_api)
    data = _file()
    for part in body["upload"]["parts"]:
        _put_part(part["url"], data, part["part_number"])
    assert mp_api.http.post(f"/uploads/{body['upload_id']}/complete").status_code == 202
    assert_error(mp_api.http.post(f"/uploads/{body['upload_id']}/parts"), 409, "not_multipart")


def test_multipart_is_bounded_by_the_upload_limit(offline_mp_api):
    response = post_json(offline_mp_api, "/uploads", {"filename": "huge.jpg", "content_type": "image/jpeg",
                                              "size": 3 * PART + 1, "method": "MULTIPART"})

    assert_error(response, 400, "too_large")


def test_completed_object_is_verified_as_any_upload(mp_api, mp_settings, store):
    # S3 would refuse these parts (their length is signed); moto takes them, the server must not.
    body = _create_multipart(mp_api, size=3 * PART)
    upload_id = body["upload_id"]
    oversized = _file(3 * PART + 4096)
    for part in body["upload"]["parts"]:
        number = part["part_number"]
        end = None if number == 3 else number * PART
        response = requests.put(part["url"], data=oversized[(number - 1) * PART:end], timeout=30)
        assert response.status_code == 200

    assert_error(mp_api.http.post(f"/uploads/{upload_id}/complete"), 422, "too_large")

    assert store.current(upload_id).error["code"] == "too_large"
    assert drain(mp_settings) == []


def test_small_files_may_use_multipart_too(mp_api, s3_mock):
    body = _create_multipart(mp_api, size=len(JPEG))
    assert body["upload"]["part_count"] == 1
    [part] = body["upload"]["parts"]
    _put_part(part["url"], JPEG, 1)

    assert body["upload_id"] and mp_api.http.post(
        f"/uploads/{body['upload_id']}/complete").status_code == 202


# --- DELETE /uploads/{id} ----------------------------------------------------------------------

def test_cancel_aborts_the_multipart_upload_and_fails_the_status(mp_api, mp_settings, s3_mock):
    body = _create_multipart(mp_api)
    upload_id = body["upload_id"]
    _put_part(body["upload"]["parts"][0]["url"], _file(), 1)

    response = mp_api.http.delete(f"/uploads/{upload_id}")

    assert response.status_code == 200, response.body
    assert response.json_body["status"] == "failed"
    assert response.json_body["error"]["code"] == "cancelled"
    assert _open_multipart_uploads(s3_mock) == []
    assert mp_api.http.get(f"/uploads/{upload_id}").json_body["error"]["code"] == "cancelled"
    assert_error(mp_api.http.post(f"/uploads/{upload_id}/parts"), 409, "not_multipart")
    assert_error(mp_api.http.post(f"/uploads/{upload_id}/complete"), 422, "cancelled")
    again = mp_api.http.delete(f"/uploads/{upload_id}")
    assert (again.status_code, again.json_body["error"]["code"]) == (200, "cancelled")
    assert drain(mp_settings) == []


def test_cancel_a_plain_upload_then_its_late_object_is_not_processed(mp_api, mp_settings, s3_mock):
    upload_id = create(mp_api)
    assert mp_api.http.delete(f"/uploads/{upload_id}").status_code == 200
    s3, bucket = s3_mock
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=JPEG)

    assert_error(mp_api.http.post(f"/uploads/{upload_id}/complete"), 422, "cancelled")
    assert drain(mp_settings) == []


def test_cancel_after_queued_is_409_and_unknown_is_404(mp_api, s3_mock):
    upload_id = create(mp_api)
    s3, bucket = s3_mock
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=JPEG)
    assert mp_api.http.post(f"/uploads/{upload_id}/complete").status_code == 202

    assert_error(mp_api.http.delete(f"/uploads/{upload_id}"), 409, "not_cancellable")
    assert mp_api.http.get(f"/uploads/{upload_id}").json_body["status"] == "queued"
    assert_error(mp_api.http.delete(f"/uploads/{'e' * 32}"), 404, "not_found")
