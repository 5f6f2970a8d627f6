"""A function's pinned requirements as wheels for the Lambda platform, downloaded once.

``pip download --only-binary=:all:`` with the runtime's platform tags: a dependency without such
a wheel is an error, never a build from source on this machine — with one exception a
requirements file names itself, pip's way (``--no-binary NAME``): a package published only as
source (pyvips) is built here with ``pip wheel`` and taken only if the result is a wheel that
loads on the Lambda platform (pure Python: ``py3-none-any``). Wheels are cached under
``.run/wheels`` with a stamp per requirements set, so a repeated package needs no network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from infra.deploy import platform
from imagepipe.errors import ConfigError

LOGGER = logging.getLogger(__name__)
_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!-]+$")
_NO_BINARY = re.compile(r"^--no-binary[ =]([A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*)$")


class WheelError(Exception):
    """The Lambda platform's wheels could not be had (network, or no such wheel)."""


def pinned_requirements(path: Path) -> list[str]:
    """The requirement lines of ``path``; every one must be an exact ``name==version`` pin
    (``--no-binary`` lines aside: see ``built_from_source``)."""
    return _read(path)[0]


def built_from_source(path: Path) -> frozenset[str]:
    """The names ``path`` lists on ``--no-binary NAME[,NAME]`` lines, each pinned there too."""
    return _read(path)[1]


def _read(path: Path) -> tuple[list[str], frozenset[str]]:
    pins, sources = [], set()
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        option = _NO_BINARY.match(line)
        if option:
            sources.update(_name(n) for n in option.group(1).split(","))
            continue
        if not _PIN.match(line):
            raise ConfigError(f"{path}:{number}: {line!r} is not an exact pin (name==version)")
        pins.append(line)
    unpinned = sources - {_name(pin) for pin in pins}
    if unpinned:
        raise ConfigError(f"{path}: --no-binary {', '.join(sorted(unpinned))} is not pinned there")
    return pins, frozenset(sources)


def _name(requirement: str) -> str:
    """A requirement's project name, normalised as PEP 503 does (``Pyvips_binary`` ->
    ``pyvips-binary``)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=]", requirement, maxsplit=1)[0]).lower()


def pip_download(pins: list[str], dest: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--implementation", "cp",
        "--python-version", platform.PYTHON_VERSION, "--abi", platform.ABI,
        *[arg for tag in platform.PLATFORMS for arg in ("--platform", tag)],
        "--dest", str(dest), *pins,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise WheelError(
            f"pip could not download wheels for {platform.RUNTIME}/{platform.ARCHITECTURE} "
            f"({' '.join(pins)}): {detail[-1] if detail else 'exit ' + str(result.returncode)}"
        )


def pip_wheel(pins: list[str], dest: Path) -> None:
    """Build wheels of source-only ``pins`` (without their dependencies, which come as binary
    wheels). ``PKG_CONFIG=false``: pyvips' build compiles a binding to the libvips it finds
    through pkg-config, and falls back to pure Python without one; pyvips-binary brings the
    compiled binding that runs on Lambda."""
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
               "--no-deps", f"--no-binary={','.join(_name(p) for p in pins)}",
               "--wheel-dir", str(dest), *pins]
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "PKG_CONFIG": "false"})
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise WheelError(f"pip could not build {' '.join(pins)}: "
                         f"{detail[-1] if detail else 'exit ' + str(result.returncode)}")


def lambda_wheels(pins: list[str], cache: Path, download=pip_download,
                  from_source: frozenset[str] = frozenset(), build=pip_wheel) -> list[Path]:
    """The wheels (with dependencies) of ``pins`` for the Lambda platform, from the cache if
    there. Pins named in ``from_source`` are built (``build``) rather than downloaded, and
    refused unless the wheel built loads on the Lambda platform."""
    if not pins:
        return []
    key = hashlib.sha256(json.dumps(
        [sorted(pins), sorted(from_source), platform.PYTHON_VERSION, platform.PLATFORMS]
    ).encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    stamp = cache / f"{key}.json"
    if stamp.exists():
        wheels = [cache / name for name in json.loads(stamp.read_text())]
        if all(w.exists() for w in wheels):
            return wheels
    binary = [pin for pin in pins if _name(pin) not in from_source]
    source = [pin for pin in pins if _name(pin) in from_source]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        if binary:
            download(binary, Path(tmp))
        if source:
            before = set(Path(tmp).iterdir())
            build(source, Path(tmp))
            for built in sorted(set(Path(tmp).iterdir()) - before):
                if not any(tag_runs_on_lambda(t) for t in filename_tags(built.name)):
                    raise WheelError(f"built {built.name}, which would not load on "
                                     f"{platform.RUNTIME}/{platform.ARCHITECTURE}")
        names = sorted(p.name for p in Path(tmp).iterdir())
        for name in names:
            if not name.endswith(".whl"):
                raise WheelError(f"pip downloaded {name}, not a wheel")
            shutil.move(str(Path(tmp) / name), cache / name)
    stamp.write_text(json.dumps(names))
    LOGGER.info("downloaded %s for %s", ", ".join(names), platform.RUNTIME)
    return [cache / name for name in names]


def unpack(wheel: Path, target: Path) -> None:
    """Install a wheel the way Lambda's loader sees it: its files at the top of ``target``."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)


def filename_tags(filename: str) -> list[str]:
    """The tags a wheel's file name claims (``pkg-1.0-py2.py3-none-any.whl``: two)."""
    if not filename.endswith(".whl") or filename.count("-") < 4:
        return []
    interpreters, abis, platforms = filename[:-len(".whl")].split("-")[-3:]
    return [f"{i}-{a}-{p}" for i in interpreters.split(".") for a in abis.split(".")
            for p in platforms.split(".")]


def wheel_tags(wheel_metadata: str) -> list[str]:
    """The ``Tag:`` lines of a ``*.dist-info/WHEEL`` file."""
    return [line.split(":", 1)[1].strip() for line in wheel_metadata.splitlines()
            if line.startswith("Tag:")]


def tag_runs_on_lambda(tag: str) -> bool:
    """Whether a wheel tag (``py3-none-any``, ``cp312-cp312-manylinux_2_28_x86_64``) loads there."""
    interpreter, abi, plat = tag.split("-")
    if plat == "any":
        return abi in ("none", "abi3", platform.ABI)
    if interpreter not in (platform.ABI, "py3") and not interpreter.startswith("cp3"):
        return False
    if abi not in (platform.ABI, "abi3", "none"):
        return False
    legacy = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
    match = re.match(r"^(manylinux2014|manylinux2010|manylinux1|manylinux_(\d+)_(\d+))_(\w+)$", plat)
    if not match or match.group(4) != platform.ARCHITECTURE:
        return False
    glibc = legacy.get(match.group(1)) or (int(match.group(2)), int(match.group(3)))
    return glibc <= platform.GLIBC
