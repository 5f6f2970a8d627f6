"""The Lambda platform the functions are built for: one place, used by the packager and tests.

CPython 3.12 on x86_64 runs on Amazon Linux 2023 (glibc 2.34), so manylinux_2_28 wheels load
there — Pillow 13 ships only those. Nothing compiled on this machine ever goes into a package.
"""

RUNTIME = "python3.12"
ARCHITECTURE = "x86_64"
PYTHON_VERSION = "3.12"
ABI = "cp312"
# Accepted wheel platforms, newest first; every one must be loadable by glibc 2.34.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
GLIBC = (2, 34)
