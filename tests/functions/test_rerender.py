"""Rerender jobs (issue 14) through the resize runtime over moto S3, read back through the upload
function (chalice.test.Client): only the variants asked for and stale are made again, under new
keys, the manifest moves to revision 2 in one step, and the upload's status is never written."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from PIL import Image

from imagepipe import backfill, keys, rerender, resize, status
from imagepipe.fingerprint import spec_fingerprints
from imagepipe.messages import TIME_FORMAT, Invocation, Manifest, ResizeJob, State
from imagepipe.settings import IMAGING_ENGINES
from imagepipe.spec import parse_variants
from imagepipe.status import StatusStore

PUBLIC_API = "https://photos-api.example.com/api"
SPEC = [{"name": "lg", "width": 256}, {"name": "md", "width": 128, "quality": 90},
        {"name": "thumb", "mode": "cover", "width": 64}]
# The spec after the change: md's quality only.
CHANGED = [SPEC[0], dict(SPEC[1], quality=40), SPEC[2]]


def _jpeg(width=600, height=400) -> bytes:
    image = Image.new("RGB", (width, height), (30, 120, 200))
    for x in range(0, width, 7):  # detail, so quality changes the bytes
        image.paste((255, (x * 3) % 256, 0), (x, 0, x + 3, height))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


@pytest.fixture(params=IMAGING_ENGINES)
def base(request, offline_settings):
    """The stage's settings, on each engine (a rerender renders a subset: both must take it)."""
    return dataclasses.replace(offline_settings, delivery_keys=("key-2026",),
                               public_api_url=PUBLIC_API, imaging_engine=request.param,
                               variants=parse_variants(SPEC))


def _with(settings, spec):
    return dataclasses.replace(settings, variants=parse_variants(spec))


def _done_upload(s3_mock, settings) -> str:
    s3, bucket = s3_mock
    upload_id = keys.new_upload_id()
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=_jpeg())
    StatusStore(s3, bucket).mark(upload_id, State.QUEUED)
    job = ResizeJob.for_upload(upload_id, bucket, "image/jpeg")
    result = resize.process(Invocation(job), resize.Runtime(settings, s3))
    assert result.status == "done", result
    return upload_id


def _rerender(s3_mock, settings, upload_id, names, prune=(), give_up=None):
    s3, bucket = s3_mock
    job = dataclasses.replace(ResizeJob.for_upload(upload_id, bucket, "image/jpeg"),
                              rerender=tuple(names), prune=tuple(prune))
    job = ResizeJob.decode(job.encode())  # as the bridge receives it
    return resize.process(Invocation(job, 1, 3, give_up=give_up), resize.Runtime(settings, s3))


def _objects(s3_mock, prefix) -> dict[str, str]:
    s3, bucket = s3_mock
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


def _manifest(s3_mock, upload_id) -> tuple[Manifest, str]:
    s3, bucket = s3_mock
    found = StatusStore(s3, bucket).get_manifest_with_etag(upload_id)
    assert found is not None
    return found


def _route(url):
    parts = urlsplit(url)
    return parts.path.removeprefix(urlsplit(PUBLIC_API).path) + "?" + parts.query


def test_first_renders_record_the_fingerprint_of_what_made_them(s3_mock, base):
    upload_id = _done_upload(s3_mock, base)
    manifest, _ = _manifest(s3_mock, upload_id)
    assert {v.name: v.fingerprint for v in manifest.variants} == spec_fingerprints(
        base.variants, base.imaging_engine)
    assert manifest.revision == 1 and manifest.updated_at is None


def test_a_changed_quality_reencodes_only_that_variant(s3_mock, base, make_api):
    s3, bucket = s3_mock
    upload_id = _done_upload(s3_mock, base)
    before, _ = _manifest(s3_mock, upload_id)
    objects = _objects(s3_mock, keys.variants_prefix(upload_id))
    markers = _objects(s3_mock, keys.status_prefix(upload_id))
    old_md = before.variant("md")
    old_bytes = s3.get_object(Bucket=bucket, Key=old_md.key)["Body"].read()
    changed = _with(base, CHANGED)

    result = _rerender(s3_mock, changed, upload_id, ["md"])

    assert result.status == "done", result
    after, _ = _manifest(s3_mock, upload_id)
    new_fp = spec_fingerprints(changed.variants, base.imaging_engine)["md"]
    new_md = after.variant("md")
    assert new_md.key == keys.variant_key(upload_id, "md", "jpeg", new_fp) != old_md.key
    assert new_md.fingerprint == new_fp
    new_bytes = s3.get_object(Bucket=bucket, Key=new_md.key)["Body"].read()
    assert len(new_bytes) == new_md.bytes < len(old_bytes)  # quality 40 against 90
    assert Image.open(io.BytesIO(new_bytes)).size == (old_md.width, old_md.height)
    # The old object is gone; the others are the very same objects.
    now = _objects(s3_mock, keys.variants_prefix(upload_id))
    assert old_md.key not in now
    assert {k: e for k, e in now.items() if k != new_md.key} == {
        k: e for k, e in objects.items() if k != old_md.key}
    assert after.variant("lg") == before.variant("lg")
    assert after.variant("thumb") == before.variant("thumb")
    assert after.revision == 2 and after.updated_at and after.created_at == before.created_at
    assert after.spec == tuple(v.to_dict() for v in changed.variants)
    # The result lists the whole new set; the status was never written.
    assert result.variants == after.variants
    assert _objects(s3_mock, keys.status_prefix(upload_id)) == markers

    read = make_api(changed).http.get(f"/uploads/{upload_id}").json_body
    assert read["status"] == "done"
    views = {v["name"]: v for v in read["variants"]}
    assert views["md"]["bytes"] == new_md.bytes
    # Same file name, same stable URL: the srcset a page kept is still right.
    assert views["md"]["url"] == old_md.url
    assert f"{old_md.url} {old_md.width}w" in read["srcset"]


def test_a_redelivered_rerender_job_changes_nothing(s3_mock, base):
    upload_id = _done_upload(s3_mock, base)
    changed = _with(base, CHANGED)
    first = _rerender(s3_mock, changed, upload_id, ["md"])
    manifest, etag = _manifest(s3_mock, upload_id)
    objects = _objects(s3_mock, "")

    again = _rerender(s3_mock, changed, upload_id, ["md"])

    assert again.status == "done" and again.variants == first.variants
    assert _manifest(s3_mock, upload_id) == (manifest, etag)  # not even rewritten
    assert _objects(s3_mock, "") == objects


def test_only_names_asked_for_and_stale_are_made(s3_mock, base):
    upload_id = _done_upload(s3_mock, base)
    objects = _objects(s3_mock, keys.variants_prefix(upload_id))
    changed = _with(base, CHANGED)

    # lg and thumb are fresh: asking for them (and not for md) makes nothing.
    result = _rerender(s3_mock, changed, upload_id, ["lg", "thumb"])

    assert result.status == "done"
    assert _manifest(s3_mock, upload_id)[0].revision == 1
    assert _objects(s3_mock, keys.variants_prefix(upload_id)) == objects


def test_a_new_variant_is_added_and_a_pruned_one_deleted(s3_mock, base, make_api):
    upload_id = _done_upload(s3_mock, base)
    before, _ = _manifest(s3_mock, upload_id)
    spec = [SPEC[0], SPEC[1], {"name": "card", "width": 96, "format": "webp"}]
    changed = _with(base, spec)

    result = _rerender(s3_mock, changed, upload_id, ["card"], prune=["thumb"])

    assert result.status == "done", result
    after, _ = _manifest(s3_mock, upload_id)
    assert [v.name for v in after.variants] == ["lg", "md", "card"]
    now = _objects(s3_mock, keys.variants_prefix(upload_id))
    assert before.variant("thumb").key not in now
    card = after.variant("card")
    assert card.key in now and card.format == "webp"
    read = make_api(changed).http.get(f"/uploads/{upload_id}").json_body
    assert [v["name"] for v in read["variants"]] == ["lg", "md", "card"]


def test_pruning_a_variant_still_in_the_spec_is_refused(s3_mock, base):
    upload_id = _done_upload(s3_mock, base)
    objects = _objects(s3_mock, "")

    result = _rerender(s3_mock, base, upload_id, [], prune=["thumb"])

    assert result.status == "failed" and result.error["code"] == "bad_message"
    assert _objects(s3_mock, "") == objects


def test_a_rerender_of_an_upload_not_done_is_refused_with_its_status_untouched(s3_mock, base):
    s3, bucket = s3_mock
    upload_id = keys.new_upload_id()
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=_jpeg())
    store = StatusStore(s3, bucket)
    store.mark(upload_id, State.PROCESSING)  # its own job is running
    objects = _objects(s3_mock, "")

    result = _rerender(s3_mock, _with(base, CHANGED), upload_id, ["md"])

    assert result.status == "failed" and result.error["code"] == "bad_message"
    assert "only a done upload" in result.error["message"]
    assert _objects(s3_mock, "") == objects
    assert store.state_of(upload_id).state == State.PROCESSING
    # A manifest without the done marker (the live job between its two writes) is left alone.
    store.put_manifest(Manifest(upload_id, upload_id, {}, tuple(SPEC), ()))
    result = _rerender(s3_mock, _with(base, CHANGED), upload_id, ["md"])
    assert result.status == "failed" and result.error["code"] == "bad_message"
    assert store.state_of(upload_id).state == State.PROCESSING


def test_a_failed_rerender_leaves_the_upload_done(s3_mock, base):
    s3, bucket = s3_mock
    upload_id = _done_upload(s3_mock, base)
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=b"not an image")
    markers = _objects(s3_mock, keys.status_prefix(upload_id))
    manifest = _manifest(s3_mock, upload_id)

    result = _rerender(s3_mock, _with(base, CHANGED), upload_id, ["md"])
    gave_up = _rerender(s3_mock, _with(base, CHANGED), upload_id, ["md"],
                        give_up={"code": "invoke_failed", "message": "no worker"})

    assert result.status == "failed" and result.error["code"] == "unsupported_format"
    assert gave_up.status == "failed" and gave_up.error["code"] == "invoke_failed"
    assert _objects(s3_mock, keys.status_prefix(upload_id)) == markers
    assert _manifest(s3_mock, upload_id) == manifest


def test_forged_or_garbage_names_are_refused(s3_mock, base):
    s3, bucket = s3_mock
    upload_id = _done_upload(s3_mock, base)
    objects = _objects(s3_mock, "")
    runtime = resize.Runtime(base, s3)
    job = ResizeJob.for_upload(upload_id, bucket, "image/jpeg").to_dict()

    for names in (["../../tokens/x"], ["md", "md"], "md", ["MD"], ["md"] * 65):
        payload = {"v": 1, "job": {**job, "rerender": names}, "attempt": 1, "max_attempts": 3}
        result = resize.handle_invocation(payload, runtime)
        assert result["status"] == "failed", names
        assert result["error"]["code"] == "bad_message"
    # Well-formed, but not a variant this spec makes.
    unknown = _rerender(s3_mock, base, upload_id, ["nosuch"])
    assert unknown.status == "failed" and unknown.error["code"] == "bad_message"
    assert _objects(s3_mock, "") == objects


def test_a_stable_url_issued_before_a_rerender_leads_to_the_new_object(s3_mock, base, make_api):
    upload_id = _done_upload(s3_mock, base)
    old_md, _ = _manifest(s3_mock, upload_id)
    url = old_md.variant("md").url
    api = make_api(base)
    assert urlsplit(api.http.get(_route(url)).headers["Location"]).path.endswith(
        old_md.variant("md").key)

    changed = _with(base, CHANGED)
    assert _rerender(s3_mock, changed, upload_id, ["md"]).status == "done"

    new_md = _manifest(s3_mock, upload_id)[0].variant("md")
    response = make_api(changed).http.get(_route(url))
    assert response.status_code == 302
    location = response.headers["Location"]
    assert urlsplit(location).path.endswith(new_md.key)
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200 and len(fetched.content) == new_md.bytes


def test_a_lifetime_counts_from_the_rerender_for_what_it_made(
        s3_mock, base, make_api, monkeypatch):
    lived = dataclasses.replace(base, delivery_url_lifetime_s=3600)
    upload_id = _done_upload(s3_mock, lived)
    changed = _with(lived, CHANGED)
    monkeypatch.setattr(rerender, "utc_now", lambda: "2030-01-01T00:00:00.000000Z")
    _rerender(s3_mock, changed, upload_id, ["md"])
    manifest, _ = _manifest(s3_mock, upload_id)

    read = make_api(changed).http.get(f"/uploads/{upload_id}").json_body
    urls = {v["name"]: v["url"] for v in read["variants"]}
    assert urls == {v.name: v.url for v in manifest.variants}  # the worker's URLs, every read
    expiry = {name: int(dict(parse_qsl(urlsplit(url).query))["exp"]) for name, url in urls.items()}
    assert expiry["md"] == 1893456000 + 3600  # 2030-01-01, the rerender's time
    created = datetime.strptime(manifest.created_at, TIME_FORMAT).replace(tzinfo=timezone.utc)
    assert expiry["lg"] == expiry["thumb"] == int(created.timestamp()) + 3600


def test_a_concurrent_rerender_that_wins_answers_the_one_that_lost(s3_mock, base, monkeypatch):
    upload_id = _done_upload(s3_mock, base)
    changed = _with(base, CHANGED)
    replace = status.StatusStore.replace_manifest
    raced: dict = {}

    def overtaken(self, manifest, etag):
        if "winner" not in raced:  # another worker's identical job finishes in between
            raced["winner"] = None
            raced["winner"] = _rerender(s3_mock, changed, upload_id, ["md"])
            raced["manifest"] = _manifest(s3_mock, upload_id)
        return replace(self, manifest, etag)

    monkeypatch.setattr(status.StatusStore, "replace_manifest", overtaken)
    result = _rerender(s3_mock, changed, upload_id, ["md"])

    assert raced["winner"].status == "done"
    assert result.status == "done" and result.variants == raced["winner"].variants
    manifest, etag = _manifest(s3_mock, upload_id)
    assert (manifest, etag) == raced["manifest"]  # the loser's PUT did not land
    assert manifest.revision == 2
    assert manifest.variant("md").key in _objects(s3_mock, keys.variants_prefix(upload_id))


def test_a_concurrent_rerender_of_something_else_makes_the_loser_retry(
        s3_mock, base, monkeypatch):
    upload_id = _done_upload(s3_mock, base)
    changed = _with(base, CHANGED)
    other = _with(base, [*SPEC, {"name": "card", "width": 96}])
    replace = status.StatusStore.replace_manifest
    raced: dict = {}

    def overtaken(self, manifest, etag):
        if "winner" not in raced:  # a worker still on another spec adds card meanwhile
            raced["winner"] = None
            raced["winner"] = _rerender(s3_mock, other, upload_id, ["card"])
        return replace(self, manifest, etag)

    monkeypatch.setattr(status.StatusStore, "replace_manifest", overtaken)
    lost = _rerender(s3_mock, changed, upload_id, ["md"])

    assert raced["winner"].status == "done"
    assert lost.status == "retry" and "manifest changed" in lost.error["message"]
    again = _rerender(s3_mock, changed, upload_id, ["md"])  # the redelivery
    assert again.status == "done"
    manifest, _ = _manifest(s3_mock, upload_id)
    assert manifest.revision == 3
    assert [v.name for v in manifest.variants] == ["lg", "md", "thumb", "card"]
    wanted = spec_fingerprints(changed.variants, base.imaging_engine)["md"]
    assert manifest.variant("md").fingerprint == wanted


def test_replace_manifest_refuses_a_stale_etag(s3_mock, base):
    s3, bucket = s3_mock
    upload_id = _done_upload(s3_mock, base)
    store = StatusStore(s3, bucket)
    manifest, etag = _manifest(s3_mock, upload_id)
    newer = dataclasses.replace(manifest, revision=2)

    assert store.replace_manifest(newer, etag)
    assert not store.replace_manifest(dataclasses.replace(manifest, revision=3), etag)
    assert json.loads(s3.get_object(Bucket=bucket, Key=keys.manifest_key(upload_id))[
        "Body"].read())["revision"] == 2


def test_a_variant_made_before_fingerprints_and_not_made_again_stays_stale(s3_mock, base):
    # A manifest from before fingerprints: each variant is judged by its own spec entry.
    s3, bucket = s3_mock
    upload_id = _done_upload(s3_mock, base)
    manifest, _ = _manifest(s3_mock, upload_id)
    legacy = dataclasses.replace(manifest, variants=tuple(
        dataclasses.replace(v, fingerprint=None) for v in manifest.variants))
    s3.put_object(Bucket=bucket, Key=keys.manifest_key(upload_id),
                  Body=json.dumps(legacy.to_dict()).encode())
    both_changed = _with(base, [dict(SPEC[0], quality=50), CHANGED[1], SPEC[2]])
    assert backfill.compare(legacy, both_changed.variants, base.imaging_engine).stale == (
        "lg", "md")

    result = _rerender(s3_mock, both_changed, upload_id, ["md"])  # `backfill --only md`

    assert result.status == "done"
    after, _ = _manifest(s3_mock, upload_id)
    assert after.revision == 2
    # lg was not made again: it is still stale, and its entry is still the one that made it.
    assert backfill.compare(after, both_changed.variants, base.imaging_engine).stale == ("lg",)
    assert {e["name"]: e.get("quality") for e in after.spec} == {"lg": 82, "md": 40,
                                                                  "thumb": 82}
