"""Presigned S3 multipart uploads: the part plan and the S3 calls around it.

The client PUTs byte range ``[(n-1)*P, min(n*P, size))`` of its file to part ``n``'s presigned
URL. Each URL signs that part's exact ``Content-Length``, so S3 takes no part of another size and
the completed object is exactly the declared size (which the API bounds by the upload limit).
moto checks no signature, so the upload is still verified server-side once completed.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagepipe.errors import aws_error_code

# S3 answers these when a part list does not fit the upload: an ETag that is not the part's,
# parts out of order, or a part under 5 MiB that is not the last.
_REJECTED_PART_CODES = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall"})
_LIST_PAGE = 1000


class MultipartGone(Exception):
    """S3 no longer knows the multipart upload: completed or aborted."""


class PartsRejected(Exception):
    """S3 refused to complete the upload from the given parts (``code`` is S3's)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PartPlan:
    size: int
    part_bytes: int

    @property
    def count(self) -> int:
        return max(1, -(-self.size // self.part_bytes))

    def size_of(self, part_number: int) -> int:
        if not 1 <= part_number <= self.count:
            raise ValueError(f"part {part_number} is not in 1..{self.count}")
        start = (part_number - 1) * self.part_bytes
        return min(start + self.part_bytes, self.size) - start

    @property
    def numbers(self) -> range:
        return range(1, self.count + 1)


class MultipartUploads:
    """The S3 side of one bucket's multipart uploads. ``s3`` is a boto3 client (SigV4)."""

    def __init__(self, s3, bucket: str, expires_in: int):
        self._s3 = s3
        self._bucket = bucket
        self._expires_in = expires_in

    def start(self, key: str, content_type: str) -> str:
        """Create the multipart upload; returns S3's UploadId."""
        response = self._s3.create_multipart_upload(
            Bucket=self._bucket, Key=key, ContentType=content_type
        )
        return response["UploadId"]

    def part_url(self, key: str, s3_upload_id: str, part_number: int, content_length: int) -> str:
        return self._s3.generate_presigned_url(
            "upload_part",
            Params={"Bucket": self._bucket, "Key": key, "UploadId": s3_upload_id,
                    "PartNumber": part_number, "ContentLength": content_length},
            ExpiresIn=self._expires_in,
        )

    def uploaded_parts(self, key: str, s3_upload_id: str) -> list[dict]:
        """``[{"part_number", "etag", "size"}]`` of every part S3 holds, by part number."""
        parts: list[dict] = []
        marker = 0
        while True:
            try:
                response = self._s3.list_parts(
                    Bucket=self._bucket, Key=key, UploadId=s3_upload_id,
                    MaxParts=_LIST_PAGE, PartNumberMarker=marker,
                )
            except Exception as exc:
                _raise_if_gone(exc)
                raise
            page = response.get("Parts", [])
            parts.extend({"part_number": p["PartNumber"], "etag": p["ETag"], "size": p["Size"]}
                         for p in page)
            if not response.get("IsTruncated") or not page:
                return sorted(parts, key=lambda p: p["part_number"])
            marker = int(response.get("NextPartNumberMarker") or page[-1]["PartNumber"])

    def complete(self, key: str, s3_upload_id: str, parts: list[dict]) -> None:
        """Complete from ``[{"part_number", "etag"}]`` in part order."""
        try:
            self._s3.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=s3_upload_id,
                MultipartUpload={"Parts": [
                    {"PartNumber": p["part_number"], "ETag": p["etag"]}
                    for p in sorted(parts, key=lambda p: p["part_number"])
                ]},
            )
        except Exception as exc:
            _raise_if_gone(exc)
            code = aws_error_code(exc)
            if code in _REJECTED_PART_CODES:
                message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
                raise PartsRejected(code, message or code) from None
            raise

    def abort(self, key: str, s3_upload_id: str) -> None:
        """Abort and free the parts; an upload S3 no longer knows is already as good as aborted."""
        try:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=s3_upload_id)
        except Exception as exc:
            if aws_error_code(exc) != "NoSuchUpload":
                raise


def _raise_if_gone(exc: BaseException) -> None:
    if aws_error_code(exc) == "NoSuchUpload":
        raise MultipartGone(str(exc)) from None
