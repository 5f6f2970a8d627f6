"""The backfill's developer flow under the local stack, as issue 14 tells it: upload a photo, edit
the variants in ``chalicefile.json``, restart, ``imagepipe backfill --dry-run`` reports the stale
variant and publishes nothing, ``imagepipe backfill`` publishes, and ``GET /uploads/{id}`` shows
the new variants. The command runs with no IMAGEPIPE_/AWS_/AMQP variables in its environment:
it finds the running stack's settings by itself, as under ``make dev``.

The repository's ``chalicefile.json`` is never edited: the stack runs from a copy of the
checkout (its folders linked, ``chalicefile.json`` copied) whose ``.run/`` is the stack's run
folder. The restart is the one ``make dev`` makes when ``chalicefile.json`` changes
(``LocalStack.reload``): the API and the bridge start again with the edited spec, the S3
server keeps running (moto keeps its objects in memory).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import pytest
import requests
from PIL import Image

import imagepipe_dev.stack as stack_module
from imagepipe_dev.demo import SAMPLES
from imagepipe_dev.stack import LocalStack, free_port
from imagepipe_tools import chalicefile
from imagepipe_tools.client import UploadClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
# Variables the command must not need: whatever the test run exported is removed.
STRIPPED_PREFIXES = ("IMAGEPIPE_", "AWS_", "AMQP_")
WEBP = {"name": "webp", "mode": "fit", "width": 640, "height": 640, "format": "webp",
        "quality": 80}


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A copy of the checkout to edit: every top-level entry linked, ``chalicefile.json``
    copied; the local stack reads its spec and keeps its run folder there."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in (chalicefile.FILENAME, ".run", ".git"):
            continue
        (copy / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (copy / chalicefile.FILENAME).write_text((ROOT / chalicefile.FILENAME).read_text())
    monkeypatch.setattr(stack_module, "ROOT", copy)
    return copy


@contextlib.contextmanager
def dev_stack(checkout: Path):
    name = f"imagepipe-e2e-{uuid.uuid4().hex[:10]}"
    overrides = {
        "bucket": name, "resize_queue": f"{name}.resize",
        "dead_letter_queue": f"{name}.resize.dead", "dead_letter_exchange": f"{name}.resize.dlx",
        "results_exchange": f"{name}.results", "rerender_queue": f"{name}.rerender",
        "callback_queue": f"{name}.callbacks", "callback_dead_letter_queue": f"{name}.callbacks.dead",
        "workers": 2,
    }
    local = LocalStack(checkout / ".run", api_port=free_port(), s3_port=free_port(),
                       settings_overrides=overrides)
    local.start()
    try:
        yield local
    finally:
        local.stop()
        settings = local.settings
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        channel = connection.channel()
        for queue in (settings.resize_queue, settings.dead_letter_queue, settings.rerender_queue,
                      settings.callback_queue, settings.callback_dead_letter_queue):
            channel.queue_delete(queue)
        for exchange in (settings.dead_letter_exchange, settings.results_exchange):
            channel.exchange_delete(exchange)
        connection.close()


def backfill(checkout: Path, *args: str) -> tuple[int, dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_PREFIXES)}
    result = subprocess.run([sys.executable, "-m", "imagepipe", "backfill", "--json", *args],
                            cwd=checkout, env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def depth(local: LocalStack, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(local.settings.amqp_url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def image(url: str) -> Image.Image:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content))


def test_edit_the_spec_restart_backfill_and_see_the_new_variants(checkout):
    with dev_stack(checkout) as local:
        client = UploadClient(local.api_url)
        upload_id = client.upload_file(SAMPLES / "landscape.jpg")
        before = client.wait(upload_id, timeout=120)
        assert before["status"] == "done", before
        old = {v["name"]: v for v in before["variants"]}
        assert "webp" not in old

        # The edit: md at another quality, and a new WebP variant.
        spec_file = checkout / chalicefile.FILENAME
        manifest = json.loads(spec_file.read_text())
        md = next(v for v in manifest["variants"] if v["name"] == "md")
        md["quality"] = md.get("quality", 82) - 7
        manifest["variants"].append(WEBP)
        spec_file.write_text(json.dumps(manifest, indent=2))
        local.reload()  # what `make dev` does when chalicefile.json changes

        status, dry, _ = backfill(checkout, "--dry-run")
        assert status == 0, dry
        assert (dry["scanned"], dry["stale"], dry["missing"], dry["jobs_planned"],
                dry["jobs_published"]) == (1, {"md": 1}, {"webp": 1}, 1, 0)
        assert depth(local, local.settings.rerender_queue) == 0
        assert client.status(upload_id)["variants"] == before["variants"]  # nothing changed

        status, done, _ = backfill(checkout)
        assert status == 0, done
        assert done["jobs_published"] == 1

        deadline = time.monotonic() + 120
        while True:
            after = client.status(upload_id)
            names = {v["name"] for v in after["variants"]}
            if "webp" in names or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert after["status"] == "done"
        assert names == set(old) | {"webp"}, after
        new = {v["name"]: v for v in after["variants"]}
        webp = image(new["webp"]["url"])
        assert webp.format == "WEBP" and max(webp.size) == 640
        md_image = image(new["md"]["url"])
        assert md_image.format == "JPEG" and md_image.size == (old["md"]["width"],
                                                               old["md"]["height"])
        assert new["md"]["bytes"] != old["md"]["bytes"]  # re-encoded at the new quality
        for name in ("xl", "lg", "sm", "thumb"):  # untouched (their URLs' signatures may not be)
            assert {k: v for k, v in new[name].items() if k != "url"} == {
                k: v for k, v in old[name].items() if k != "url"}

        status, again, _ = backfill(checkout)
        assert (status, again["up_to_date"], again["jobs_published"]) == (0, 1, 0)
