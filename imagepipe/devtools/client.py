"""A client of the upload API that behaves as a browser does: ask for a presigned upload, send the
bytes straight to S3 (the API never carries them), call ``complete``, poll the status."""

from __future__ import annotations

import mimetypes
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

TERMINAL = ("done", "failed")


class UploadFailed(RuntimeError):
    def __init__(self, step: str, status: int, body: str):
        super().__init__(f"{step}: HTTP {status}: {body[:300]}")
        self.step = step
        self.status = status
        self.body = body


@dataclass
class UploadOutcome:
    path: Path
    upload_id: str | None = None
    status: str = "not started"
    variants: list[dict] = field(default_factory=list)
    error: dict | None = None
    seconds: float = 0.0


class UploadClient:
    def __init__(self, api_url: str, session: requests.Session | None = None, timeout: float = 30):
        self.api_url = api_url.rstrip("/")
        self.http = session or requests.Session()
        self.timeout = timeout

    def create(self, filename: str, content_type: str, size: int, method: str = "POST") -> dict:
        response = self.http.post(f"{self.api_url}/uploads", timeout=self.timeout, json={
            "filename": filename, "content_type": content_type, "size": size, "method": method,
        })
        if response.status_code != 201:
            raise UploadFailed("create", response.status_code, response.text)
        return response.json()

    def send(self, upload: dict, data: bytes, filename: str) -> None:
        """Send the bytes to S3 as the presigned upload says (form POST or PUT)."""
        if upload["method"] == "POST":
            fields = upload["fields"]
            # S3 wants the file as the last form field; requests puts files after data.
            response = self.http.post(upload["url"], data=fields, timeout=self.timeout,
                                      files={"file": (filename, data, fields.get("Content-Type"))})
        else:
            response = self.http.put(upload["url"], data=data, headers=upload["headers"],
                                     timeout=self.timeout)
        if response.status_code not in (200, 201, 204):
            raise UploadFailed("upload to S3", response.status_code, response.text)

    def complete(self, upload_id: str) -> dict:
        response = self.http.post(f"{self.api_url}/uploads/{upload_id}/complete", timeout=self.timeout)
        if response.status_code != 202:
            raise UploadFailed("complete", response.status_code, response.text)
        return response.json()

    def status(self, upload_id: str) -> dict:
        response = self.http.get(f"{self.api_url}/uploads/{upload_id}", timeout=self.timeout)
        if response.status_code != 200:
            raise UploadFailed("status", response.status_code, response.text)
        return response.json()

    def wait(self, upload_id: str, timeout: float = 120, interval: float = 0.25) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(upload_id)
            if current["status"] in TERMINAL or time.monotonic() > deadline:
                return current
            time.sleep(interval)

    def upload_file(self, path: Path, method: str = "POST") -> str:
        data = path.read_bytes()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        created = self.create(path.name, content_type, len(data), method)
        self.send(created["upload"], data, path.name)
        self.complete(created["upload_id"])
        return created["upload_id"]

    def download(self, variant: dict, target: Path) -> None:
        response = self.http.get(variant["url"], timeout=self.timeout)
        response.raise_for_status()
        target.write_bytes(response.content)
