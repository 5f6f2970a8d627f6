"""The layout's one rule: the runtime core imports nothing from where it does not run.

The Lambda packages and the bridge image carry ``imagepipe/`` alone, so a core module that
imported the bridge, a function's app or a tool would break there (and drag tools along).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "imagepipe"
# Top-level names of everything that is not the runtime core.
OUTSIDE_THE_CORE = {"bridge", "functions", "infra", "tools", "tests", "imagepipe_tools",
                    "imagepipe_dev", "app", "chalicelib"}
# The core's third-party imports: what the functions and the bridge install, nothing dev-only.
RUNTIME_LIBRARIES = {"boto3", "botocore", "pika", "PIL", "pyvips", "pillow_heif", "jwt",
                     "cryptography"}  # HEIC: optional
LAUNCHER = CORE / "__main__.py"  # ``python -m imagepipe``: starts the tools, never vendored


def core_modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if p != LAUNCHER and "__pycache__" not in p.parts)


def imported_top_levels(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_only_the_core_the_stdlib_and_runtime_libraries(path):
    tops = imported_top_levels(path)
    assert not tops & OUTSIDE_THE_CORE
    third_party = {t for t in tops - {"imagepipe", "__future__"} if t not in sys.stdlib_module_names}
    assert third_party <= RUNTIME_LIBRARIES, third_party - RUNTIME_LIBRARIES


def test_the_tools_are_outside_the_core():
    assert not (CORE / "cli").exists() and not (CORE / "devtools").exists()
    for tool in ("client.py", "dlq.py", "chalicefile.py"):
        assert not (CORE / tool).exists(), tool
        assert (ROOT / "tools" / "imagepipe_tools" / tool).is_file(), tool


def test_the_launcher_is_the_only_core_file_that_reaches_the_tools():
    assert imported_top_levels(LAUNCHER) == {"imagepipe_tools"}


@pytest.mark.parametrize("module", ["imagepipe", "imagepipe_tools", "imagepipe_dev",
                                    "imagepipe_dev.bench", "infra.deploy", "bridge"])
def test_every_entry_point_starts(module):
    """Each ``python -m`` entry point imports all it needs (a moved module breaks it here)."""
    import subprocess

    if module == "bridge":  # no --help: it starts consuming; importing its main is the check
        command = [sys.executable, "-c", "import bridge.main"]
    else:
        command = [sys.executable, "-m", module, "--help"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
