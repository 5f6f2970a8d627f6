"""The resize Lambda handler through chalice.test.Client, over moto S3, on each engine."""

import dataclasses
import io
import json

import pytest
from PIL import Image

from imagepipe import imaging, keys
from imagepipe.errors import ConfigError
from imagepipe.messages import Invocation, ResizeJob
from imagepipe.resize import Runtime
from imagepipe.settings import IMAGING_ENGINES, Settings

from .conftest import load_app_module


def _jpeg(width, height, orientation=1):
    image = Image.new("RGB", (width, height), (30, 120, 200))
    # A red block in the stored top-left corner lets us check where it lands after rotation.
    image.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


@pytest.fixture(params=IMAGING_ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture
def chalice_client(chalice_client, engine):
    """Every handler test runs on each engine: the settings given are run with that engine."""
    return lambda module, settings: chalice_client(
        module, dataclasses.replace(settings, imaging_engine=engine))


def _invoke(client, upload_id, bucket, source_etag=None):
    job = ResizeJob.for_upload(upload_id, bucket, "image/jpeg", source_etag)
    response = client.lambda_.invoke("resize", Invocation(job, 1, 3).to_dict())
    return response.payload


def test_resize_handler_makes_upright_variants(s3_mock, chalice_client, engine):
    s3, bucket = s3_mock
    module = load_app_module("resize")
    client = chalice_client(module, Settings(bucket=bucket))
    upload_id = keys.new_upload_id()
    # Stored 1200x800, orientation 6 (rotate 90° clockwise to view): upright it is 800x1200.
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=_jpeg(1200, 800, 6))

    result = _invoke(client, upload_id, bucket)

    assert result["status"] == "done", result
    assert module.runtime().engine == engine
    sizes = {v["name"]: (v["width"], v["height"]) for v in result["variants"]}
    assert sizes == {"xl": (800, 1200), "lg": (683, 1024), "md": (341, 512), "sm": (171, 256),
                     "thumb": (150, 150)}
    body = s3.get_object(Bucket=bucket, Key=keys.variant_key(upload_id, "md", "jpeg"))["Body"].read()
    image = Image.open(io.BytesIO(body))
    assert image.size == (341, 512)
    assert image.getexif().get(0x0112) is None
    # After rotating 90° clockwise the stored top-left corner is at the top-right.
    r, g, b = image.getpixel((image.width - 5, 5))
    assert r > 200 and g < 60 and b < 60
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=keys.manifest_key(upload_id))["Body"].read())
    assert manifest["source"]["key"] == keys.original_key(upload_id)
    assert "exif" in manifest["stripped"]


def test_the_default_engine_is_libvips_where_it_runs():
    assert imaging.vips.available(), "requirements.txt and the Lambda package carry pyvips-binary"
    assert Runtime(Settings(bucket="b")).engine == "vips"
    assert Runtime(Settings(bucket="b", imaging_engine="pillow")).engine == "pillow"


def test_where_libvips_cannot_run_the_start_falls_back_to_pillow_and_says_why(monkeypatch, caplog):
    monkeypatch.setattr(imaging.vips, "_load", lambda: "OSError: libvips.so.42: cannot open")

    with caplog.at_level("INFO", logger="imagepipe.imaging"):
        runtime = Runtime(Settings(bucket="b", imaging_engine="vips"))

    assert runtime.engine == "pillow"
    [record] = [r for r in caplog.records if r.name == "imagepipe.imaging"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        "imaging engine: pillow, because libvips cannot run here "
        "(OSError: libvips.so.42: cannot open)")


def test_an_unknown_engine_fails_at_start_not_per_job():
    with pytest.raises(ConfigError, match="engine must be one of vips, pillow"):
        imaging.start_engine("magick")


def test_a_variant_format_this_pillow_cannot_write_fails_at_start_not_per_job(monkeypatch):
    from imagepipe.spec import parse_variants

    monkeypatch.setattr(imaging.encode, "can_write_avif", lambda: False)
    variants = parse_variants([{"name": "card", "width": 64, "format": "avif"}])
    with pytest.raises(ConfigError, match="card: this Pillow cannot write AVIF"):
        Runtime(Settings(bucket="b", variants=variants))
    Runtime(Settings(bucket="b"))  # the default spec asks for no AVIF


def test_resize_handler_reports_bad_image_as_failed(s3_mock, chalice_client):
    s3, bucket = s3_mock
    module = load_app_module("resize")
    client = chalice_client(module, Settings(bucket=bucket))
    upload_id = keys.new_upload_id()
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=b"<html>not a jpeg</html>")

    result = _invoke(client, upload_id, bucket)

    assert result["status"] == "failed"
    assert result["error"]["code"] == "unsupported_format"
    marker = s3.get_object(Bucket=bucket, Key=keys.status_marker_key(upload_id, "failed"))
    assert json.loads(marker["Body"].read())["error"]["code"] == "unsupported_format"


def test_an_original_replaced_after_verification_is_not_processed(s3_mock, chalice_client):
    s3, bucket = s3_mock
    module = load_app_module("resize")
    client = chalice_client(module, Settings(bucket=bucket))
    upload_id = keys.new_upload_id()
    key = keys.original_key(upload_id)
    verified = s3.put_object(Bucket=bucket, Key=key, Body=_jpeg(64, 48))["ETag"]
    # The presigned URL is still valid: the client uploads other bytes after `complete`.
    s3.put_object(Bucket=bucket, Key=key, Body=_jpeg(640, 480))

    result = _invoke(client, upload_id, bucket, source_etag=verified)

    assert result["status"] == "failed"
    assert result["error"]["code"] == "source_changed"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"variants/{upload_id}/")
    assert listed.get("KeyCount", 0) == 0


def test_resize_handler_keeps_alpha_of_a_png(s3_mock, chalice_client):
    s3, bucket = s3_mock
    module = load_app_module("resize")
    client = chalice_client(module, Settings(bucket=bucket))
    upload_id = keys.new_upload_id()
    # Transparent left half, opaque green right half.
    image = Image.new("RGBA", (1600, 1000), (0, 0, 0, 0))
    image.paste((0, 200, 0, 255), (800, 0, 1600, 1000))
    out = io.BytesIO()
    image.save(out, "PNG")
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=out.getvalue())

    result = _invoke(client, upload_id, bucket)

    assert result["status"] == "done", result
    variants = {v["name"]: v for v in result["variants"]}
    assert {v["format"] for v in variants.values()} == {"png"}
    assert (variants["lg"]["width"], variants["lg"]["height"]) == (1024, 640)
    body = s3.get_object(Bucket=bucket, Key=variants["lg"]["key"])["Body"].read()
    lg = Image.open(io.BytesIO(body))
    assert lg.mode == "RGBA"
    assert lg.getpixel((100, 320))[3] == 0
    assert lg.getpixel((900, 320)) == (0, 200, 0, 255)
    assert s3.head_object(Bucket=bucket, Key=variants["lg"]["key"])["ContentType"] == "image/png"


def test_give_up_invocation_records_the_failure_without_running_the_job(s3_mock, chalice_client):
    s3, bucket = s3_mock
    module = load_app_module("resize")
    client = chalice_client(module, Settings(bucket=bucket))
    upload_id = keys.new_upload_id()
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=_jpeg(64, 48))
    cause = {"code": "invoke_failed", "message": "throttled (gave up after 6 attempts)"}
    job = ResizeJob.for_upload(upload_id, bucket, "image/jpeg")

    result = client.lambda_.invoke("resize", Invocation(job, 6, 6, give_up=cause).to_dict()).payload

    assert (result["status"], result["error"]) == ("failed", cause)
    marker = s3.get_object(Bucket=bucket, Key=keys.status_marker_key(upload_id, "failed"))
    assert json.loads(marker["Body"].read())["error"] == cause
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"variants/{upload_id}/")
    assert listed.get("KeyCount", 0) == 0  # nothing was resized


def test_give_up_invocation_of_a_finished_job_answers_done(s3_mock, chalice_client):
    # The bridge's last invocation timed out on its side, but the function had finished.
    s3, bucket = s3_mock
    module = load_app_module("resize")
    client = chalice_client(module, Settings(bucket=bucket))
    upload_id = keys.new_upload_id()
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=_jpeg(640, 480))
    assert _invoke(client, upload_id, bucket)["status"] == "done"
    job = ResizeJob.for_upload(upload_id, bucket, "image/jpeg")
    cause = {"code": "invoke_failed", "message": "read timeout (gave up after 6 attempts)"}

    result = client.lambda_.invoke("resize", Invocation(job, 6, 6, give_up=cause).to_dict()).payload

    assert result["status"] == "done" and len(result["variants"]) == 5
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=keys.status_prefix(upload_id))
    assert "failed.json" not in {o["Key"].rsplit("/", 1)[-1] for o in listed["Contents"]}


def test_manifest_says_what_was_stripped_converted_and_which_frame(s3_mock, chalice_client):
    from imagepipe.spec import parse_variants
    from tests import images

    s3, bucket = s3_mock
    module = load_app_module("resize")
    variants = parse_variants([
        {"name": "card", "mode": "cover", "width": 64, "height": 32, "format": "avif"},
        {"name": "web", "width": 80, "format": "webp", "options": {"webp": {"method": 2}}},
    ])
    client = chalice_client(module, Settings(bucket=bucket, variants=variants))
    # A JPEG with GPS and a profile in which its red is sRGB green; an animated GIF, red first.
    cases = {
        "icc": images.make_jpeg(200, 100, gps=True, image=Image.new("RGB", (200, 100), images.RED),
                                icc_profile=images.make_swapped_rgb_icc()),
        "gif": images.make_animated("GIF", 200, 100, [images.RED, images.BLUE]),
    }
    manifests = {}
    for name, data in cases.items():
        upload_id = keys.new_upload_id()
        s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=data)
        result = _invoke(client, upload_id, bucket)
        assert result["status"] == "done", result
        assert [(v["name"], v["format"]) for v in result["variants"]] == [("card", "avif"), ("web", "webp")]
        card = s3.get_object(Bucket=bucket, Key=keys.variant_key(upload_id, "card", "avif"))
        assert card["ContentType"] == "image/avif"
        pixel = Image.open(io.BytesIO(card["Body"].read())).convert("RGB").getpixel((32, 16))
        manifests[name] = (pixel, json.loads(s3.get_object(
            Bucket=bucket, Key=keys.manifest_key(upload_id))["Body"].read()))

    pixel, icc = manifests["icc"]
    assert pixel[1] > 200 and pixel[0] < 60, pixel  # converted: red in that profile is green
    assert icc["colour_converted"] is True
    assert {"exif", "icc_profile"} <= set(icc["stripped"])
    assert icc["source"]["icc_profile"] == "Swapped RGB" and icc["notes"] == []
    pixel, gif = manifests["gif"]
    assert pixel[0] > 200 and pixel[2] < 60, pixel  # the first frame
    assert gif["source"]["format"] == "gif" and gif["source"]["animated"] is True
    assert gif["colour_converted"] is False
    assert gif["notes"] == ["animated gif: the first frame was used"]


def test_a_redelivered_job_is_answered_from_its_manifest(s3_mock, chalice_client):
    s3, bucket = s3_mock
    module = load_app_module("resize")
    client = chalice_client(module, Settings(bucket=bucket))
    upload_id = keys.new_upload_id()
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=_jpeg(640, 480))
    first = _invoke(client, upload_id, bucket)
    # The original is gone: only an answer from the manifest can still say done.
    s3.delete_object(Bucket=bucket, Key=keys.original_key(upload_id))

    again = _invoke(client, upload_id, bucket)

    assert again["status"] == "done" and again["variants"] == first["variants"]
    marker = s3.get_object(Bucket=bucket, Key=keys.status_marker_key(upload_id, "done"))
    assert marker["ContentLength"] > 0


def test_the_resize_function_signs_stable_urls_with_the_keys_from_their_secret(s3_mock, tmp_path):
    """In the cloud the signing keys reach the function only as IMAGEPIPE_DELIVERY_KEYS_ARN:
    it reads them from Secrets Manager at start (``settings.load``) and delivers ``redirect``,
    not the presigned fallback of a stage without keys."""
    import boto3
    from chalice.test import Client

    from imagepipe import delivery
    from imagepipe.settings import ENV_DELIVERY_KEYS, secret_arn_env

    s3, bucket = s3_mock
    api = "https://api.example/api"
    arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="imagepipe-test/delivery-keys", SecretString="k3y-n3w,k3y-01d")["ARN"]
    stage = Settings(bucket=bucket, public_api_url=api, imaging_engine="pillow")
    assert delivery.mode(stage) == delivery.PRESIGNED  # no keys in the environment
    env = {**stage.to_env(), secret_arn_env(ENV_DELIVERY_KEYS): arn}
    assert ENV_DELIVERY_KEYS not in env
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(
        {"version": "2.0", "app_name": "imagepipe-test",
         "stages": {"test": {"environment_variables": env}}}))
    upload_id = keys.new_upload_id()
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=_jpeg(400, 300))
    module = load_app_module("resize")

    with Client(module.app, stage_name="test", project_dir=str(tmp_path)) as client:
        result = _invoke(client, upload_id, bucket)

    assert result["status"] == "done", result
    assert module.runtime().settings.delivery_keys == ("k3y-n3w", "k3y-01d")
    signer = dataclasses.replace(stage, delivery_keys=("k3y-n3w",))
    for variant in result["variants"]:
        path, _, query = variant["url"].removeprefix(api).partition("?")
        assert path.startswith(f"/v/{upload_id}/"), variant["url"]
        _, _, filename = path.rpartition("/")
        params = dict(p.split("=", 1) for p in query.split("&"))
        assert delivery.verified_key(signer, upload_id, filename, params) == variant["key"]
