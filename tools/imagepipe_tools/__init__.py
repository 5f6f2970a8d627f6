"""Operator tools, installed with the ``imagepipe`` command and never shipped in a Lambda.

- ``cli``: the ``imagepipe`` command (``resize``, ``upload``, ``dlq`` ...).
- ``client``: the HTTP API client the CLI, the demo and the end-to-end tests use.
- ``dlq``: list, replay and discard dead-lettered jobs.
- ``chalicefile``: the stages in ``chalicefile.json``, rendered into Chalice's config.
"""
