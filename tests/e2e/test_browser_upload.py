"""The demo page in a real browser (Debian's headless Chromium through Playwright) against the local
stack: moto S3 with the real bucket CORS rule, `chalice local` serving page and API, a bridge
and the real RabbitMQ. The stack allows exactly one browser origin, the page's own
``http://127.0.0.1:PORT``; ``http://localhost:PORT`` is the same server under an origin S3 refuses.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from datetime import datetime, timezone
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from PIL import Image

from imagepipe_tools.client import UploadClient
from imagepipe_dev.demo import SAMPLES
from imagepipe_dev.stack import ROOT, free_port, page_origins

from .conftest import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MiB = 1024 * 1024
# Small limits so the test can cross them cheaply: multipart above 1 MiB in 5 MiB parts (S3's
# minimum), nothing over 12 MiB.
MAX_UPLOAD_BYTES = 12 * MiB
PART_BYTES = 5 * MiB
# The presigned GET a stable variant URL redirects to lives this long (the redirect is cached
# for 80% of it): short, so a test can outlive it.
REDIRECT_EXPIRES_S = 3
VARIANTS = {"xl", "lg", "md", "sm", "thumb"}
WAIT_MS = 90_000
# Pinned: the documented snippet is tested against exactly these; cached under .run/ between runs.
UPPY_PACKAGES = {"@uppy/core": "6.3.1", "@uppy/aws-s3": "6.3.1", "esbuild": "0.28.2"}
UPPY_DIR = ROOT / ".run" / "uppy"


@pytest.fixture(scope="module")
def app_port() -> int:
    """The port of another web app on this machine that embeds Uppy (an allowed origin)."""
    return free_port()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, app_port):
    api_port = free_port()
    # The page's own origin on 127.0.0.1 (localhost is the refused one) and the Uppy app's.
    allowed = (page_origins(api_port)[0], f"http://127.0.0.1:{app_port}")
    with running_stack(tmp_path_factory, api_port=api_port, allowed_origins=allowed,
                       max_upload_bytes=MAX_UPLOAD_BYTES, multipart_threshold_bytes=MiB,
                       multipart_part_bytes=PART_BYTES, redirect_expires_s=REDIRECT_EXPIRES_S,
                       download_expires=1) as local:
        yield local


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium as root "
                    "(apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("files")
    for sample in SAMPLES.iterdir():
        if sample.suffix in (".jpg", ".png"):
            shutil.copy(sample, folder / sample.name)
    (folder / "notes.txt").write_text("not an image\n")
    # Over the limit: the page refuses it before asking for a URL.
    with open(folder / "huge.jpg", "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(MAX_UPLOAD_BYTES + 1)
    # Passes the page's checks (name and type say JPEG); the server finds HTML and refuses it.
    (folder / "lying.jpg").write_bytes(b"<html><script>alert(1)</script></html>")
    # Random pixels do not compress: about 10.5 MB of PNG, three 5 MiB parts.
    noise = Image.frombytes("RGB", (1900, 1840), os.urandom(1900 * 1840 * 3))
    noise.save(folder / "noise.png", compress_level=1)
    assert 2 * PART_BYTES < (folder / "noise.png").stat().st_size < MAX_UPLOAD_BYTES
    return {p.name: p for p in folder.iterdir()}


def _item(page, filename: str):
    return page.locator(f'li.upload[data-filename="{filename}"]')


def _wait_final(page, filename: str) -> str:
    item = _item(page, filename)
    item.and_(page.locator('[data-state="done"], [data-state="failed"], [data-state="rejected"]')) \
        .wait_for(timeout=WAIT_MS)
    return item.get_attribute("data-state")


def _wait_result_loaded(page, filename: str) -> dict:
    """The responsive result image of an upload, once loaded: its srcset and what it chose."""
    selector = f'li.upload[data-filename="{filename}"] .result img'
    page.wait_for_function("s => { const i = document.querySelector(s); "
                           "return i && i.complete && i.naturalWidth > 0 }",
                           arg=selector, timeout=WAIT_MS)
    return page.eval_on_selector(selector, """i => ({srcset: i.srcset, sizes: i.sizes,
        currentSrc: i.currentSrc, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
        alt: i.alt})""")


def _variant_links(page, filename: str) -> list[dict]:
    """Every variant's download link, each loaded through its URL as an <img> would be."""
    selector = f'li.upload[data-filename="{filename}"] .variants a'
    return page.eval_on_selector_all(selector, """links => Promise.all(links.map(a =>
        new Promise(resolve => {
            const image = new Image();
            const answer = (ok) => resolve({name: a.dataset.variant, href: a.href, ok,
                width: Number(a.dataset.width), height: Number(a.dataset.height),
                naturalWidth: image.naturalWidth, naturalHeight: image.naturalHeight,
                text: a.textContent});
            image.onload = () => answer(true);
            image.onerror = () => answer(false);
            image.src = a.href;
        })))""")


def _stable(url: str, stack) -> bool:
    return url.startswith(f"{stack.api_url}/v/") and "sig=" in url and "X-Amz" not in url


def test_the_page_uploads_several_images_and_shows_variants_and_errors(stack, page, files, tmp_path):
    page.goto(f"{stack.api_url}/")
    page.get_by_text("images up to 12.0 MiB each").wait_for()
    # The picker offers exactly the stage's types (GIF included), as /limits says.
    assert page.get_attribute("#files", "accept") == ",".join(stack.settings.allowed_types)
    page.keyboard.press("Tab")  # the file input is the first stop for a keyboard user
    assert page.evaluate("document.activeElement.id") == "files"
    chosen = ["landscape.jpg", "portrait-rotated.jpg", "badge.png", "noise.png", "notes.txt",
              "huge.jpg", "lying.jpg"]
    # The label names the input: what a screen reader (and a keyboard user) finds.
    page.get_by_label("Choose images to upload").set_input_files([files[n] for n in chosen])

    states = {name: _wait_final(page, name) for name in chosen}
    page.screenshot(path=tmp_path / "upload-page.png", full_page=True)
    errors = {name: (_item(page, name).get_attribute("data-error-code"),
                     _item(page, name).locator(".error").inner_text())
              for name in chosen if states[name] != "done"}
    assert states == {"landscape.jpg": "done", "portrait-rotated.jpg": "done", "badge.png": "done",
                      "noise.png": "done", "notes.txt": "rejected", "huge.jpg": "rejected",
                      "lying.jpg": "failed"}, errors

    # Refused in the browser, before any URL was asked for; the server refused the lying file.
    assert errors["notes.txt"][0] == "unsupported_type"
    assert "text/plain" in errors["notes.txt"][1]
    assert errors["huge.jpg"][0] == "too_large"
    assert "over the limit of 12.0 MiB" in errors["huge.jpg"][1]
    assert errors["lying.jpg"][0] == "unsupported_format"
    assert "not an image" in errors["lying.jpg"][1]
    for name in ("notes.txt", "huge.jpg", "lying.jpg"):
        assert _item(page, name).locator(".error").is_visible()

    # Every image shows as one responsive <img srcset sizes> over stable URLs, and every variant
    # has a download link that loads, at the size the status reported.
    for name in ("landscape.jpg", "portrait-rotated.jpg", "badge.png", "noise.png"):
        result = _wait_result_loaded(page, name)
        assert result["sizes"] and result["srcset"].count("w,") == 3, result  # xl lg md sm
        assert _stable(result["currentSrc"], stack), result
        links = _variant_links(page, name)
        assert {link["name"] for link in links} == VARIANTS, name
        for link in links:
            assert link["ok"] and _stable(link["href"], stack), link
            assert (link["naturalWidth"], link["naturalHeight"]) == (link["width"],
                                                                     link["height"]), link
            assert f"{link['width']}×{link['height']}" in link["text"]
    portrait = {link["name"]: link for link in _variant_links(page, "portrait-rotated.jpg")}
    assert (portrait["xl"]["naturalWidth"], portrait["xl"]["naturalHeight"]) == (1536, 2048)
    assert portrait["thumb"]["naturalWidth"] == portrait["thumb"]["naturalHeight"] == 150
    noise = {link["name"]: link for link in _variant_links(page, "noise.png")}
    assert (noise["md"]["naturalWidth"], noise["md"]["naturalHeight"]) == (512, 496)
    # 390 CSS pixels wide at 1x: the browser picked the 512-wide candidate, not the largest.
    landscape = _wait_result_loaded(page, "landscape.jpg")
    assert f"/v/{_item(page, 'landscape.jpg').get_attribute('data-upload-id')}/md.jpg?" in \
        landscape["currentSrc"]
    # The local previews are gone once the results loaded.
    assert page.locator("li.upload .preview:visible").count() == 0

    # The multipart upload really went to S3 in parts and came out whole.
    noise_id = _item(page, "noise.png").get_attribute("data-upload-id")
    s3 = _s3(stack)
    original = s3.get_object(Bucket=stack.settings.bucket, Key=f"originals/{noise_id}")
    assert original["ETag"].strip('"').endswith("-3")
    assert original["Body"].read() == files["noise.png"].read_bytes()

    # Phone width: nothing scrolls sideways.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert (tmp_path / "upload-page.png").stat().st_size > 0


def test_a_part_is_retried_and_a_dropped_connection_resumes_through_parts(
        stack, page, files, tmp_path):
    requests_per_part: dict[int, int] = {}
    parts_calls = []
    page.on("request", lambda r: parts_calls.append(r.url) if r.url.endswith("/parts") else None)

    def flaky_s3(route):
        part = int(dict(p.split("=", 1) for p in route.request.url.split("?", 1)[1].split("&"))
                   ["partNumber"])
        seen = requests_per_part[part] = requests_per_part.get(part, 0) + 1
        if part == 2 and seen == 1:
            route.abort("connectionreset")  # one flaky part: its own retry fixes it
        elif part == 3 and seen == 1:
            page.context.set_offline(True)  # the connection drops for good: the upload pauses
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.route("**/originals/*partNumber=*", flaky_s3)
    page.goto(f"{stack.api_url}/")
    page.get_by_text("images up to").wait_for()
    page.get_by_label("Choose images to upload").set_input_files(files["noise.png"])

    item = _item(page, "noise.png")
    item.and_(page.locator('[data-state="paused"]')).wait_for(timeout=WAIT_MS)
    assert item.get_attribute("data-error-code") == "s3_unreachable"
    assert item.get_by_role("button", name="Resume upload").is_visible()
    page.screenshot(path=tmp_path / "paused.png", full_page=True)
    assert parts_calls == []

    page.context.set_offline(False)  # the browser's "online" event resumes it
    assert _wait_final(page, "noise.png") == "done", item.inner_text()
    assert len(parts_calls) == 1
    assert requests_per_part[2] >= 2 and requests_per_part[3] >= 2
    assert {link["name"] for link in _variant_links(page, "noise.png")} == VARIANTS
    upload_id = item.get_attribute("data-upload-id")
    original = _s3(stack).get_object(Bucket=stack.settings.bucket, Key=f"originals/{upload_id}")
    assert original["Body"].read() == files["noise.png"].read_bytes()


def _server_status(stack, upload_id: str, until: str) -> dict:
    client = UploadClient(stack.api_url)
    for _ in range(50):
        status = client.status(upload_id)
        if status["status"] == until:
            break
        time.sleep(0.1)
    return status


def _open_page(page, stack):
    page.goto(f"{stack.api_url}/")
    page.get_by_text("images up to").wait_for()


def test_cancel_stops_the_upload_and_tells_the_api(stack, page, files):
    held = []
    page.route("**/originals/*", lambda route: held.append(route))  # S3 never answers
    _open_page(page, stack)
    page.get_by_label("Choose images to upload").set_input_files(files["landscape.jpg"])
    item = _item(page, "landscape.jpg")
    # While it uploads, the file itself shows from memory.
    preview = item.locator(".preview")
    preview.wait_for()
    assert preview.get_attribute("src").startswith("blob:")
    item.and_(page.locator('[data-state="uploading"]')).wait_for()
    item.get_by_role("button", name="Cancel").click()

    item.and_(page.locator('[data-state="cancelled"]')).wait_for()
    upload_id = item.get_attribute("data-upload-id")
    assert held, "the PUT had started"
    assert _server_status(stack, upload_id, "failed")["error"]["code"] == "cancelled"
    assert not item.get_by_role("button", name="Cancel").is_visible()
    assert not preview.is_visible()


def test_cancel_while_the_page_asks_for_an_upload_url_wins_and_the_api_hears_of_it(
        stack, page, files):
    """The create answer arrives after Cancel: no PUT starts, and the page DELETEs the upload
    the server made (before, the item stuck at "uploading…" and the PUT overwrote the cancel)."""
    creating, puts = [], []
    page.route("**/uploads", lambda route: creating.append(route)
               if route.request.method == "POST" else route.continue_())
    page.route("**/originals/*", lambda route: (puts.append(route.request.url), route.abort()))
    _open_page(page, stack)
    page.get_by_label("Choose images to upload").set_input_files(files["landscape.jpg"])
    item = _item(page, "landscape.jpg")
    item.and_(page.locator('[data-state="requesting"]')).wait_for()
    for _ in range(50):
        if creating:
            break
        page.wait_for_timeout(20)
    assert creating, "the page asked for an upload URL"
    item.get_by_role("button", name="Cancel").click()
    item.and_(page.locator('[data-state="cancelled"]')).wait_for()

    creating[0].continue_()  # the server makes the upload; its answer comes after the cancel
    item.and_(page.locator('[data-cancelled-on-server="true"]')).wait_for(timeout=WAIT_MS)
    upload_id = item.get_attribute("data-upload-id")
    assert _server_status(stack, upload_id, "failed")["error"]["code"] == "cancelled"
    page.wait_for_timeout(300)  # a PUT started by the late answer would show by now
    assert puts == []
    assert item.get_attribute("data-state") == "cancelled"
    assert item.locator(".error").is_hidden()


def test_the_file_picker_offers_every_type_the_stage_accepts(stack, page):
    _open_page(page, stack)
    accept = page.locator("#files").get_attribute("accept").split(",")
    assert set(accept) == set(stack.settings.allowed_types)
    assert "image/gif" in accept


@contextlib.contextmanager
def _static_site(folder: Path, pages: dict[str, str]):
    """``pages`` served from ``folder`` on a loopback port of their own: the site's URL."""
    for name, text in pages.items():
        (folder / name).write_text(text)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_variants_load_through_stable_urls_with_srcset_again_after_the_presigned_lifetime(
        stack, browser, page, files, tmp_path):
    _open_page(page, stack)
    page.get_by_label("Choose images to upload").set_input_files(files["badge.png"])
    assert _wait_final(page, "badge.png") == "done"
    shown = _wait_result_loaded(page, "badge.png")
    upload_id = _item(page, "badge.png").get_attribute("data-upload-id")
    status = UploadClient(stack.api_url).status(upload_id)
    assert shown["srcset"] == status["srcset"]
    assert all(_stable(v["url"], stack) for v in status["variants"])

    # Past the presigned GET's lifetime (and download_expires): the same URLs, in a plain
    # <img srcset sizes> on another page with no cache and no header of ours, still load.
    time.sleep(REDIRECT_EXPIRES_S + 1)
    later = UploadClient(stack.api_url).status(upload_id)
    assert later["variants"] == status["variants"] and later["srcset"] == status["srcset"]
    context = browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=2)
    try:
        other = context.new_page()
        redirects = []
        other.on("response", lambda r: redirects.append((time.time(), r.status, r.headers))
                 if "/v/" in r.url else None)
        html = ("<!doctype html><img id=r alt=badge sizes='(max-width: 42rem) 100vw, 40rem' "
                f"srcset='{later['srcset']}'>")
        # Another web app on this machine (a real server: Chromium lets a page reach loopback
        # addresses only from loopback itself).
        with _static_site(tmp_path, {"embed.html": html}) as site:
            other.goto(f"{site}/embed.html")
            other.wait_for_function("() => { const i = document.getElementById('r'); "
                                    "return i.complete && i.naturalWidth > 0 }", timeout=WAIT_MS)
        chosen = other.eval_on_selector("#r", "i => i.currentSrc")
    finally:
        context.close()
    # 40rem at 2x wants 1280 pixels: the widest candidate (the 1200-wide source, not upscaled).
    xl = next(v for v in later["variants"] if v["name"] == "xl")
    assert xl["width"] == 1200 and chosen == xl["url"]
    # It went through the stable URL's redirect, to a presigned GET made for this request.
    [(asked_at, code, headers)] = redirects
    assert code == 302
    assert headers["cache-control"] == f"private, max-age={REDIRECT_EXPIRES_S * 4 // 5}"
    query = dict(parse_qsl(urlsplit(headers["location"]).query))
    signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc).timestamp()
    assert signed <= asked_at < signed + int(query["X-Amz-Expires"]) + 1
    assert int(query["X-Amz-Expires"]) == REDIRECT_EXPIRES_S


def test_an_origin_the_bucket_does_not_allow_is_refused_with_a_clear_error(stack, page, files):
    # Same server, other origin: page and API still work, S3 refuses the upload's preflight.
    refused_origin = stack.api_url.replace("127.0.0.1", "localhost")
    page.goto(f"{refused_origin}/")
    page.get_by_text("images up to").wait_for()
    page.get_by_label("Choose images to upload").set_input_files(files["landscape.jpg"])

    assert _wait_final(page, "landscape.jpg") == "failed"
    item = _item(page, "landscape.jpg")
    assert item.get_attribute("data-error-code") == "cors_refused"
    message = item.locator(".error").inner_text()
    assert refused_origin in message and "allowed_origins" in message
    # Nothing reached the bucket.
    upload_id = item.get_attribute("data-upload-id")
    listed = _s3(stack).list_objects_v2(Bucket=stack.settings.bucket,
                                        Prefix=f"originals/{upload_id}")
    assert listed.get("KeyCount", 0) == 0


def _s3(stack):
    from imagepipe.aws import s3_client

    return s3_client(stack.settings)


UPPY_DOC = ROOT / "docs" / "browser-uploads.md"  # where users copy the snippet from


def _documented_uppy_snippet() -> str:
    page = UPPY_DOC.read_text()
    blocks = [b for b in re.findall(r"```js\n(.*?)```", page, re.S) if "@uppy/aws-s3" in b]
    assert len(blocks) == 1, f"{UPPY_DOC.name} has one Uppy snippet"
    return blocks[0]


@pytest.fixture(scope="module")
def uppy_bundle() -> str:
    """The documented Uppy snippet bundled for the browser with esbuild (Uppy ships ES modules)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is missing: the Uppy test installs @uppy/aws-s3 and esbuild from npm")
    UPPY_DIR.mkdir(parents=True, exist_ok=True)
    package = {"private": True, "dependencies": UPPY_PACKAGES}
    installed = UPPY_DIR / "installed.json"
    if not installed.exists() or json.loads(installed.read_text()) != package:
        (UPPY_DIR / "package.json").write_text(json.dumps(package, indent=2))
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                                cwd=UPPY_DIR, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            pytest.skip(f"npm install of Uppy failed (is the npm registry reachable?): "
                        f"{result.stderr.strip()[-400:]}")
        installed.write_text(json.dumps(package))
    # Beside node_modules, so esbuild resolves the packages.
    (UPPY_DIR / "imagepipe-uppy.js").write_text(_documented_uppy_snippet())
    (UPPY_DIR / "entry.js").write_text(
        "import { imagepipeUppy } from './imagepipe-uppy.js'\n"
        "window.imagepipeUppy = imagepipeUppy\n")
    bundle = UPPY_DIR / "bundle.js"
    subprocess.run([str(UPPY_DIR / "node_modules" / ".bin" / "esbuild"), "entry.js", "--bundle",
                    "--format=iife", "--platform=browser", "--target=chrome120",
                    f"--outfile={bundle.name}", "--log-level=warning"],
                   cwd=UPPY_DIR, check=True, timeout=120)
    return bundle.read_text()


@pytest.fixture(scope="module")
def uppy_app(app_port, uppy_bundle, tmp_path_factory):
    """A static web app on its own loopback origin that embeds the documented Uppy snippet."""
    folder = tmp_path_factory.mktemp("uppy-app")
    (folder / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><title>Uppy</title>'
        '<input type="file" id="files" multiple><script src="bundle.js"></script>')
    (folder / "bundle.js").write_text(uppy_bundle)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", app_port), partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{app_port}"
    server.shutdown()
    server.server_close()


def test_uppy_6_uploads_through_the_put_mode_with_sign_request(stack, page, files, uppy_app):
    # Another app's origin: the API answers it by CORS, and the bucket accepts its PUTs.
    page.goto(f"{uppy_app}/index.html")
    page.locator("#files").set_input_files([files["landscape.jpg"], files["badge.png"],
                                            files["lying.jpg"]])
    result = page.evaluate("""async (api) => {
        const uppy = imagepipeUppy(api)
        for (const file of document.getElementById('files').files) {
            uppy.addFile({ name: file.name, type: file.type, data: file })
        }
        const result = await uppy.upload()
        return {
            successful: result.successful.map(f => ({
                name: f.name, uploadId: f.meta.imagepipeUploadId, key: f.response.body.key })),
            failed: result.failed.map(f => ({ name: f.name, error: String(f.error) })),
        }
    }""", stack.api_url)

    # The lying file reached S3 but the API refused it at complete: Uppy reports it failed.
    assert [f["name"] for f in result["failed"]] == ["lying.jpg"]
    assert "unsupported_format" in result["failed"][0]["error"]
    uploaded = {f["name"]: f for f in result["successful"]}
    assert set(uploaded) == {"landscape.jpg", "badge.png"}
    client = UploadClient(stack.api_url)
    for name, file in uploaded.items():
        # Uppy reports the key the API chose, not its own placeholder.
        assert file["key"] == f"originals/{file['uploadId']}"
        final = client.wait(file["uploadId"], timeout=90)
        assert final["status"] == "done", (name, final)
        assert {v["name"] for v in final["variants"]} == VARIANTS
    stored = _s3(stack).get_object(Bucket=stack.settings.bucket,
                                   Key=uploaded["badge.png"]["key"])
    assert stored["ContentType"] == "image/png"
    assert stored["Body"].read() == files["badge.png"].read_bytes()


# --- a stage with auth: the page's token from its URL fragment, Uppy's from its caller ---------

@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory, app_port):
    api_port = free_port()
    allowed = (page_origins(api_port)[0], f"http://127.0.0.1:{app_port}")
    # The local stage's HS256 issuer, audience and secret (chalicefile.json), switched on.
    with running_stack(tmp_path_factory, api_port=api_port, allowed_origins=allowed,
                       auth_mode="jwt") as local:
        yield local


def _token(stack, sub: str) -> str:
    from imagepipe import auth

    settings = stack.settings
    return auth.mint(settings.auth_secret, sub=sub, issuer=settings.auth_issuer,
                     audience=settings.auth_audience, ttl_s=600)


def _owner(stack, upload_id: str) -> str | None:
    from imagepipe import keys

    record = _s3(stack).get_object(Bucket=stack.settings.bucket,
                                   Key=keys.upload_record_key(upload_id))
    return json.loads(record["Body"].read()).get("owner")


def test_with_auth_the_page_uses_the_token_from_its_fragment(auth_stack, page, files):
    # What `make dev` prints with auth on: the demo page with #token=...
    page.goto(auth_stack.demo_link())
    page.get_by_text("images up to").wait_for()
    # The token left the address bar (and so the history) as soon as the page read it.
    assert "token" not in page.url
    page.get_by_label("Choose images to upload").set_input_files([files["landscape.jpg"]])

    assert _wait_final(page, "landscape.jpg") == "done"
    assert _wait_result_loaded(page, "landscape.jpg")["naturalWidth"] > 0
    links = _variant_links(page, "landscape.jpg")
    assert {link["name"] for link in links} == VARIANTS and all(link["ok"] for link in links)
    upload_id = _item(page, "landscape.jpg").get_attribute("data-upload-id")
    assert _owner(auth_stack, upload_id) == "demo"

    # A reload keeps the tab's token; another user's token does not see the upload.
    page.reload()
    page.get_by_label("Choose images to upload").set_input_files([files["badge.png"]])
    assert _wait_final(page, "badge.png") == "done"
    other = UploadClient(auth_stack.api_url, token=_token(auth_stack, "someone-else"))
    with pytest.raises(Exception) as hidden:
        other.status(upload_id)
    assert getattr(hidden.value, "code", None) == "not_found"


def test_with_auth_the_page_without_a_token_says_why_it_cannot_upload(auth_stack, page, files):
    page.goto(f"{auth_stack.api_url}/")
    page.get_by_text("images up to").wait_for()  # GET /limits stays public
    page.get_by_label("Choose images to upload").set_input_files([files["badge.png"]])

    assert _wait_final(page, "badge.png") == "rejected"  # refused before any byte was sent
    item = _item(page, "badge.png")
    assert item.get_attribute("data-error-code") == "unauthorized"
    assert "Bearer" in item.locator(".error").inner_text()


def test_with_auth_uppy_sends_the_token(auth_stack, page, files, uppy_app):
    page.goto(f"{uppy_app}/index.html")
    page.locator("#files").set_input_files([files["landscape.jpg"]])
    script = """async ([api, token]) => {
        const uppy = imagepipeUppy(api, token)
        for (const file of document.getElementById('files').files) {
            uppy.addFile({ name: file.name, type: file.type, data: file })
        }
        const result = await uppy.upload()
        return {
            successful: result.successful.map(f => f.meta.imagepipeUploadId),
            failed: result.failed.map(f => String(f.error)),
        }
    }"""

    refused = page.evaluate(script, [auth_stack.api_url, None])
    assert refused["successful"] == [] and "unauthorized" in refused["failed"][0]

    page.reload()
    page.locator("#files").set_input_files([files["landscape.jpg"]])
    token = _token(auth_stack, "carol")
    result = page.evaluate(script, [auth_stack.api_url, token])

    assert result["failed"] == []
    [upload_id] = result["successful"]
    final = UploadClient(auth_stack.api_url, token=token).wait(upload_id, timeout=90)
    assert final["status"] == "done" and {v["name"] for v in final["variants"]} == VARIANTS
    assert _owner(auth_stack, upload_id) == "carol"
