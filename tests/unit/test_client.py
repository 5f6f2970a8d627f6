"""The upload client's decisions that need no network: errors, limits, content types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from imagepipe_tools.client import (
    MULTIPART,
    PUT,
    Limits,
    UploadClient,
    UploadFailed,
    content_type_of,
)
from tests import images

MiB = 1024 * 1024
LIMITS_BODY = {
    "max_upload_bytes": 25 * MiB, "allowed_types": ["image/jpeg", "image/png"],
    "multipart_threshold_bytes": 16 * MiB, "multipart_part_bytes": 8 * MiB,
    "methods": ["POST", "PUT", "MULTIPART"],
}
LIMITS = Limits.from_json(LIMITS_BODY)


def response(status: int, body: bytes, content_type: str = "application/json"):
    made = requests.Response()
    made.status_code = status
    made._content = body
    made.headers["Content-Type"] = content_type
    return made


def test_an_api_error_keeps_the_servers_code_and_message():
    failure = UploadFailed.from_response("complete", response(
        422, b'{"error": {"code": "unsupported_format", "message": "not an image"}}'))

    assert (failure.code, failure.message, failure.status) == (
        "unsupported_format", "not an image", 422)
    assert not failure.transient
    assert str(failure) == "complete: unsupported_format: not an image"


def test_an_answer_without_our_error_body_is_one_short_line():
    xml = b"<?xml version='1.0'?>\n<Error>\n  <Code>AccessDenied</Code>\n</Error>" + b" " * 500
    failure = UploadFailed.from_response("part 2", response(403, xml, "application/xml"))

    assert failure.code == "http_error"
    assert failure.message.startswith("HTTP 403: <?xml version='1.0'?> <Error> <Code>")
    assert "\n" not in failure.message and len(failure.message) < 230
    assert UploadFailed.from_response("x", response(502, b"")).message == "HTTP 502"


@pytest.mark.parametrize("status, transient", [(500, True), (503, True), (429, True),
                                                (400, False), (403, False), (404, False)])
def test_which_answers_are_worth_retrying(status, transient):
    assert UploadFailed.from_response("x", response(status, b"")).transient is transient


def test_no_answer_is_a_transient_network_error_naming_only_the_origin():
    exc = requests.ConnectionError("HTTPConnectionPool(host=...): Max retries exceeded")
    failure = UploadFailed.from_network("upload", "http://s3.local:9000/b/k?X-Amz-Signature=s",
                                        exc)

    assert failure.code == "network_error" and failure.transient
    assert failure.message == "connection failed talking to http://s3.local:9000"
    timeout = UploadFailed.from_network("status", "http://api", requests.ReadTimeout())
    assert timeout.message == "timed out talking to http://api"


def test_multipart_only_above_the_threshold_and_when_offered():
    assert LIMITS.method_for(16 * MiB) == PUT
    assert LIMITS.method_for(16 * MiB + 1) == MULTIPART
    older = Limits.from_json({"max_upload_bytes": 25 * MiB, "allowed_types": ["image/png"]})
    assert older.method_for(24 * MiB) == PUT


@pytest.mark.parametrize("content_type, size, code", [
    ("image/bmp", 10, "unsupported_type"),
    ("image/jpeg", 0, "empty_upload"),
    ("image/png", 25 * MiB + 1, "too_large"),
])
def test_limits_refuse_what_the_server_would(content_type, size, code):
    with pytest.raises(UploadFailed) as caught:
        LIMITS.check(content_type, size)
    assert caught.value.code == code and caught.value.step == "check"


def test_limits_accept_up_to_the_limit():
    LIMITS.check("image/png", 25 * MiB)
    LIMITS.check("image/jpeg", 1)


def test_the_content_type_comes_from_the_bytes_before_the_name():
    assert content_type_of(Path("photo.png"), images.make_jpeg(8, 8)) == "image/jpeg"
    assert content_type_of(Path("notes.jpg"), b"<html>") == "image/jpeg"  # the server decides
    assert content_type_of(Path("notes"), b"hello") == "application/octet-stream"


class _Api:
    """A requests.Session stand-in: the API and S3 answering one PUT upload."""

    def __init__(self, completed: dict):
        self.completed = completed

    def request(self, method, url, timeout=None, **kwargs):
        path = url.split("://", 1)[1].split("/", 1)[1]
        if (method, path) == ("GET", "limits"):
            return response(200, json.dumps(LIMITS_BODY).encode())
        if (method, path) == ("POST", "uploads"):
            return response(201, json.dumps({"upload_id": "u1", "upload": {
                "method": PUT, "url": "http://s3.test/originals/u1", "headers": {}}}).encode())
        if (method, path) == ("PUT", "originals/u1"):
            return response(200, b"", "text/plain")
        if (method, path) == ("POST", "uploads/u1/complete"):
            return response(202, json.dumps(self.completed).encode())
        raise AssertionError(f"unexpected {method} {url}")


def test_submit_file_returns_what_complete_answered(tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_bytes(images.make_jpeg(8, 8))
    client = UploadClient("http://api.test", session=_Api({"upload_id": "u1",
                                                            "status": "processing"}))

    assert client.submit_file(path) == {"upload_id": "u1", "status": "processing"}
    assert client.upload_file(path) == "u1"


class _Recording(_Api):
    def __init__(self, completed):
        super().__init__(completed)
        self.sent = []

    def request(self, method, url, timeout=None, **kwargs):
        self.sent.append((method, url, dict(kwargs.get("headers") or {})))
        return super().request(method, url, timeout=timeout, **kwargs)


def test_the_token_goes_to_the_api_and_never_to_s3(tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_bytes(images.make_jpeg(8, 8))
    session = _Recording({"upload_id": "u1", "status": "queued"})

    UploadClient("http://api.test", session=session, token="t0k3n").submit_file(path)

    for method, url, headers in session.sent:
        if url.startswith("http://api.test/"):
            assert headers.get("Authorization") == "Bearer t0k3n", (method, url)
        else:
            assert "Authorization" not in headers, (method, url)
    assert any(not url.startswith("http://api.test/") for _, url, _ in session.sent)
