import sys

from bridge.main import main

# The guard matters: the local invoker's spawned worker processes re-import this module as
# ``__mp_main__``, and they must not start another bridge.
if __name__ == "__main__":
    sys.exit(main())
