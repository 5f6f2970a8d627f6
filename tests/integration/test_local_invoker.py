"""LocalInvoker against a moto server: real worker processes running the core resize job."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from bridge.invokers import LocalInvoker
from imagepipe import keys
from imagepipe.aws import s3_client
from imagepipe.errors import INVOKE_FAILED, TransientError
from imagepipe.messages import Invocation, ResizeJob
from imagepipe.settings import Settings


def _invocation(bucket: str) -> Invocation:
    job = ResizeJob.for_upload(keys.new_upload_id(), bucket, "image/jpeg")
    return Invocation(job, 1, 4)


@pytest.mark.timeout(60)
def test_local_invoker_replaces_a_broken_pool(moto_endpoint, bucket_name):
    settings = Settings(bucket=bucket_name, s3_endpoint_url=moto_endpoint, workers=1)
    s3_client(settings).create_bucket(Bucket=bucket_name)
    # The jobs' originals are missing: a fast, real answer from the core in a worker process.
    invoker = LocalInvoker(settings)
    try:
        first = invoker.invoke(_invocation(bucket_name))
        assert first.error["code"] == "source_missing"
        [worker] = multiprocessing.active_children()
        os.kill(worker.pid, signal.SIGKILL)  # as the OOM killer would
        worker.join(10)
        time.sleep(0.2)  # let the pool's manager thread notice

        with pytest.raises(TransientError) as caught:
            invoker.invoke(_invocation(bucket_name))
        assert caught.value.code == INVOKE_FAILED

        assert invoker.invoke(_invocation(bucket_name)).status == "failed"  # from a fresh pool
    finally:
        invoker.close()


@pytest.mark.timeout(120)
def test_a_rerender_runs_in_a_worker_process_against_s3_over_http(moto_endpoint, bucket_name):
    """The rerender path end to end in a worker: S3's If-Match on the manifest over HTTP (the
    moto server, not the in-process mock), fingerprinted keys, the old object deleted."""
    import dataclasses
    import io

    from PIL import Image

    from imagepipe.fingerprint import spec_fingerprints
    from imagepipe.spec import parse_variants
    from imagepipe.status import StatusStore

    spec = [{"name": "md", "width": 128, "quality": 90}, {"name": "sm", "width": 64}]
    settings = Settings(bucket=bucket_name, s3_endpoint_url=moto_endpoint, workers=1,
                        imaging_engine="pillow", variants=parse_variants(spec))
    changed = dataclasses.replace(settings, variants=parse_variants(
        [dict(spec[0], quality=40), spec[1]]))
    s3 = s3_client(settings)
    s3.create_bucket(Bucket=bucket_name)
    upload_id = keys.new_upload_id()
    image = io.BytesIO()
    Image.effect_noise((400, 300), 60).convert("RGB").save(image, "JPEG", quality=95)
    s3.put_object(Bucket=bucket_name, Key=keys.original_key(upload_id), Body=image.getvalue())
    job = ResizeJob.for_upload(upload_id, bucket_name, "image/jpeg")
    invokers = [LocalInvoker(settings), LocalInvoker(changed)]
    try:
        assert invokers[0].invoke(Invocation(job, 1, 3)).status == "done"
        store = StatusStore(s3, bucket_name)
        before, read_etag = store.get_manifest_with_etag(upload_id)
        rerender = dataclasses.replace(job, rerender=("md", "sm"))

        result = invokers[1].invoke(Invocation(rerender, 1, 3))

        assert result.status == "done", result
        after = store.get_manifest(upload_id)
        assert after.revision == 2 and result.variants == after.variants
        fp = spec_fingerprints(changed.variants, "pillow")["md"]
        assert after.variant("md").key == keys.variant_key(upload_id, "md", "jpeg", fp)
        assert after.variant("sm") == before.variant("sm")  # fresh: not made again
        listed = s3.list_objects_v2(Bucket=bucket_name, Prefix=keys.variants_prefix(upload_id))
        assert sorted(o["Key"] for o in listed["Contents"]) == sorted(
            [after.variant("md").key, before.variant("sm").key])
        assert not store.replace_manifest(before, read_etag)  # If-Match holds over HTTP too
        assert store.get_manifest(upload_id) == after
    finally:
        for invoker in invokers:
            invoker.close()
