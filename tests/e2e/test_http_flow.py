"""End to end over HTTP: moto's S3 server, `chalice local` and a bridge as subprocesses, a real
RabbitMQ, and a client that uploads exactly as a browser does (presigned POST/PUT straight to S3)."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pika
import pytest
import requests
from PIL import Image

from imagepipe_tools.client import UploadClient, UploadFailed
from imagepipe_dev.demo import SAMPLES

from .conftest import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory) as local:
        yield local


@pytest.fixture
def result_events(stack):
    """A private queue bound to the results exchange; returns a function that drains it."""
    connection = pika.BlockingConnection(pika.URLParameters(stack.settings.amqp_url))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, stack.settings.results_exchange, routing_key="job.*")

    def drain():
        events = []
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return events
            events.append((method.routing_key, json.loads(body)))

    yield drain
    connection.close()


def _image(url: str) -> Image.Image:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content))


def test_browser_flow_for_several_images_at_once(stack, result_events):
    client = UploadClient(stack.api_url)
    samples = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    methods = ["POST", "PUT"] * len(samples)

    def upload(args):
        path, method = args
        return path, client.upload_file(path, method=method)

    with ThreadPoolExecutor(max_workers=len(samples)) as pool:
        uploads = list(pool.map(upload, zip(samples, methods)))

    finals = {path.name: client.wait(upload_id, timeout=120) for path, upload_id in uploads}
    for name, final in finals.items():
        assert final["status"] == "done", (name, final)
        assert final["error"] is None
        assert {v["name"] for v in final["variants"]} == {"xl", "lg", "md", "sm", "thumb"}

    # The phone-style portrait is stored 2400x1800 with orientation 6: variants are upright.
    portrait = {v["name"]: v for v in finals["portrait-rotated.jpg"]["variants"]}
    assert (portrait["xl"]["width"], portrait["xl"]["height"]) == (1536, 2048)
    xl = _image(portrait["xl"]["url"])
    assert xl.size == (1536, 2048) and xl.format == "JPEG"
    assert xl.getexif().get(0x0112) is None
    # The sample's white arrow stands upright in the top centre once the rotation is applied.
    assert min(xl.getpixel((768, 512))) > 220
    assert min(xl.getpixel((768, 1900))) < 220
    thumb = _image(portrait["thumb"]["url"])
    assert thumb.size == (150, 150)

    # The badge has alpha: PNG variants that keep it.
    badge = {v["name"]: v for v in finals["badge.png"]["variants"]}
    assert badge["md"]["format"] == "png"
    md = _image(badge["md"]["url"])
    assert md.mode == "RGBA" and md.getpixel((0, 0))[3] == 0

    landscape = {v["name"]: v for v in finals["landscape.jpg"]["variants"]}
    assert (landscape["lg"]["width"], landscape["lg"]["height"]) == (1024, 683)

    # One result event per job.
    ids = {upload_id for _, upload_id in uploads}
    events = []
    for _ in range(50):
        events += result_events()
        if len(events) >= len(ids):
            break
        time.sleep(0.1)
    assert sorted(e["upload_id"] for _, e in events) == sorted(ids)
    assert {key for key, _ in events} == {"job.done"}


def test_a_lying_upload_is_refused_and_marked_failed(stack):
    client = UploadClient(stack.api_url)
    html = b"<html><script>alert(1)</script></html>"
    created = client.create("holiday.jpg", "image/jpeg", len(html))
    client.send(created["upload"], html, "holiday.jpg")
    with pytest.raises(UploadFailed) as caught:
        client.complete(created["upload_id"])
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["error"]["code"] == "unsupported_format"
    status = client.status(created["upload_id"])
    assert status["status"] == "failed" and status["error"]["code"] == "unsupported_format"


def test_http_errors_are_json_with_a_code(stack):
    response = requests.post(f"{stack.api_url}/uploads", data="{not json", timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"]
    response = requests.get(f"{stack.api_url}/uploads/{'f' * 32}", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "Traceback" not in response.text
