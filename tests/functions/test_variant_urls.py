"""Stable variant URLs through the upload function (chalice.test.Client) and the resize runtime,
over moto S3 and the real RabbitMQ: the same URL in the result, the manifest and every read of
``GET /uploads/{id}``; ``GET /v/...`` redirects to a fresh presigned GET, and refuses what this
stage did not sign exactly as it refuses an unknown upload."""

import dataclasses
import io
import json
import time
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from PIL import Image

from imagepipe import delivery, keys, resize
from imagepipe.messages import Invocation, Manifest, ResizeJob

from .api_helpers import assert_error, complete, create, drain, upload

PUBLIC_API = "https://photos-api.example.com/api"
FILENAME = "Été à Zürich.jpg"


def _jpeg(width, height):
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def stable(settings):
    return dataclasses.replace(settings, delivery_keys=("key-2026",), public_api_url=PUBLIC_API,
                               redirect_expires_s=60)


def _done_upload(api, s3_mock, settings, filename=FILENAME, size=(1200, 800)):
    """An upload made through the API and resized by the resize runtime: (id, result)."""
    body = _jpeg(*size)
    upload_id = create(api, filename=filename, size=len(body))
    upload(s3_mock, upload_id, body)
    assert complete(api, upload_id).status_code == 202
    [(_, message)] = drain(settings)
    job = ResizeJob.decode(message)
    assert job.filename == filename
    result = resize.process(Invocation(job), resize.Runtime(settings, s3_mock[0]))
    assert result.status == "done", result
    return upload_id, result


def _route(url):
    """The path and query of a stable URL, as the test client takes them."""
    parts = urlsplit(url)
    assert url.startswith(PUBLIC_API + "/v/")
    return parts.path.removeprefix(urlsplit(PUBLIC_API).path) + "?" + parts.query


def test_the_same_stable_urls_are_in_the_result_the_manifest_and_every_read(
        make_api, s3_mock, stable):
    api = make_api(stable)
    upload_id, result = _done_upload(api, s3_mock, stable)
    from_result = {v.name: v.url for v in result.variants}
    assert all(url.startswith(f"{PUBLIC_API}/v/{upload_id}/") for url in from_result.values())
    s3, bucket = s3_mock
    manifest = Manifest.from_dict(json.loads(
        s3.get_object(Bucket=bucket, Key=keys.manifest_key(upload_id))["Body"].read()))
    assert {v.name: v.url for v in manifest.variants} == from_result

    first = api.http.get(f"/uploads/{upload_id}").json_body
    second = api.http.get(f"/uploads/{upload_id}").json_body
    assert first == second
    assert {v["name"]: v["url"] for v in first["variants"]} == from_result
    # The width-based variants, narrowest first; the cover crop is not one of them.
    widths = {v["name"]: v["width"] for v in first["variants"]}
    assert first["srcset"] == ", ".join(f"{from_result[n]} {widths[n]}w"
                                        for n in ("sm", "md", "lg", "xl"))


def test_variants_are_private_and_named_after_the_original(make_api, s3_mock, stable):
    api = make_api(stable)
    upload_id, _ = _done_upload(api, s3_mock, stable)
    s3, bucket = s3_mock
    head = s3.head_object(Bucket=bucket, Key=keys.variant_key(upload_id, "md", "jpeg"))
    assert head["CacheControl"] == "private"
    assert head["ContentDisposition"] == (
        "inline; filename=\"Ete a Zurich-md.jpg\"; "
        "filename*=UTF-8''%C3%89t%C3%A9%20%C3%A0%20Z%C3%BCrich-md.jpg")


def test_a_stable_url_redirects_to_a_fresh_presigned_get_that_loads(make_api, s3_mock, stable):
    api = make_api(stable)
    upload_id, result = _done_upload(api, s3_mock, stable)
    md = next(v for v in result.variants if v.name == "md")

    response = api.http.get(_route(md.url))  # no header of any kind: as an <img> asks

    assert response.status_code == 302, response.body
    location = response.headers["Location"]
    query = dict(parse_qsl(urlsplit(location).query))
    assert urlsplit(location).path.endswith(md.key)
    assert query["X-Amz-Expires"] == "60"
    assert response.headers["Cache-Control"] == "private, max-age=48"
    # moto answers presigned GETs in-process: the redirect leads to the variant's bytes.
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200
    assert Image.open(io.BytesIO(fetched.content)).size == (md.width, md.height)


def test_a_url_still_loads_after_download_expires_has_passed(make_api, s3_mock, stable):
    short = dataclasses.replace(stable, download_expires=1)
    api = make_api(short)
    upload_id, result = _done_upload(api, s3_mock, short)
    url = api.http.get(f"/uploads/{upload_id}").json_body["variants"][0]["url"]
    time.sleep(1.5)  # past download_expires: a presigned URL from the first read is dead now

    assert api.http.get(f"/uploads/{upload_id}").json_body["variants"][0]["url"] == url
    response = api.http.get(_route(url))
    assert response.status_code == 302
    signed_at = dict(parse_qsl(urlsplit(response.headers["Location"]).query))["X-Amz-Date"]
    age = datetime.now(timezone.utc) - datetime.strptime(signed_at, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc)
    assert age.total_seconds() < 5  # signed for this request, not when the URL was made


def test_what_this_stage_did_not_sign_is_not_found_like_an_unknown_upload(
        make_api, s3_mock, stable):
    api = make_api(stable)
    upload_id, result = _done_upload(api, s3_mock, stable)
    md = next(v for v in result.variants if v.name == "md")
    path, _, query = _route(md.url).partition("?")
    signature = dict(parse_qsl(query))["sig"]
    other = "a" * 32
    unknown = assert_error(api.http.get(f"/uploads/{other}"), 404, "not_found")
    refused = [
        f"{path.replace('md.jpg', 'lg.jpg')}?{query}",  # another variant, same signature
        f"/v/{other}/md.jpg?{query}",  # another upload
        f"{path}?sig={signature[::-1]}",
        f"{path}?sig={signature}&exp=99999999999",  # an expiry it never had
        path,
        f"/v/{upload_id}/manifest.json?{query}",
    ]
    for attempt in refused:
        error = assert_error(api.http.get(attempt), 404, "not_found")
        assert set(error) == set(unknown)
    # The genuine one still works.
    assert api.http.get(_route(md.url)).status_code == 302


def test_keys_rotate_the_old_urls_load_until_their_key_is_retired(make_api, s3_mock, stable):
    api = make_api(stable)
    upload_id, result = _done_upload(api, s3_mock, stable)
    old_url = result.variants[0].url

    rotated = make_api(dataclasses.replace(stable, delivery_keys=("key-2027", "key-2026")))
    assert rotated.http.get(_route(old_url)).status_code == 302
    new_url = rotated.http.get(f"/uploads/{upload_id}").json_body["variants"][0]["url"]
    assert new_url != old_url
    assert rotated.http.get(_route(new_url)).status_code == 302

    retired = make_api(dataclasses.replace(stable, delivery_keys=("key-2027",)))
    assert_error(retired.http.get(_route(old_url)), 404, "not_found")
    assert retired.http.get(_route(new_url)).status_code == 302


def test_a_stage_lifetime_signs_an_expiry(make_api, s3_mock, stable, monkeypatch):
    lived = dataclasses.replace(stable, delivery_url_lifetime_s=3600)
    api = make_api(lived)
    upload_id, result = _done_upload(api, s3_mock, lived)
    url = result.variants[0].url
    expires = int(dict(parse_qsl(urlsplit(url).query))["exp"])
    assert 3590 < expires - time.time() <= 3600
    assert api.http.get(_route(url)).status_code == 302

    monkeypatch.setattr(delivery.time, "time", lambda: expires + 1)
    assert_error(api.http.get(_route(url)), 404, "not_found")


def test_a_stage_without_a_key_keeps_presigned_urls(make_api, s3_mock, settings):
    api = make_api(settings)
    upload_id, result = _done_upload(api, s3_mock, settings)
    assert all(v.url is None for v in result.variants)  # nothing stable to put in messages
    body = api.http.get(f"/uploads/{upload_id}").json_body
    query = dict(parse_qsl(urlsplit(body["variants"][0]["url"]).query))
    assert query["X-Amz-Expires"] == str(settings.download_expires)
    assert body["srcset"]  # responsive images work on every stage
    assert_error(api.http.get(f"/v/{upload_id}/md.jpg?sig=x"), 404, "not_found")


def test_a_stage_that_names_no_public_url_points_stable_urls_at_the_request(
        make_api, s3_mock, stable):
    # The upload function behind API Gateway: its own address, with the stage's path.
    local = dataclasses.replace(stable, public_api_url=None)
    api = make_api(local)
    upload_id, _ = _done_upload(api, s3_mock, stable)
    body = api.http.get(f"/uploads/{upload_id}", headers={"Host": "abc.example.com"}).json_body
    assert body["variants"][0]["url"].startswith(f"http://abc.example.com/v/{upload_id}/")
