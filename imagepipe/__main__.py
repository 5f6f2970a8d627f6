"""``python -m imagepipe``: see ``imagepipe.cli``."""

from imagepipe.cli import main

raise SystemExit(main())
