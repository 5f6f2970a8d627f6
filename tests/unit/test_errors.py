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
    # A decoder's complaint means bad data only where it was raised decoding (load.py).
    truncated = errors.decode_error(_pillow_failure(out.getvalue()[:-30]))
    assert truncated.permanent and truncated.code in (errors.TRUNCATED, errors.CORRUPT)
    bomb = Image.DecompressionBombError("too big")
    assert classify(bomb).code == errors.TOO_MANY_PIXELS
    assert errors.decode_error(bomb).code == errors.TOO_MANY_PIXELS


def _pillow_save_failure():
    try:
        Image.new("RGB", (8, 8)).save(io.BytesIO(), "JPEG", qtables="no such preset")
    except Exception as exc:
        return exc
    raise AssertionError("Pillow saved it")


def test_an_encoder_failure_is_not_the_uploads_fault():
    exc = _pillow_save_failure()
    assert isinstance(exc, ValueError)  # raised inside Pillow, a type its decoders raise too
    error = classify(exc)
    assert (error.permanent, error.code) == (False, errors.INTERNAL)


@pytest.mark.parametrize("text, code", [
    ("Premature end of JPEG file", errors.TRUNCATED),
    ("image file is truncated (3 bytes not processed)", errors.TRUNCATED),
    ("broken data stream when reading image file", errors.CORRUPT),
])
def test_one_rule_for_truncated_or_corrupt_data(text, code):
    error = errors.data_error(text)
    assert error.permanent and error.code == code and text in error.message
    assert errors.data_error("unexpected end", truncated=True).code == errors.TRUNCATED


def test_decode_error_leaves_other_exceptions_to_classify():
    assert errors.decode_error(ValueError("ours, not Pillow's")) is None
    assert errors.decode_error(RuntimeError("x")) is None


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
