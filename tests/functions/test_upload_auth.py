"""Who may call the API: every private route × (no token, bad signature, expired, wrong
audience, another owner, good token) through chalice.test.Client, plus the public routes, the
token's bounds and the owner on the job."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import jwt
import pytest

from imagepipe import keys
from imagepipe.messages import ResizeJob
from imagepipe.quotas import TokenUploads

from .api_helpers import JPEG, assert_error, drain, objects, upload

SECRET = "an-hs256-secret-of-at-least-32-bytes!"
ISSUER = "https://app.example"
AUDIENCE = "imagepipe-test"
PART = 5 * 1024 * 1024


def token(sub="alice", secret=SECRET, **changes) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600,
              "jti": f"jti-{sub}-{now}"}
    claims.update(changes)
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(value: str | None) -> dict:
    return {} if value is None else {"Authorization": f"Bearer {value}"}


def _with_auth(settings):
    return dataclasses.replace(settings, auth_mode="jwt", auth_issuer=ISSUER,
                               auth_audience=AUDIENCE, auth_secret=SECRET,
                               multipart_part_bytes=PART)


@pytest.fixture
def auth_settings(settings):
    return _with_auth(settings)


@pytest.fixture
def auth_api(make_api, auth_settings):
    return make_api(auth_settings)


def request(api, method, path, token_value=None, payload=None):
    headers = {"Content-Type": "application/json", **bearer(token_value)}
    body = json.dumps(payload).encode() if payload is not None else b""
    return getattr(api.http, method.lower())(path, headers=headers, body=body)


def create(api, token_value, method="PUT", size=len(JPEG)):
    response = request(api, "POST", "/uploads", token_value,
                       {"filename": "cat.jpg", "content_type": "image/jpeg", "size": size,
                        "method": method})
    assert response.status_code == 201, response.body
    return response.json_body["upload_id"]


# --- the matrix ---------------------------------------------------------------------------------

NO_TOKEN = "no token"
BAD_SIGNATURE = "bad signature"
EXPIRED = "expired"
WRONG_AUDIENCE = "wrong audience"
ANOTHER_OWNER = "another owner"
GOOD = "good token"
CASES = (NO_TOKEN, BAD_SIGNATURE, EXPIRED, WRONG_AUDIENCE, ANOTHER_OWNER, GOOD)


def token_for(case: str) -> str | None:
    now = int(time.time())
    return {
        NO_TOKEN: None,
        BAD_SIGNATURE: token(secret="another-secret-of-at-least-32-bytes!!"),
        EXPIRED: token(iat=now - 1200, exp=now - 600),
        WRONG_AUDIENCE: token(aud="someone-else"),
        ANOTHER_OWNER: token(sub="mallory"),
        GOOD: token(),
    }[case]


def _prepare_create(api, s3_mock):
    return "/uploads", {"filename": "cat.jpg", "content_type": "image/jpeg", "size": len(JPEG)}


def _prepare_status(api, s3_mock):
    return f"/uploads/{create(api, token())}", None


def _prepare_complete(api, s3_mock):
    upload_id = create(api, token())
    upload(s3_mock, upload_id, JPEG)
    return f"/uploads/{upload_id}/complete", None


def _prepare_parts(api, s3_mock):
    return f"/uploads/{create(api, token(), method='MULTIPART', size=2 * PART)}/parts", None


ROUTES = {
    "POST /uploads": ("POST", _prepare_create, 201),
    "GET /uploads/{id}": ("GET", _prepare_status, 200),
    "DELETE /uploads/{id}": ("DELETE", _prepare_status, 200),
    "POST /uploads/{id}/complete": ("POST", _prepare_complete, 202),
    "POST /uploads/{id}/parts": ("POST", _prepare_parts, 200),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_private_route_needs_the_owners_token(auth_api, s3_mock, auth_settings, route, case):
    method, prepare, success = ROUTES[route]
    path, payload = prepare(auth_api, s3_mock)

    response = request(auth_api, method, path, token_for(case), payload)

    if case == GOOD or (case == ANOTHER_OWNER and route == "POST /uploads"):
        assert response.status_code == success, response.body
    elif case == ANOTHER_OWNER:
        error = assert_error(response, 404, "not_found")
        upload_id = path.split("/")[2]
        unknown = "0" * 32
        unknown_body = request(auth_api, method, path.replace(upload_id, unknown),
                               token_for(GOOD), payload).json_body
        assert error == {k: v.replace(unknown, upload_id)
                         for k, v in unknown_body["error"].items()}
    else:
        error = assert_error(response, 401, "unauthorized")
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ")
        expected = "invalid_request" if case == NO_TOKEN else "invalid_token"
        assert f'error="{expected}"' in challenge
        assert error["message"]
    if case != GOOD:
        drain(auth_settings)  # nothing may have been queued by a refused call
        assert not drain(auth_settings)


def test_a_refused_call_changes_nothing(auth_api, s3_mock, auth_settings):
    upload_id = create(auth_api, token())
    upload(s3_mock, upload_id, JPEG)

    for case in (NO_TOKEN, EXPIRED, ANOTHER_OWNER):
        assert request(auth_api, "POST", f"/uploads/{upload_id}/complete",
                       token_for(case)).status_code in (401, 404)
        assert request(auth_api, "DELETE", f"/uploads/{upload_id}",
                       token_for(case)).status_code in (401, 404)

    assert not drain(auth_settings)
    assert objects(s3_mock, keys.status_prefix(upload_id)) == []
    status = request(auth_api, "GET", f"/uploads/{upload_id}", token())
    assert status.json_body["status"] == "pending"


@pytest.mark.parametrize("path", ["/limits", "/openapi.json", "/", "/app.js", "/app.css"])
def test_public_routes_need_no_token(auth_api, path):
    assert auth_api.http.get(path).status_code == 200


def test_preflights_need_no_token(make_api, auth_settings):
    origin = "https://app.example"
    api = make_api(dataclasses.replace(auth_settings, allowed_origins=(origin,)))
    response = api.http.request("OPTIONS", "/uploads", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})

    assert response.status_code == 204
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    refused = request(api, "POST", "/uploads", None, {})
    assert refused.status_code == 401


def test_a_token_living_longer_than_the_stage_allows_is_refused(auth_api):
    now = int(time.time())
    response = request(auth_api, "GET", "/uploads/" + "0" * 32,
                       token(iat=now, exp=now + 2 * 3600))
    assert "longer" in assert_error(response, 401, "unauthorized")["message"]


def test_a_token_from_another_issuer_is_refused(auth_api):
    response = request(auth_api, "GET", "/uploads/" + "0" * 32, token(iss="https://evil.example"))
    assert_error(response, 401, "unauthorized")


def test_garbage_in_the_header_is_a_401_not_a_500(auth_api):
    for value in ("Bearer", "Basic dXNlcjpwdw==", "Bearer a.b.c", "Bearer " + "x" * 10000,
                  "Bearer " + "[" * 500):
        response = auth_api.http.get("/uploads/" + "0" * 32, headers={"Authorization": value})
        assert_error(response, 401, "unauthorized")


# --- owner --------------------------------------------------------------------------------------

def test_the_upload_records_its_owner_and_the_job_carries_it(auth_api, s3_mock, auth_settings):
    upload_id = create(auth_api, token(sub="alice"))
    s3, bucket = s3_mock
    record = json.loads(s3.get_object(Bucket=bucket, Key=keys.upload_record_key(upload_id))
                        ["Body"].read())
    assert record["owner"] == "alice"
    upload(s3_mock, upload_id, JPEG)

    assert request(auth_api, "POST", f"/uploads/{upload_id}/complete", token()).status_code == 202

    [(_, body)] = drain(auth_settings)
    assert ResizeJob.decode(body).owner == "alice"


def test_an_upload_made_before_auth_was_on_is_nobodys(make_api, settings, auth_settings):
    upload_id = create(make_api(settings), None)

    response = request(make_api(auth_settings), "GET", f"/uploads/{upload_id}", token())

    assert_error(response, 404, "not_found")


def test_without_auth_nothing_changes(make_api, settings, s3_mock):
    api = make_api(settings)
    upload_id = create(api, None)
    s3, bucket = s3_mock
    record = json.loads(s3.get_object(Bucket=bucket, Key=keys.upload_record_key(upload_id))
                        ["Body"].read())
    assert "owner" not in record
    assert api.http.get(f"/uploads/{upload_id}").status_code == 200


# --- bounds -------------------------------------------------------------------------------------

def test_max_bytes_bounds_each_file(auth_api):
    bounded = token(imagepipe={"max_bytes": 1000})
    assert create(auth_api, bounded, size=1000)

    response = request(auth_api, "POST", "/uploads", bounded,
                       {"filename": "big.jpg", "content_type": "image/jpeg", "size": 1001})

    assert "1000 bytes" in assert_error(response, 403, "quota_exceeded")["message"]


def test_max_uploads_counts_uploads_per_token(auth_api, s3_mock):
    bounded = token(jti="once-only", imagepipe={"max_uploads": 2})
    assert create(auth_api, bounded) and create(auth_api, bounded)

    response = request(auth_api, "POST", "/uploads", bounded,
                       {"filename": "c.jpg", "content_type": "image/jpeg", "size": len(JPEG)})

    assert_error(response, 403, "quota_exceeded")
    assert len(objects(s3_mock, keys.TOKENS_PREFIX)) == 2
    # Another token (another jti) of the same user has its own count.
    assert create(auth_api, token(jti="another", imagepipe={"max_uploads": 1}))
    # A refused create frees nothing and takes nothing.
    assert len(objects(s3_mock, keys.TOKENS_PREFIX)) == 3


def test_a_create_that_fails_gives_its_slot_back(auth_api, s3_mock):
    bounded = token(jti="retry-me", imagepipe={"max_uploads": 1})
    response = request(auth_api, "POST", "/uploads", bounded,
                       {"filename": "c.jpg", "content_type": "image/jpeg", "size": len(JPEG),
                        "method": "PUT", "checksum_sha256": "not base64"})
    assert response.status_code == 400  # refused before a slot is taken
    assert objects(s3_mock, keys.TOKENS_PREFIX) == []
    assert create(auth_api, bounded)


def test_racing_claims_never_exceed_the_bound(s3_mock):
    s3, bucket = s3_mock
    uploads = TokenUploads(s3, bucket)
    token_id = "ab" * 16
    won: list[str] = []
    start = threading.Barrier(8)

    def claim(n):
        start.wait()
        key = uploads.claim(token_id, 3, f"{n:032x}")
        if key:
            won.append(key)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 3
    assert sorted(won) == [keys.token_upload_key(token_id, n) for n in (1, 2, 3)]
    assert uploads.taken(token_id) == 3


# --- a stage whose tokens come from an identity provider's JWKS -----------------------------------

def test_a_jwks_stage_takes_the_providers_tokens(make_api, settings):
    from ..jwks_server import AUDIENCE as IDP_AUDIENCE, ISSUER as IDP_ISSUER, JwksServer, SigningKey

    key = SigningKey("idp-1", "ES256")
    with JwksServer() as idp:
        idp.keys = [key]
        api = make_api(dataclasses.replace(settings, auth_mode="jwt", auth_issuer=IDP_ISSUER,
                                           auth_audience=IDP_AUDIENCE, auth_jwks_url=idp.url))
        upload_id = create(api, key.token(sub="carol"))
        assert request(api, "GET", f"/uploads/{upload_id}", key.token(sub="carol")).status_code == 200
        assert_error(request(api, "GET", f"/uploads/{upload_id}", key.token(sub="dave")),
                     404, "not_found")
        assert_error(request(api, "GET", f"/uploads/{upload_id}", token(sub="carol")),
                     401, "unauthorized")  # an HS256 token is no good here
        # A kid the set just fetched does not have: refused without asking the provider again
        # (the refetch cooldown), so made-up kids cannot turn requests into fetches.
        fetches = idp.fetches
        stranger = SigningKey("idp-2", "ES256")
        assert_error(request(api, "GET", f"/uploads/{upload_id}", stranger.token(sub="carol")),
                     401, "unauthorized")
        assert idp.fetches == fetches
        # The provider down before its keys were ever fetched: 503 with Retry-After, not a 500.
        idp.up = False
        cold = make_api(dataclasses.replace(settings, auth_mode="jwt", auth_issuer=IDP_ISSUER,
                                            auth_audience=IDP_AUDIENCE, auth_jwks_url=idp.url))
        response = request(cold, "GET", f"/uploads/{upload_id}", key.token(sub="carol"))
        assert_error(response, 503, "auth_unavailable")
        assert int(response.headers["Retry-After"]) > 0
