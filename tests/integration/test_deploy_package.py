"""``make package STAGE=prod``: code bundles that run on the Lambda runtime, lint-clean templates,
and the stage's settings in every function's and the bridge's environment."""

import dataclasses
import json
import re
import zipfile

import pytest

from imagepipe_tools import chalicefile
from infra.deploy import package as package_module
from infra.deploy import platform, templates, wheels
from imagepipe.settings import (DEFAULT_LAMBDA_WORKERS, ENV_AMQP_SECRET_ARN, ENV_AMQP_URL,
                                ENV_BUCKET, SECRET_ENV, Settings, env_name, secret_arn_env)
from tests.integration.packaged import ROOT, STAGE, STAGE_ENV, package_once

ELF_MACHINE_X86_64 = 0x3E


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    return package_once(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def stage_settings():
    manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
    return chalicefile.stage_settings(manifest, STAGE, environ=STAGE_ENV)


def bundle(packaged, function) -> zipfile.ZipFile:
    return zipfile.ZipFile(packaged.function_templates[function].parent / "deployment.zip")


def assert_only_the_core(names):
    """The bundle's project code is the app and the runtime core, file for file: no tools."""
    core = {str(path.relative_to(ROOT)) for path in (ROOT / "imagepipe").rglob("*.py")
            if "__pycache__" not in path.parts} - {"imagepipe/__main__.py"}
    assert {n for n in names if n.startswith("imagepipe/") and n.endswith(".py")} == core
    tops = {n.split("/", 1)[0] for n in names}
    assert not tops & {"imagepipe_tools", "imagepipe_dev", "infra", "bridge", "tests", "tools"}


def functions_of(template):
    return {k: v["Properties"] for k, v in template["Resources"].items()
            if v["Type"] == "AWS::Serverless::Function"}


def test_package_runs_without_credentials_and_every_template_is_lint_clean(tmp_path_factory):
    packaged, result = package_once(tmp_path_factory)
    # The command lints every template it wrote and fails on any finding.
    assert "cfn-lint: clean" in result.stdout
    assert {p.name for p in packaged.all_templates()} == {"infra.json", "template.json"}
    assert len(packaged.all_templates()) == 3
    assert all(str(p.relative_to(packaged.out_dir)) in result.stdout for p in packaged.all_templates())


def test_lint_fails_on_a_broken_generated_template(packaged, tmp_path):
    template = templates.load(packaged.function_templates["resize"])
    functions_of(template)["Resize"]["MemorySize"] = 64  # Lambda's minimum is 128
    findings = templates.lint([templates.dump(template, tmp_path / "template.json")])
    assert findings and "MemorySize" in " ".join(findings)


def test_resize_bundle_has_pillow_from_a_manylinux_wheel_for_the_runtime(packaged):
    with bundle(packaged, "resize") as archive:
        names = archive.namelist()
        (wheel_file,) = [n for n in names if re.fullmatch(r"pillow-[^/]+\.dist-info/WHEEL", n)]
        tags = wheels.wheel_tags(archive.read(wheel_file).decode())
        assert tags and all(wheels.tag_runs_on_lambda(t) for t in tags), tags
        assert all("manylinux" in t for t in tags)
        # The same Pillow as local development: no version skew.
        version = wheel_file.split("/")[0][len("pillow-"):-len(".dist-info")]
        pin = next(line for line in (ROOT / "requirements.txt").read_text().splitlines()
                   if line.lower().startswith("pillow=="))
        assert version == pin.split("==")[1]
        (imaging,) = [n for n in names if re.fullmatch(r"PIL/_imaging\.[^/]*\.so", n)]
        assert imaging == f"PIL/_imaging.{platform.ABI.replace('cp', 'cpython-')}-x86_64-linux-gnu.so"
        elf = archive.read(imaging)[:20]
        assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == ELF_MACHINE_X86_64
        # The shared libraries the wheel brings (libjpeg, zlib...) come along.
        assert [n for n in names if n.startswith("pillow.libs/libjpeg")]
        # Nothing compiled for this machine's Python (abi3: any CPython 3 from the stable ABI).
        assert not [n for n in names if n.endswith(".so") and "cpython-312" not in n
                    and not n.endswith(".abi3.so") and not n.startswith("pillow.libs/")]
        assert "app.py" in names and "imagepipe/resize.py" in names
        assert_only_the_core(names)


def test_resize_bundle_has_libvips_its_default_engine_from_wheels_for_the_runtime(packaged):
    with bundle(packaged, "resize") as archive:
        names = archive.namelist()
        for project in ("pyvips_binary", "pyvips", "cffi"):
            (wheel_file,) = [n for n in names
                             if re.fullmatch(project + r"-[^/-]+\.dist-info/WHEEL", n)]
            tags = wheels.wheel_tags(archive.read(wheel_file).decode())
            assert tags and all(wheels.tag_runs_on_lambda(t) for t in tags), (project, tags)
        # The compiled binding pyvips loads (API mode) and the libvips it links to.
        assert "_libvips.abi3.so" in names and "pyvips/__init__.py" in names
        assert [n for n in names if re.fullmatch(r"pyvips_binary\.libs/libvips-[^/]+\.so\.42", n)]
        (backend,) = [n for n in names if n.startswith("_cffi_backend.")]
        assert backend == f"_cffi_backend.{platform.ABI.replace('cp', 'cpython-')}-x86_64-linux-gnu.so"


def test_upload_bundle_has_no_pillow(packaged):
    with bundle(packaged, "upload") as archive:
        names = archive.namelist()
    assert not [n for n in names if n.startswith(("PIL/", "pillow"))]
    assert "pika/__init__.py" in names and "imagepipe/uploads.py" in names and "app.py" in names
    # Bearer tokens: PyJWT, and cryptography's compiled core for the Lambda platform.
    assert "jwt/__init__.py" in names and "imagepipe/auth.py" in names
    assert any(n.startswith("cryptography/hazmat/bindings/_rust") and n.endswith(".so")
               for n in names)
    assert_only_the_core(names)


def test_functions_run_on_the_chosen_runtime_as_the_infra_roles(packaged):
    expected_roles = {"upload": "UploadFunctionRoleArn", "resize": "ResizeFunctionRoleArn"}
    for function, path in packaged.function_templates.items():
        template = templates.load(path)
        for name, props in functions_of(template).items():
            assert props["Runtime"] == platform.RUNTIME, name
            assert props["Architectures"] == [platform.ARCHITECTURE], name
            assert props["Role"] == {"Ref": expected_roles[function]}, name
            assert "Ref" in props["FunctionName"], name
            env = props["Environment"]["Variables"]
            assert not set(env) & package_module.LAMBDA_RESERVED_ENV, name
            assert env[ENV_AMQP_URL] == {"Ref": "AmqpEndpoint"}, name
            assert "guest" not in json.dumps(env), name
        assert "DefaultRole" not in template["Resources"]  # Chalice made no role of its own


def test_every_packaged_function_logs_in_lambdas_json_format(packaged):
    # chalice package knows nothing of it: the merge templates (infra/*-function*.yaml) add it.
    for path in packaged.function_templates.values():
        for name, props in functions_of(templates.load(path)).items():
            assert props["LoggingConfig"]["LogFormat"] == "JSON", name
            assert props["LoggingConfig"]["ApplicationLogLevel"] == "INFO", name


def test_upload_stack_lets_s3_invoke_the_enqueue_function_only_from_the_bucket(packaged):
    template = templates.load(packaged.function_templates["upload"])
    functions = functions_of(template)
    assert functions["OnObjectCreated"]["Handler"] == "app.on_object_created"
    for props in functions.values():
        assert props["Environment"]["Variables"][ENV_AMQP_SECRET_ARN] == {"Ref": "BrokerSecretArn"}
    permission = template["Resources"]["ObjectCreatedInvokePermission"]["Properties"]
    assert permission["Principal"] == "s3.amazonaws.com"
    assert permission["FunctionName"] == {"Ref": "OnObjectCreated"}
    assert permission["SourceArn"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketName}"}
    assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_every_piece_reads_back_the_stage_settings(packaged, stage_settings):
    deploy_time = {"BucketName": stage_settings.bucket, "AmqpEndpoint": "amqps://b-1.mq:5671",
                   "BrokerSecretArn": "arn:aws:secretsmanager:eu-west-1:1:secret:broker",
                   "CallbackSecretArn": "", "CdnDomain": ""}

    def resolved(env):
        # Deploy-time values this test does not care about (CDN domain, public URL) read empty.
        return {k: deploy_time.get(v["Ref"], "") if isinstance(v, dict) else v
                for k, v in env.items()}

    for path in packaged.function_templates.values():
        for name, props in functions_of(templates.load(path)).items():
            env = {**resolved(props["Environment"]["Variables"]), "AWS_REGION": stage_settings.region}
            read = Settings.from_env(env)
            assert read.bucket == stage_settings.bucket
            assert read.variants == stage_settings.variants
            assert read.presign_expires == stage_settings.presign_expires
            assert read.allowed_origins == ("https://photos.example",)
    container = package_module.bridge_container(templates.load(packaged.infra_template))
    bridge_env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert set(package_module.without_auth(stage_settings).to_env()) <= set(bridge_env)
    # Who may call the API is the upload function's business: nobody else gets auth settings.
    assert stage_settings.auth_on and bridge_env[env_name("auth_mode")] == "none"
    assert env_name("auth_issuer") not in bridge_env
    for function, path in packaged.function_templates.items():
        for name, props in functions_of(templates.load(path)).items():
            env = props["Environment"]["Variables"]
            assert (env.get(env_name("auth_mode")) == "jwt") == (function == "upload"), name
    assert bridge_env[ENV_BUCKET] == {"Ref": "Bucket"}
    assert bridge_env["IMAGEPIPE_INVOKER"] == "lambda"
    assert bridge_env["IMAGEPIPE_RESIZE_FUNCTION"] == {"Ref": "ResizeFunctionName"}


def test_a_new_setting_reaches_the_bridge_without_a_template_edit(stage_settings):
    class WithMore(Settings):
        def to_env(self):
            return {**super().to_env(), "IMAGEPIPE_SOMETHING_NEW": "42"}

    infra = package_module.render_infra(ROOT, WithMore(**{
        f: getattr(stage_settings, f) for f in stage_settings.__dataclass_fields__}))
    env = {e["Name"]: e["Value"] for e in package_module.bridge_container(infra)["Environment"]}
    assert env["IMAGEPIPE_SOMETHING_NEW"] == "42"


# Which component reads which secret setting, by the name of its `<NAME>_ARN` parameter.
READS = {
    "APIHandler": {"IMAGEPIPE_CALLBACK_SECRET": "CallbackSecretArn",
                   "IMAGEPIPE_DELIVERY_KEYS": "DeliveryKeysSecretArn",
                   "IMAGEPIPE_AUTH_SECRET": "AuthSecretArn"},
    "Resize": {"IMAGEPIPE_DELIVERY_KEYS": "DeliveryKeysSecretArn"},
}
READS["OnObjectCreated"] = READS["APIHandler"]  # one service, one role


def test_no_secret_sits_in_any_environment_only_the_arns_naming_them(packaged):
    """No ``secret=True`` setting is a plain variable of any packaged template: functions get
    its ``<NAME>_ARN`` from a parameter (the infra stack's output), the bridge ECS
    ``secrets``/``valueFrom``."""
    secret_names = {f.metadata["env"].name for f in dataclasses.fields(Settings)
                    if f.metadata["env"].secret}
    assert secret_names == set(SECRET_ENV) >= {"IMAGEPIPE_CALLBACK_SECRET",
                                               "IMAGEPIPE_DELIVERY_KEYS", "IMAGEPIPE_AUTH_SECRET"}
    seen = set()
    for path in packaged.function_templates.values():
        template = templates.load(path)
        for name, props in functions_of(template).items():
            seen.add(name)
            env = props["Environment"]["Variables"]
            assert not secret_names & set(env), name
            for secret, parameter in READS[name].items():
                assert env[secret_arn_env(secret)] == {"Ref": parameter}, (name, secret)
                assert template["Parameters"][parameter]["Default"] == "", (name, parameter)
            # An ARN variable a function has is one it reads, wired from a parameter.
            arns = {k for k in env if k.removesuffix("_ARN") in secret_names}
            assert arns == {secret_arn_env(secret) for secret in READS[name]}, name
    assert seen == set(READS)
    infra = templates.load(packaged.infra_template)
    container = package_module.bridge_container(infra)
    assert not secret_names & {e["Name"] for e in container["Environment"]}
    _condition, secrets, _ = container["Secrets"]["Fn::If"]
    for entry in secrets:
        assert entry["Name"] in secret_names and set(entry) == {"Name", "ValueFrom"}
        assert entry["ValueFrom"]["Ref"] in infra["Parameters"]
    # Nor anywhere else in a template: no secret value or variable name with a plain value.
    for path in packaged.all_templates():
        text = path.read_text()
        for secret in secret_names:
            assert f'"{secret}":' not in text, (path.name, secret)


def test_the_bridge_keeps_within_the_resize_functions_reservation(packaged):
    """chalicefile.json's deploy.reserved_concurrency.resize is the one number: the resize
    template reserves it and the bridge's lambda invoker sizes its default concurrency to it."""
    manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
    reserved = chalicefile.stage_limits(manifest, STAGE)["reserved_concurrency"]["resize"]
    (resize,) = functions_of(templates.load(packaged.function_templates["resize"])).values()
    assert resize["ReservedConcurrentExecutions"] == reserved
    container = package_module.bridge_container(templates.load(packaged.infra_template))
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env[env_name("resize_reserved_concurrency")] == str(reserved)
    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    bridge = Settings.from_env({**plain, ENV_BUCKET: "b", "IMAGEPIPE_RESIZE_FUNCTION": "f"})
    assert bridge.invoker == "lambda"
    # Each of the stage's bridge tasks takes its share: all of them at once stay within it.
    tasks = package_module.bridge_max_count(ROOT, manifest, STAGE)
    assert bridge.worker_count == min(reserved // tasks, DEFAULT_LAMBDA_WORKERS)
    assert bridge.worker_count * tasks <= reserved


def test_the_api_is_throttled_and_each_function_has_its_reserved_concurrency(packaged):
    manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
    limits = chalicefile.stage_limits(manifest, STAGE)
    upload = templates.load(packaged.function_templates["upload"])
    (api,) = [r["Properties"] for r in upload["Resources"].values()
              if r["Type"] == "AWS::Serverless::Api"]
    (setting,) = api["MethodSettings"]
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    assert setting["ThrottlingRateLimit"] == limits["api_throttle"]["rate_per_s"]
    assert setting["ThrottlingBurstLimit"] == limits["api_throttle"]["burst"]
    for function, path in packaged.function_templates.items():
        for name, props in functions_of(templates.load(path)).items():
            reserved = limits["reserved_concurrency"][function]
            assert reserved and props["ReservedConcurrentExecutions"] == reserved, name
