"""The OpenAPI document is valid, lists exactly the app's routes, and what the app answers (and
the document's own examples) fits the documented schemas."""

import dataclasses
import json
import re

import pytest
import requests
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from imagepipe import keys
from imagepipe.settings import S3_MIN_PART_BYTES
from imagepipe.spec import OUTPUT_FORMATS
from tests.conftest import CALLBACK_SECRET

from .api_helpers import JPEG, post_json
from .conftest import FUNCTIONS, load_app_module

DOCUMENT = json.loads((FUNCTIONS / "upload" / "chalicelib" / "openapi.json").read_text())
# Not the API: CORS preflights (documented in info.description) and the demo page (its HTML,
# script and style).
NOT_DOCUMENTED = {("/", "GET"), ("/app.js", "GET"), ("/app.css", "GET")}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head"}


def _schema_validator(schema: dict) -> Draft202012Validator:
    # $refs point into the document: validate with the document's components at the root.
    return Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def _documented_response(path: str, method: str, status: int) -> dict:
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, not documented"
    return responses[str(status)]


def test_document_is_valid_openapi_3_1():
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


def test_variant_formats_are_the_output_formats():
    variant = DOCUMENT["components"]["schemas"]["Variant"]["properties"]["format"]
    assert variant["enum"] == list(OUTPUT_FORMATS)


def test_document_lists_exactly_the_routes_of_the_app():
    app = load_app_module("upload").app
    routes = {(path, method) for path, views in app.routes.items() for method in views
              if method != "OPTIONS"} - NOT_DOCUMENTED
    documented = {(path, method.upper()) for path, item in DOCUMENT["paths"].items()
                  for method in item if method in HTTP_METHODS}

    assert routes == documented
    # and every route answers a CORS preflight
    assert all("OPTIONS" in app.routes[path] for path, _ in routes)


def test_document_examples_fit_their_schemas():
    checked = 0
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            bodies = [operation.get("requestBody", {})] + list(operation["responses"].values())
            for body in bodies:
                content = body.get("content", {}).get("application/json", {})
                if "example" in content:
                    _schema_validator(content["schema"]).validate(content["example"])
                    checked += 1
    assert checked >= 7


@pytest.fixture
def openapi_api(make_api, settings):
    return make_api(dataclasses.replace(settings, multipart_part_bytes=S3_MIN_PART_BYTES,
                                        callback_secret=CALLBACK_SECRET, callback_allow_private=True))


def _conforms(response, method: str, path: str) -> dict:
    """Assert the response is documented for its route and status, and fits its schema."""
    route = re.sub(r"[0-9a-f]{32}", "{upload_id}", path)
    documented = _documented_response(route, method, response.status_code)
    schema = documented["content"]["application/json"]["schema"]
    assert response.headers["Content-Type"] == "application/json"
    _schema_validator(schema).validate(response.json_body)
    return response.json_body


def test_what_the_app_answers_fits_the_document(openapi_api, s3_mock):
    api = openapi_api
    s3, bucket = s3_mock
    _conforms(api.http.get("/limits"), "GET", "/limits")
    _conforms(api.http.get("/openapi.json"), "GET", "/openapi.json")
    created = {}
    for method in ("POST", "PUT", "MULTIPART"):
        response = post_json(api, "/uploads", {
            "filename": "a.jpg", "content_type": "image/jpeg", "size": len(JPEG),
            "method": method, "callback_url": "http://127.0.0.1:9/hook"})
        created[method] = _conforms(response, "POST", "/uploads")
    _conforms(post_json(api, "/uploads", {"filename": "a.jpg"}), "POST", "/uploads")
    _conforms(post_json(api, "/uploads", {"filename": "a.jpg", "content_type": "image/jpeg",
                                          "size": 1, "callback_url": "ftp://x"}), "POST", "/uploads")

    multipart = created["MULTIPART"]
    mp_id = multipart["upload_id"]
    parts_path = f"/uploads/{mp_id}/parts"
    _conforms(api.http.post(parts_path), "POST", parts_path)
    _conforms(post_json(api, parts_path, {"part_numbers": [9]}), "POST", parts_path)
    complete_path = f"/uploads/{mp_id}/complete"
    _conforms(api.http.post(complete_path), "POST", complete_path)  # 409 parts_missing
    requests.put(multipart["upload"]["parts"][0]["url"], data=JPEG, timeout=30)
    _conforms(api.http.post(parts_path), "POST", parts_path)
    _conforms(api.http.post(complete_path), "POST", complete_path)  # 202
    _conforms(api.http.post(parts_path), "POST", parts_path)  # 409 not_multipart
    _conforms(api.http.get(f"/uploads/{mp_id}"), "GET", f"/uploads/{mp_id}")
    _conforms(api.http.delete(f"/uploads/{mp_id}"), "DELETE", f"/uploads/{mp_id}")  # 409

    put_id = created["PUT"]["upload_id"]
    _conforms(api.http.post(f"/uploads/{put_id}/complete"), "POST", f"/uploads/{put_id}/complete")
    s3.put_object(Bucket=bucket, Key=keys.original_key(put_id), Body=b"BM not an allowed format")
    _conforms(api.http.post(f"/uploads/{put_id}/complete"), "POST", f"/uploads/{put_id}/complete")
    post_id = created["POST"]["upload_id"]
    _conforms(api.http.delete(f"/uploads/{post_id}"), "DELETE", f"/uploads/{post_id}")
    _conforms(api.http.get(f"/uploads/{post_id}"), "GET", f"/uploads/{post_id}")
    unknown = "0" * 32
    for method, path in [("GET", f"/uploads/{unknown}"), ("DELETE", f"/uploads/{unknown}"),
                         ("POST", f"/uploads/{unknown}/parts"),
                         ("POST", f"/uploads/{unknown}/complete")]:
        _conforms(api.http.request(method, path, headers={}, body=b""), method, path)
