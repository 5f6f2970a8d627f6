"""One mapping from exceptions to retry meaning: permanent (dead-letter) or transient (retry)."""

import io

import botocore.exceptions
import pytest
from PIL import Image

from imagepipe import errors
from imagepipe.errors import PermanentError, TransientError, classify


def client_error(code, status):
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject")


@pytest.mark.parametrize("exc, permanent, code", [
    (client_error("NoSuchKey", 404), True, errors.SOURCE_MISSING),
    (client_error("SlowDown", 503), False, errors.S3_UNAVAILABLE),
    (client_error("InternalError", 500), False, errors.S3_UNAVAILABLE),
    (client_error("AccessDenied", 403), False, errors.S3_UNAVAILABLE),
    (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), False, errors.S3_UNAVAILABLE),
    (ConnectionResetError(), False, errors.S3_UNAVAILABLE),
    (MemoryError(), True, errors.TOO_LARGE),
    (RuntimeError("surprise"), False, errors.INTERNAL),
])
def test_classify(exc, permanent, code):
    result = classify(exc)
    assert result.permanent is permanent
    assert result.code == code


def test_job_errors_pass_through():
    error = PermanentError(errors.CORRUPT, "bad")
    assert classify(error) is error
    assert not TransientError(errors.S3_UNAVAILABLE, "x").permanent
    assert error.to_dict() == {"code": "corrupt", "message": "bad"}


def _pillow_failure(data):
    try:
        Image.open(io.BytesIO(data)).load()
    except Exception as exc:
        return exc
    raise AssertionError("Pillow accepted the data")


def test_pillow_failures_are_permanent_with_reason():
    assert classify(_pillow_failure(b"<html>hi</html>")).code == errors.UNSUPPORTED_FORMAT
    out = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(out, "PNG")
    truncated = classify(_pillow_failure(out.getvalue()[:-30]))
    assert truncated.permanent and truncated.code in (errors.TRUNCATED, errors.CORRUPT)
    bomb = Image.DecompressionBombError("too big")
    assert classify(bomb).code == errors.TOO_MANY_PIXELS


def test_invoke_failures_are_always_transient():
    assert errors.invoke_failed(ValueError("x")).to_dict() == {
        "code": errors.INVOKE_FAILED, "message": "ValueError: x"
    }
    # Even a permanent-looking error from the platform is transient: the job is not at fault.
    mapped = errors.invoke_failed(PermanentError("bad_message", "garbled"))
    assert (mapped.code, mapped.permanent) == (errors.INVOKE_FAILED, False)
    same = TransientError(errors.INVOKE_FAILED, "already mapped")
    assert errors.invoke_failed(same) is same


def test_bad_message_is_permanent_and_names_the_decode_failure():
    error = errors.bad_message(ValueError("Expecting value: line 1 column 1"))
    assert isinstance(error, PermanentError)
    assert error.code == errors.BAD_MESSAGE
    assert error.message == "ValueError: Expecting value: line 1 column 1"


def test_bad_message_keeps_a_permanent_decode_error():
    schema = PermanentError(errors.UNKNOWN_SCHEMA, "version 9")
    assert errors.bad_message(schema) is schema
    # a transient error from the decoder still becomes permanent: the body never changes
    assert errors.bad_message(TransientError(errors.INTERNAL, "x")).permanent
