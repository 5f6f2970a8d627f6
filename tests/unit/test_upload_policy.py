"""What the presigned uploads allow, read back from the policy and URL themselves.

moto enforces no POST policy and no presigned signature, so decoding them (and re-deriving the
SigV4 signatures by the spec) is the only check that S3 would refuse other keys, sizes, types
and bodies. moto is used only to build the S3 client.
"""

import base64
import hashlib
import hmac
import json
import os
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from imagepipe import keys
from imagepipe.errors import ApiError
from imagepipe.settings import Settings
from imagepipe.status import StatusStore
from imagepipe.uploads import UploadService, parse_json_object

ALGORITHM = "AWS4-HMAC-SHA256"
CHECKSUM = base64.b64encode(hashlib.sha256(b"the image bytes").digest()).decode()


def _service(s3, bucket, **overrides):
    settings = Settings(bucket=bucket, **overrides)
    return UploadService(settings, s3, publisher=None, status_store=StatusStore(s3, bucket))


def _request(**fields):
    return {"filename": "holiday.jpg", "content_type": "image/jpeg", "size": 1000, **fields}


def _policy(upload):
    return json.loads(base64.b64decode(upload["fields"]["policy"]))


def _signing_key(date: str, region: str) -> bytes:
    key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _put_signature_matches(url: str, headers: dict) -> bool:
    """Recompute the SigV4 query signature of a PUT sent with exactly ``headers``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = query.pop("X-Amz-Signature")
    signed = query["X-Amz-SignedHeaders"].split(";")
    sent = {name.lower(): str(value).strip() for name, value in headers.items()}
    sent["host"] = parts.netloc
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    canonical_request = "\n".join([
        "PUT",
        parts.path,
        canonical_query,
        "".join(f"{name}:{sent.get(name, '')}\n" for name in signed),
        ";".join(signed),
        "UNSIGNED-PAYLOAD",
    ])
    _, date, region, _, _ = query["X-Amz-Credential"].split("/")
    string_to_sign = "\n".join([
        ALGORITHM,
        query["X-Amz-Date"],
        f"{date}/{region}/s3/aws4_request",
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    expected = hmac.new(_signing_key(date, region), string_to_sign.encode(), hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), signature)


# --- presigned POST ----------------------------------------------------------------------------

def test_post_policy_pins_key_size_type_bucket_and_algorithm(s3_mock):
    s3, bucket = s3_mock
    service = _service(s3, bucket, max_upload_bytes=5_000_000)
    before = datetime.now(timezone.utc).replace(microsecond=0)

    created = service.create_upload(_request(filename="../../etc/passwd.jpg"))

    upload_id = created["upload_id"]
    assert keys.is_upload_id(upload_id)
    upload = created["upload"]
    assert upload["method"] == "POST"
    policy = _policy(upload)
    conditions = policy["conditions"]
    # Exact matches only: a "starts-with" would let the client pick its own key or type.
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"]
    assert {"key": f"originals/{upload_id}"} in conditions
    assert upload["fields"]["key"] == f"originals/{upload_id}"
    assert "passwd" not in json.dumps(upload)
    # The declared size exactly: 100 bytes declared cannot carry 5 MB.
    declared = _request(filename="x")["size"]
    assert ["content-length-range", declared, declared] in conditions
    assert {"Content-Type": "image/jpeg"} in conditions
    assert upload["fields"]["Content-Type"] == "image/jpeg"
    assert {"bucket": bucket} in conditions
    assert {"x-amz-algorithm": ALGORITHM} in conditions
    assert upload["fields"]["x-amz-algorithm"] == ALGORITHM
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc
    )
    assert before < expiration <= before + timedelta(seconds=601)
    assert created["expires_in"] == 600


def test_post_policy_signature_covers_the_decoded_policy(s3_mock):
    s3, bucket = s3_mock
    fields = _service(s3, bucket).create_upload(_request())["upload"]["fields"]

    _, date, region, _, _ = fields["x-amz-credential"].split("/")
    expected = hmac.new(_signing_key(date, region), fields["policy"].encode(), hashlib.sha256)

    assert fields["x-amz-signature"] == expected.hexdigest()


def test_post_policy_follows_configured_limit_and_expiry(s3_mock):
    s3, bucket = s3_mock
    service = _service(s3, bucket, max_upload_bytes=4096, presign_expires=60)
    before = datetime.now(timezone.utc).replace(microsecond=0)

    created = service.create_upload(_request(size=4096, content_type="image/png"))

    policy = _policy(created["upload"])
    assert ["content-length-range", 4096, 4096] in policy["conditions"]
    assert {"Content-Type": "image/png"} in policy["conditions"]
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc
    )
    assert expiration <= before + timedelta(seconds=61)
    assert created["expires_in"] == 60


def test_every_upload_gets_its_own_key(s3_mock):
    s3, bucket = s3_mock
    service = _service(s3, bucket)

    first = service.create_upload(_request())
    second = service.create_upload(_request())

    assert first["upload_id"] != second["upload_id"]
    assert first["upload"]["fields"]["key"] != second["upload"]["fields"]["key"]


# --- presigned PUT -----------------------------------------------------------------------------

def test_put_url_signs_type_and_length(s3_mock):
    s3, bucket = s3_mock
    created = _service(s3, bucket).create_upload(_request(method="PUT", size=1234))

    upload = created["upload"]
    assert upload["method"] == "PUT"
    assert upload["headers"] == {"Content-Type": "image/jpeg"}
    parts = urlsplit(upload["url"])
    assert parts.path.endswith(f"/originals/{created['upload_id']}")
    query = dict(parse_qsl(parts.query))
    assert query["X-Amz-Algorithm"] == ALGORITHM
    assert int(query["X-Amz-Expires"]) <= 600
    assert query["X-Amz-SignedHeaders"] == "content-length;content-type;host"
    # The signature holds for the declared body and breaks for any other length or type.
    sent = {**upload["headers"], "Content-Length": "1234"}
    assert _put_signature_matches(upload["url"], sent)
    assert not _put_signature_matches(upload["url"], {**sent, "Content-Length": "1235"})
    assert not _put_signature_matches(upload["url"], {**sent, "Content-Type": "text/html"})


def test_put_url_signs_the_checksum_when_given(s3_mock):
    s3, bucket = s3_mock
    created = _service(s3, bucket, presign_expires=120).create_upload(
        _request(method="PUT", checksum_sha256=CHECKSUM)
    )

    upload = created["upload"]
    assert upload["headers"] == {"Content-Type": "image/jpeg", "x-amz-checksum-sha256": CHECKSUM}
    query = dict(parse_qsl(urlsplit(upload["url"]).query))
    assert query["X-Amz-Expires"] == "120"
    assert query["X-Amz-SignedHeaders"] == "content-length;content-type;host;x-amz-checksum-sha256"
    sent = {**upload["headers"], "Content-Length": "1000"}
    assert _put_signature_matches(upload["url"], sent)
    other = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    assert not _put_signature_matches(upload["url"], {**sent, "x-amz-checksum-sha256": other})


def test_checksum_is_refused_with_post(s3_mock):
    s3, bucket = s3_mock

    with pytest.raises(ApiError) as caught:
        _service(s3, bucket).create_upload(_request(checksum_sha256=CHECKSUM))

    assert (caught.value.status, caught.value.code) == (400, "invalid_checksum")


# --- the upload record -------------------------------------------------------------------------

def test_record_keeps_a_sanitised_filename_and_the_declaration(s3_mock):
    s3, bucket = s3_mock
    service = _service(s3, bucket)

    created = service.create_upload(_request(filename="C:\\photos\\..\\sun\x00set\n.JPG",
                                             method="PUT", size=77))

    record = service.status.get_upload_record(created["upload_id"])
    assert record.filename == "sunset.JPG"
    assert (record.content_type, record.size, record.method) == ("image/jpeg", 77, "PUT")
    assert record.created_at.endswith("Z")
    assert (record.callback_url, record.multipart, record.requeued_at) == (None, None, None)
    assert service.status.current(created["upload_id"]).state == "pending"


# --- what a request may ask for ----------------------------------------------------------------
# Validation fails before any S3 call, so no client is needed (and none is made).

@pytest.mark.parametrize("fields, code, field", [
    ({"filename": None}, "invalid_request", "filename"),
    ({"filename": ""}, "invalid_request", "filename"),
    ({"filename": "   "}, "invalid_request", "filename"),
    ({"filename": 7}, "invalid_request", "filename"),
    ({"filename": "a" * 256}, "invalid_request", "filename"),
    ({"filename": "photos/"}, "invalid_request", "filename"),
    ({"content_type": None}, "invalid_request", "content_type"),
    ({"content_type": ["image/jpeg"]}, "invalid_request", "content_type"),
    ({"content_type": "image/bmp"}, "unsupported_type", None),
    ({"content_type": "text/html"}, "unsupported_type", None),
    ({"content_type": "image/jpeg; charset=x"}, "unsupported_type", None),
    ({"size": None}, "invalid_request", "size"),
    ({"size": 0}, "invalid_size", None),
    ({"size": -5}, "invalid_size", None),
    ({"size": 1.5}, "invalid_size", None),
    ({"size": "10"}, "invalid_size", None),
    ({"size": True}, "invalid_size", None),
    ({"size": 25 * 1024 * 1024 + 1}, "too_large", None),
    ({"method": "GET"}, "unsupported_method", None),
    ({"method": "put"}, "unsupported_method", None),
    ({"method": ["PUT"]}, "unsupported_method", None),
    ({"method": "PUT", "checksum_sha256": "not base64!"}, "invalid_checksum", None),
    ({"method": "PUT", "checksum_sha256": 12}, "invalid_checksum", None),
    ({"method": "PUT", "checksum_sha256": base64.b64encode(b"x" * 31).decode()},
     "invalid_checksum", None),
    ({"method": "PUT", "checksum_sha256": base64.b64encode(b"x" * 33).decode()},
     "invalid_checksum", None),
])
def test_request_validation(fields, code, field):
    service = UploadService(Settings(bucket="unused"), s3=None, publisher=None, status_store=None)
    request = {key: value for key, value in _request(**fields).items() if value is not None}

    with pytest.raises(ApiError) as caught:
        service.create_upload(request)

    assert (caught.value.status, caught.value.code) == (400, code)
    if field:
        assert repr(field) in caught.value.message


def test_a_whole_size_written_as_a_decimal_is_that_integer(s3_mock):
    # JSON (and JSON Schema, hence OpenAPI clients) does not tell 10 from 10.0.
    s3, bucket = s3_mock
    created = _service(s3, bucket).create_upload(_request(size=4096.0, method="PUT"))

    query = dict(parse_qsl(urlsplit(created["upload"]["url"]).query))
    assert _put_signature_matches(created["upload"]["url"], {
        "Content-Type": "image/jpeg", "Content-Length": 4096})
    assert "content-length" in query["X-Amz-SignedHeaders"]


@pytest.mark.parametrize("raw, code", [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (None, "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b'["cat.jpg"]', "invalid_request"),
    (b'"cat.jpg"', "invalid_request"),
])
def test_body_must_be_a_json_object(raw, code):
    with pytest.raises(ApiError) as caught:
        parse_json_object(raw)

    assert (caught.value.status, caught.value.code) == (400, code)
