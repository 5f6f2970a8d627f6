"""The local stack, the demo and the benchmarks: run from a checkout, never shipped.

``python -m imagepipe_dev render|vendor|dev|demo|bridge|broker-url`` backs the Makefile's targets;
``python -m imagepipe_dev.bench`` is ``make bench``.
"""
