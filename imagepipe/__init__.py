"""imagepipe's runtime core: what the upload and resize functions and the bridge run.

Nothing here imports the bridge, the functions or the tools (``tools/``, ``infra/deploy``);
``tests/unit/test_layout.py`` keeps it so, and the Lambda packages carry only this package.
"""

__version__ = "0.9.0"
