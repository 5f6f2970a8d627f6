"""The deploy manifest renders into each function's .chalice/config.json."""

import json
import shutil
from pathlib import Path

import pytest

from imagepipe_tools import chalicefile
from imagepipe.errors import ConfigError
from imagepipe.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROD_ENV = {"IMAGEPIPE_BUCKET": "photos-prod", "AWS_REGION": "eu-west-1",
            "AMQP_URL": "amqps://u:p@mq.example:5671/%2F",
            "IMAGEPIPE_ALLOWED_ORIGIN": "https://photos.example",
            "IMAGEPIPE_AUTH_ISSUER": "https://idp.example/",
            "IMAGEPIPE_AUTH_JWKS_URL": "https://idp.example/.well-known/jwks.json"}


def test_repo_manifest_is_valid_and_has_the_required_stages():
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    assert {"local", "prod"} <= set(manifest["stages"])
    assert {"upload", "resize"} <= set(manifest["functions"])
    local = chalicefile.stage_settings(manifest, "local")
    assert local.invoker == "local" and local.s3_endpoint_url
    prod = chalicefile.stage_settings(manifest, "prod", environ=PROD_ENV)
    assert prod.invoker == "lambda" and prod.bucket == "photos-prod"
    assert prod.allowed_origins == ("https://photos.example",)
    limits = manifest["limits"]
    assert (local.multipart_threshold_bytes, local.multipart_part_bytes) == (
        limits["multipart_threshold_bytes"], limits["multipart_part_bytes"])


def test_unset_reference_is_named():
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    with pytest.raises(ConfigError, match="IMAGEPIPE_BUCKET"):
        chalicefile.stage_settings(manifest, "prod", environ={})
    with pytest.raises(ConfigError, match="no stage 'staging'"):
        chalicefile.stage_settings(manifest, "staging")


def test_render_writes_configs_that_read_back_as_the_stage_settings(tmp_path):
    shutil.copy(ROOT / "chalicefile.json", tmp_path / "chalicefile.json")
    settings = chalicefile.render(tmp_path, "prod", environ=PROD_ENV)
    manifest = chalicefile.load(tmp_path / "chalicefile.json")
    for name, spec in manifest["functions"].items():
        config = json.loads((tmp_path / spec["project_dir"] / ".chalice" / "config.json").read_text())
        stage = config["stages"]["prod"]
        assert config["app_name"] == f"imagepipe-{name}"
        assert stage["lambda_memory_size"] == spec["memory_mb"]
        assert stage["lambda_timeout"] == spec["timeout_s"]
        assert Settings.from_env(stage["environment_variables"]) == settings


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.pop("stages"), "stages"),
    (lambda m: m["limits"].update(max_bytes=1), "limits"),
    (lambda m: m["functions"]["resize"].pop("timeout_s"), "timeout_s"),
    (lambda m: m["functions"]["resize"].update(memory_mb="lots"), "memory_mb"),
    (lambda m: m["stages"]["local"].update(buckett="x"), "buckett"),
    (lambda m: m["variants"][0].update(mode="zoom"), "mode"),
    (lambda m: m["functions"]["resize"].update(merge_templat="x"), "merge_templat"),
    (lambda m: m["stages"]["prod"]["deploy"].update(parameter={}), "parameter"),
    (lambda m: m["stages"]["prod"]["deploy"]["parameters"].update(VpcId={"a": 1}), "VpcId"),
])
def test_invalid_manifest_is_refused_with_the_field(tmp_path, mutate, message):
    manifest = json.loads((ROOT / "chalicefile.json").read_text())
    mutate(manifest)
    (tmp_path / "chalicefile.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=message):
        chalicefile.load(tmp_path / "chalicefile.json")


def test_cloud_stage_deploy_parameters_expand_the_environment():
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    env = {"IMAGEPIPE_VPC_ID": "vpc-1", "IMAGEPIPE_SUBNET_IDS": "subnet-1,subnet-2",
           "IMAGEPIPE_ROUTE_TABLE_IDS": "rtb-1"}
    parameters = chalicefile.stage_deploy(manifest, "prod", env)["parameters"]
    assert parameters["VpcId"] == "vpc-1" and parameters["SubnetIds"] == "subnet-1,subnet-2"
    assert parameters["RouteTableIds"] == "rtb-1"
    with pytest.raises(ConfigError, match="IMAGEPIPE_VPC_ID"):
        chalicefile.stage_deploy(manifest, "prod", {})
    with pytest.raises(ConfigError, match="not a cloud stage"):
        chalicefile.stage_deploy(manifest, "local", env)
    # The deploy section is not a setting.
    assert chalicefile.stage_settings(manifest, "prod", environ=PROD_ENV).bucket == "photos-prod"


def test_a_reference_may_have_a_default_for_unset_or_empty(tmp_path):
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    manifest["stages"]["prod"]["resize_function"] = "${RESIZE_FN:-imagepipe-resize-x}"
    env = dict(PROD_ENV)
    env.pop("AWS_REGION")
    prod = chalicefile.stage_settings(manifest, "prod", environ=env)
    assert prod.region == "us-east-1" and prod.resize_function == "imagepipe-resize-x"
    prod = chalicefile.stage_settings(manifest, "prod", environ={**env, "RESIZE_FN": "mine",
                                                                 "AWS_REGION": ""})
    assert prod.resize_function == "mine" and prod.region == "us-east-1"


def test_placeholders_let_a_stage_render_without_its_variables_and_name_them():
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    environ = chalicefile.Placeholders({"AWS_REGION": "eu-west-1"})
    prod = chalicefile.stage_settings(manifest, "prod", environ=environ)
    assert prod.bucket == "unset-imagepipe-bucket" and prod.region == "eu-west-1"
    assert environ.unset == {"IMAGEPIPE_BUCKET", "IMAGEPIPE_ALLOWED_ORIGIN",
                             "IMAGEPIPE_AUTH_ISSUER", "IMAGEPIPE_AUTH_JWKS_URL"}


def test_a_rich_variant_spec_is_validated_and_reaches_the_function_environment():
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    card = {"name": "card", "mode": "cover", "width": 600, "height": 315, "format": "webp",
            "gravity": "north", "options": {"webp": {"method": 6}}}
    manifest["variants"] = [*manifest["variants"], card]
    chalicefile.validate(manifest)

    settings = chalicefile.stage_settings(manifest, "local")
    again = Settings.from_env(settings.to_env())

    assert again.variants == settings.variants and again.variants[-1].gravity == "north"
    manifest["variants"][-1] = {**card, "options": {"webp": {"method": 9}}}
    with pytest.raises(ConfigError, match=r"variants\[5\] \(card\)\.options\.webp\.method"):
        chalicefile.validate(manifest)


def test_allowed_origins_in_the_environment_add_to_the_local_stage(tmp_path):
    # A user's own frontend (say on :3000) works with `make dev` without editing the manifest.
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    environ = {"IMAGEPIPE_ALLOWED_ORIGINS": "http://localhost:3000, https://app.example/"}

    alone = chalicefile.stage_settings(manifest, "local", environ={})
    added = chalicefile.stage_settings(manifest, "local", environ=environ)

    assert alone.allowed_origins == ("http://127.0.0.1:8000", "http://localhost:8000")
    assert added.allowed_origins == alone.allowed_origins + ("http://localhost:3000",
                                                              "https://app.example")
    shutil.copy(ROOT / "chalicefile.json", tmp_path / "chalicefile.json")
    chalicefile.render(tmp_path, "local", environ=environ)
    config = json.loads((tmp_path / "functions/upload/.chalice/config.json").read_text())
    rendered = config["stages"]["local"]["environment_variables"]["IMAGEPIPE_ALLOWED_ORIGINS"]
    assert rendered.split(",") == list(added.allowed_origins)


# --- auth: who may call a stage's API ------------------------------------------------------------

def test_the_stages_auth_becomes_its_settings():
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    prod = chalicefile.stage_settings(manifest, "prod", environ=PROD_ENV)
    assert (prod.auth_mode, prod.auth_issuer, prod.auth_audience, prod.auth_jwks_url) == (
        "jwt", "https://idp.example/", "imagepipe", "https://idp.example/.well-known/jwks.json")
    assert Settings.from_env(prod.to_env()) == prod
    local = chalicefile.stage_settings(manifest, "local", environ={})
    assert local.auth_mode == "none"
    local = chalicefile.stage_settings(manifest, "local", environ={"IMAGEPIPE_AUTH_MODE": "jwt"})
    assert local.auth_on and local.auth_secret and local.auth_audience == "imagepipe"


def _manifest_with_prod_auth(auth):
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    if auth is None:
        manifest["stages"]["prod"].pop("auth")
    else:
        manifest["stages"]["prod"]["auth"] = auth
    chalicefile.validate(manifest)
    return manifest


@pytest.mark.parametrize("auth", [None, {"mode": "none"}, {}])
def test_a_cloud_stage_without_auth_is_refused_and_told_why(auth):
    manifest = _manifest_with_prod_auth(auth)
    with pytest.raises(ConfigError, match="open to anyone on the internet") as refused:
        chalicefile.require_decided_auth(manifest, "prod")
    assert '"public": true' in str(refused.value)


def test_a_cloud_stage_may_be_public_on_purpose():
    chalicefile.require_decided_auth(_manifest_with_prod_auth({"mode": "none", "public": True}),
                                     "prod")
    chalicefile.require_decided_auth(chalicefile.load(ROOT / "chalicefile.json"), "prod")


def test_a_cloud_stage_keeps_its_shared_secret_in_secrets_manager():
    manifest = _manifest_with_prod_auth({"mode": "jwt", "issuer": "i", "audience": "a",
                                         "secret": "x" * 40})
    with pytest.raises(ConfigError, match="secret_arn"):
        chalicefile.require_decided_auth(manifest, "prod")
    manifest = _manifest_with_prod_auth({"mode": "jwt", "issuer": "i", "audience": "a",
                                         "secret_arn": "arn:aws:secretsmanager:eu-west-1:1:secret:a"})
    chalicefile.require_decided_auth(manifest, "prod")
    prod = chalicefile.stage_settings(manifest, "prod", environ=PROD_ENV)
    assert prod.auth_secret_arn.startswith("arn:") and not prod.auth_secret


@pytest.mark.parametrize("auth, says", [
    ("jwt", "must be an object"),
    ({"mode": "jwt", "kid": "x"}, "unknown field"),
    ({"mode": "jwt", "public": True}, "only for mode none"),
    ({"mode": "none", "public": "yes"}, "true or false"),
])
def test_a_malformed_auth_is_refused(auth, says):
    with pytest.raises(ConfigError, match=says):
        _manifest_with_prod_auth(auth)


def test_auth_settings_go_only_through_the_auth_object():
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    manifest["stages"]["prod"]["auth_mode"] = "none"
    with pytest.raises(ConfigError, match="auth_mode"):
        chalicefile.validate(manifest)


def test_cloud_stage_limits_come_from_its_deploy_section_over_the_defaults():
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    limits = chalicefile.stage_limits(manifest, "prod")
    prod = manifest["stages"]["prod"]["deploy"]
    assert limits["api_throttle"] == prod["api_throttle"]
    assert limits["reserved_concurrency"] == prod["reserved_concurrency"]
    del prod["api_throttle"], prod["reserved_concurrency"]
    assert chalicefile.stage_limits(manifest, "prod") == {
        "api_throttle": chalicefile.DEFAULT_API_THROTTLE,
        "reserved_concurrency": chalicefile.DEFAULT_RESERVED_CONCURRENCY}
    prod["reserved_concurrency"] = {"resize": None}
    assert chalicefile.stage_limits(manifest, "prod")["reserved_concurrency"] == {
        "upload": chalicefile.DEFAULT_RESERVED_CONCURRENCY["upload"], "resize": None}
    prod["reserved_concurrency"] = {"thumbnailer": 3}
    with pytest.raises(ConfigError, match="no function.*thumbnailer"):
        chalicefile.stage_limits(manifest, "prod")


@pytest.mark.parametrize("deploy, message", [
    ({"api_throttle": {"rate_per_s": 0}}, "api_throttle"),
    ({"api_throttle": {"burst": 1.5}}, "api_throttle"),
    ({"api_throttle": {"rps": 5}}, "api_throttle"),
    ({"reserved_concurrency": {"resize": 0}}, "reserved_concurrency.resize"),
    ({"reserved_concurrency": {"resize": True}}, "reserved_concurrency.resize"),
    ({"reserved_concurrency": [1]}, "reserved_concurrency"),
])
def test_bad_stage_limits_are_refused_at_load(tmp_path, deploy, message):
    manifest = json.loads((ROOT / "chalicefile.json").read_text())
    manifest["stages"]["prod"]["deploy"].update(deploy)
    (tmp_path / "chalicefile.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=message):
        chalicefile.load(tmp_path / "chalicefile.json")


# --- callbacks on a stage with auth: only to the stage's own receivers ------------------------

CALLBACK_ARN = "arn:aws:secretsmanager:eu-west-1:1:secret:imagepipe-prod/callback-Ab"


def test_a_cloud_stage_with_auth_and_callbacks_must_list_its_callback_targets():
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    prod = chalicefile.stage_settings(manifest, "prod", environ=PROD_ENV)
    assert prod.auth_on and prod.callback_allowed_prefixes == ()
    # Callbacks off (no CallbackSecretArn): nothing to refuse.
    chalicefile.require_callback_targets(manifest, "prod", prod, PROD_ENV)

    with_callbacks = {**PROD_ENV, "IMAGEPIPE_CALLBACK_SECRET_ARN": CALLBACK_ARN}
    with pytest.raises(ConfigError, match="callback_allowed_prefixes is empty"):
        chalicefile.require_callback_targets(manifest, "prod", prod, with_callbacks)

    listed = {**with_callbacks,
              "IMAGEPIPE_CALLBACK_ALLOWED_PREFIXES": "https://hooks.example/in/, https://b.example/"}
    prod = chalicefile.stage_settings(manifest, "prod", environ=listed)
    assert prod.callback_allowed_prefixes == ("https://hooks.example/in/", "https://b.example/")
    chalicefile.require_callback_targets(manifest, "prod", prod, listed)


def test_a_public_stage_with_callbacks_needs_no_list():
    manifest = _manifest_with_prod_auth({"mode": "none", "public": True})
    env = {**PROD_ENV, "IMAGEPIPE_CALLBACK_SECRET_ARN": CALLBACK_ARN}
    prod = chalicefile.stage_settings(manifest, "prod", environ=env)
    chalicefile.require_callback_targets(manifest, "prod", prod, env)
