"""Invokers: LambdaInvoker against botocore's Stubber (no network), LocalInvoker's pool recovery."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from bridge.invokers import LambdaInvoker, LocalInvoker, make_invoker
from imagepipe import keys
from imagepipe.errors import INVOKE_FAILED, TransientError
from imagepipe.messages import Invocation, InvocationResult, ResizeJob
from imagepipe.settings import Settings

FUNCTION = "imagepipe-resize-test"
SETTINGS = Settings(bucket="photos", invoker="lambda", resize_function=FUNCTION)


def _invocation(bucket: str = "photos") -> Invocation:
    job = ResizeJob.for_upload(keys.new_upload_id(), bucket, "image/jpeg")
    return Invocation(job, 1, 4)


def _payload(obj) -> StreamingBody:
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return StreamingBody(io.BytesIO(data), len(data))


def _result(invocation: Invocation, status: str = "done", **extra) -> dict:
    return InvocationResult(
        job_id=invocation.job.job_id, upload_id=invocation.job.upload_id, status=status, **extra
    ).to_dict()


@pytest.fixture
def stubbed():
    client = boto3.client("lambda", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield LambdaInvoker(SETTINGS, client=client), stubber
        stubber.assert_no_pending_responses()


def test_lambda_result_is_returned(stubbed):
    invoker, stubber = stubbed
    invocation = _invocation()
    stubber.add_response(
        "invoke",
        {"StatusCode": 200, "Payload": _payload(_result(invocation, duration_ms=12))},
        expected_params={
            "FunctionName": FUNCTION,
            "InvocationType": "RequestResponse",
            "Payload": json.dumps(invocation.to_dict()).encode(),
        },
    )

    result = invoker.invoke(invocation)

    assert (result.status, result.job_id, result.duration_ms) == ("done", invocation.job.job_id, 12)


@pytest.mark.parametrize("status", ["failed", "retry"])
def test_lambda_failed_and_retry_results_are_passed_through(stubbed, status):
    # The function decided; the bridge settles on its answer, not on the transport.
    invoker, stubber = stubbed
    invocation = _invocation()
    error = {"code": "unsupported_format", "message": "not an image"}
    stubber.add_response(
        "invoke", {"StatusCode": 200, "Payload": _payload(_result(invocation, status, error=error))}
    )

    result = invoker.invoke(invocation)

    assert (result.status, result.error) == (status, error)


def test_lambda_function_error_is_transient_with_its_type_and_message(stubbed):
    invoker, stubber = stubbed
    stubber.add_response(
        "invoke",
        {
            "StatusCode": 200,
            "FunctionError": "Unhandled",
            "Payload": _payload({"errorType": "Runtime.OutOfMemory",
                                 "errorMessage": "Runtime exited with error: signal: killed"}),
        },
    )

    with pytest.raises(TransientError) as caught:
        invoker.invoke(_invocation())

    assert caught.value.code == INVOKE_FAILED
    assert "Unhandled" in caught.value.message
    assert "Runtime.OutOfMemory" in caught.value.message
    assert "signal: killed" in caught.value.message


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        ("TooManyRequestsException", 429),
        ("ServiceException", 500),
        ("ResourceNotFoundException", 404),  # an operator deploys it, then retries recover
        ("AccessDeniedException", 403),  # an operator fixes the policy
    ],
)
def test_lambda_client_errors_are_transient(stubbed, code, http_status):
    invoker, stubber = stubbed
    stubber.add_client_error("invoke", service_error_code=code, service_message="nope",
                             http_status_code=http_status)

    with pytest.raises(TransientError) as caught:
        invoker.invoke(_invocation())

    assert caught.value.code == INVOKE_FAILED
    assert code in caught.value.message


@pytest.mark.parametrize(
    "payload",
    [b"not json", json.dumps({"v": 1, "status": "done"}).encode(), json.dumps([1, 2]).encode()],
)
def test_lambda_unreadable_result_is_transient(stubbed, payload):
    invoker, stubber = stubbed
    stubber.add_response("invoke", {"StatusCode": 200, "Payload": _payload(payload)})

    with pytest.raises(TransientError) as caught:
        invoker.invoke(_invocation())

    assert caught.value.code == INVOKE_FAILED
    assert "unreadable result" in caught.value.message


def test_lambda_result_for_another_job_is_transient(stubbed):
    invoker, stubber = stubbed
    stubber.add_response("invoke", {"StatusCode": 200, "Payload": _payload(_result(_invocation()))})

    with pytest.raises(TransientError, match="answered for job"):
        invoker.invoke(_invocation())


def test_lambda_connection_error_is_transient():
    class Unreachable:  # what botocore raises when the endpoint is down (Stubber cannot)
        def invoke(self, **_):
            raise EndpointConnectionError(endpoint_url="https://lambda.us-east-1.amazonaws.com")

    with pytest.raises(TransientError) as caught:
        LambdaInvoker(SETTINGS, client=Unreachable()).invoke(_invocation())

    assert caught.value.code == INVOKE_FAILED
    assert "Could not connect" in caught.value.message


def test_lambda_client_is_made_lazily():
    invoker = LambdaInvoker(SETTINGS)
    assert invoker._client is None
    invoker.close()


def test_make_invoker_follows_settings():
    lambda_invoker = make_invoker(SETTINGS)
    assert isinstance(lambda_invoker, LambdaInvoker)
    local_invoker = make_invoker(Settings(bucket="photos", workers=1))
    try:
        assert isinstance(local_invoker, LocalInvoker)
    finally:
        local_invoker.close()
