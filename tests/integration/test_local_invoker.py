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
