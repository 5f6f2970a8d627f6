"""``python -m imagepipe_tools``: the same command as ``imagepipe`` and ``python -m imagepipe``."""

from imagepipe_tools.cli import main

raise SystemExit(main())
