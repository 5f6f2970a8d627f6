"""``callback_url`` on POST /uploads: checked at create, carried by the job."""

import dataclasses
import json
import time

import jwt
import pytest

from imagepipe.messages import ResizeJob
from tests.conftest import CALLBACK_SECRET

from .api_helpers import JPEG, assert_error, complete, drain, objects, post_json, upload

PUBLIC = "https://93.184.216.34/hooks/imagepipe?account=7"


def _create(api, callback_url):
    return post_json(api, "/uploads", {"filename": "a.jpg", "content_type": "image/jpeg",
                                       "size": len(JPEG), "callback_url": callback_url})


@pytest.fixture
def cloud_api(make_api, settings):
    return make_api(dataclasses.replace(settings, callback_secret=CALLBACK_SECRET))


def test_the_job_carries_an_accepted_callback_url(cloud_api, s3_mock, settings):
    response = _create(cloud_api, PUBLIC)
    assert response.status_code == 201, response.body
    upload_id = response.json_body["upload_id"]
    upload(s3_mock, upload_id, JPEG)

    assert complete(cloud_api, upload_id).status_code == 202

    [(_, body)] = drain(settings)
    assert ResizeJob.decode(body).callback_url == PUBLIC


def test_a_job_without_callback_has_none(cloud_api, s3_mock, settings):
    response = post_json(cloud_api, "/uploads", {"filename": "a.jpg", "content_type": "image/jpeg",
                                                 "size": len(JPEG), "callback_url": None})
    upload_id = response.json_body["upload_id"]
    upload(s3_mock, upload_id, JPEG)
    complete(cloud_api, upload_id)

    [(_, body)] = drain(settings)
    assert ResizeJob.decode(body).callback_url is None


# Every rule is in tests/unit/test_callbacks.py; here, that each kind of refusal is a 400.
def test_other_callback_targets_are_400(make_api, offline_settings, s3_mock):
    api = make_api(dataclasses.replace(offline_settings, callback_secret=CALLBACK_SECRET))
    for url, reason in [
        ("http://93.184.216.34/hook", "https"),
        ("https://169.254.169.254/latest/meta-data/", "public"),
        ("https://localhost/hook", "public"),
        ("https://no-such-host.invalid/hook", "resolve"),
        (["https://93.184.216.34/"], "URL"),
    ]:
        error = assert_error(_create(api, url), 400, "bad_callback_url")

        assert reason in error["message"], url
    assert objects(s3_mock, "") == []


def test_callbacks_need_a_secret_on_the_stage(make_api, offline_settings):
    error = assert_error(_create(make_api(offline_settings), PUBLIC), 400, "bad_callback_url")

    assert "not enabled" in error["message"]


def test_a_stage_that_allows_private_targets_takes_loopback(make_api, offline_settings):
    local = make_api(dataclasses.replace(offline_settings, callback_secret=CALLBACK_SECRET,
                                         callback_allow_private=True))

    assert _create(local, "http://127.0.0.1:8123/hook").status_code == 201


def test_a_stage_with_callback_prefixes_takes_only_targets_under_them(make_api, settings, s3_mock):
    prefixes = ("https://93.184.216.34/hooks/", "https://93.184.216.35/other/")
    api = make_api(dataclasses.replace(settings, callback_secret=CALLBACK_SECRET,
                                       callback_allowed_prefixes=prefixes))

    assert _create(api, PUBLIC).status_code == 201
    assert _create(api, "https://93.184.216.35/other/x").status_code == 201
    for url in ("https://93.184.216.34/elsewhere", "https://93.184.216.34/hooks",
                "https://93.184.216.34.nip.io/hooks/x", "http://93.184.216.34/hooks/x",
                "https://93.184.216.36/hooks/x"):
        error = assert_error(_create(api, url), 400, "bad_callback_url")
        assert "callback_allowed_prefixes" in error["message"], url
    # The SSRF check still applies under an allowed prefix.
    private = make_api(dataclasses.replace(settings, callback_secret=CALLBACK_SECRET,
                                           callback_allowed_prefixes=("https://10.0.0.1/",)))
    assert_error(_create(private, "https://10.0.0.1/hook"), 400, "bad_callback_url")


def test_with_auth_a_callback_url_must_be_one_of_the_stages_targets(make_api, settings, s3_mock):
    """Issue 11: with auth on, callers are users, so a callback_url must start with one of the
    stage's callback_allowed_prefixes; a stage that lists none takes none (it would otherwise
    let any user make the stage post to any public URL)."""
    secret, issuer, audience = "s" * 40, "https://app.example", "imagepipe-test"
    now = int(time.time())
    token = jwt.encode({"iss": issuer, "aud": audience, "sub": "alice", "iat": now,
                        "exp": now + 600, "jti": f"cb-{now}"}, secret, algorithm="HS256")
    authed = dataclasses.replace(settings, callback_secret=CALLBACK_SECRET, auth_mode="jwt",
                                 auth_issuer=issuer, auth_audience=audience, auth_secret=secret)

    def create(api, url):
        body = json.dumps({"filename": "a.jpg", "content_type": "image/jpeg",
                           "size": len(JPEG), "callback_url": url}).encode()
        return api.http.post("/uploads", body=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {token}"})

    unlisted = make_api(authed)
    error = assert_error(create(unlisted, PUBLIC), 400, "bad_callback_url")
    assert "callback_allowed_prefixes" in error["message"]
    assert create(unlisted, None).status_code == 201  # uploads without a callback still work

    listed = make_api(dataclasses.replace(
        authed, callback_allowed_prefixes=("https://93.184.216.34/hooks/",)))
    assert create(listed, PUBLIC).status_code == 201
    assert_error(create(listed, "https://93.184.216.34/other"), 400, "bad_callback_url")
