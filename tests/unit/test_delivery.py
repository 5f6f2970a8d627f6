"""Variant delivery: stable signed URLs, their verification, object headers and srcset."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from imagepipe import delivery
from imagepipe.errors import ConfigError
from imagepipe.settings import Settings

UID = "0123456789abcdef0123456789abcdef"
KEY = f"variants/{UID}/md.jpg"
ISSUED = "2026-11-28T05:00:00.000000Z"
ISSUED_UNIX = 1795842000  # ISSUED as Unix seconds
API = "https://api.example.com/api"
REDIRECT = Settings(bucket="photos", delivery_keys=("key-one",), public_api_url=API)


def _query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _flipped(signature: str) -> str:
    return signature[:-1] + ("B" if signature[-1] == "A" else "A")


def _path(url: str) -> tuple[str, str]:
    _, _, upload_id, filename = urlsplit(url).path.rsplit("/", 3)
    return upload_id, filename


def test_a_redirect_url_is_stable_signed_and_short():
    url = delivery.variant_url(REDIRECT, KEY, ISSUED)
    assert url == delivery.variant_url(REDIRECT, KEY, ISSUED)  # two reads, one URL
    assert url.startswith(f"{API}/v/{UID}/md.jpg?sig=")
    signature = _query(url)["sig"]
    assert len(signature) == 22 and "=" not in signature  # 128 bits, URL-safe, unpadded
    assert "exp" not in _query(url)
    assert delivery.verified_key(REDIRECT, UID, "md.jpg", _query(url)) == KEY


def test_a_request_base_is_used_only_when_the_stage_names_no_public_url():
    local = replace(REDIRECT, public_api_url=None)
    assert delivery.variant_url(local, KEY, ISSUED, api_url="http://h:1/").startswith(
        f"http://h:1/v/{UID}/md.jpg?sig=")
    assert delivery.variant_url(REDIRECT, KEY, ISSUED, api_url="http://h:1").startswith(API)
    with pytest.raises(ConfigError, match="IMAGEPIPE_PUBLIC_API_URL"):
        delivery.variant_url(local, KEY, ISSUED)


@pytest.mark.parametrize("tamper", [
    lambda upload_id, filename, q: (upload_id, "lg.jpg", q),  # another variant
    lambda upload_id, filename, q: ("f" * 32, filename, q),  # another upload
    lambda upload_id, filename, q: (upload_id, filename, {**q, "sig": _flipped(q["sig"])}),
    lambda upload_id, filename, q: (upload_id, filename, {}),
    lambda upload_id, filename, q: (upload_id, filename, {"sig": ""}),
    lambda upload_id, filename, q: (upload_id, "../../uploads/x.json", q),
    lambda upload_id, filename, q: (upload_id, filename, {**q, "exp": "99999999999"}),
])
def test_a_tampered_url_is_refused(tamper):
    url = delivery.variant_url(REDIRECT, KEY, ISSUED)
    upload_id, filename, query = tamper(*_path(url), _query(url))
    assert (upload_id, filename, query) != (*_path(url), _query(url))
    with pytest.raises(delivery.BadSignature):
        delivery.verified_key(REDIRECT, upload_id, filename, query)


def test_another_stages_key_does_not_verify():
    url = delivery.variant_url(replace(REDIRECT, delivery_keys=("other",)), KEY, ISSUED)
    with pytest.raises(delivery.BadSignature):
        delivery.verified_key(REDIRECT, *_path(url), _query(url))


def test_two_keys_rotate_the_first_signs_and_either_verifies():
    old_url = delivery.variant_url(REDIRECT, KEY, ISSUED)
    rotated = replace(REDIRECT, delivery_keys=("key-two", "key-one"))
    new_url = delivery.variant_url(rotated, KEY, ISSUED)
    assert new_url != old_url
    for url in (old_url, new_url):
        assert delivery.verified_key(rotated, *_path(url), _query(url)) == KEY
    retired = replace(REDIRECT, delivery_keys=("key-two",))
    with pytest.raises(delivery.BadSignature):
        delivery.verified_key(retired, *_path(old_url), _query(old_url))


def test_a_lifetime_signs_an_expiry_counted_from_the_manifest():
    lived = replace(REDIRECT, delivery_url_lifetime_s=3600)
    url = delivery.variant_url(lived, KEY, ISSUED)
    assert _query(url)["exp"] == str(ISSUED_UNIX + 3600)
    assert url == delivery.variant_url(lived, KEY, ISSUED)
    assert delivery.verified_key(lived, *_path(url), _query(url), now=ISSUED_UNIX + 3599) == KEY
    with pytest.raises(delivery.BadSignature, match="expired"):
        delivery.verified_key(lived, *_path(url), _query(url), now=ISSUED_UNIX + 3600)
    # Without the lifetime the URL never expires, however late.
    forever = delivery.variant_url(REDIRECT, KEY, ISSUED)
    assert delivery.verified_key(REDIRECT, *_path(forever), _query(forever),
                                 now=ISSUED_UNIX + 10 * 365 * 86400) == KEY


def test_the_redirect_is_a_fresh_presigned_get_cached_privately_for_less_than_it_lives():
    class S3:
        def generate_presigned_url(self, operation, Params, ExpiresIn):
            self.asked = (operation, Params, ExpiresIn)
            return "https://s3.example/presigned"

    s3 = S3()
    location, headers = delivery.redirect(replace(REDIRECT, redirect_expires_s=300), s3, KEY)
    assert location == headers["Location"] == "https://s3.example/presigned"
    assert s3.asked == ("get_object", {"Bucket": "photos", "Key": KEY}, 300)
    assert headers["Cache-Control"] == "private, max-age=240"


def test_cdn_urls_are_the_distributions_and_presigned_gives_none_to_messages():
    cdn = Settings(bucket="photos", delivery="cdn", cdn_domain="d111.cloudfront.net")
    assert delivery.variant_url(cdn, KEY, ISSUED) == f"https://d111.cloudfront.net/{KEY}"
    presigned = Settings(bucket="photos", delivery="presigned")
    assert delivery.variant_url(presigned, KEY, ISSUED) is None
    with pytest.raises(delivery.BadSignature):
        delivery.verified_key(cdn, UID, "md.jpg", {"sig": "x"})


FP = "0123456789abcdef"
MOVED = f"variants/{UID}/{FP}/md.jpg"  # where a rerender puts md


def test_a_rerendered_variant_keeps_its_stable_url_and_gets_a_new_cdn_url():
    assert delivery.variant_url(REDIRECT, MOVED, ISSUED) == delivery.variant_url(REDIRECT, KEY,
                                                                                 ISSUED)
    url = delivery.variant_url(REDIRECT, MOVED, ISSUED)
    assert url.startswith(f"{API}/v/{UID}/md.jpg?sig=")  # signed over /v/{id}/{name}.{ext}
    assert delivery.verified_key(REDIRECT, *_path(url), _query(url)) == KEY
    cdn = Settings(bucket="photos", delivery="cdn", cdn_domain="d111.cloudfront.net")
    assert delivery.variant_url(cdn, MOVED, ISSUED) == f"https://d111.cloudfront.net/{MOVED}"
    for bad in (f"variants/{UID}/../md.jpg", f"variants/{UID}/{FP}/x/md.jpg",
                f"originals/{UID}", f"variants/{UID}/ABCDEF0123456789/md.jpg"):
        with pytest.raises(ValueError):
            delivery.variant_url(REDIRECT, bad, ISSUED)


def _manifest(*variant_keys, updated_at=None):
    from imagepipe.messages import Manifest, VariantInfo

    infos = tuple(VariantInfo(name=key.rsplit("/", 1)[-1].split(".")[0], key=key, width=1,
                              height=1, format="jpeg", bytes=1) for key in variant_keys)
    return Manifest(UID, UID, {}, (), infos, created_at=ISSUED, updated_at=updated_at,
                    revision=1 if updated_at is None else 2)


def test_the_current_key_of_a_file_name_is_the_manifests():
    moved = _manifest(f"variants/{UID}/lg.jpg", MOVED)
    assert delivery.current_key(moved, UID, "md.jpg") == MOVED
    assert delivery.current_key(moved, UID, "lg.jpg") == f"variants/{UID}/lg.jpg"
    # No manifest, or no variant of that name: where a first render puts it.
    assert delivery.current_key(None, UID, "md.jpg") == KEY
    assert delivery.current_key(moved, UID, "md.webp") == f"variants/{UID}/md.webp"
    with pytest.raises(ValueError):
        delivery.current_key(moved, UID, "../md.jpg")


def test_a_rerendered_variant_counts_its_lifetime_from_the_rerender():
    later = "2026-12-01T00:00:00.000000Z"
    moved = _manifest(f"variants/{UID}/lg.jpg", MOVED, updated_at=later)
    lg, md = moved.variants
    assert delivery.made_at(moved, lg) == ISSUED
    assert delivery.made_at(moved, md) == later
    assert delivery.made_at(_manifest(MOVED), md) == ISSUED  # no revision time: the first


def test_redirect_without_a_key_delivers_presigned_and_checks_say_what_is_missing():
    assert delivery.mode(Settings(bucket="photos")) == "presigned"
    assert delivery.mode(REDIRECT) == "redirect"
    delivery.check(Settings(bucket="photos"), needs_api_url=True)
    with pytest.raises(ConfigError, match="IMAGEPIPE_PUBLIC_API_URL"):
        delivery.check(replace(REDIRECT, public_api_url=None), needs_api_url=True)
    delivery.check(replace(REDIRECT, public_api_url=None), needs_api_url=False)
    with pytest.raises(ConfigError, match="IMAGEPIPE_CDN_DOMAIN"):
        delivery.check(Settings(bucket="photos", delivery="cdn"), needs_api_url=False)


def test_settings_read_the_delivery_from_the_environment_and_keep_keys_out_of_repr():
    env = {"IMAGEPIPE_BUCKET": "photos", "IMAGEPIPE_DELIVERY": "redirect",
           "IMAGEPIPE_DELIVERY_KEYS": "k3y-n3w, k3y-01d",
           "IMAGEPIPE_DELIVERY_URL_LIFETIME_S": "86400",
           "IMAGEPIPE_PUBLIC_API_URL": API}
    settings = Settings.from_env(env)
    assert settings.delivery_keys == ("k3y-n3w", "k3y-01d")
    assert settings.delivery_url_lifetime_s == 86400
    assert "k3y" not in repr(settings)
    assert Settings.from_env(settings.to_env()) == settings
    with pytest.raises(ConfigError, match="IMAGEPIPE_DELIVERY"):
        Settings.from_env({**env, "IMAGEPIPE_DELIVERY": "carrier-pigeon"})


def test_objects_are_public_and_immutable_only_behind_the_cdn():
    cdn = Settings(bucket="photos", delivery="cdn", cdn_domain="d.cloudfront.net")
    assert delivery.object_headers(cdn, "a.jpg", "md", "jpeg")["CacheControl"] == \
        "public, max-age=31536000, immutable"
    for settings in (REDIRECT, Settings(bucket="photos", delivery="presigned")):
        assert delivery.object_headers(settings, "a.jpg", "md", "jpeg")["CacheControl"] == \
            "private"


@pytest.mark.parametrize("original, expected", [
    ("holiday.jpeg", 'inline; filename="holiday-md.webp"'),
    ("C:\\Users\\me\\pic.JPG", 'inline; filename="pic-md.webp"'),
    ("../../etc/passwd", 'inline; filename="passwd-md.webp"'),
    ('say "cheese"; x.png', 'inline; filename="say _cheese__ x-md.webp"'),
    ("bell\x07\r\n.png", 'inline; filename="bell-md.webp"'),
    (None, 'inline; filename="md.webp"'),
    (".png", 'inline; filename="png-md.webp"'),
])
def test_content_disposition_is_inline_with_a_safe_ascii_name(original, expected):
    assert delivery.content_disposition(original, "md.webp") == expected


def test_a_non_ascii_name_gets_rfc_6266_filename_star_and_an_ascii_fallback():
    header = delivery.content_disposition("Été à Zürich.heic", "md.jpg")
    fallback, star = header.split("; filename*=")
    assert fallback == 'inline; filename="Ete a Zurich-md.jpg"'
    assert star.startswith("UTF-8''") and unquote(star[len("UTF-8''"):]) == "Été à Zürich-md.jpg"
    assert all(32 < ord(c) < 127 for c in star)
    only_foreign = delivery.content_disposition("日本語.png", "md.jpg")
    assert only_foreign.startswith('inline; filename="md.jpg"; filename*=UTF-8\'\'%E6')


def test_srcset_lists_the_fit_variants_by_width_once_each():
    spec = [{"name": n, "mode": m} for n, m in
            (("xl", "fit"), ("lg", "fit"), ("md", "fit"), ("thumb", "cover"))]
    variants = [
        {"name": "xl", "width": 800, "bytes": 90, "url": "https://x/xl"},  # source is 800 wide
        {"name": "lg", "width": 800, "bytes": 90, "url": "https://x/lg"},
        {"name": "md", "width": 512, "bytes": 40, "url": "https://x/md"},
        {"name": "thumb", "width": 150, "bytes": 9, "url": "https://x/thumb"},
    ]
    assert delivery.srcset(variants, spec) == "https://x/md 512w, https://x/xl 800w"
    assert delivery.srcset([], spec) == ""
