"""What a first render and a rerender share: reading the original, storing the variants made of
it, and deleting the objects a new manifest no longer names."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from imagepipe import delivery, keys
from imagepipe.errors import TOO_LARGE, PermanentError
from imagepipe.formats import FORMAT_TO_MIME
from imagepipe.imaging import RenderedVariant
from imagepipe.messages import ResizeJob, VariantInfo
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)


def read_original(s3, settings: Settings, job: ResizeJob) -> bytes:
    """The original's bytes: exactly the object that was verified when the job names its ETag."""
    pinned = {"IfMatch": job.source_etag} if job.source_etag else {}
    obj = s3.get_object(Bucket=job.bucket, Key=job.source_key, **pinned)
    size = obj.get("ContentLength", 0)
    if size > settings.max_upload_bytes:
        raise PermanentError(
            TOO_LARGE, f"original is {size} bytes, over the limit of {settings.max_upload_bytes}"
        )
    return obj["Body"].read()


def store_variants(s3, settings: Settings, job: ResizeJob, rendered: Iterable[RenderedVariant],
                   fingerprints: Mapping[str, str], issued_at: str, *,
                   under_fingerprint: bool) -> tuple[VariantInfo, ...]:
    """Write each variant and describe it. ``under_fingerprint`` (a rerender): each goes to its
    fingerprint's folder, never over an object the current manifest names."""
    infos = []
    for variant in rendered:
        fingerprint = fingerprints[variant.name]
        key = keys.variant_key(job.upload_id, variant.name, variant.format,
                               fingerprint if under_fingerprint else None)
        s3.put_object(
            Bucket=job.bucket,
            Key=key,
            Body=variant.data,
            ContentType=FORMAT_TO_MIME[variant.format],
            **delivery.object_headers(settings, job.filename, variant.name, variant.format),
        )
        infos.append(VariantInfo(
            name=variant.name,
            key=key,
            width=variant.width,
            height=variant.height,
            format=variant.format,
            bytes=len(variant.data),
            url=delivery.variant_url(settings, key, issued_at),
            fingerprint=fingerprint,
        ))
    return tuple(infos)


def delete_objects(s3, bucket: str, object_keys: Iterable[str]) -> None:
    """Delete what the manifest no longer names. Best effort: the manifest has moved on, so a
    failure leaves an unreferenced object behind (logged), not a broken upload."""
    for key in object_keys:
        try:
            s3.delete_object(Bucket=bucket, Key=key)
        except Exception:
            LOGGER.warning("could not delete superseded variant %s", key, exc_info=True)
