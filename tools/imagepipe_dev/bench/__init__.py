"""``make bench``: benchmarks that print ratios against a baseline measured in the same run.

These machines are noisy, so no benchmark reports a bare time as its result: each section
measures its own baseline in the same process and run, and reports the ratio. Sections:

- ``imaging``: the resize engine against naive Pillow.
- ``bridge``: messages per second through RabbitMQ, pipeline throughput on 1 and N cores.
- ``api``: the upload API's own latency through Chalice's test client.
- ``pipeline``: the local stack end to end (complete→done, a burst of 12 MP photos) against
  naive Pillow on all cores, and the CPU that moto and ``chalice local`` take.
- ``lambda``: one bridge on one core driving a fake Lambda Invoke (1 s per job), against the
  concurrency it had when it followed the CPU count.
- ``backfill``: ``imagepipe backfill``'s scan rate over 10,000 manifests on a moto server,
  against a plain sequential ``get_object`` loop (and rerender against live throughput, once the
  rerender queue's bridge is in).

A section is a module in this package with ``run(ctx: BenchContext) -> dict``. It prints its
own human-readable lines through ``ctx.say`` and returns ``{"summary": {metric: number},
"details": {...}}``. The runner writes every section's result, with the commit and machine,
as JSON under ``.run/bench/`` and prints each summary metric beside the previous run's.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

# Section name -> module; run in this order when no section is named.
SECTIONS = {
    "imaging": "imagepipe_dev.bench.imaging",
    "bridge": "imagepipe_dev.bench.bridge",
    "api": "imagepipe_dev.bench.api",
    "pipeline": "imagepipe_dev.bench.pipeline",
    "lambda": "imagepipe_dev.bench.lambda_invoker",
    "backfill": "imagepipe_dev.bench.backfill",
}


@dataclasses.dataclass(frozen=True)
class BenchContext:
    quick: bool  # fewer repetitions: a smoke run, numbers not worth comparing
    say: Callable[[str], None]
