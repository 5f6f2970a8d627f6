"""``chalicefile.json``: the one deploy manifest, and what is rendered from it.

It names the functions (project dir, memory, timeout), the variant spec, the upload limits and
the stages. A stage's values may reference the environment as ``${NAME}`` (secrets and
account-specific names are never committed); an unset reference is an error naming it.

``stage_settings`` turns one stage into ``Settings``; ``chalice_config`` renders a function's
``.chalice/config.json`` whose environment is exactly ``Settings.to_env()`` — so a function reads
back, through ``Settings.from_env``, the settings the manifest describes.

A cloud stage also has a ``deploy`` section (``stage_deploy``): ``parameters`` of the infra
stack (``infra/stack.yaml``) such as the VPC, broker size and bridge scaling. A function may name
a ``merge_template`` that ``make package`` merges into its ``chalice package`` output.

A stage's ``auth`` says who may call its API (``imagepipe.auth``): ``{"mode": "none"}`` (the
default, for the local stage) or ``{"mode": "jwt", "issuer", "audience"}`` with a
``jwks_url`` (RS256/ES256 from an identity provider), an HS256 ``secret`` (``secret_arn`` in
the cloud, a Secrets Manager secret the upload function reads at start: ``make deploy`` passes it
to the infra stack as ``AuthSecretArn``, which lets that function's role read it) or both, and
optionally ``max_ttl_s``. A cloud stage is packaged only with auth on, or with
``{"mode": "none", "public": true}`` saying that its API is open on purpose
(``require_decided_auth``); with auth on and callbacks, only with ``callback_allowed_prefixes``
(``require_callback_targets``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Mapping

from imagepipe.errors import ConfigError
from imagepipe.settings import Settings
from imagepipe.spec import parse_variants

FILENAME = "chalicefile.json"
# ${NAME}, or ${NAME:-default} for a value used when NAME is unset or empty (as in a shell).
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SETTINGS_FIELDS = {f.name for f in fields(Settings)}
_LIMITS = {"max_upload_bytes", "allowed_types", "max_pixels", "multipart_threshold_bytes",
           "multipart_part_bytes"}
_OPTIONAL_LIMITS = ("multipart_threshold_bytes", "multipart_part_bytes")
_FUNCTION_FIELDS = {"project_dir", "memory_mb", "timeout_s"}
_OPTIONAL_FUNCTION_FIELDS = {"merge_template"}
DEPLOY = "deploy"
AUTH = "auth"
# The stage's ``auth`` object → the ``Settings`` fields it sets.
_AUTH_FIELDS = {"mode": "auth_mode", "issuer": "auth_issuer", "audience": "auth_audience",
                "jwks_url": "auth_jwks_url", "secret": "auth_secret",
                "secret_arn": "auth_secret_arn", "max_ttl_s": "auth_max_ttl_s"}
PUBLIC = "public"
_DEPLOY_FIELDS = {"parameters", "api_throttle", "reserved_concurrency"}
# API Gateway stage throttling (every route) and each Lambda's reserved concurrency, unless the
# stage's deploy section says otherwise. Reserved concurrency is both a floor and a ceiling: the
# upload API cannot starve the account, and the resize function's must cover the bridges' total
# (bridge tasks x IMAGEPIPE_WORKERS; see docs/network.md#limits). Lambda keeps 100 of the
# account's concurrency unreserved, so an account at the default quota (1,000) fits these.
DEFAULT_API_THROTTLE = {"rate_per_s": 50, "burst": 100}
DEFAULT_RESERVED_CONCURRENCY = {"upload": 25, "resize": 20}
# The infra stack's parameter that turns callbacks on in the cloud (the secret's ARN).
CALLBACK_SECRET_PARAMETER = "CallbackSecretArn"


def load(path: str | Path) -> dict:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    validate(manifest)
    return manifest


def validate(manifest: dict) -> None:
    for section in ("app_name", "functions", "limits", "variants", "stages"):
        if section not in manifest:
            raise ConfigError(f"chalicefile: missing section {section!r}")
    parse_variants(manifest["variants"])
    unknown = set(manifest["limits"]) - _LIMITS
    if unknown:
        raise ConfigError(f"chalicefile.limits: unknown field(s) {', '.join(sorted(unknown))}")
    for name, function in manifest["functions"].items():
        missing = _FUNCTION_FIELDS - set(function)
        if missing:
            raise ConfigError(f"chalicefile.functions.{name}: missing {', '.join(sorted(missing))}")
        unknown = set(function) - _FUNCTION_FIELDS - _OPTIONAL_FUNCTION_FIELDS
        if unknown:
            raise ConfigError(f"chalicefile.functions.{name}: unknown field(s) {', '.join(sorted(unknown))}")
        for field in ("memory_mb", "timeout_s"):
            if not isinstance(function[field], int) or function[field] < 1:
                raise ConfigError(f"chalicefile.functions.{name}.{field}: must be a positive integer")
    for stage, values in manifest["stages"].items():
        unknown = set(values) - (_SETTINGS_FIELDS - set(_AUTH_FIELDS.values())) - {DEPLOY, AUTH}
        if unknown:
            raise ConfigError(f"chalicefile.stages.{stage}: unknown field(s) {', '.join(sorted(unknown))}")
        if DEPLOY in values:
            _validate_deploy(values[DEPLOY], f"stages.{stage}.{DEPLOY}")
        if AUTH in values:
            _validate_auth(values[AUTH], f"stages.{stage}.{AUTH}")


def _validate_auth(auth, where: str) -> None:
    if not isinstance(auth, dict):
        raise ConfigError(f"chalicefile.{where}: must be an object")
    unknown = set(auth) - set(_AUTH_FIELDS) - {PUBLIC}
    if unknown:
        raise ConfigError(f"chalicefile.{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if PUBLIC in auth and not isinstance(auth[PUBLIC], bool):
        raise ConfigError(f"chalicefile.{where}.{PUBLIC}: must be true or false")
    if auth.get(PUBLIC) and auth.get("mode", "none") != "none":
        raise ConfigError(f"chalicefile.{where}: {PUBLIC!r} is only for mode none")


def require_decided_auth(manifest: dict, stage: str) -> None:
    """A cloud stage's API is on the internet: refuse to package one that does not say who may
    call it (auth on), or that it is open on purpose (``"public": true``); refuse a shared
    secret written into the manifest, which would land in the template."""
    auth = _stage(manifest, stage).get(AUTH) or {}
    where = f"chalicefile.stages.{stage}"
    if auth.get("mode", "none") == "none" and not auth.get(PUBLIC):
        raise ConfigError(
            f"{where}: its API would be open to anyone on the internet (anyone could upload, "
            "and read, complete or cancel any upload whose id they learn). Give it "
            '"auth": {"mode": "jwt", "issuer": ..., "audience": ..., "jwks_url": ...} '
            '(or an HS256 "secret_arn"; see docs/auth.md), or say '
            '"auth": {"mode": "none", "public": true} to deploy it open on purpose')
    if auth.get("secret"):
        raise ConfigError(f"{where}.{AUTH}.secret: a cloud stage reads its HS256 secret from "
                          'Secrets Manager: give its ARN as "secret_arn" instead')


def require_callback_targets(manifest: dict, stage: str, settings: Settings,
                             environ: Mapping[str, str] | None = None) -> None:
    """With auth on, callers are users rather than the stage's own backend, so a
    ``callback_url`` must start with one of the stage's ``callback_allowed_prefixes`` (its own
    receivers): a stage with callbacks on and no list would refuse every one. Refuse to
    package it instead of deploying callbacks that nobody can use."""
    if not settings.auth_on or settings.callback_allowed_prefixes:
        return
    environ = os.environ if environ is None else environ
    parameters = _stage(manifest, stage).get(DEPLOY, {}).get("parameters", {})
    where = f"stages.{stage}.{DEPLOY}.parameters.{CALLBACK_SECRET_PARAMETER}"
    if settings.callback_secret or _expand(parameters.get(CALLBACK_SECRET_PARAMETER, ""), where,
                                           environ):
        raise ConfigError(
            f"chalicefile.stages.{stage}: callbacks are on ({CALLBACK_SECRET_PARAMETER}) with "
            "auth, but callback_allowed_prefixes is empty: with auth on a callback_url must "
            "start with one of the stage's own receivers (https://host/path/...), so every "
            "callback_url would be refused. List them, or turn callbacks off")


def _validate_deploy(deploy, where: str) -> None:
    if not isinstance(deploy, dict):
        raise ConfigError(f"chalicefile.{where}: must be an object")
    unknown = set(deploy) - _DEPLOY_FIELDS
    if unknown:
        raise ConfigError(f"chalicefile.{where}: unknown field(s) {', '.join(sorted(unknown))}")
    throttle = deploy.get("api_throttle", {})
    if not isinstance(throttle, dict) or set(throttle) - set(DEFAULT_API_THROTTLE):
        raise ConfigError(f"chalicefile.{where}.api_throttle: an object with rate_per_s and burst")
    rate, burst = throttle.get("rate_per_s", 1), throttle.get("burst", 1)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0 or \
            isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigError(f"chalicefile.{where}.api_throttle: rate_per_s must be a positive "
                          "number and burst a positive whole number")
    reserved = deploy.get("reserved_concurrency", {})
    if not isinstance(reserved, dict):
        raise ConfigError(f"chalicefile.{where}.reserved_concurrency: must be an object")
    for function, count in reserved.items():
        # null leaves the function unreserved; 0 would stop it, so it is refused.
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 1):
            raise ConfigError(f"chalicefile.{where}.reserved_concurrency.{function}: a positive "
                              "whole number, or null for none")
    parameters = deploy.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ConfigError(f"chalicefile.{where}.parameters: must be an object")
    for name, value in parameters.items():
        scalar = (str, int, float, bool)
        if not (isinstance(value, scalar) or
                (isinstance(value, list) and all(isinstance(v, scalar) for v in value))):
            raise ConfigError(f"chalicefile.{where}.parameters.{name}: must be a value or a list")


def stage_deploy(manifest: dict, stage: str, environ: Mapping[str, str] | None = None) -> dict:
    """The ``deploy`` section of a cloud stage with its ``${NAME}`` references expanded."""
    require_cloud_stage(manifest, stage)
    environ = os.environ if environ is None else environ
    deploy = manifest["stages"][stage][DEPLOY]
    return {
        "parameters": {
            name: _expand(value, f"stages.{stage}.{DEPLOY}.parameters.{name}", environ)
            for name, value in deploy.get("parameters", {}).items()
        }
    }


def stage_limits(manifest: dict, stage: str) -> dict:
    """``{"api_throttle": {"rate_per_s", "burst"}, "reserved_concurrency": {function: n|None}}``
    of a cloud stage: its deploy section over the defaults."""
    require_cloud_stage(manifest, stage)
    deploy = manifest["stages"][stage][DEPLOY]
    unknown = set(deploy.get("reserved_concurrency", {})) - set(manifest["functions"])
    if unknown:
        raise ConfigError(f"chalicefile.stages.{stage}.{DEPLOY}.reserved_concurrency: no "
                          f"function(s) {', '.join(sorted(unknown))}")
    return {
        "api_throttle": {**DEFAULT_API_THROTTLE, **deploy.get("api_throttle", {})},
        "reserved_concurrency": {
            function: deploy.get("reserved_concurrency", {}).get(
                function, DEFAULT_RESERVED_CONCURRENCY.get(function))
            for function in manifest["functions"]},
    }


class Placeholders(Mapping):
    """An environment in which every unset variable reads as ``unset-<name>`` (and is noted).

    For output that must be complete but whose deploy-time values are set later (``make
    package`` alone: the bucket name, for one, is a parameter of the deployed stacks).
    """

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self.unset: set[str] = set()

    def __getitem__(self, name: str) -> str:
        if name in self._environ:
            return self._environ[name]
        self.unset.add(name)
        return "unset-" + name.lower().replace("_", "-")

    def __contains__(self, name) -> bool:
        return True

    def get(self, name, default=None):
        return self._environ.get(name, default)

    def __iter__(self):
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def require_cloud_stage(manifest: dict, stage: str) -> None:
    if DEPLOY not in _stage(manifest, stage):
        raise ConfigError(f"chalicefile.stages.{stage}: not a cloud stage (no {DEPLOY!r} section)")


def _stage(manifest: dict, stage: str) -> dict:
    try:
        return manifest["stages"][stage]
    except KeyError:
        known = ", ".join(sorted(manifest["stages"]))
        raise ConfigError(f"chalicefile: no stage {stage!r} (stages: {known})") from None


def stage_settings(
    manifest: dict,
    stage: str,
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The ``Settings`` of one stage; ``overrides`` (e.g. a dev stack's ports) win."""
    values = _stage(manifest, stage)
    environ = os.environ if environ is None else environ
    resolved = {k: _expand(v, f"stages.{stage}.{k}", environ)
                for k, v in values.items() if k not in (DEPLOY, AUTH)}
    for name, value in (values.get(AUTH) or {}).items():
        if name in _AUTH_FIELDS:
            resolved[_AUTH_FIELDS[name]] = _expand(value, f"stages.{stage}.{AUTH}.{name}", environ)
    limits = manifest["limits"]
    kwargs = {
        "stage": stage,
        "max_upload_bytes": limits["max_upload_bytes"],
        "allowed_types": tuple(limits["allowed_types"]),
        "max_pixels": limits["max_pixels"],
        **{name: limits[name] for name in _OPTIONAL_LIMITS if name in limits},
        "variants": parse_variants(manifest["variants"]),
        **resolved,
    }
    if "allowed_origins" in kwargs:
        # An entry may reference a comma-separated list, as the local stage does with
        # ${IMAGEPIPE_ALLOWED_ORIGINS:-}: a user's own frontend joins the stage's origins.
        kwargs["allowed_origins"] = tuple(
            origin.strip() for entry in kwargs["allowed_origins"]
            for origin in entry.split(",") if origin.strip())
    if "delivery_keys" in kwargs:
        kwargs["delivery_keys"] = tuple(k for k in kwargs["delivery_keys"] if k)
    if "callback_allowed_prefixes" in kwargs:
        # Like the origins: an entry may reference a comma-separated list, possibly empty.
        kwargs["callback_allowed_prefixes"] = tuple(
            prefix.strip() for entry in kwargs["callback_allowed_prefixes"]
            for prefix in entry.split(",") if prefix.strip())
    settings = Settings(**kwargs)
    changes: dict[str, Any] = dict(overrides or {})
    return replace(settings, **changes)


def chalice_config(manifest: dict, function: str, settings: Settings) -> dict:
    """The ``.chalice/config.json`` of one function for ``settings.stage``."""
    try:
        spec = manifest["functions"][function]
    except KeyError:
        raise ConfigError(f"chalicefile: no function {function!r}") from None
    return {
        "version": "2.0",
        "app_name": f"{manifest['app_name']}-{function}",
        "stages": {
            settings.stage: {
                "api_gateway_stage": "api",
                "lambda_memory_size": spec["memory_mb"],
                "lambda_timeout": spec["timeout_s"],
                "environment_variables": settings.to_env(),
            }
        },
    }


def render(root: str | Path, stage: str, overrides: Mapping[str, object] | None = None,
           environ: Mapping[str, str] | None = None) -> Settings:
    """Write every function's ``.chalice/config.json`` for ``stage``; returns the settings."""
    root = Path(root)
    manifest = load(root / FILENAME)
    settings = stage_settings(manifest, stage, overrides, environ)
    for name, spec in manifest["functions"].items():
        config_dir = root / spec["project_dir"] / ".chalice"
        config_dir.mkdir(parents=True, exist_ok=True)
        config = chalice_config(manifest, name, settings)
        (config_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return settings


def _expand(value, where: str, environ: Mapping[str, str]):
    if isinstance(value, list):
        return [_expand(v, where, environ) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if environ.get(name):
            return environ[name]
        if default is not None:
            return default
        if name not in environ:
            raise ConfigError(f"chalicefile.{where}: environment variable {name} is not set")
        return environ[name]

    return _REFERENCE.sub(substitute, value)
