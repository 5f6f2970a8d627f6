"""bridge/Dockerfile's shape (docker cannot build here): pinned base, non-root, only what the
bridge needs, a health check on the bridge's /healthz, pins equal to the repository's."""

import re
from pathlib import Path

import pytest

from infra.deploy import bridge_image, templates

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "bridge" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


@pytest.fixture(scope="module")
def steps():
    return instructions(DOCKERFILE.read_text())


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[re.sub(r"\[.*\]", "", name).lower()] = version
    return found


def test_base_image_is_pinned_to_a_version_or_digest(steps):
    (base,) = [args for word, args in steps if word == "FROM"]
    assert "@sha256:" in base or re.fullmatch(r"python:3\.12\.\d+-slim(-\w+)?", base), base
    assert steps[0][0] == "FROM"


def test_runs_as_a_non_root_user(steps):
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # USER comes after every RUN, so nothing in the final image runs as root.
    last_user = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    assert all(i < last_user for i, (word, _) in enumerate(steps) if word == "RUN")


def test_copies_only_the_bridge_the_core_and_requirements(steps):
    sources = []
    for word, args in steps:
        assert word != "ADD", "COPY only (ADD fetches URLs and unpacks archives)"
        if word == "COPY":
            sources += args.split()[:-1]
    assert sources and all(s.startswith(("bridge/", "imagepipe/")) for s in sources), sources
    ignore = [line.strip() for line in
              (ROOT / "bridge" / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and "!bridge/" in ignore and "!imagepipe/" in ignore
    assert "imagepipe/__main__.py" in ignore  # the command's launcher: no tools in the image


def test_health_check_calls_the_bridges_health_endpoint_on_its_port(steps):
    (check,) = [args for word, args in steps if word == "HEALTHCHECK"]
    assert "/healthz" in check and "IMAGEPIPE_HEALTH_PORT" in check
    env = " ".join(args for word, args in steps if word == "ENV")
    assert re.search(r"IMAGEPIPE_HEALTH_PORT=\d+", env)
    # ECS ignores HEALTHCHECK: the task definition repeats it, on the same port setting.
    container = templates.load(ROOT / "infra" / "stack.yaml")["Resources"][
        "BridgeTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert "IMAGEPIPE_HEALTH_PORT" in " ".join(container["HealthCheck"]["Command"])


def test_entrypoint_is_the_bridge_in_exec_form(steps):
    (entry,) = [args for word, args in steps if word in ("ENTRYPOINT", "CMD")]
    assert entry == '["python", "-m", "bridge"]'


def test_bridge_requirements_are_exact_pins_equal_to_the_repositorys():
    bridge = pins(ROOT / "bridge" / "requirements.txt")
    repository = pins(ROOT / "requirements.txt")
    assert {"pika", "boto3"} <= set(bridge)
    for name, version in bridge.items():
        assert version and repository.get(name) == version, name


def test_image_tag_follows_the_content(tmp_path):
    for path in ("bridge/Dockerfile", "bridge/main.py", "imagepipe/core.py",
                 "imagepipe/__main__.py", "tools/imagepipe_tools/cli.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(path)
    tag = bridge_image.content_tag(tmp_path)
    for outside in ("imagepipe/__main__.py", "tools/imagepipe_tools/cli.py"):
        (tmp_path / outside).write_text("changed")
        assert bridge_image.content_tag(tmp_path) == tag, outside  # not in the image
    (tmp_path / "imagepipe/core.py").write_text("changed")
    assert bridge_image.content_tag(tmp_path) != tag
