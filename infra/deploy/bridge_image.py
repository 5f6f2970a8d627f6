"""The bridge's container image: tagged by content, built and pushed only when new.

The tag is a hash of everything the image is made of (``bridge/``, the core package, the
Dockerfile and its ignore file), so an unchanged bridge is not rebuilt and its service sees the
same image. ``run`` runs a command (``subprocess.run`` by default; tests inject one).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

from infra.deploy import vendoring

DOCKERFILE = Path("bridge/Dockerfile")
_SOURCES = ("bridge", vendoring.CORE_PACKAGE)
# The core's command-line launcher is not in the image (bridge/Dockerfile.dockerignore).
_SKIPPED = (Path(vendoring.CORE_PACKAGE) / "__main__.py",)


class ImageError(Exception):
    pass


def content_tag(root: Path) -> str:
    digest = hashlib.sha256()
    files = [root / DOCKERFILE]
    for top in _SOURCES:
        files += sorted(p for p in (root / top).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
                        and p.relative_to(root) not in _SKIPPED)
    for path in sorted(set(files)):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def require_docker(which=None) -> None:
    """Checked before a deploy changes anything: the bridge image is built with docker."""
    if not (which or shutil.which)("docker"):
        raise ImageError("docker is not installed (make deploy builds the bridge image with it)")


def run_command(command: list[str], input: str | None = None) -> None:
    try:
        result = subprocess.run(command, input=input, capture_output=True, text=True)
    except FileNotFoundError:
        raise ImageError(f"{command[0]} is not installed (needed to build the bridge image)") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ImageError(f"{' '.join(command[:2])} failed: {detail[-1] if detail else result.returncode}")


def publish(ecr, root: Path, repository_uri: str, run=run_command) -> str:
    """``repository_uri:tag`` of the bridge image, built and pushed unless ECR has it already."""
    tag = content_tag(root)
    image = f"{repository_uri}:{tag}"
    repository = repository_uri.split("/", 1)[1]
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
        return image
    except ecr.exceptions.ImageNotFoundException:
        pass
    auth = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    run(["docker", "login", "--username", user, "--password-stdin", auth["proxyEndpoint"]],
        input=password)
    # Fargate runs the task definition's X86_64 platform, whatever this machine is.
    run(["docker", "build", "--platform", "linux/amd64", "--file", str(root / DOCKERFILE),
         "--tag", image, str(root)])
    run(["docker", "push", image])
    return image
