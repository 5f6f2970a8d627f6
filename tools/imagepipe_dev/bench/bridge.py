"""``make bench BENCH_ARGS=bridge``: the bridge's own overhead, and the pipeline on 1 and 2 cores.

1. **Messages per second with a no-op resize.** N jobs wait in a fresh work queue; one bridge
   (in this process, 2 workers) takes them all: decode, hand to a worker thread, publish the
   ``job.done`` event with confirms, ack once confirmed. The clock runs from "the bridge is
   consuming" until every event is in a queue bound to the results exchange. Measured with
   ``IMAGEPIPE_PREFETCH=100`` (what an operator sets for fast jobs; target: at least 3,000/s)
   and with the default prefetch (2 x workers, sized for slow resizes). The baseline, from the
   same run and with the same prefetch, is the plain pika loop with the same guarantee: take a
   message, publish its event and wait for the confirm, ack.
2. **Pipeline throughput with the real resize.** M uploads of the demo's 3000x2000 sample photo
   through the real resize and the default variant spec (local process pool, S3 on a moto
   server in its own process), once with 1 worker and once with 2, each on a fresh queue.
   The ratio 2-over-1 says how well the bridge spreads CPU-bound work over cores.

Numbers move with the machine's other load: compare ratios, and runs on the same machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path

from imagepipe_dev.stack import FAKE_AWS, free_port, moto_command, wait_for_moto
from imagepipe.settings import DEFAULT_AMQP_URL, ENV_AMQP_URL, Settings

NOOP_JOBS = 10_000
NOOP_JOBS_QUICK = 2_000
NOOP_WORKERS = 2
FAST_JOBS_PREFETCH = 100
NOOP_ROUNDS = 3
NOOP_ROUNDS_QUICK = 1
PHOTOS = 16
PHOTOS_QUICK = 6
PHOTO = Path(__file__).resolve().parents[1] / "samples" / "landscape.jpg"
TARGET_MESSAGES_PER_S = 3000


def run(ctx) -> dict:
    for name, value in FAKE_AWS.items():
        os.environ.setdefault(name, value)
    amqp_url = os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL)
    jobs = NOOP_JOBS_QUICK if ctx.quick else NOOP_JOBS
    rounds = NOOP_ROUNDS_QUICK if ctx.quick else NOOP_ROUNDS

    bridge_rates, default_rates, baseline_rates = [], [], []
    for round_number in range(1, rounds + 1):
        baseline_rates.append(_measure(amqp_url, jobs, _baseline_drain, FAST_JOBS_PREFETCH))
        bridge_rates.append(_measure(amqp_url, jobs, _bridge_drain, FAST_JOBS_PREFETCH))
        default_rates.append(_measure(amqp_url, jobs, _bridge_drain, 0))
        ctx.say(f"round {round_number}: bridge {bridge_rates[-1]:,.0f} msg/s "
                f"(default prefetch: {default_rates[-1]:,.0f}), plain pika loop "
                f"{baseline_rates[-1]:,.0f} msg/s ({jobs} messages)")
    bridge_rate = statistics.median(bridge_rates)
    default_rate = statistics.median(default_rates)
    baseline_rate = statistics.median(baseline_rates)
    verdict = "meets" if bridge_rate >= TARGET_MESSAGES_PER_S else "BELOW"
    ctx.say(f"no-op resize, one bridge, prefetch {FAST_JOBS_PREFETCH}: {bridge_rate:,.0f} msg/s "
            f"(median of {rounds}); {verdict} the {TARGET_MESSAGES_PER_S:,}/s target; "
            f"{bridge_rate / baseline_rate:.2f}x the plain pika loop; "
            f"default prefetch {2 * NOOP_WORKERS}: {default_rate:,.0f} msg/s")

    photos = PHOTOS_QUICK if ctx.quick else PHOTOS
    one, two = _pipeline(amqp_url, photos, 1 if ctx.quick else 2, ctx.say)
    ctx.say(f"real resize, {photos} x {PHOTO.name}: "
            f"1 worker {one:.2f} jobs/s, 2 workers {two:.2f} jobs/s: {two / one:.2f}x")
    return {
        "summary": {
            "noop_messages_per_s": round(bridge_rate),
            "noop_vs_plain_pika_loop": round(bridge_rate / baseline_rate, 3),
            "noop_messages_per_s_default_prefetch": round(default_rate),
            "resize_jobs_per_s_2_workers": round(two, 3),
            "resize_2_workers_vs_1": round(two / one, 3),
        },
        "details": {
            "noop_jobs": jobs,
            "noop_workers": NOOP_WORKERS,
            "noop_prefetch": FAST_JOBS_PREFETCH,
            "noop_bridge_rates": [round(r) for r in bridge_rates],
            "noop_bridge_rates_default_prefetch": [round(r) for r in default_rates],
            "noop_plain_loop_rates": [round(r) for r in baseline_rates],
            "target_messages_per_s": TARGET_MESSAGES_PER_S,
            "photos": photos,
            "photo": PHOTO.name,
            "resize_jobs_per_s_1_worker": round(one, 3),
        },
    }


# --- topology on fresh names -------------------------------------------------------------------


class _Topology:
    """Fresh queues and exchanges, an event-counting queue, removed afterwards."""

    def __init__(self, amqp_url: str, **overrides):
        import pika

        from imagepipe.broker import declare_topology

        name = f"imagepipe-bench-{uuid.uuid4().hex[:10]}"
        self.settings = Settings(
            bucket=overrides.pop("bucket", "bench"), amqp_url=amqp_url,
            resize_queue=f"{name}.resize", rerender_queue=f"{name}.rerender",
            dead_letter_queue=f"{name}.resize.dead", dead_letter_exchange=f"{name}.resize.dlx",
            results_exchange=f"{name}.results",
            **overrides,
        )
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        declare_topology(self.channel, self.settings)
        self.events_queue = f"{name}.events"
        self.channel.queue_declare(self.events_queue, durable=False)
        self.channel.queue_bind(self.events_queue, self.settings.results_exchange, "job.*")

    def fill(self, jobs) -> None:
        """Publish the jobs (no confirms: fast) and wait until the queue holds all of them."""
        from imagepipe.broker import job_properties

        count = 0
        for job in jobs:
            self.channel.basic_publish("", self.settings.resize_queue, job.encode(),
                                       job_properties(job))
            count += 1
        self.wait(lambda: self.depth(self.settings.resize_queue) >= count, 120)

    def depth(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def wait(self, predicate, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"benchmark stalled for {timeout:.0f}s")
            self.connection.sleep(0.02)

    def close(self) -> None:
        delete_topology(self.channel, self.settings, self.events_queue)
        self.connection.close()


def delete_topology(channel, settings: Settings, *extra_queues: str) -> None:
    """Delete a bench run's queues (the settings' and ``extra_queues``) and exchanges."""
    for queue in (settings.resize_queue, settings.rerender_queue, settings.dead_letter_queue,
                  *extra_queues):
        channel.queue_delete(queue)
    for exchange in (settings.dead_letter_exchange, settings.results_exchange):
        channel.exchange_delete(exchange)


# --- 1. no-op resize -----------------------------------------------------------------------------


class _NoopInvoker:
    """Answers ``done`` at once: what is left is the bridge and the broker."""

    def invoke(self, invocation):
        from imagepipe.messages import DONE, InvocationResult

        job = invocation.job
        return InvocationResult(job_id=job.job_id, upload_id=job.upload_id, status=DONE)

    def close(self) -> None:
        pass


def _noop_jobs(count: int):
    from imagepipe import keys
    from imagepipe.messages import ResizeJob

    for _ in range(count):
        yield ResizeJob.for_upload(keys.new_upload_id(), "bench", "image/jpeg")


def _measure(amqp_url: str, jobs: int, drain, prefetch: int) -> float:
    topology = _Topology(amqp_url, workers=NOOP_WORKERS, prefetch=prefetch)
    try:
        topology.fill(_noop_jobs(jobs))
        seconds = drain(topology, jobs)
    finally:
        topology.close()
    return jobs / seconds


def _bridge_drain(topology: _Topology, jobs: int) -> float:
    from bridge.consumer import Bridge

    bridge = Bridge(topology.settings, _NoopInvoker(), connection_name="imagepipe-bench")
    thread = threading.Thread(target=bridge.run, name="bench-bridge", daemon=True)
    thread.start()
    try:
        topology.wait(lambda: bridge.healthy, 30)
        started = time.perf_counter()
        topology.wait(lambda: topology.depth(topology.events_queue) >= jobs, 300)
        return time.perf_counter() - started
    finally:
        bridge.stop()
        thread.join(30)


def _baseline_drain(topology: _Topology, jobs: int) -> float:
    """The same broker traffic with no bridge: get, publish the event with confirms, ack."""
    import pika

    from imagepipe.messages import DONE, InvocationResult, ResizeJob, ResultEvent

    settings = topology.settings
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        consume, publish = connection.channel(), connection.channel()
        consume.basic_qos(prefetch_count=settings.prefetch_count)
        publish.confirm_delivery()
        started = time.perf_counter()
        done = 0
        for method, properties, body in consume.consume(settings.resize_queue):
            job = ResizeJob.decode(body)
            event = ResultEvent.from_result(
                InvocationResult(job_id=job.job_id, upload_id=job.upload_id, status=DONE))
            publish.basic_publish(settings.results_exchange, event.routing_key, event.encode(),
                                  pika.BasicProperties(delivery_mode=2, message_id=job.job_id))
            consume.basic_ack(method.delivery_tag)
            done += 1
            if done == jobs:
                break
        consume.cancel()
        topology.wait(lambda: topology.depth(topology.events_queue) >= jobs, 60)
        return time.perf_counter() - started
    finally:
        connection.close()


# --- 2. the real resize on 1 and 2 workers -------------------------------------------------------


def _pipeline(amqp_url: str, photos: int, rounds: int, say) -> tuple[float, float]:
    from imagepipe.aws import s3_client

    port = free_port()
    moto = _start_moto(port)
    try:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        base = Settings(bucket=bucket, s3_endpoint_url=f"http://127.0.0.1:{port}")
        s3 = s3_client(base)
        s3.create_bucket(Bucket=bucket)
        photo = PHOTO.read_bytes()
        rates: dict[int, list[float]] = {1: [], 2: []}
        # 1, 2, 2, 1: a drift in the machine's other load hits both sides alike.
        for workers in (1, 2, 2, 1)[: 2 * rounds]:
            rates[workers].append(_resize_rate(amqp_url, base, s3, photo, photos, workers))
            say(f"real resize, {workers} worker(s): {rates[workers][-1]:.2f} jobs/s")
        return statistics.median(rates[1]), statistics.median(rates[2])
    finally:
        moto.terminate()
        moto.wait(10)


def _resize_rate(amqp_url, base: Settings, s3, photo: bytes, photos: int, workers: int) -> float:
    from bridge.consumer import Bridge
    from bridge.invokers import LocalInvoker
    from imagepipe import keys
    from imagepipe.messages import ResizeJob

    topology = _Topology(amqp_url, bucket=base.bucket, s3_endpoint_url=base.s3_endpoint_url,
                         workers=workers)
    settings = topology.settings
    invoker = LocalInvoker(settings)
    try:
        _warm_up(invoker, settings, s3, photo)
        jobs = []
        for _ in range(photos):
            upload_id = keys.new_upload_id()
            s3.put_object(Bucket=settings.bucket, Key=keys.original_key(upload_id), Body=photo)
            jobs.append(ResizeJob.for_upload(upload_id, settings.bucket, "image/jpeg"))
        topology.fill(jobs)
        bridge = Bridge(settings, invoker, connection_name="imagepipe-bench")
        thread = threading.Thread(target=bridge.run, name="bench-bridge", daemon=True)
        thread.start()
        try:
            topology.wait(lambda: bridge.healthy, 30)
            started = time.perf_counter()
            topology.wait(lambda: topology.depth(topology.events_queue) >= photos, 600)
            seconds = time.perf_counter() - started
        finally:
            bridge.stop()
            thread.join(60)
        return photos / seconds
    finally:
        invoker.close()
        topology.close()


def _warm_up(invoker, settings: Settings, s3, photo: bytes) -> None:
    """Start every worker process (spawn and imports) before the clock runs."""
    from concurrent.futures import ThreadPoolExecutor

    from imagepipe import keys
    from imagepipe.messages import Invocation, ResizeJob

    def one(_):
        upload_id = keys.new_upload_id()
        s3.put_object(Bucket=settings.bucket, Key=keys.original_key(upload_id), Body=photo)
        job = ResizeJob.for_upload(upload_id, settings.bucket, "image/jpeg")
        invoker.invoke(Invocation(job, 1, settings.delivery_limit + 1))

    with ThreadPoolExecutor(settings.worker_count) as pool:
        list(pool.map(one, range(settings.worker_count)))


def _start_moto(port: int) -> subprocess.Popen:
    """moto's server as the local stack starts it, but quiet and not tied to a run folder."""
    process = subprocess.Popen(moto_command(port), env={**os.environ, **FAKE_AWS},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def alive() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")

    try:
        wait_for_moto(port, alive)
    except BaseException:
        process.kill()
        process.wait(10)
        raise
    return process

