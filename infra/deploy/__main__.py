"""``python -m infra.deploy package|deploy|destroy --stage S`` (the Makefile's targets).

Exit codes: 0 done, 1 a step failed, 2 the configuration or the credentials are missing — said
in one line on stderr before anything was changed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from imagepipe_tools import chalicefile
from infra.deploy import bridge_image, credentials, deploy, package, stacks, templates
from imagepipe.errors import ConfigError
from imagepipe.settings import ENV_REGION

ROOT = Path(__file__).resolve().parents[2]
EXIT_FAILED = 1
EXIT_CONFIG = 2


def run_package(args) -> int:
    """Package and lint. Alone, unset stage variables become placeholders (and are named)."""
    return 0 if package_and_lint(args) is not None else EXIT_FAILED


def package_and_lint(args, environ=None) -> package.Package | None:
    """The linted package of ``args.stage``, or None when cfn-lint found anything (printed)."""
    lenient = environ is None
    if lenient:
        environ = chalicefile.Placeholders(os.environ)
    result = package.package(ROOT, args.stage, args.out and Path(args.out), environ=environ)
    if lenient and environ.unset:
        print(f"note: {', '.join(sorted(environ.unset))} not set: packaged with placeholders "
              "(make deploy needs them set)", file=sys.stderr)
    # The stage's region decides which resource types and values exist.
    findings = templates.lint(result.all_templates(), [result.region])
    for line in findings:
        print(line, file=sys.stderr)
    if findings:
        print(f"cfn-lint: {len(findings)} finding(s)", file=sys.stderr)
        return None
    print(f"packaged stage {args.stage!r} into {result.out_dir} (cfn-lint: clean)")
    for path in result.all_templates():
        print(f"  {path.relative_to(result.out_dir)}")
    return result


def run_deploy(args) -> int:
    region = credentials.check()  # before anything is packaged or changed
    bridge_image.require_docker()
    # The stage's ${AWS_REGION} is the region AWS is configured for, however it was set.
    environ = {**os.environ, ENV_REGION: os.environ.get(ENV_REGION) or region}
    manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
    stage_parameters = chalicefile.stage_deploy(manifest, args.stage, environ)["parameters"]
    settings = chalicefile.stage_settings(manifest, args.stage, environ=environ)
    if settings.region != region:
        raise ConfigError(f"the stage's region is {settings.region} but AWS is set to {region}")
    result = package_and_lint(args, environ)
    if result is None:
        return EXIT_FAILED
    deployment = deploy.deploy(result, settings, stage_parameters,
                               deploy.Clients.for_region(region), ROOT)
    print(deployment.summary())
    return 0


def run_destroy(args) -> int:
    region = credentials.check()
    manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
    chalicefile.require_cloud_stage(manifest, args.stage)
    settings = chalicefile.stage_settings(manifest, args.stage)
    from infra.deploy.names import Names

    for line in deploy.destroy(Names.of(manifest, settings), manifest["functions"],
                               deploy.Clients.for_region(region)):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("package", run_package, "chalice package every function and render the infra template"),
        ("deploy", run_deploy, "package, then deploy the stage to AWS"),
        ("destroy", run_destroy, "delete the stage's stacks (the photo bucket is kept)"),
    ):
        p = commands.add_parser(name, help=text)
        p.add_argument("--stage", default="prod")
        p.add_argument("--out", default=None, help="package folder (default .run/package/STAGE)")
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("botocore", "cfnlint", "samtranslator"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (credentials.MissingCredentials, ConfigError, bridge_image.ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (package.PackageError, stacks.StackError, deploy.DeployError, BotoCoreError,
            ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
