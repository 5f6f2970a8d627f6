"""``make package STAGE=prod`` once per test session, the way a user runs it: no AWS credentials,
only PyPI reachable (wheels are cached under .run/wheels, so later runs need no network).

A package that cannot be built (no network for a wheel that is not cached yet) fails the tests
that need it, with chalice's or pip's message: it is never skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.deploy.package import Package

ROOT = Path(__file__).resolve().parents[2]
STAGE = "prod"
STAGE_ENV = {
    "IMAGEPIPE_BUCKET": "imagepipe-photos-test",
    "AWS_REGION": "eu-west-1",
    "IMAGEPIPE_ALLOWED_ORIGIN": "https://photos.example",
    "IMAGEPIPE_AUTH_ISSUER": "https://idp.example/",
    "IMAGEPIPE_AUTH_JWKS_URL": "https://idp.example/.well-known/jwks.json",
}
_built: dict[str, tuple[Package, subprocess.CompletedProcess]] = {}


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and not k.startswith("IMAGEPIPE_")}
    env.update(STAGE_ENV, AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def package_once(tmp_path_factory) -> tuple[Package, subprocess.CompletedProcess]:
    if STAGE not in _built:
        out = tmp_path_factory.mktemp("package") / STAGE
        result = subprocess.run(
            [sys.executable, "-m", "infra.deploy", "package", "--stage", STAGE,
             "--out", str(out)],
            cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, f"make package failed:\n{result.stdout}\n{result.stderr}"
        _built[STAGE] = (Package.read(out), result)
    return _built[STAGE]
