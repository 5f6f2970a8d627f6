"""Copy the runtime core where Chalice packages it (a project's ``vendor/``).

The core package holds only runtime code; its ``__main__`` is the launcher of the operator
command (``imagepipe_tools``), which no function carries, so it stays out too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CORE_PACKAGE = "imagepipe"
# Bytecode and the command-line launcher never ship in a function or the bridge image.
CORE_EXCLUDED = ("__pycache__", "*.pyc", "__main__.py")
VENDOR_IGNORE = shutil.ignore_patterns(*CORE_EXCLUDED)


def copy_core(root: Path, vendor_dir: Path) -> Path:
    """Replace ``vendor_dir/imagepipe`` with the core package from ``root``; returns it."""
    target = vendor_dir / CORE_PACKAGE
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root / CORE_PACKAGE, target, ignore=VENDOR_IGNORE)
    return target
