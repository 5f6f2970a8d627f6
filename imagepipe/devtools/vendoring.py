"""Copy the core package where Chalice packages it (a project's ``vendor/``), without devtools."""

from __future__ import annotations

import shutil
from pathlib import Path

# Developer tooling and bytecode never ship in a function.
VENDOR_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "devtools")


def copy_core(root: Path, vendor_dir: Path) -> Path:
    """Replace ``vendor_dir/imagepipe`` with the core package from ``root``; returns it."""
    target = vendor_dir / "imagepipe"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root / "imagepipe", target, ignore=VENDOR_IGNORE)
    return target
