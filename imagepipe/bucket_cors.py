"""The upload bucket's CORS rule: which browser origins may send bytes straight to S3 (the API's own
CORS is ``imagepipe.cors``).

One rule, built here for every place that sets it: the local stack (``put_bucket_cors`` on
moto) and the cloud stack (the deploy's package step renders it into the bucket's
``CorsConfiguration`` in ``infra/stack.yaml``, which says only when there is one). Origins
come from the stage's ``allowed_origins``; only the methods a presigned upload uses are
allowed, and ``ETag`` / ``Location`` are exposed because browser uploaders read them
(multipart needs each part's ETag; Uppy stalls without it).
"""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urlsplit

from imagepipe.errors import ConfigError

UPLOAD_METHODS = ("PUT", "POST")
EXPOSED_HEADERS = ("ETag", "Location")
# Presigned URLs sign Content-Type, checksums and x-amz-* headers; which ones a client sends
# depends on the upload mode, and the signature (not CORS) is what guards them.
ALLOWED_HEADERS = ("*",)
MAX_AGE_S = 3000
RULE_ID = "imagepipe-browser-uploads"


def validated_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """Each origin as ``scheme://host[:port]``; a wildcard, a path or a bad scheme is an error."""
    checked = []
    for origin in origins:
        parts = urlsplit(origin)
        if (parts.scheme not in ("http", "https") or not parts.hostname or "*" in origin
                or parts.path not in ("", "/") or parts.query or parts.fragment
                or parts.username or parts.password):
            raise ConfigError(f"allowed_origins: {origin!r} is not an origin such as "
                              "https://photos.example.com (no wildcard, path or credentials)")
        checked.append(origin)
    return normalised_origins(checked)


def normalised_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """The origins as a browser sends them (no trailing slash), each once, unchecked."""
    return tuple(dict.fromkeys(origin.rstrip("/") for origin in origins))


def s3_cors_configuration(origins: Iterable[str]) -> dict | None:
    """The ``CORSConfiguration`` of ``put_bucket_cors``; None when no origin is allowed."""
    allowed = validated_origins(origins)
    if not allowed:
        return None
    return {"CORSRules": [{
        "ID": RULE_ID,
        "AllowedOrigins": list(allowed),
        "AllowedMethods": list(UPLOAD_METHODS),
        "AllowedHeaders": list(ALLOWED_HEADERS),
        "ExposeHeaders": list(EXPOSED_HEADERS),
        "MaxAgeSeconds": MAX_AGE_S,
    }]}


def cloudformation_cors_configuration(allowed_origins) -> dict:
    """The same rule as an ``AWS::S3::Bucket`` ``CorsConfiguration`` (CloudFormation spells the
    fields differently). ``allowed_origins`` is the template's value for them, such as
    ``{"Ref": "AllowedOrigins"}``: the deploy checks the stage's origins when it sets that."""
    return {"CorsRules": [{
        "Id": RULE_ID,
        "AllowedOrigins": allowed_origins,
        "AllowedMethods": list(UPLOAD_METHODS),
        "AllowedHeaders": list(ALLOWED_HEADERS),
        "ExposedHeaders": list(EXPOSED_HEADERS),
        "MaxAge": MAX_AGE_S,
    }]}
