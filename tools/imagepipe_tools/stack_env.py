"""Where an operator command (``imagepipe dlq``, and later ones) finds its settings.

In the cloud, or in any shell that names a bucket, the settings come from the environment, read
the way the bridge reads them (``imagepipe.settings.load``). On a developer's machine nobody
exports them: ``make dev`` writes the settings of the stack it runs into
``.run/stack.env.json`` (this module owns that file; ``imagepipe_dev.stack`` writes it), so a
command run anywhere inside the checkout uses the running stack's settings and, when no stack
runs, the ``local`` stage of ``chalicefile.json``. Variables set in the environment win over
either, so ``AMQP_URL=... imagepipe dlq list`` still points at another broker.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from imagepipe import settings as settings_module
from imagepipe.errors import ConfigError
from imagepipe.settings import ENV_BUCKET, Settings

LOGGER = logging.getLogger(__name__)

RUN_DIR = ".run"  # the checkout's folder of generated state (git-ignored)
STACK_ENV = "stack.env.json"
MANIFEST = "chalicefile.json"
LOCAL_STAGE = "local"
# The local stack's S3 is moto: any credentials sign, but some must exist. Never real ones.
LOCAL_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}
FROM_ENVIRONMENT = "the environment"


@dataclass(frozen=True)
class OperatorSettings:
    settings: Settings
    source: str  # where they came from, in words (for ``-v``)
    # Environment variables the command should set when unset (moto's credentials for a local
    # source); empty for settings from the environment.
    credentials: Mapping[str, str] = field(default_factory=dict)


def write_stack_env(run_dir: Path, environment: Mapping[str, str]) -> Path:
    """Record a running stack's settings (``Settings.to_env()``) for the operator commands."""
    path = Path(run_dir) / STACK_ENV
    path.write_text(json.dumps(dict(environment), indent=2))
    return path


def read_stack_env(run_dir: Path) -> dict[str, str] | None:
    """The settings a stack recorded in ``run_dir``, or None when there is no such file."""
    path = Path(run_dir) / STACK_ENV
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def stack_running(run_dir: Path) -> bool:
    """Whether a process of the stack in ``run_dir`` is alive (its ``NAME.pid`` files).

    A stack removes its ``stack.env.json`` when it stops; one that was killed outright leaves it
    behind, and its settings (ports) are then stale.
    """
    for pid_file in Path(run_dir).glob("*.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, OSError) as exc:
            if isinstance(exc, PermissionError):  # alive, someone else's
                return True
            continue
        return True
    return False


def find_checkout(start: Path) -> Path | None:
    """The imagepipe checkout holding ``start`` (the nearest folder with a ``chalicefile.json``),
    else the checkout these tools run from, else None (an installed ``imagepipe`` command)."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / MANIFEST).is_file():
            return folder
    own = Path(__file__).resolve().parents[2]
    return own if (own / MANIFEST).is_file() else None


def operator_settings(environ: Mapping[str, str] | None = None,
                      cwd: Path | None = None) -> OperatorSettings:
    """The settings for an operator command, and where they came from.

    1. The environment, when it names a bucket (``IMAGEPIPE_BUCKET``).
    2. Else the running local stack of the checkout (``.run/stack.env.json``), with whatever
       the environment sets on top.
    3. Else the checkout's ``chalicefile.json`` ``local`` stage, likewise.
    """
    environ = os.environ if environ is None else environ
    load = settings_module.load  # as the bridge reads them: the broker secret too, when named
    if environ.get(ENV_BUCKET):
        return OperatorSettings(load(environ), FROM_ENVIRONMENT)
    checkout = find_checkout(Path.cwd() if cwd is None else cwd)
    if checkout is None:
        raise ConfigError(f"{ENV_BUCKET} is required: set the stage's settings in the "
                          f"environment, or run inside an imagepipe checkout")
    run_dir = checkout / RUN_DIR
    recorded = read_stack_env(run_dir)
    if recorded is not None and stack_running(run_dir):
        source = f"the running local stack ({run_dir / STACK_ENV})"
        base = recorded
    else:
        if recorded is not None:
            LOGGER.info("ignoring %s: no process of that stack is running", run_dir / STACK_ENV)
        from imagepipe_tools import chalicefile

        manifest = chalicefile.load(checkout / MANIFEST)
        stage = chalicefile.stage_settings(manifest, LOCAL_STAGE, environ=environ)
        source = f"the {LOCAL_STAGE!r} stage of {checkout / MANIFEST} (no local stack is running)"
        base = stage.to_env()
    merged = {**base, **{name: value for name, value in environ.items() if value}}
    return OperatorSettings(load(merged), source, LOCAL_AWS_CREDENTIALS)
