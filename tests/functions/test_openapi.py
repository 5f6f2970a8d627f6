"""The OpenAPI document is valid, lists exactly the app's routes, and what the app answers (and
the document's own examples) fits the documented schemas."""

import dataclasses
import json
import re

import pytest
import requests
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from imagepipe import delivery, errors, keys
from imagepipe.messages import State
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


def _examples_checked(document: dict) -> int:
    """Validate every example in ``document`` against its schema; how many there were."""
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            bodies = [operation.get("requestBody", {})] + list(operation["responses"].values())
            for body in bodies:
                content = body.get("content", {}).get("application/json", {})
                if "example" in content:
                    validator = Draft202012Validator({**content["schema"],
                                                      "components": document["components"]})
                    validator.validate(content["example"])
                    checked += 1
    return checked


def test_document_examples_fit_their_schemas():
    assert _examples_checked(DOCUMENT) >= 7


@pytest.fixture
def openapi_api(make_api, settings):
    return make_api(dataclasses.replace(settings, multipart_part_bytes=S3_MIN_PART_BYTES,
                                        callback_secret=CALLBACK_SECRET, callback_allow_private=True))


def _conforms(response, method: str, path: str, status: int, code: str | None = None) -> dict:
    """Assert the response has ``status`` (and, for an error, the reason ``code``), is documented
    for its route and status, and fits its schema."""
    body = response.json_body
    assert response.status_code == status, body
    if code is not None:
        assert body["error"]["code"] == code, body
    route = re.sub(r"[0-9a-f]{32}", "{upload_id}", path)
    documented = _documented_response(route, method, response.status_code)
    schema = documented["content"]["application/json"]["schema"]
    assert response.headers["Content-Type"] == "application/json"
    _schema_validator(schema).validate(body)
    return body


def test_what_the_app_answers_fits_the_document(openapi_api, s3_mock):
    api = openapi_api
    s3, bucket = s3_mock
    _conforms(api.http.get("/limits"), "GET", "/limits", 200)
    _conforms(api.http.get("/openapi.json"), "GET", "/openapi.json", 200)
    created = {}
    for method in ("POST", "PUT", "MULTIPART"):
        response = post_json(api, "/uploads", {
            "filename": "a.jpg", "content_type": "image/jpeg", "size": len(JPEG),
            "method": method, "callback_url": "http://127.0.0.1:9/hook"})
        created[method] = _conforms(response, "POST", "/uploads", 201)
    _conforms(post_json(api, "/uploads", {"filename": "a.jpg"}), "POST", "/uploads", 400,
              errors.INVALID_REQUEST)
    _conforms(post_json(api, "/uploads", {"filename": "a.jpg", "content_type": "image/jpeg",
                                          "size": 1, "callback_url": "ftp://x"}),
              "POST", "/uploads", 400, errors.BAD_CALLBACK_URL)

    multipart = created["MULTIPART"]
    mp_id = multipart["upload_id"]
    parts_path = f"/uploads/{mp_id}/parts"
    listed = _conforms(api.http.post(parts_path), "POST", parts_path, 200)
    assert (listed["uploaded"], [p["part_number"] for p in listed["parts"]]) == ([], [1])
    _conforms(post_json(api, parts_path, {"part_numbers": [9]}), "POST", parts_path, 400,
              errors.INVALID_REQUEST)
    complete_path = f"/uploads/{mp_id}/complete"
    _conforms(api.http.post(complete_path), "POST", complete_path, 409, errors.PARTS_MISSING)
    requests.put(multipart["upload"]["parts"][0]["url"], data=JPEG, timeout=30)
    listed = _conforms(api.http.post(parts_path), "POST", parts_path, 200)
    assert ([p["part_number"] for p in listed["uploaded"]], listed["parts"]) == ([1], [])
    completed = _conforms(api.http.post(complete_path), "POST", complete_path, 202)
    assert completed["status"] == State.QUEUED
    _conforms(api.http.post(parts_path), "POST", parts_path, 409, errors.NOT_MULTIPART)
    _conforms(api.http.get(f"/uploads/{mp_id}"), "GET", f"/uploads/{mp_id}", 200)
    _conforms(api.http.delete(f"/uploads/{mp_id}"), "DELETE", f"/uploads/{mp_id}", 409,
              errors.NOT_CANCELLABLE)

    put_id = created["PUT"]["upload_id"]
    _conforms(api.http.post(f"/uploads/{put_id}/complete"), "POST",
              f"/uploads/{put_id}/complete", 409, errors.OBJECT_MISSING)
    not_allowed = b"BM not an allowed format".ljust(len(JPEG), b"\0")  # the declared size
    s3.put_object(Bucket=bucket, Key=keys.original_key(put_id), Body=not_allowed)
    _conforms(api.http.post(f"/uploads/{put_id}/complete"), "POST",
              f"/uploads/{put_id}/complete", 422, errors.UNSUPPORTED_FORMAT)
    post_id = created["POST"]["upload_id"]
    cancelled = _conforms(api.http.delete(f"/uploads/{post_id}"), "DELETE",
                          f"/uploads/{post_id}", 200)
    assert (cancelled["status"], cancelled["error"]["code"]) == (State.FAILED, errors.CANCELLED)
    shown = _conforms(api.http.get(f"/uploads/{post_id}"), "GET", f"/uploads/{post_id}", 200)
    assert shown["status"] == State.FAILED
    unknown = "0" * 32
    for method, path in [("GET", f"/uploads/{unknown}"), ("DELETE", f"/uploads/{unknown}"),
                         ("POST", f"/uploads/{unknown}/parts"),
                         ("POST", f"/uploads/{unknown}/complete")]:
        _conforms(api.http.request(method, path, headers={}, body=b""), method, path, 404,
                  errors.NOT_FOUND)


# --- the document a stage serves carries its own limits ----------------------------------------

STAGE_LIMITS = {"max_upload_bytes": 3 * 1024 * 1024, "allowed_types": ("image/png", "image/webp"),
                "multipart_threshold_bytes": 6 * 1024 * 1024,
                "multipart_part_bytes": S3_MIN_PART_BYTES + 1024, "presign_expires": 120}


def test_a_stage_with_other_limits_serves_them_in_its_document(make_api, offline_settings):
    settings = dataclasses.replace(offline_settings, **STAGE_LIMITS)
    assert all(getattr(offline_settings, name) != value for name, value in STAGE_LIMITS.items())
    api = make_api(settings)

    served = _conforms(api.http.get("/openapi.json"), "GET", "/openapi.json", 200)

    validate(served)
    request = served["components"]["schemas"]["CreateUploadRequest"]["properties"]
    assert request["content_type"]["enum"] == ["image/png", "image/webp"]
    assert request["size"]["maximum"] == 3 * 1024 * 1024
    expires = served["components"]["schemas"]["CreatedUpload"]["properties"]["expires_in"]
    assert expires["maximum"] == 120
    limits = _conforms(api.http.get("/limits"), "GET", "/limits", 200)
    example = served["paths"]["/limits"]["get"]["responses"]["200"]["content"][
        "application/json"]["example"]
    assert example == limits
    # What the document allows, the stage takes; one byte more it refuses, as documented.
    schema = Draft202012Validator({**request["size"]})
    assert schema.is_valid(settings.max_upload_bytes)
    assert not schema.is_valid(settings.max_upload_bytes + 1)
    too_big = post_json(api, "/uploads", {"filename": "a.png", "content_type": "image/png",
                                          "size": settings.max_upload_bytes + 1})
    assert too_big.status_code == 400 and too_big.json_body["error"]["code"] == errors.TOO_LARGE
    jpeg = post_json(api, "/uploads", {"filename": "a.jpg", "content_type": "image/jpeg",
                                       "size": 10})
    assert jpeg.json_body["error"]["code"] == errors.UNSUPPORTED_TYPE
    assert "image/jpeg" not in request["content_type"]["enum"]


def test_the_stage_documents_examples_fit_its_schemas(make_api, offline_settings):
    api = make_api(dataclasses.replace(offline_settings, **STAGE_LIMITS))
    served = api.http.get("/openapi.json").json_body

    assert _examples_checked(served) >= 7


def test_stable_variant_urls_answer_as_documented(make_api, offline_settings):
    settings = dataclasses.replace(offline_settings, delivery_keys=("k",),
                                   public_api_url="https://api.example.com")
    api = make_api(settings)
    upload_id = "0123456789abcdef0123456789abcdef"
    operation = DOCUMENT["paths"]["/v/{upload_id}/{filename}"]["get"]
    filename_pattern = next(p["schema"]["pattern"] for p in operation["parameters"]
                            if p["name"] == "filename")
    assert re.match(filename_pattern, "md.jpg")
    signed = delivery.sign("k", upload_id, "md.jpg", None)
    found = api.http.get(f"/v/{upload_id}/md.jpg?sig={signed}")
    assert found.status_code == 302
    assert set(operation["responses"]["302"]["headers"]) <= set(found.headers)
    refused = api.http.get(f"/v/{upload_id}/md.jpg?sig=x")
    assert refused.status_code == 404
    _schema_validator(operation["responses"]["404"]["content"]["application/json"]["schema"]) \
        .validate(refused.json_body)


def test_every_private_route_documents_the_bearer_scheme_and_its_401():
    # The stable variant URLs are signed instead (an <img> sends no header).
    public = {("/limits", "get"), ("/openapi.json", "get"), ("/v/{upload_id}/{filename}", "get")}
    assert DOCUMENT["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            if (path, method) in public:
                assert not operation.get("security") and "401" not in operation["responses"]
                continue
            # Optional: a stage without auth takes no token.
            assert operation["security"] == [{"bearer": []}, {}], (path, method)
            assert "401" in operation["responses"] and "503" in operation["responses"]
    assert "403" in DOCUMENT["paths"]["/uploads"]["post"]["responses"]


def test_a_stage_with_auth_serves_a_document_that_requires_the_token(make_api, offline_settings):
    settings = dataclasses.replace(offline_settings, auth_mode="jwt", auth_issuer="i",
                                   auth_audience="a", auth_secret="s" * 40)
    served = make_api(settings).http.get("/openapi.json").json_body  # public: no token

    validate(served)
    assert served["paths"]["/uploads"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in served["paths"]["/limits"]["get"]
