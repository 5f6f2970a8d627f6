"""``make bench BENCH_ARGS=backfill``: how fast ``imagepipe backfill`` compares stored photos.

1. **Scan rate.** 10,000 manifests (``--quick``: 1,000) on the local S3 (a moto server in its
   own process, as the stack runs it), a tenth of them with one stale variant. The backfill
   core reads and compares them all (a dry run: nothing published), with its default thread
   pool. The baseline, from the same run and the same bucket, is the plain loop an operator
   would write first: list the keys, ``get_object`` each manifest in turn and parse it. The
   ratio says what the bounded thread pool buys over that loop.
2. **Rerender vs live throughput.** The local stack: a burst of 12 MP photos uploaded live,
   then all of them backfilled after a change to every variant (``_rerender_vs_live``).

``seed`` is also what the backfill tests use to fill a bucket with photos in every state.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from imagepipe import fingerprint, keys
from imagepipe.messages import Manifest, State, VariantInfo, utc_now
from imagepipe.spec import DEFAULT_VARIANTS, Variant

MANIFESTS = 10_000
MANIFESTS_QUICK = 1_000
STALE_EVERY = 10  # one photo in ten has a stale variant
ROUNDS = 3
ROUNDS_QUICK = 1
ENGINE = "pillow"


# --- a bucket of stored photos -------------------------------------------------------------------


def manifest_for(upload_id: str, made_with: Sequence[Variant], engine: str = ENGINE, *,
                 fingerprinted: bool = True) -> Manifest:
    """The manifest the resize would have written with the spec ``made_with``; without
    ``fingerprinted``, as written before fingerprints existed (only the ``spec`` list says
    what made each variant)."""
    prints = fingerprint.spec_fingerprints(made_with, engine)
    variants = tuple(
        VariantInfo(name=v.name, key=keys.variant_key(upload_id, v.name, _format(v)),
                    width=v.width, height=v.height, format=_format(v), bytes=1234,
                    fingerprint=prints[v.name] if fingerprinted else None)
        for v in made_with)
    return Manifest(job_id=upload_id, upload_id=upload_id,
                    source={"key": keys.original_key(upload_id), "bytes": 99, "format": "jpeg"},
                    spec=tuple(v.to_dict() for v in made_with), variants=variants)


def _format(variant: Variant) -> str:
    return "jpeg" if variant.format == "auto" else variant.format  # a JPEG original's choice


def seed_photo(s3, bucket: str, made_with: Sequence[Variant], engine: str = ENGINE, *,
               fingerprinted: bool = True, state: State = State.DONE,
               record: dict | None = None, upload_id: str | None = None) -> str:
    """One stored photo: its upload record, its status marker(s) and its manifest."""
    upload_id = upload_id or keys.new_upload_id()
    body = {"upload_id": upload_id, "filename": "photo.jpg", "content_type": "image/jpeg",
            "size": 99, "method": "PUT", "created_at": utc_now(), **(record or {})}
    _put(s3, bucket, keys.upload_record_key(upload_id), body)
    for reached in (State.QUEUED, state):
        _put(s3, bucket, keys.status_marker_key(upload_id, reached),
             {"state": reached, "at": utc_now(), "error": None})
    manifest = manifest_for(upload_id, made_with, engine, fingerprinted=fingerprinted)
    _put(s3, bucket, keys.manifest_key(upload_id), manifest.to_dict())
    return upload_id


def seed(s3, bucket: str, count: int, made_with: Sequence[Variant], engine: str = ENGINE, *,
         threads: int = 8, **options) -> list[str]:
    """``count`` photos made with ``made_with`` (``seed_photo``'s options), in parallel."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: seed_photo(s3, bucket, made_with, engine, **options),
                             range(count)))


def _seed_manifests(s3, bucket: str, count: int, made_with: Sequence[Variant]) -> None:
    def one(_):
        upload_id = keys.new_upload_id()
        _put(s3, bucket, keys.manifest_key(upload_id), manifest_for(upload_id, made_with).to_dict())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def _put(s3, bucket: str, key: str, obj: dict) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(obj, sort_keys=True).encode(),
                  ContentType="application/json")


def changed_spec(variants: Iterable[Variant], name: str) -> tuple[Variant, ...]:
    """``variants`` with ``name``'s quality lowered by one: that variant alone goes stale."""
    return tuple(replace(v, quality=v.quality - 1) if v.name == name else v for v in variants)


# --- the section -----------------------------------------------------------------------------------


def run(ctx) -> dict:
    from imagepipe.aws import s3_client
    from imagepipe.settings import Settings
    from imagepipe_dev.bench.bridge import _start_moto
    from imagepipe_dev.stack import FAKE_AWS, free_port

    for name, value in FAKE_AWS.items():
        os.environ.setdefault(name, value)
    count = MANIFESTS_QUICK if ctx.quick else MANIFESTS
    rounds = ROUNDS_QUICK if ctx.quick else ROUNDS
    port = free_port()
    moto = _start_moto(port)
    try:
        settings = Settings(bucket=f"bench-{uuid.uuid4().hex[:8]}",
                            s3_endpoint_url=f"http://127.0.0.1:{port}")
        s3 = s3_client(settings)
        s3.create_bucket(Bucket=settings.bucket)
        started = time.perf_counter()
        old = changed_spec(DEFAULT_VARIANTS, DEFAULT_VARIANTS[1].name)
        stale = count // STALE_EVERY
        seed(s3, settings.bucket, stale, old)
        # A fresh photo's status and record are never read: its manifest alone will do.
        _seed_manifests(s3, settings.bucket, count - stale, DEFAULT_VARIANTS)
        ctx.say(f"seeded {count:,} photos ({stale:,} with a stale variant) on moto in "
                f"{time.perf_counter() - started:.0f} s")
        scan_rates, loop_rates = [], []
        for round_number in range(1, rounds + 1):
            loop_rates.append(_plain_loop_rate(s3, settings.bucket))
            scan_rates.append(_scan_rate(s3, settings.bucket, count, stale))
            ctx.say(f"round {round_number}: backfill scan {scan_rates[-1]:,.0f} manifests/s, "
                    f"plain get_object loop {loop_rates[-1]:,.0f} manifests/s")
    finally:
        moto.terminate()
        moto.wait(10)
    scan, loop = statistics.median(scan_rates), statistics.median(loop_rates)
    ctx.say(f"scan rate over {count:,} manifests: {scan:,.0f}/s (median of {rounds}), "
            f"{scan / loop:.2f}x the plain sequential loop")
    summary: dict[str, float] = {"scan_manifests_per_s": round(scan),
                                 "scan_vs_plain_loop": round(scan / loop, 3)}
    details: dict = {"manifests": count, "stale": stale, "rounds": rounds,
                     "scan_rates": [round(r) for r in scan_rates],
                     "plain_loop_rates": [round(r) for r in loop_rates]}
    summary.update(_rerender_vs_live(ctx))
    return {"summary": summary, "details": details}


def _scan_rate(s3, bucket: str, count: int, stale: int) -> float:
    from imagepipe_tools.backfill import Backfill

    started = time.perf_counter()
    summary = Backfill(s3, bucket, DEFAULT_VARIANTS, ENGINE, dry_run=True).run()
    seconds = time.perf_counter() - started
    if summary.scanned != count or summary.jobs_planned != stale or not summary.ok:
        raise RuntimeError(f"the scan saw {summary.to_dict()}, expected {count} manifests with "
                           f"{stale} stale")
    return count / seconds


def _plain_loop_rate(s3, bucket: str) -> float:
    started = time.perf_counter()
    seen = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                            Prefix=keys.MANIFESTS_PREFIX):
        for item in page.get("Contents", ()):
            json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            seen += 1
    return seen / (time.perf_counter() - started)


RERENDER_PHOTOS = 16
RERENDER_PHOTOS_QUICK = 4


def _rerender_vs_live(ctx) -> dict:
    """Rerender jobs per second against live jobs per second, through one local stack.

    The same photos twice: first as a burst of live uploads (first ``complete`` to the last
    ``job.done``), then, with every variant's quality changed, as a backfill of all of them
    (first publish to the last ``variants.changed``). Both with the stage's defaults, so the
    rerender jobs get only their share of the bridge's workers; each makes every variant
    again, as the live job did.
    """
    from imagepipe.broker import JobPublisher
    from imagepipe_dev.bench import imaging as bench_imaging
    from imagepipe_dev.bench.pipeline import ROOT, WIDTH, HEIGHT, _Pipe, _Results, _delete
    from imagepipe_dev.stack import LocalStack, free_port
    from imagepipe_tools.backfill import Backfill

    photos = RERENDER_PHOTOS_QUICK if ctx.quick else RERENDER_PHOTOS
    photo = bench_imaging.photo_jpeg(WIDTH, HEIGHT)
    name = f"imagepipe-bench-{uuid.uuid4().hex[:8]}"
    overrides = {
        "resize_queue": f"{name}.resize", "dead_letter_queue": f"{name}.resize.dead",
        "dead_letter_exchange": f"{name}.resize.dlx", "results_exchange": f"{name}.results",
        "rerender_queue": f"{name}.rerender", "callback_queue": f"{name}.callbacks",
        "callback_dead_letter_queue": f"{name}.callbacks.dead",
    }
    stack = LocalStack(ROOT / ".run" / "bench-backfill", api_port=free_port(),
                       s3_port=free_port(), settings_overrides=overrides)
    stack.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "photo.jpg"
            path.write_bytes(photo)
            with _Results(stack.settings) as results:
                pipe = _Pipe(stack, results, path, photo)
                pipe.burst(2)  # warm up: spawn the workers, import the engine
                live_rate, _ = pipe.burst(photos)
            changed = tuple(replace(v, quality=v.quality - 1) for v in stack.settings.variants)
            stack.reload({"variants": changed})
            settings = stack.settings
            with _Results(settings, routing_key="variants.*") as results:
                publisher = JobPublisher(settings)
                upload_ids: list[str] = []
                started = time.perf_counter()
                try:
                    summary = Backfill(
                        stack_s3(settings), settings.bucket, settings.variants,
                        settings.imaging_engine, publish=publisher.publish_rerender).run(
                            report=lambda finding, outcome: outcome == "published"
                            and upload_ids.append(finding.upload_id))
                finally:
                    publisher.close()
                if not summary.ok or summary.jobs_published != photos + 2:
                    raise RuntimeError(f"the backfill saw {summary.to_dict()}")
                finished = max(results.wait(upload_id) for upload_id in upload_ids)
            rerender_rate = len(upload_ids) / (finished - started)
            share = f"{settings.rerender_worker_count} of {settings.worker_count} workers"
    finally:
        stack.stop()
        _delete(stack.settings, overrides)
    ratio = rerender_rate / live_rate
    ctx.say(f"live uploads: {live_rate:.2f} photos/s ({photos} x {WIDTH}x{HEIGHT}); rerendering "
            f"all their variants: {rerender_rate:.2f} photos/s on {share}, {ratio:.2f}x live")
    return {"live_photos_per_s": round(live_rate, 3),
            "rerender_photos_per_s": round(rerender_rate, 3),
            "rerender_vs_live": round(ratio, 3)}


def stack_s3(settings):
    from imagepipe.aws import s3_client

    return s3_client(settings)
