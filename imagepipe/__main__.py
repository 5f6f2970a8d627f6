"""``python -m imagepipe``: the ``imagepipe`` command (``imagepipe_tools.cli``).

A launcher only: it is left out of the Lambda packages and the bridge image, which carry no tools.
"""

from imagepipe_tools.cli import main

raise SystemExit(main())
