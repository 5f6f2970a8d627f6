"""Live uploads come first (issue 14): with 500 rerender jobs queued, a live upload finishes within
twice its idle complete→done time.

Everything is real: RabbitMQ, a bridge with the local invoker's worker processes running the
resize core, S3 on a moto server. The rerender jobs are real work too: 500 done uploads whose
manifests were made with the old spec, and a bridge whose spec changed one variant, so each job
reads its original and renders that variant again (the rerender worker re-checks staleness and
does nothing for a fresh variant, so each job names a different upload).

Built for a loaded 2-core machine: the idle time is measured in the same test, on the same
warmed-up bridge, as the median of a few uploads, and so is the time under load.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge.invokers import LocalInvoker
from imagepipe import keys
from imagepipe.fingerprint import variant_fingerprint
from imagepipe.messages import Invocation, Manifest, decode, encode
from imagepipe.status import StatusStore

from .conftest import InlineInvoker, jpeg_bytes, wait_for

pytestmark = pytest.mark.broker

PHOTOS = 5  # made by the real resize with the old spec
CLONES = 100  # uploads per photo: 500 in all, each with its own original and manifest
SAMPLES = 3  # live uploads timed idle, and again under load
EVENTS = ("job.*", "variants.*")


def _changed_spec(variants):
    """The spec with one variant's definition changed: ``md`` is stale in every manifest."""
    return tuple(dataclasses.replace(v, quality=60) if v.name == "md" else v for v in variants)


def _seed(storage) -> list[str]:
    """PHOTOS uploads made done by the real resize core (old spec), cloned to PHOTOS × CLONES
    done uploads: the original copied, the manifest rewritten for the new id, status done."""
    settings, s3 = storage.settings, storage.s3
    inline = InlineInvoker(settings)
    photos = []
    for _ in range(PHOTOS):
        upload_id = storage.put_original(jpeg_bytes(4000, 3000))
        result = inline.invoke(Invocation(storage.job(upload_id), 1, 4))
        assert result.status == "done", result
        photos.append(upload_id)
    store = StatusStore(s3, settings.bucket)

    def clone(source_id: str) -> str:
        upload_id = keys.new_upload_id()
        s3.copy_object(Bucket=settings.bucket, Key=keys.original_key(upload_id),
                       CopySource={"Bucket": settings.bucket,
                                   "Key": keys.original_key(source_id)})
        manifest = Manifest.from_dict(decode(s3.get_object(
            Bucket=settings.bucket, Key=keys.manifest_key(source_id))["Body"].read()))
        manifest = dataclasses.replace(
            manifest, job_id=upload_id, upload_id=upload_id,
            source={**manifest.source, "key": keys.original_key(upload_id)},
            variants=tuple(dataclasses.replace(v, key=keys.variant_key(upload_id, v.name,
                                                                       v.format))
                           for v in manifest.variants))
        s3.put_object(Bucket=settings.bucket, Key=keys.manifest_key(upload_id),
                      Body=encode(manifest.to_dict()), ContentType="application/json")
        store.mark(upload_id, "done")
        return upload_id

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(clone, [photos[i % PHOTOS] for i in range(PHOTOS * CLONES)]))


class Timer:
    """Publishes a live upload's job and times it to its ``job.done`` event, setting aside the
    rerender events that arrive meanwhile."""

    def __init__(self, storage, probe, slots):
        self.storage, self.probe, self.slots = storage, probe, slots
        self.changed: list[str] = []

    def live_upload(self) -> tuple[float, float]:
        """How long one live upload took, and for what share of that time a rerender job ran
        beside it (sampled every 10 ms)."""
        upload_id = self.storage.put_original(jpeg_bytes(4000, 3000))
        samples: list[bool] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                samples.append(self.slots.busy[1] > 0)

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.monotonic()
        sampler.start()
        self.probe.publish(self.storage.job(upload_id))
        self.wait_for_done({upload_id})
        took = time.monotonic() - started
        done.set()
        sampler.join()
        return took, sum(samples) / max(len(samples), 1)

    def wait_for_done(self, upload_ids: set[str], timeout: float = 60) -> None:
        waiting = set(upload_ids)
        deadline = time.monotonic() + timeout
        while waiting:
            assert time.monotonic() < deadline, f"no job.done for {waiting}"
            waiting -= self.collect(0.5)

    def collect(self, timeout: float) -> set[str]:
        """The upload whose job.done is the next event, if one comes within ``timeout`` (taken
        one at a time: the time of a live upload ends as soon as its event is there); rerender
        events are kept."""
        done = set()
        for _, event in self.probe.take_event_messages(1, timeout):
            if event.rerender:
                assert event.routing_key == "variants.changed", event
                self.changed.append(event.upload_id)
            else:
                assert event.routing_key == "job.done", event
                done.add(event.upload_id)
        return done


@pytest.mark.timeout(300)
def test_live_uploads_come_first_with_500_rerender_jobs_queued(storage, probe, run_bridge):
    old = storage.settings  # workers=2: one may run rerender jobs, the other is the live jobs'
    uploads = _seed(storage)
    settings = dataclasses.replace(old, variants=_changed_spec(old.variants))
    assert settings.rerender_worker_count == 1
    probe.watch_results(routing_keys=EVENTS)
    runner = run_bridge(settings, LocalInvoker(settings))
    timer = Timer(storage, probe, runner.bridge.slots)
    # Warm up: both worker processes started and each has resized once.
    for _ in range(2):
        warm = [storage.put_original(jpeg_bytes(4000, 3000)) for _ in range(2)]
        for upload_id in warm:
            probe.publish(storage.job(upload_id))
        timer.wait_for_done(set(warm))

    idle = [timer.live_upload()[0] for _ in range(SAMPLES)]

    for upload_id in uploads:
        probe.publisher.publish_rerender(
            dataclasses.replace(storage.job(upload_id), rerender=("md",)))
    wait_for(lambda: runner.bridge.slots.busy[1] == 1, 30, what="a rerender job to run")
    loaded, beside = [], []
    for _ in range(SAMPLES):
        took, share = timer.live_upload()
        loaded.append(took)
        beside.append(share)
    backlog = probe.ready(settings.rerender_queue)

    print(f"\nidle {[round(t, 2) for t in idle]} s, with rerender jobs queued "
          f"{[round(t, 2) for t in loaded]} s (a rerender job running beside it "
          f"{[round(b, 2) for b in beside]} of the time), rerender jobs still waiting: "
          f"{backlog}, finished meanwhile: {len(timer.changed)}")
    # What was measured is a live upload beside rerender work, with a backlog behind it (a
    # rerender worker idles briefly between jobs: its next delivery follows the last ack).
    assert backlog >= len(uploads) // 2, "the backlog was gone: nothing was measured"
    assert statistics.mean(beside) >= 0.5, beside
    assert statistics.median(loaded) <= 2 * statistics.median(idle), (idle, loaded)

    # The rerender jobs were real work: each made md again with the changed spec.
    deadline = time.monotonic() + 60
    while len(timer.changed) < 3:
        assert time.monotonic() < deadline, "fewer than three rerender jobs done in 60 s"
        timer.collect(1.0)
    runner.stop()
    engine = settings.imaging_engine
    md = next(v for v in settings.variants if v.name == "md")
    for upload_id in timer.changed[:3]:
        manifest = Manifest.from_dict(decode(storage.s3.get_object(
            Bucket=settings.bucket, Key=keys.manifest_key(upload_id))["Body"].read()))
        variant = manifest.variant("md")
        assert manifest.revision == 2 and variant is not None, manifest
        assert variant.fingerprint == variant_fingerprint(md, engine)
        assert variant.key == keys.variant_key(upload_id, "md", variant.format,
                                               variant.fingerprint)
        assert storage.image(variant.key).size == (variant.width, variant.height)

