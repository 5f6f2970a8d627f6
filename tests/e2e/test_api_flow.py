"""The upload API's multipart uploads and completion callbacks over HTTP: moto's S3 server,
`chalice local` and `python -m bridge` (which starts the callback dispatcher, the local stage
having a callback secret) as subprocesses, a real RabbitMQ and a real HTTP receiver."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook
import requests
from PIL import Image

from imagepipe.settings import S3_MIN_PART_BYTES

from .conftest import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory, multipart_part_bytes=S3_MIN_PART_BYTES,
                       multipart_threshold_bytes=S3_MIN_PART_BYTES) as local:
        yield local


@pytest.fixture
def receiver():
    received: list[tuple[dict, bytes]] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            arrived.set()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.received, server.arrived = received, arrived
    yield server
    server.shutdown()
    server.server_close()


def _noise_png(width: int, height: int) -> bytes:
    # Random pixels do not compress: a PNG bigger than one 5 MiB part.
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(
        out, "PNG", compress_level=1)
    return out.getvalue()


def _wait_done(api_url: str, upload_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(f"{api_url}/uploads/{upload_id}", timeout=10).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"upload {upload_id} did not finish: {status}")


def test_multipart_upload_resumes_and_is_resized(stack):
    api = stack.api_url
    data = _noise_png(1400, 1400)
    assert len(data) > S3_MIN_PART_BYTES
    limits = requests.get(f"{api}/limits", timeout=10).json()
    assert len(data) > limits["multipart_threshold_bytes"]

    created = requests.post(f"{api}/uploads", timeout=10, json={
        "filename": "noise.png", "content_type": "image/png", "size": len(data),
        "method": "MULTIPART"}).json()
    upload_id, upload = created["upload_id"], created["upload"]
    part_bytes = upload["part_bytes"]
    assert upload["part_count"] == 2

    def put(part):
        n = part["part_number"]
        response = requests.put(part["url"], data=data[(n - 1) * part_bytes:n * part_bytes],
                                timeout=30)
        assert response.status_code == 200, response.text
        return {"part_number": n, "etag": response.headers["ETag"]}

    first = put(upload["parts"][0])
    # The connection dropped here: ask what is missing, with fresh URLs.
    resumed = requests.post(f"{api}/uploads/{upload_id}/parts", timeout=10).json()
    assert [p["part_number"] for p in resumed["uploaded"]] == [1]
    [second_url] = resumed["parts"]
    second = put(second_url)
    done = requests.post(f"{api}/uploads/{upload_id}/complete", timeout=10,
                         json={"parts": [first, second]})
    assert done.status_code == 202, done.text

    final = _wait_done(api, upload_id)
    assert final["status"] == "done", final
    xl = {v["name"]: v for v in final["variants"]}["xl"]
    assert (xl["width"], xl["height"]) == (1400, 1400)  # never upscaled
    image = Image.open(io.BytesIO(requests.get(xl["url"], timeout=30).content))
    assert image.size == (1400, 1400)


def test_completion_callback_reaches_a_local_receiver_signed(stack, receiver):
    api = stack.api_url
    sample = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 40, 40)).save(sample, "JPEG")
    data = sample.getvalue()
    created = requests.post(f"{api}/uploads", timeout=10, json={
        "filename": "red.jpg", "content_type": "image/jpeg", "size": len(data), "method": "PUT",
        "callback_url": receiver.url})
    assert created.status_code == 201, created.text
    upload = created.json()
    requests.put(upload["upload"]["url"], data=data, headers=upload["upload"]["headers"],
                 timeout=30).raise_for_status()
    assert requests.post(f"{api}/uploads/{upload['upload_id']}/complete",
                         timeout=10).status_code == 202

    assert receiver.arrived.wait(60), "no callback arrived"
    [(headers, body)] = receiver.received
    Webhook(stack.settings.callback_secret).verify(body, headers)  # Standard Webhooks
    event = json.loads(body)
    assert (event["upload_id"], event["status"]) == (upload["upload_id"], "done")
    assert event["type"] == "imagepipe.job.done"
    assert {v["name"] for v in event["variants"]} == {v.name for v in stack.settings.variants}
    assert _wait_done(api, upload["upload_id"])["status"] == "done"


def test_api_answers_cors_for_the_stage_origins_under_chalice_local(stack):
    allowed = stack.settings.allowed_origins[0]
    preflight = requests.options(f"{stack.api_url}/uploads", timeout=10, headers={
        "Origin": allowed, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == allowed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]

    refused = requests.options(f"{stack.api_url}/uploads", timeout=10, headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers

    limits = requests.get(f"{stack.api_url}/limits", headers={"Origin": allowed}, timeout=10)
    assert limits.headers["Access-Control-Allow-Origin"] == allowed
