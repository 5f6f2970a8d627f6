"""``make package STAGE=...``: every template and code bundle of a cloud stage, in one folder.

For each function a staging copy of its project is made under ``<out>/build/<function>``
(``app.py``, a rendered ``.chalice/config.json``, ``vendor/`` with the core package and the
function's pinned requirements as Lambda-platform wheels), then ``chalice package`` runs there
with the function's merge template. The working tree's ``functions/`` stay as ``make build``
left them. Chalice gets an empty ``requirements.txt``: it never resolves or builds anything.

The output folder (default ``.run/package/<stage>``):

- ``infra.json``: ``infra/stack.yaml`` with the stage's settings appended to the bridge's
  environment (``Settings.to_env``), so a new setting reaches the bridge without a template edit,
  and the bucket's CORS rule from ``imagepipe.bucket_cors`` (the local stack's rule too);
- ``<function>/template.json`` and ``<function>/deployment.zip``: the functions' stacks;
- ``package.json``: stage, names and paths, read by ``deploy``.

No AWS call is made and no credentials are needed; only PyPI is reached, once, for wheels.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from imagepipe import bucket_cors
from imagepipe_tools import chalicefile
from infra.deploy import vendoring
from infra.deploy import names as names_module
from infra.deploy import artifacts, platform, templates, wheels
from imagepipe.errors import ConfigError
from imagepipe.settings import SECRET_ENV, Settings, default, env_name, secret_arn_env

LOGGER = logging.getLogger(__name__)

INFRA_TEMPLATE = Path("infra/stack.yaml")
BRIDGE_CONTAINER = "bridge"
BUCKET_RESOURCE = "Bucket"
API_TYPE = "AWS::Serverless::Api"
ALLOWED_ORIGINS_PARAMETER = "AllowedOrigins"
# The role is the infra stack's (the merge template sets it); Chalice must not make one.
ROLE_PLACEHOLDER = "arn:aws:iam::000000000000:role/set-by-the-merge-template"
# Lambda sets these itself and refuses functions that set them.
LAMBDA_RESERVED_ENV = {
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_NAME", "_HANDLER",
    "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
}
# Who may call the API is the upload function's business alone: the other functions and the
# bridge get no auth settings, so they neither need nor may read the HS256 secret.
AUTH_FUNCTION = "upload"
AUTH_FIELDS = tuple(f.name for f in fields(Settings) if f.name.startswith("auth_"))
# Lambda's limit for all of a function's environment variables together.
LAMBDA_ENV_LIMIT = 4096
# Environment variables that make the AWS SDK find credentials: `chalice package` runs without.
_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


class PackageError(Exception):
    """A package step failed (chalice, or a wheel that cannot be had)."""


@dataclass(frozen=True)
class Package:
    stage: str
    out_dir: Path
    infra_template: Path
    function_templates: dict  # function -> template.json
    names: names_module.Names
    region: str = "us-east-1"

    def write(self) -> Path:
        body = {
            "stage": self.stage,
            "infra_template": self.infra_template.name,
            "function_templates": {k: str(v.relative_to(self.out_dir))
                                   for k, v in self.function_templates.items()},
            "names": asdict(self.names),
            "region": self.region,
        }
        return templates.dump(body, self.out_dir / "package.json")

    @classmethod
    def read(cls, out_dir: Path) -> "Package":
        try:
            body = json.loads((out_dir / "package.json").read_text())
        except FileNotFoundError:
            raise ConfigError(f"{out_dir}: no package here (run `make package`)") from None
        return cls(
            stage=body["stage"],
            out_dir=out_dir,
            infra_template=out_dir / body["infra_template"],
            function_templates={k: out_dir / v for k, v in body["function_templates"].items()},
            names=names_module.Names(**body["names"]),
            region=body.get("region", "us-east-1"),
        )

    def all_templates(self) -> list[Path]:
        return [self.infra_template, *self.function_templates.values()]


def default_out_dir(root: Path, stage: str) -> Path:
    return root / ".run" / "package" / stage


def package(root: Path, stage: str, out_dir: Path | None = None, environ=None,
            wheel_cache: Path | None = None, download=wheels.pip_download) -> Package:
    """Package ``stage``; ``environ`` may be ``chalicefile.Placeholders`` (``make package``
    alone): deploy-time values then read as ``unset-<name>`` and ``make deploy`` packages again."""
    root = Path(root).resolve()
    out_dir = Path(out_dir or default_out_dir(root, stage)).resolve()
    manifest = chalicefile.load(root / chalicefile.FILENAME)
    chalicefile.require_cloud_stage(manifest, stage)
    chalicefile.require_decided_auth(manifest, stage)
    limits = chalicefile.stage_limits(manifest, stage)
    settings = with_resize_reservation(
        chalicefile.stage_settings(manifest, stage, environ=environ),
        limits["reserved_concurrency"].get("resize"),
        bridge_tasks=bridge_max_count(root, manifest, stage))
    refuse_plain_secrets(settings)
    chalicefile.require_callback_targets(manifest, stage, settings, environ)
    names = names_module.Names.of(manifest, settings)
    wheel_cache = wheel_cache or root / ".run" / "wheels"
    out_dir.mkdir(parents=True, exist_ok=True)
    function_templates = {}
    for function, spec in manifest["functions"].items():
        project = _stage_project(root, manifest, function, spec,
                                 settings if function == AUTH_FUNCTION else without_auth(settings),
                                 out_dir / "build", wheel_cache, download)
        path = _chalice_package(root, project, spec, settings, out_dir / function)
        template = with_limits(templates.load(path), limits["api_throttle"],
                               limits["reserved_concurrency"][function])
        function_templates[function] = templates.dump(template, path)
    infra = templates.dump(render_infra(root, without_auth(settings)), out_dir / "infra.json")
    result = Package(stage, out_dir, infra, function_templates, names, settings.region)
    result.write()
    return result


def with_limits(template: dict, api_throttle: dict, reserved: int | None) -> dict:
    """``template`` with API Gateway stage throttling on every route of its API (if it has one)
    and ``reserved`` concurrency for each of its functions (``None``: unreserved)."""
    for resource in template["Resources"].values():
        props = resource.setdefault("Properties", {})
        if resource["Type"] == API_TYPE:
            props["MethodSettings"] = [{
                "ResourcePath": "/*", "HttpMethod": "*",
                "ThrottlingRateLimit": api_throttle["rate_per_s"],
                "ThrottlingBurstLimit": api_throttle["burst"],
            }]
        elif resource["Type"] in artifacts.FUNCTION_TYPES and reserved is not None:
            props["ReservedConcurrentExecutions"] = reserved
    return template


def with_resize_reservation(settings: Settings, reserved: int | None,
                            bridge_tasks: int = 1) -> Settings:
    """``settings`` with the resize function's reserved concurrency of the stage's deploy
    section, so that a ``lambda`` bridge sizes its default concurrency within it; a stage that
    also sets the setting must agree (two numbers for one limit would drift apart).

    With a reservation, each of the at most ``bridge_tasks`` bridge tasks defaults to its share
    of it: all of them at once must not invoke more than the reservation, or Lambda throttles
    the rest and every throttled invoke spends one of the job's attempts."""
    settings = _with_reservation(settings, reserved)
    if (settings.invoker == "lambda" and settings.resize_reserved_concurrency
            and not settings.workers):
        share = max(1, settings.resize_reserved_concurrency // max(1, bridge_tasks))
        settings = replace(settings, workers=min(share, settings.worker_count))
    return settings


def bridge_max_count(root: Path, manifest: dict, stage: str) -> int:
    """The most bridge tasks the stage's autoscaling runs (``BridgeMaxCount``: the stage's
    deploy parameter, else the template's default); a placeholder reads as the default."""
    template = root / INFRA_TEMPLATE
    if not template.exists():  # a project with its own chalicefile only: ours
        template = Path(__file__).resolve().parents[1] / INFRA_TEMPLATE.name
    default_count = templates.load(template)["Parameters"]["BridgeMaxCount"]["Default"]
    given = manifest["stages"][stage].get(chalicefile.DEPLOY, {}).get("parameters", {}).get(
        "BridgeMaxCount", default_count)
    try:
        return max(1, int(given))
    except (TypeError, ValueError):
        return max(1, int(default_count))


def _with_reservation(settings: Settings, reserved: int | None) -> Settings:
    reserved = reserved or 0  # null: unreserved
    set_by_stage = settings.resize_reserved_concurrency
    if set_by_stage and set_by_stage != reserved:
        raise ConfigError(f"chalicefile.stages.{settings.stage}: resize_reserved_concurrency "
                          f"({set_by_stage}) differs from deploy.reserved_concurrency.resize "
                          f"({reserved or 'null'}); drop the former, the deploy section sets "
                          f"{env_name('resize_reserved_concurrency')} for the bridge")
    return replace(settings, resize_reserved_concurrency=reserved)


def without_auth(settings: Settings) -> Settings:
    """``settings`` for a component that does not authenticate callers."""
    return replace(settings, **{name: default(name) for name in AUTH_FIELDS})


def refuse_plain_secrets(settings: Settings) -> None:
    """A cloud stage's secret settings would be written into its templates (the functions' and
    the bridge's environments) in plain text: it names their Secrets Manager secrets instead."""
    env = settings.to_env()
    plain = [name for name in SECRET_ENV if env.get(name)]
    if plain:
        arns = ", ".join(secret_arn_env(name) for name in plain)
        raise ConfigError(f"chalicefile.stages.{settings.stage}: {', '.join(plain)} would sit in "
                          "the templates in plain text; keep it in Secrets Manager and pass the "
                          f"secret's ARN ({arns}; see docs/network.md#secrets)")


def render_infra(root: Path, settings: Settings) -> dict:
    """``infra/stack.yaml`` with the stage's settings appended to the bridge's environment and
    the bucket's CORS rule filled in.

    Values the template sets itself (from its parameters and resources: bucket, broker endpoint,
    secret, resize function) win; everything else comes from ``Settings.to_env``.
    """
    template = templates.load(root / INFRA_TEMPLATE)
    container = bridge_container(template)
    environment = container.setdefault("Environment", [])
    present = {entry["Name"] for entry in environment}
    for name, value in sorted(settings.to_env().items()):
        if name not in present:
            environment.append({"Name": name, "Value": value})
    _bucket_cors_rules(template).update(
        bucket_cors.cloudformation_cors_configuration({"Ref": ALLOWED_ORIGINS_PARAMETER}))
    return template


def _bucket_cors_rules(template: dict) -> dict:
    """Where the rule goes: the template writes ``CorsConfiguration: !If [condition,
    {CorsRules: []}, !Ref AWS::NoValue]``, deciding only whether there is a rule."""
    try:
        cors = template["Resources"][BUCKET_RESOURCE]["Properties"]["CorsConfiguration"]
        _condition, rules, _otherwise = cors["Fn::If"]
    except (KeyError, TypeError, ValueError):
        rules = None
    if not isinstance(rules, dict) or rules.get("CorsRules") != []:
        raise ConfigError(f"{INFRA_TEMPLATE}: {BUCKET_RESOURCE} needs CorsConfiguration: !If "
                          "[condition, {CorsRules: []}, !Ref AWS::NoValue] to render the rule into")
    return rules


def bridge_container(template: dict) -> dict:
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            for container in resource["Properties"]["ContainerDefinitions"]:
                if container["Name"] == BRIDGE_CONTAINER:
                    return container
    raise ConfigError(f"{INFRA_TEMPLATE}: no container named {BRIDGE_CONTAINER!r}")


def _stage_project(root, manifest, function, spec, settings, build_dir, wheel_cache,
                   download) -> Path:
    source = root / spec["project_dir"]
    project = build_dir / function
    # Keep .chalice/deployments (Chalice's own cache, keyed by the vendor/ contents).
    for stale in ("app.py", "chalicelib", "vendor", "requirements.txt"):
        path = project / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    project.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "app.py", project / "app.py")
    if (source / "chalicelib").is_dir():
        shutil.copytree(source / "chalicelib", project / "chalicelib",
                        ignore=vendoring.VENDOR_IGNORE)
    vendor = project / "vendor"
    vendoring.copy_core(root, vendor)
    requirements = source / "requirements.txt"
    pins = wheels.pinned_requirements(requirements)
    try:
        for wheel in wheels.lambda_wheels(pins, wheel_cache, download,
                                          wheels.built_from_source(requirements)):
            wheels.unpack(wheel, vendor)
    except wheels.WheelError as exc:
        raise PackageError(str(exc)) from None
    (project / "requirements.txt").write_text(
        "# Empty on purpose: dependencies are in vendor/ as Lambda-platform wheels.\n")
    config = chalicefile.chalice_config(manifest, function, settings)
    stage_config = config["stages"][settings.stage]
    stage_config["manage_iam_role"] = False
    stage_config["iam_role_arn"] = ROLE_PLACEHOLDER
    environment = {k: v for k, v in stage_config["environment_variables"].items()
                   if k not in LAMBDA_RESERVED_ENV}
    size = sum(len(k) + len(v) for k, v in environment.items())
    if size > LAMBDA_ENV_LIMIT:
        raise PackageError(f"{function}: the settings take {size} bytes of environment; "
                           f"Lambda allows {LAMBDA_ENV_LIMIT} (a smaller variant spec?)")
    stage_config["environment_variables"] = environment
    (project / ".chalice").mkdir(exist_ok=True)
    (project / ".chalice" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return project


def _chalice_package(root, project: Path, spec: dict, settings: Settings, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    command = [_chalice(), "--project-dir", str(project), "package", "--stage", settings.stage,
               "--pkg-format", "cloudformation", "--template-format", "json"]
    if spec.get("merge_template"):
        command += ["--merge-template", str((root / spec["merge_template"]).resolve())]
    command.append(str(out))
    env = {k: v for k, v in os.environ.items() if k not in _CREDENTIAL_ENV}
    env.update(AWS_DEFAULT_REGION=settings.region, AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise PackageError(f"chalice package failed for {project.name}: {detail}")
    generated = [p for p in (out / "sam.json", out / "sam.yaml") if p.exists()]
    if not generated:
        raise PackageError(f"chalice package wrote no template into {out}")
    template = templates.load(generated[0])
    for resource in template["Resources"].values():
        if resource["Type"] in artifacts.FUNCTION_TYPES:
            resource["Properties"]["Runtime"] = platform.RUNTIME
            resource["Properties"]["Architectures"] = [platform.ARCHITECTURE]
    for path in generated:
        path.unlink()
    return templates.dump(template, out / "template.json")


def _chalice() -> str:
    beside = Path(sys.executable).parent / "chalice"
    found = str(beside) if beside.exists() else shutil.which("chalice")
    if not found:
        raise PackageError("chalice is not installed (make venv)")
    return found

