"""The backfill scan's memory does not grow with the number of manifests: the listing is
streamed page by page and at most a window of manifests is in flight.

S3 is a moto server in its own process (as the local stack runs it), so tracemalloc's peak is
the scan's own memory, not moto's copies of the bucket."""

from __future__ import annotations

import json
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from imagepipe import keys
from imagepipe.aws import s3_client
from imagepipe.settings import Settings
from imagepipe.spec import DEFAULT_VARIANTS
from imagepipe_dev.bench.backfill import manifest_for
from imagepipe_dev.bench.bridge import _start_moto
from imagepipe_dev.stack import free_port
from imagepipe_tools.backfill import Backfill

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def s3_server():
    port = free_port()
    moto = _start_moto(port)
    try:
        settings = Settings(bucket=f"memory-{uuid.uuid4().hex[:8]}",
                            s3_endpoint_url=f"http://127.0.0.1:{port}")
        s3 = s3_client(settings)
        s3.create_bucket(Bucket=settings.bucket)
        yield s3, settings.bucket
    finally:
        moto.terminate()
        moto.wait(10)


def _write_manifests(s3, bucket: str, count: int) -> None:
    def one(_):
        upload_id = keys.new_upload_id()
        body = json.dumps(manifest_for(upload_id, DEFAULT_VARIANTS).to_dict()).encode()
        s3.put_object(Bucket=bucket, Key=keys.manifest_key(upload_id), Body=body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def _peak_while_scanning(s3, bucket: str) -> tuple[int, int]:
    # Listing pages of 100 keys: both runs hold the steady state (several pages read).
    run = Backfill(s3, bucket, DEFAULT_VARIANTS, "pillow", dry_run=True, page_size=100)
    tracemalloc.start()
    try:
        summary = run.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return summary.scanned, peak


def test_peak_memory_is_flat_from_500_to_5000_manifests(s3_server):
    s3, bucket = s3_server
    _write_manifests(s3, bucket, 500)
    scanned, small = _peak_while_scanning(s3, bucket)
    assert scanned == 500
    _write_manifests(s3, bucket, 4500)
    scanned, large = _peak_while_scanning(s3, bucket)
    assert scanned == 5000
    # Ten times the manifests, about the same peak. Keeping every key or finding would add
    # well over a megabyte (a key alone is ~100 bytes as a str, a finding several hundred).
    assert large < small * 1.25 + 256 * 1024, (small, large)
