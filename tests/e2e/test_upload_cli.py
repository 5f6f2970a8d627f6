"""``python -m imagepipe upload`` and its client against the real local stack: moto's S3 server,
``chalice local``, a bridge and the real RabbitMQ. The stack's limits are lowered (8 MiB uploads,
multipart above 1 MiB in 5 MiB parts) so that a multipart upload and an oversize file stay small."""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image
from requests.adapters import HTTPAdapter

from imagepipe import keys
from imagepipe.aws import s3_client
from imagepipe_tools.client import UploadClient, UploadFailed
from imagepipe_dev.stack import free_port
from tests import images
from .conftest import running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
LIMITS = {"max_upload_bytes": 8 * MiB, "multipart_threshold_bytes": 1 * MiB,
          "multipart_part_bytes": 5 * MiB}
VARIANTS = ["xl", "lg", "md", "sm", "thumb"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory, **LIMITS) as local:
        yield local


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: width*height*3 bytes and a little more."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=0)
    return out.getvalue()


def run_cli(*args: str, cwd: Path, timeout: float = 120,
            env: dict | None = None) -> subprocess.CompletedProcess:
    # PYTHONPATH (this checkout's code): tests/conftest.py
    result = subprocess.run([sys.executable, "-m", "imagepipe", "upload", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def upload_record(stack, upload_id: str) -> dict:
    s3 = s3_client(stack.settings)
    body = s3.get_object(Bucket=stack.settings.bucket, Key=keys.upload_record_key(upload_id))
    return json.loads(body["Body"].read())


def uploaded_records(stack) -> int:
    s3 = s3_client(stack.settings)
    listing = s3.list_objects_v2(Bucket=stack.settings.bucket, Prefix="uploads/")
    return listing.get("KeyCount", 0)


def test_upload_wait_and_download_with_rejections(stack, tmp_path):
    (tmp_path / "small.jpg").write_bytes(images.make_jpeg(900, 600, orientation=6))
    big = noise_png(1700, 1300)  # 6.6 MB: two 5 MiB parts
    assert LIMITS["multipart_part_bytes"] < len(big) < LIMITS["max_upload_bytes"]
    (tmp_path / "big.png").write_bytes(big)
    (tmp_path / "scan.bmp").write_bytes(images.make_bmp(10, 10))
    (tmp_path / "notes.jpg").write_bytes(images.make_html_polyglot())
    with (tmp_path / "huge.jpg").open("wb") as huge:  # over the limit, sparse on disk
        huge.write(images.make_jpeg(10, 10)[:16])
        huge.truncate(LIMITS["max_upload_bytes"] + 1)
    records_before = uploaded_records(stack)
    names = ["small.jpg", "big.png", "scan.bmp", "notes.jpg", "huge.jpg", "missing.jpg"]

    result = run_cli(*names, "--api", stack.api_url, "--out", "out", "--json", "--timeout",
                     "90", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["input"] for line in lines] == names
    by_name = {line["input"]: line for line in lines}
    for name in ("small.jpg", "big.png"):
        done = by_name[name]
        assert done["status"] == "done" and done["error"] is None, done
        assert [v["name"] for v in done["variants"]] == VARIANTS
        for variant in done["variants"]:
            path = Path(variant["path"])
            assert path.parent == Path("out") / Path(name).stem
            image = Image.open(tmp_path / path)
            assert image.size == (variant["width"], variant["height"])
            assert image.format.lower() == variant["format"]
    small = {v["name"]: v for v in by_name["small.jpg"]["variants"]}
    assert (small["xl"]["width"], small["xl"]["height"]) == (900, 600)  # upright
    big_xl = Image.open(tmp_path / "out" / "big" / "xl.jpg")  # opaque: auto is JPEG
    assert big_xl.size == (1700, 1300)
    # The server saw a PUT for the small file and a multipart upload for the big one.
    assert upload_record(stack, by_name["small.jpg"]["upload_id"])["method"] == "PUT"
    assert upload_record(stack, by_name["big.png"]["upload_id"])["method"] == "MULTIPART"

    codes = {name: (line["error"] or {}).get("code") for name, line in by_name.items()}
    assert codes["scan.bmp"] == "unsupported_type"
    assert codes["notes.jpg"] == "unsupported_format"  # the server is the authority
    assert codes["huge.jpg"] == "too_large"
    assert codes["missing.jpg"] == "source_missing"
    # The checks from GET /limits refused before asking for a URL; the lying file got one.
    for name in ("scan.bmp", "huge.jpg", "missing.jpg"):
        assert by_name[name]["upload_id"] is None
    assert by_name["notes.jpg"]["upload_id"]
    assert uploaded_records(stack) == records_before + 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big", "small"]


def test_text_lines_without_waiting(stack, tmp_path):
    (tmp_path / "a.jpg").write_bytes(images.make_jpeg(300, 200))
    (tmp_path / "b.png").write_bytes(images.make_png(30, 20))

    result = run_cli("a.jpg", "b.png", "--api", stack.api_url, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["a.jpg", "b.png"]
    client = UploadClient(stack.api_url)
    for line in lines:
        status, upload_id = line.split(": ")[1].split(" ")
        assert status == "queued"
        assert client.wait(upload_id, timeout=60)["status"] == "done"

    result = run_cli("a.jpg", "--api", stack.api_url, "--wait", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("a.jpg: done ")
    assert "(xl 300x200 jpeg " in result.stdout


def test_unreachable_api_is_one_line_per_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(images.make_jpeg(30, 20))
    api = f"http://127.0.0.1:{free_port()}"

    result = run_cli("a.jpg", "missing.jpg", "--api", api, "--wait", cwd=tmp_path)

    assert result.returncode == 1
    reason = f"network_error: connection failed talking to {api}"
    assert result.stdout.splitlines() == [f"a.jpg: failed {reason}",
                                          f"missing.jpg: failed {reason}"]


class BrokenApi(http.server.BaseHTTPRequestHandler):
    """An API that answers every request with a 500 and an HTML page."""

    paths: list[str] = []

    def do_GET(self):
        self.paths.append(self.path)
        body = b"<html><body>oops\n</body></html>"
        self.send_response(500)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_server_errors_are_retried_then_one_line(tmp_path):
    (tmp_path / "a.jpg").write_bytes(images.make_jpeg(30, 20))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BrokenApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = run_cli("a.jpg", "--api", api, "--wait", cwd=tmp_path)
    finally:
        server.shutdown()

    assert result.returncode == 1
    assert result.stdout == ("a.jpg: failed http_error: HTTP 500: <html><body>oops "
                             "</body></html>\n")
    assert BrokenApi.paths == ["/limits"] * 3  # an idempotent call, tried three times


class CutConnection:
    """A TCP server that reads part of a request, then closes the connection: a connection
    that drops while the body is being sent."""

    def __init__(self, after_bytes: int = 256 * 1024):
        self.after_bytes = after_bytes
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                received = 0
                while received < self.after_bytes:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    received += len(chunk)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self.server.close()


class DropParts(HTTPAdapter):
    """Sends the first ``times`` PUTs of one part to a server that cuts the connection midway
    through the body; records (method, path, part number) of every request."""

    def __init__(self, part_number: int, times: int, cut: CutConnection):
        super().__init__()
        self.part_number = str(part_number)
        self.left = times
        self.cut = cut
        self.seen: list[tuple[str, str, int | None]] = []

    def send(self, request, **kwargs):
        url = urlsplit(request.url)
        part = parse_qs(url.query).get("partNumber", [None])[0]
        self.seen.append((request.method, url.path, int(part) if part else None))
        if request.method == "PUT" and part == self.part_number and self.left > 0:
            self.left -= 1
            request.url = url._replace(netloc=f"127.0.0.1:{self.cut.port}").geturl()
        return super().send(request, **kwargs)


@pytest.fixture
def cut():
    server = CutConnection()
    yield server
    server.close()


def test_multipart_retries_a_part_then_resumes_through_parts(stack, tmp_path, cut):
    path = tmp_path / "wide.png"
    path.write_bytes(noise_png(1800, 1200))  # 6.5 MB: parts 1 (5 MiB) and 2
    session = requests.Session()
    dropper = DropParts(part_number=2, times=2, cut=cut)
    session.mount("http://", dropper)
    client = UploadClient(stack.api_url, session=session, part_attempts=2, retry_delay=0.05)
    progress: list[int] = []

    upload_id = client.upload_file(path, progress=progress.append)

    final = client.wait(upload_id, timeout=90)
    assert final["status"] == "done", final
    xl = {v["name"]: v for v in final["variants"]}["xl"]
    assert (xl["width"], xl["height"]) == (1800, 1200)
    # Part 2 failed twice (its own retry), then /parts said part 1 was there: only 2 again.
    part_puts = sorted(n for method, _, n in dropper.seen if method == "PUT" and n)
    assert part_puts == [1, 2, 2, 2]
    resumes = [path for method, path, _ in dropper.seen if path.endswith("/parts")]
    assert resumes == [f"/uploads/{upload_id}/parts"]
    # What a cut part had sent was taken back: the bar ends at the file's size.
    assert any(n < 0 for n in progress)
    assert sum(progress) == path.stat().st_size
    original = s3_client(stack.settings).head_object(
        Bucket=stack.settings.bucket, Key=keys.original_key(upload_id))
    assert original["ContentLength"] == path.stat().st_size


def test_a_multipart_upload_given_up_is_cancelled_and_aborted(stack, tmp_path, cut):
    path = tmp_path / "wide.png"
    path.write_bytes(noise_png(1800, 1200))
    session = requests.Session()
    session.mount("http://", DropParts(part_number=2, times=100, cut=cut))
    client = UploadClient(stack.api_url, session=session, part_attempts=1, resume_rounds=1,
                          retry_delay=0.01)

    with pytest.raises(UploadFailed) as caught:
        client.upload_file(path)

    failure = caught.value
    assert failure.code == "network_error" and failure.step == "part 2"
    status = UploadClient(stack.api_url).status(failure.upload_id)
    assert status["status"] == "failed" and status["error"]["code"] == "cancelled"
    s3 = s3_client(stack.settings)
    pending = s3.list_multipart_uploads(Bucket=stack.settings.bucket,
                                        Prefix=keys.original_key(failure.upload_id))
    assert pending.get("Uploads", []) == []  # no orphan parts kept


# --- a stage with auth ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory):
    # The local stage's HS256 issuer, audience and secret (chalicefile.json), switched on.
    with running_stack(tmp_path_factory, auth_mode="jwt", **LIMITS) as local:
        yield local


def mint(sub: str, *extra: str) -> str:
    """A token from `imagepipe token`, as a developer gets one for the local stage."""
    result = subprocess.run([sys.executable, "-m", "imagepipe", "token", "--sub", sub, *extra],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_upload_with_a_token_on_a_stage_with_auth(auth_stack, tmp_path):
    (tmp_path / "cat.jpg").write_bytes(images.make_jpeg(640, 480))
    (tmp_path / "dog.jpg").write_bytes(images.make_jpeg(480, 640))
    api = ["--api", auth_stack.api_url, "--json", "--wait", "--timeout", "90"]

    refused = run_cli("cat.jpg", *api, cwd=tmp_path, env={"IMAGEPIPE_TOKEN": ""})

    assert refused.returncode == 1
    [line] = [json.loads(text) for text in refused.stdout.splitlines()]
    assert (line["status"], line["upload_id"], line["error"]["code"]) == (
        "failed", None, "unauthorized")

    alice = mint("alice", "--max-uploads", "1")
    done = run_cli("cat.jpg", *api, cwd=tmp_path, env={"IMAGEPIPE_TOKEN": alice})

    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [json.loads(text) for text in done.stdout.splitlines()]
    assert line["status"] == "done", line
    assert [v["name"] for v in line["variants"]] == VARIANTS
    assert upload_record(auth_stack, line["upload_id"])["owner"] == "alice"

    # --token wins over the environment; the token's one upload is spent.
    over = run_cli("dog.jpg", *api, "--token", alice, cwd=tmp_path)
    assert over.returncode == 1
    assert json.loads(over.stdout)["error"]["code"] == "quota_exceeded"

    # Another user's token cannot see alice's upload: the same 404 as an unknown id.
    bob = UploadClient(auth_stack.api_url, token=mint("bob"))
    with pytest.raises(UploadFailed) as hidden:
        bob.status(line["upload_id"])
    assert (hidden.value.status, hidden.value.code) == (404, "not_found")
    assert UploadClient(auth_stack.api_url, token=alice).status(line["upload_id"])[
        "status"] == "done"
