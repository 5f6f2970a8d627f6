"""docs/asyncapi.yaml is the published contract of the queue, the events and the callbacks.

It is checked here against the golden messages and the decoders that own the schemas
(imagepipe/messages.py), so a consumer written in another language from it reads what we send.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from bridge.callbacks import ROUTING_KEYS, callback_body
from imagepipe import settings, spec
from imagepipe.errors import PermanentError
from imagepipe.messages import JOB_TYPE, RERENDER_JOB_TYPE, ResizeJob, ResultEvent

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
DOC = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
SCHEMAS = DOC["components"]["schemas"]
JOBS = sorted(GOLDEN.glob("resize_job*.v1.json"))
EVENTS = sorted(GOLDEN.glob("result_event*.v1.json"))


def validator(name: str) -> jsonschema.Draft7Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}
    jsonschema.Draft7Validator.check_schema(root)
    return jsonschema.Draft7Validator(root)


def golden(path: Path) -> dict:
    return json.loads(path.read_text())


def refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_is_asyncapi_3_and_every_reference_resolves():
    assert DOC["asyncapi"] == "3.0.0"
    assert JOBS and EVENTS
    for ref in refs(DOC):
        node = DOC
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]  # KeyError: a dangling reference


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_golden_jobs_are_valid_and_fully_documented(path):
    job = golden(path)
    validator("ResizeJob").validate(job)
    assert set(job) <= set(SCHEMAS["ResizeJob"]["properties"])


@pytest.mark.parametrize("path", EVENTS, ids=lambda p: p.name)
def test_golden_events_and_their_callback_bodies_are_valid_and_fully_documented(path):
    event = golden(path)
    validator("ResultEvent").validate(event)
    assert set(event) <= set(SCHEMAS["ResultEvent"]["properties"])
    for variant in event["variants"]:
        assert set(variant) <= set(SCHEMAS["Variant"]["properties"])
    body = json.loads(callback_body(ResultEvent.from_dict(event)))
    validator("CallbackBody").validate(body)
    if "callback_url" in event:
        with pytest.raises(jsonschema.ValidationError):
            validator("CallbackBody").validate(event)


# Always sent, but a decoder does without them: ``type`` follows from ``status``, and a missing
# ``error`` reads as null.
DEFAULTED = {"ResizeJob": set(), "ResultEvent": {"type", "error"}}


@pytest.mark.parametrize("schema, message, path", [
    ("ResizeJob", ResizeJob, GOLDEN / "resize_job_owner.v1.json"),
    ("ResultEvent", ResultEvent, EVENTS[-1])])
def test_required_fields_are_exactly_those_the_decoder_requires(schema, message, path):
    full = golden(path)
    required = set(SCHEMAS[schema]["required"])
    for name in full:
        partial = {k: v for k, v in full.items() if k != name}
        if name in required - DEFAULTED[schema]:
            with pytest.raises(PermanentError):
                message.from_dict(partial)
        else:
            message.from_dict(partial)
            if name not in required:
                validator(schema).validate(partial)


@pytest.mark.parametrize("change", [
    {"upload_id": "not-an-id"}, {"v": 2}, {"bucket": 7}, {"callback_url": 42}])
def test_the_schema_refuses_what_the_decoder_refuses(change):
    job = {**golden(JOBS[0]), **change}
    with pytest.raises(PermanentError):
        ResizeJob.from_dict(job)
    with pytest.raises(jsonschema.ValidationError):
        validator("ResizeJob").validate(job)


def test_names_match_the_code():
    channels = DOC["channels"]
    assert channels["resizeJobs"]["address"] == settings.default("resize_queue")
    assert channels["resizeDeadLetters"]["address"] == settings.default("dead_letter_queue")
    results = channels["resultEvents"]
    assert results["bindings"]["amqp"]["exchange"]["name"] == settings.default("results_exchange")
    documented = {f"{subject}.{outcome}" for subject in results["parameters"]["subject"]["enum"]
                  for outcome in results["parameters"]["outcome"]["enum"]}
    sent = {ResultEvent(job_id="", upload_id="", status=status, rerender=rerender).routing_key
            for status in ("done", "failed") for rerender in (False, True)}
    assert sent <= documented and set(ROUTING_KEYS) <= sent
    job_message = DOC["components"]["messages"]["ResizeJob"]
    assert job_message["bindings"]["amqp"]["messageType"] == JOB_TYPE
    assert channels["rerenderJobs"]["address"] == settings.default("rerender_queue")
    rerender_message = DOC["components"]["messages"]["RerenderJob"]
    assert rerender_message["bindings"]["amqp"]["messageType"] == RERENDER_JOB_TYPE
    assert set(SCHEMAS["Variant"]["properties"]["format"]["enum"]) == set(spec.OUTPUT_FORMATS)
