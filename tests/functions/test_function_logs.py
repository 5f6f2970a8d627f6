"""Both functions' log lines name their upload and job (``imagepipe.logs``).

Each app module is its function's entry point: loading it puts the context's fields on the root
logger's handlers, whoever formats them (on Lambda, the runtime's JSON formatter; here, pytest's
capture handler). The lines checked below pass no ``extra=``: their fields come from the context
that the handler (upload) or the core (resize) sets.
"""

import logging

from imagepipe import keys, logs, resize
from imagepipe.errors import S3_UNAVAILABLE, TransientError
from imagepipe.messages import Invocation, ResizeJob
from imagepipe.settings import Settings

from .api_helpers import BMP, JPEG, complete, create, upload
from .conftest import load_app_module


def _lines(caplog, text: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if text in record.getMessage()]


def test_upload_function_lines_carry_the_upload_and_job_ids(make_api, s3_mock, settings,
                                                            caplog):
    caplog.set_level(logging.INFO)
    api = make_api(settings)
    queued = create(api)
    upload(s3_mock, queued, JPEG)
    rejected = create(api)
    upload(s3_mock, rejected, BMP)

    assert complete(api, queued).status_code == 202
    assert complete(api, rejected).status_code == 422

    [enqueued] = _lines(caplog, "enqueued as job")
    assert (enqueued.upload_id, enqueued.job_id) == (queued, queued)
    [refused] = _lines(caplog, "rejected")  # logged by the core; the route set the context
    assert refused.upload_id == rejected
    assert logs.fields(refused) == {"upload_id": rejected}


def test_resize_function_lines_carry_the_job_and_upload_ids(s3_mock, chalice_client, caplog,
                                                            monkeypatch):
    s3, bucket = s3_mock
    caplog.set_level(logging.INFO)
    client = chalice_client(load_app_module("resize"), Settings(bucket=bucket))
    upload_id = keys.new_upload_id()
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=b"not read")

    def slow_s3(job, runtime):
        raise TransientError(S3_UNAVAILABLE, "S3 answered 503 SlowDown")

    monkeypatch.setattr(resize, "_make_variants", slow_s3)
    job = ResizeJob.for_upload(upload_id, bucket, "image/jpeg")
    result = client.lambda_.invoke("resize", Invocation(job, 1, 3).to_dict()).payload

    assert result["status"] == "retry"
    [retry] = _lines(caplog, "(will retry)")
    assert (retry.job_id, retry.upload_id) == (job.job_id, upload_id)
    line = logs.JsonFormatter().format(retry)
    assert f'"job_id": "{job.job_id}"' in line and f'"upload_id": "{upload_id}"' in line
