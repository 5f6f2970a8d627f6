"""A client of the upload API that behaves as a browser does.

It asks ``GET /limits`` what the server accepts and checks a file against it before asking for a
URL; asks ``POST /uploads`` for a presigned upload and sends the bytes straight to S3 (the API
never carries them): one PUT (or a form POST), or above the server's multipart threshold a
presigned multipart upload whose parts go in parallel over a bounded pool, each retried on its
own, the rest resumed through ``POST /uploads/{id}/parts`` after a dropped connection or expired
URLs; then calls ``complete``, polls the status and downloads the variants.

Every failure is an ``UploadFailed`` with the step, a reason code and a one-line message: an
API error carries the server's code, a network error ``network_error``, a local check the code
the server would have answered. The ``imagepipe upload`` CLI, ``make demo`` and the end-to-end
tests all use this one client.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests
from requests.adapters import HTTPAdapter

from imagepipe import errors, formats, keys
from imagepipe.errors import (
    CANCELLED,
    HTTP_ERROR,
    NETWORK_ERROR,
    UNSUPPORTED_TYPE,
    UPLOAD_INCOMPLETE,
    ApiError,
)
from imagepipe.messages import State
from imagepipe.uploads import MULTIPART, POST, PUT

LOGGER = logging.getLogger(__name__)

TERMINAL = frozenset(state for state in State if state.terminal)

# The longest a client waits on the server's Retry-After before trying again.
MAX_RETRY_AFTER_S = 10.0
# Read and send in chunks this big, so progress moves while a part is in flight.
CHUNK_BYTES = 64 * 1024

Progress = Callable[[int], None]  # called with bytes sent (negative: a retried part restarts)


class UploadFailed(RuntimeError):
    """One step of an upload failed; ``code`` and ``message`` say why in one line."""

    def __init__(self, step: str, code: str, message: str, status: int = 0, body: str = ""):
        super().__init__(f"{step}: {code}: {message}")
        self.step = step
        self.code = code
        self.message = message
        self.status = status  # the HTTP status, 0 when there was no answer
        self.body = body
        self.upload_id: str | None = None  # set once the server has made the upload

    @property
    def transient(self) -> bool:
        """Worth trying again unchanged: no answer, a server error or throttling."""
        return (self.status == 0 and self.code == NETWORK_ERROR) or self.status >= 500 \
            or self.status == 429

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_response(cls, step: str, response: requests.Response) -> "UploadFailed":
        """Our API's ``{"error": {"code", "message"}}``, or S3's XML, or whatever came back."""
        text = response.text
        try:
            error = ApiError.from_body(response.status_code, response.json())
        except ValueError:
            error = None
        if error is not None:
            return cls(step, error.code, error.message, response.status_code, text)
        message = f"HTTP {response.status_code}"
        snippet = " ".join(text.split())[:200]
        if snippet:
            message = f"HTTP {response.status_code}: {snippet}"
        return cls(step, HTTP_ERROR, message, response.status_code, text)

    @classmethod
    def from_network(cls, step: str, url: str, exc: requests.RequestException) -> "UploadFailed":
        reason = exc.__class__.__name__
        if isinstance(exc, requests.Timeout):
            reason = "timed out"
        elif isinstance(exc, requests.ConnectionError):
            reason = "connection failed"
        return cls(step, NETWORK_ERROR, f"{reason} talking to {_origin(url)}")


@dataclass(frozen=True)
class Limits:
    """``GET /limits``: what the server accepts. The server stays the authority."""

    max_upload_bytes: int
    allowed_types: tuple[str, ...]
    multipart_threshold_bytes: int | None = None
    multipart_part_bytes: int | None = None
    methods: tuple[str, ...] = (POST, PUT)

    @classmethod
    def from_json(cls, body: dict) -> "Limits":
        return cls(
            max_upload_bytes=int(body["max_upload_bytes"]),
            allowed_types=tuple(body["allowed_types"]),
            multipart_threshold_bytes=body.get("multipart_threshold_bytes"),
            multipart_part_bytes=body.get("multipart_part_bytes"),
            methods=tuple(body.get("methods") or (POST, PUT)),
        )

    def method_for(self, size: int) -> str:
        threshold = self.multipart_threshold_bytes
        if MULTIPART in self.methods and threshold is not None and size > threshold:
            return MULTIPART
        return PUT

    def check(self, content_type: str, size: int) -> None:
        """What the server would refuse, refused before asking it for a URL."""
        if content_type not in self.allowed_types:
            raise UploadFailed("check", UNSUPPORTED_TYPE, f"{content_type} is not one of "
                               f"{', '.join(self.allowed_types)}")
        if size < 1:
            raise UploadFailed("check", errors.EMPTY_UPLOAD, "the file is empty")
        if size > self.max_upload_bytes:
            raise UploadFailed("check", errors.TOO_LARGE, f"{size} bytes is over the limit of "
                               f"{self.max_upload_bytes} bytes")


def content_type_of(path: Path, head: bytes) -> str:
    """The type the bytes announce; failing that, the one the name suggests (as a browser)."""
    return (formats.sniff(head[:formats.SNIFF_BYTES]) or mimetypes.guess_type(path.name)[0]
            or "application/octet-stream")


class UploadClient:
    def __init__(self, api_url: str, session: requests.Session | None = None,
                 timeout: float = 30, part_workers: int = 4, part_attempts: int = 3,
                 resume_rounds: int = 3, retry_delay: float = 0.5, api_attempts: int = 3,
                 token: str | None = None):
        self.api_url = api_url.rstrip("/")
        # A bearer token for a stage with auth: sent to the API only, never to S3.
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = session or _session(pool=4 * part_workers)
        self.timeout = timeout
        self.part_workers = part_workers
        self.part_attempts = part_attempts
        self.resume_rounds = resume_rounds
        self.retry_delay = retry_delay
        self.api_attempts = api_attempts
        self._limits: Limits | None = None
        self._limits_asked = False
        self._limits_lock = threading.Lock()
        # Set (by Ctrl-C) to stop every upload of this client at its next step.
        self.stopping = threading.Event()

    # --- the API, one method per route ------------------------------------------------------
    def limits(self) -> Limits | None:
        """The server's limits (asked once); None from a server that has no ``/limits``."""
        with self._limits_lock:
            if not self._limits_asked:
                response = self._call("limits", "GET", "/limits")
                if not _no_such_route(response):
                    self._expect("limits", response, 200)
                    try:
                        self._limits = Limits.from_json(response.json())
                    except (ValueError, KeyError, TypeError):
                        raise UploadFailed("limits", HTTP_ERROR, "GET /limits answered an "
                                           "unexpected body", response.status_code,
                                           response.text) from None
                self._limits_asked = True
            return self._limits

    def create(self, filename: str, content_type: str, size: int, method: str = POST,
               **extra) -> dict:
        body = {"filename": filename, "content_type": content_type, "size": size,
                "method": method, **extra}
        response = self._call("create", "POST", "/uploads", json=body)
        return self._expect("create", response, 201)

    def parts(self, upload_id: str, part_numbers: list[int] | None = None) -> dict:
        """What S3 holds of a multipart upload, and fresh URLs for the parts it lacks."""
        body = {} if part_numbers is None else {"part_numbers": part_numbers}
        response = self._call("resume", "POST", f"/uploads/{upload_id}/parts", json=body)
        return self._expect("resume", response, 200)

    def complete(self, upload_id: str, parts: list[dict] | None = None) -> dict:
        body = {"json": {"parts": parts}} if parts is not None else {}
        response = self._call("complete", "POST", f"/uploads/{upload_id}/complete", **body)
        return self._expect("complete", response, 202)

    def cancel(self, upload_id: str) -> dict:
        return self._expect("cancel", self._call("cancel", "DELETE", f"/uploads/{upload_id}"), 200)

    def status(self, upload_id: str) -> dict:
        return self._expect("status", self._call("status", "GET", f"/uploads/{upload_id}"), 200)

    def wait(self, upload_id: str, timeout: float = 120, interval: float = 0.25) -> dict:
        """The status once ``done`` or ``failed``, or the last one seen when ``timeout`` ends."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(upload_id)
            if current["status"] in TERMINAL or time.monotonic() > deadline:
                return current
            if self.stopping.wait(min(interval, max(0.0, deadline - time.monotonic())) or interval):
                raise UploadFailed("wait", CANCELLED, "stopped while waiting")

    # --- sending the bytes --------------------------------------------------------------------
    def send(self, upload: dict, data: bytes, filename: str, progress: Progress | None = None,
             upload_id: str | None = None) -> list[dict] | None:
        """Send the bytes to S3 as the presigned upload says. For MULTIPART (which needs the
        ``upload_id`` to resume) returns the parts, ``[{part_number, etag}]``, for complete."""
        method = upload["method"]
        if method == MULTIPART:
            if upload_id is None:
                raise ValueError("a multipart upload needs its upload_id")
            return self.send_multipart(upload_id, upload, data, progress)
        if method == POST:
            fields = upload["fields"]
            # S3 wants the file as the last form field; requests puts files after data.
            files = {"file": (filename, data, fields.get("Content-Type"))}
            response = self._s3("upload", "POST", upload["url"], data=fields, files=files)
            if progress and response.ok:
                progress(len(data))
        else:
            response = self._s3("upload", "PUT", upload["url"], headers=upload["headers"],
                                data=_Body(memoryview(data), progress))
        if response.status_code not in (200, 201, 204):
            raise UploadFailed.from_response("upload", response)
        return None

    def send_multipart(self, upload_id: str, upload: dict, data: bytes,
                       progress: Progress | None = None) -> list[dict]:
        """PUT every part (parallel, bounded, each retried); then, while parts are missing, ask
        ``/parts`` what S3 has and send the rest with fresh URLs. Returns the parts for
        ``complete``."""
        part_bytes = int(upload["part_bytes"])
        urls = {p["part_number"]: p["url"] for p in upload["parts"]}
        etags: dict[int, str] = {}
        last: UploadFailed | None = None
        for round_ in range(self.resume_rounds + 1):
            if round_:
                # Fresh URLs for what S3 lacks; what it has is not sent again.
                listing = self.parts(upload_id)
                for part in listing.get("uploaded", []):
                    etags.setdefault(part["part_number"], part["etag"])
                urls = {p["part_number"]: p["url"] for p in listing.get("parts", [])
                        if p["part_number"] not in etags}
                LOGGER.info("upload %s: resuming %d part(s)", upload_id, len(urls))
            if not urls:
                break
            sent, last = self._send_parts(urls, data, part_bytes, progress)
            etags.update(sent)
            if last is None:
                break
            if not last.transient and last.status != 403:
                raise last  # 403: the URL expired or was refused; fresh ones may do
        expected = set(range(1, int(upload["part_count"]) + 1))
        missing = sorted(expected - set(etags))
        if missing:
            if last is not None:
                raise last
            raise UploadFailed("upload", UPLOAD_INCOMPLETE, f"parts {missing} were not sent")
        return [{"part_number": n, "etag": etags[n]} for n in sorted(etags)]

    def _send_parts(self, urls: dict[int, str], data: bytes, part_bytes: int,
                    progress: Progress | None) -> tuple[dict[int, str], UploadFailed | None]:
        view = memoryview(data)
        results: dict[int, str] = {}
        failure: UploadFailed | None = None

        def one(number: int) -> None:
            nonlocal failure
            chunk = view[(number - 1) * part_bytes: number * part_bytes]
            try:
                results[number] = self._send_part(urls[number], number, chunk, progress)
            except UploadFailed as exc:
                failure = exc

        with ThreadPoolExecutor(max_workers=self.part_workers,
                                thread_name_prefix="upload-part") as pool:
            list(pool.map(one, sorted(urls)))
        return results, failure

    def _send_part(self, url: str, number: int, chunk: memoryview,
                   progress: Progress | None) -> str:
        """PUT one part and return its ETag; retried with backoff on errors worth retrying."""
        for attempt in range(1, self.part_attempts + 1):
            if self.stopping.is_set():
                raise UploadFailed(f"part {number}", CANCELLED, "stopped before it was sent")
            sent = [0]

            def counted(n: int) -> None:
                sent[0] += n
                if progress:
                    progress(n)

            try:
                response = self._s3(f"part {number}", "PUT", url, data=_Body(chunk, counted))
                if response.status_code == 200 and response.headers.get("ETag"):
                    return response.headers["ETag"]
                raise UploadFailed.from_response(f"part {number}", response)
            except UploadFailed as exc:
                if progress and sent[0]:
                    progress(-sent[0])  # the part starts again from its first byte
                if not exc.transient or attempt == self.part_attempts:
                    raise
                LOGGER.info("part %d: %s; retrying", number, exc.message)
                self.stopping.wait(self.retry_delay * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    # --- whole files ------------------------------------------------------------------------
    def prepare(self, path: Path) -> tuple[bytes, str]:
        """The file's bytes and its content type, checked against the server's limits before
        any URL is asked for (and before an oversize file is read)."""
        with _open_regular(path) as file:
            size = os.fstat(file.fileno()).st_size
            head = file.read(formats.SNIFF_BYTES)
            content_type = content_type_of(path, head)
            limits = self.limits()  # a file that cannot be read fails without the network
            if limits is not None:
                limits.check(content_type, size)
            elif size == 0:
                raise UploadFailed("check", errors.EMPTY_UPLOAD, "the file is empty")
            data = head + file.read()
        return data, content_type

    def upload_file(self, path: Path, method: str | None = None,
                    progress: Progress | None = None) -> str:
        """Check, create, send and complete one file; returns its upload id."""
        return self.submit_file(path, method, progress)["upload_id"]

    def submit_file(self, path: Path, method: str | None = None,
                    progress: Progress | None = None) -> dict:
        """Check, create, send and complete one file; returns what complete answered,
        ``{"upload_id", "status"}`` (``queued``, or further along when the job already ran).
        ``method`` None picks what a browser would: PUT, or MULTIPART above the server's
        threshold."""
        path = Path(path)
        data, content_type = self.prepare(path)
        if method is None:
            limits = self.limits()
            method = limits.method_for(len(data)) if limits else PUT
        created = self.create(path.name, content_type, len(data), method)
        upload_id = created["upload_id"]
        try:
            try:
                parts = self.send(created["upload"], data, path.name, progress,
                                  upload_id=upload_id)
            except UploadFailed:
                self._cancel_quietly(upload_id)
                raise
            completed = self.complete(upload_id, parts)
        except UploadFailed as exc:
            exc.upload_id = upload_id
            raise
        return {**completed, "upload_id": upload_id}

    def _cancel_quietly(self, upload_id: str) -> None:
        """A failed send is given up: the server marks it cancelled and aborts any multipart
        upload, so S3 keeps no orphan parts. Best effort: the original error is what counts."""
        try:
            self.cancel(upload_id)
        except UploadFailed as exc:
            LOGGER.info("upload %s not cancelled: %s", upload_id, exc)

    def download(self, variant: dict, target: Path) -> None:
        response = self._s3("download", "GET", variant["url"])
        if response.status_code != 200:
            raise UploadFailed.from_response("download", response)
        target.write_bytes(response.content)

    def save_variants(self, variants: list[dict], folder: Path) -> None:
        """Download each variant of a ``done`` status to ``folder/<name>.<ext>``; each variant
        gets its ``path``."""
        folder.mkdir(parents=True, exist_ok=True)
        for variant in variants:
            path = folder / f"{variant['name']}.{keys.FORMAT_EXTENSIONS[variant['format']]}"
            self.download(variant, path)
            variant["path"] = str(path)

    # --- plumbing -----------------------------------------------------------------------------
    def _call(self, step: str, method: str, path: str, **kwargs) -> requests.Response:
        """One API call. Every route but ``POST /uploads`` is idempotent (complete queues a job
        at most once), so those are retried on no answer, a 5xx or 429, after the server's
        ``Retry-After`` when it gives one; the last answer is returned as it is."""
        url = f"{self.api_url}{path}"
        if self._auth:
            kwargs["headers"] = {**kwargs.get("headers", {}), **self._auth}
        attempts = 1 if (method, path) == ("POST", "/uploads") else self.api_attempts
        for attempt in range(1, attempts + 1):
            try:
                response = self._request(step, method, url, **kwargs)
            except UploadFailed:
                if attempt == attempts or self.stopping.is_set():
                    raise
                delay = self.retry_delay * 2 ** (attempt - 1)
            else:
                if (response.status_code < 500 and response.status_code != 429) \
                        or attempt == attempts or self.stopping.is_set():
                    return response
                delay = _retry_after(response) or self.retry_delay * 2 ** (attempt - 1)
            LOGGER.info("%s %s: retrying in %.1f s", method, path, delay)
            self.stopping.wait(delay)
        raise AssertionError("unreachable")

    def _s3(self, step: str, method: str, url: str, **kwargs) -> requests.Response:
        return self._request(step, method, url, **kwargs)

    def _request(self, step: str, method: str, url: str, **kwargs) -> requests.Response:
        try:
            return self.http.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise UploadFailed.from_network(step, url, exc) from None

    @staticmethod
    def _expect(step: str, response: requests.Response, status: int) -> dict:
        if response.status_code != status:
            raise UploadFailed.from_response(step, response)
        try:
            return response.json()
        except ValueError:
            raise UploadFailed(step, HTTP_ERROR, f"HTTP {status} without a JSON body",
                               response.status_code, response.text) from None


class _Body:
    """Bytes that requests sends with a Content-Length (presigned PUTs sign it, so never
    chunked), read in chunks that report progress."""

    def __init__(self, data: memoryview, progress: Progress | None):
        self._data = data
        self._offset = 0
        self._progress = progress

    def __len__(self) -> int:
        return len(self._data)

    def read(self, size: int = -1) -> bytes:
        size = CHUNK_BYTES if size is None or size < 0 else min(size, CHUNK_BYTES)
        chunk = bytes(self._data[self._offset: self._offset + size])
        self._offset += len(chunk)
        if chunk and self._progress:
            self._progress(len(chunk))
        return chunk


def _session(pool: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool, 10))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@contextlib.contextmanager
def _open_regular(path: Path):
    """The file open for reading; only a regular file (a FIFO or /dev/zero would block or never
    end). Any OS error is the file's failure, one line."""
    try:
        with path.open("rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise UploadFailed("read", errors.SOURCE_MISSING, f"{path}: not a regular file")
            yield file
    except OSError as exc:
        raise UploadFailed("read", errors.SOURCE_MISSING,
                           f"{path}: {exc.strerror or exc}") from None


def _retry_after(response: requests.Response) -> float | None:
    """The server's ``Retry-After`` in seconds (capped: a user is waiting), if it gave one."""
    try:
        return min(float(response.headers["Retry-After"]), MAX_RETRY_AFTER_S)
    except (KeyError, ValueError):
        return None


def _no_such_route(response: requests.Response) -> bool:
    # API Gateway (and chalice local) answer a route they do not have with this 403.
    return response.status_code == 404 or (
        response.status_code == 403 and "Missing Authentication Token" in response.text)


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url
