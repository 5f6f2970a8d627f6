"""The API answers CORS for the stage's allowed origins, and only for them."""

import dataclasses

import pytest

from .api_helpers import assert_error, post_json

ALLOWED = "https://photos.example"
OTHER = "https://evil.example"
UPLOAD = {"filename": "a.jpg", "content_type": "image/jpeg", "size": 10}


@pytest.fixture
def cors_api(make_api, offline_settings):
    return make_api(dataclasses.replace(offline_settings,
                                        allowed_origins=(ALLOWED, "http://127.0.0.1:8000")))


def _preflight(api, path, origin, method="POST"):
    return api.http.request("OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type"}, body=b"")


PREFLIGHTS = {
    "/uploads": "OPTIONS, POST",
    "/uploads/0123456789abcdef0123456789abcdef": "DELETE, GET, OPTIONS",
    "/uploads/0123456789abcdef0123456789abcdef/complete": "OPTIONS, POST",
    "/uploads/0123456789abcdef0123456789abcdef/parts": "OPTIONS, POST",
    "/limits": "GET, OPTIONS",
}


def test_preflight_from_an_allowed_origin(cors_api):
    for path, methods in PREFLIGHTS.items():
        response = _preflight(cors_api, path, ALLOWED)

        assert response.status_code == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert response.headers["Access-Control-Allow-Methods"] == methods
        assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
        assert int(response.headers["Access-Control-Max-Age"]) > 0
        assert response.headers["Vary"] == "Origin"


def test_preflight_from_another_origin_is_refused(cors_api):
    for origin in (OTHER, "null", "https://photos.example.evil.example", "http://photos.example"):
        response = _preflight(cors_api, "/uploads", origin)

        assert_error(response, 403, "origin_not_allowed")
        assert "Access-Control-Allow-Origin" not in response.headers


def test_responses_name_an_allowed_origin_only(cors_api):
    allowed = cors_api.http.post("/uploads", headers={"Origin": ALLOWED,
                                                      "Content-Type": "application/json"},
                                 body=b'{"filename": "a.jpg", "content_type": "image/jpeg", '
                                      b'"size": 10}')
    assert allowed.status_code == 201
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Retry-After" in allowed.headers["Access-Control-Expose-Headers"]
    assert allowed.headers["Vary"] == "Origin"

    refused = cors_api.http.get("/limits", headers={"Origin": OTHER})
    assert refused.status_code == 200  # the browser, not the server, withholds the body
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert refused.headers["Vary"] == "Origin"


def test_errors_carry_cors_headers_too(cors_api):
    # A page must be able to read a 4xx reason, or it can only say "network error".
    response = cors_api.http.get(f"/uploads/{'f' * 32}", headers={"Origin": ALLOWED})

    assert_error(response, 404, "not_found")
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_no_origin_configured_allows_none(make_api, offline_settings):
    api = make_api(offline_settings)
    assert api.http.get("/limits", headers={"Origin": ALLOWED}).headers.get(
        "Access-Control-Allow-Origin") is None
    assert_error(_preflight(api, "/uploads", ALLOWED), 403, "origin_not_allowed")
    assert post_json(api, "/uploads", UPLOAD).status_code == 201


def test_an_origin_configured_with_a_trailing_slash_is_allowed(make_api, offline_settings):
    # The bucket's CORS rule drops the slash (a browser never sends one); so must the API.
    api = make_api(dataclasses.replace(offline_settings, allowed_origins=(ALLOWED + "/",)))

    response = _preflight(api, "/uploads", ALLOWED)

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_an_origin_from_the_environment_joins_the_local_stage(make_api, offline_settings):
    # `IMAGEPIPE_ALLOWED_ORIGINS=http://localhost:3000 make dev`: the API and the bucket rule
    # both let that frontend upload, next to the stage's own origins.
    from pathlib import Path

    from imagepipe import bucket_cors
    from imagepipe_tools import chalicefile

    root = Path(__file__).resolve().parents[2]
    manifest = chalicefile.load(root / chalicefile.FILENAME)
    local = chalicefile.stage_settings(
        manifest, "local", environ={"IMAGEPIPE_ALLOWED_ORIGINS": "http://localhost:3000"})
    api = make_api(dataclasses.replace(offline_settings, allowed_origins=local.allowed_origins))

    for origin in ("http://localhost:3000", "http://localhost:8000"):
        response = _preflight(api, "/uploads", origin)
        assert response.status_code == 204, origin
        assert response.headers["Access-Control-Allow-Origin"] == origin
    assert_error(_preflight(api, "/uploads", "http://localhost:3001"), 403, "origin_not_allowed")
    rule = bucket_cors.s3_cors_configuration(local.allowed_origins)["CORSRules"][0]
    assert "http://localhost:3000" in rule["AllowedOrigins"]
