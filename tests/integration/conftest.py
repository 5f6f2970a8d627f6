"""Bridge fixtures: S3 on the moto server, a broker probe, a bridge in a thread, test invokers.

Everything talks to the real RabbitMQ with the unique names from ``broker_settings``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import threading
import time

import pika
import pytest
from PIL import Image

from bridge.consumer import Bridge
from imagepipe import keys
from imagepipe.aws import s3_client
from imagepipe.broker import JobPublisher
from imagepipe.messages import RETRY, Invocation, InvocationResult, ResizeJob, ResultEvent
from imagepipe.resize import Runtime, handle_invocation
from imagepipe.settings import Settings


def jpeg_bytes(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (30, 120, 200))
    image.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- S3 over HTTP (worker processes and subprocesses reach it too) ----------------------------


@dataclasses.dataclass
class Storage:
    settings: Settings  # broker_settings pointed at the moto server
    s3: object

    def put_original(self, body: bytes) -> str:
        upload_id = keys.new_upload_id()
        self.s3.put_object(
            Bucket=self.settings.bucket, Key=keys.original_key(upload_id), Body=body
        )
        return upload_id

    def job(self, upload_id: str) -> ResizeJob:
        return ResizeJob.for_upload(upload_id, self.settings.bucket, "image/jpeg")

    def image(self, key: str) -> Image.Image:
        body = self.s3.get_object(Bucket=self.settings.bucket, Key=key)["Body"].read()
        return Image.open(io.BytesIO(body))


@pytest.fixture
def storage(broker_settings, moto_endpoint) -> Storage:
    settings = dataclasses.replace(broker_settings, s3_endpoint_url=moto_endpoint, workers=2)
    s3 = s3_client(settings)
    s3.create_bucket(Bucket=settings.bucket)
    return Storage(settings, s3)


# --- the broker from the test's side -----------------------------------------------------------


class BrokerProbe:
    """Publishes jobs and reads result events, dead letters and queue depths (test thread only)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        self.channel = self.connection.channel()
        self.publisher = JobPublisher(settings)
        self._results_queue = None

    def watch_results(self, queue: str = "", routing_keys=("job.*",)) -> None:
        """Bind a queue to every ``job.*`` event (or ``routing_keys``: ``variants.*`` for
        rerender jobs); call before publishing. A named queue outlives this probe's connection
        (for tests that have the broker drop every connection)."""
        declared = self.channel.queue_declare(queue, exclusive=not queue, auto_delete=not queue)
        self._results_queue = declared.method.queue
        for routing_key in routing_keys:
            self.channel.queue_bind(
                self._results_queue, self.settings.results_exchange, routing_key=routing_key
            )

    def publish(self, job: ResizeJob) -> None:
        self.publisher.publish(job)

    def publish_raw(self, body: bytes, message_id: str) -> None:
        self.channel.basic_publish(
            exchange="",
            routing_key=self.settings.resize_queue,
            body=body,
            properties=pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id=message_id
            ),
        )

    def _drain(self, queue: str, count: int, timeout: float) -> list:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                self.connection.sleep(0.05)  # keeps heartbeats going while waiting
                continue
            got.append((properties, body))
        return got

    def events(self, count: int, timeout: float = 20) -> list[ResultEvent]:
        got = self._drain(self._results_queue, count, timeout)
        assert len(got) == count, f"expected {count} result events, got {len(got)}"
        return [ResultEvent.from_dict(json.loads(body)) for _, body in got]

    def event_messages(self, count: int, timeout: float = 20) -> list:
        """(AMQP properties, event) pairs, for tests of what the bridge sets."""
        got = self.take_event_messages(count, timeout)
        assert len(got) == count, f"expected {count} result events, got {len(got)}"
        return got

    def take_event_messages(self, count: int, timeout: float) -> list:
        """Like ``event_messages``, but what came within ``timeout``, maybe fewer."""
        got = self._drain(self._results_queue, count, timeout)
        return [(props, ResultEvent.from_dict(json.loads(body))) for props, body in got]

    def events_until_each_of(self, job_ids, timeout: float = 60) -> list[ResultEvent]:
        """Every event until each job has at least one (duplicates included)."""
        missing, events = set(job_ids), []
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            for _, body in self._drain(self._results_queue, len(missing), 1.0):
                event = ResultEvent.from_dict(json.loads(body))
                events.append(event)
                missing.discard(event.job_id)
        assert not missing, f"{len(missing)} jobs without a result event: {sorted(missing)[:5]}"
        return events

    def no_more_events(self, wait: float = 0.5) -> bool:
        return not self._drain(self._results_queue, 1, wait)

    def dead_letters(self, count: int, timeout: float = 20) -> list:
        got = self._drain(self.settings.dead_letter_queue, count, timeout)
        assert len(got) == count, f"expected {count} dead letters, got {len(got)}"
        return got

    def ready(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def close(self) -> None:
        self.publisher.close()
        if self.connection.is_open:
            self.connection.close()


@pytest.fixture
def probe(broker_settings):
    probe = BrokerProbe(broker_settings)
    yield probe
    probe.close()


def close_broker_connection(connection_name: str) -> None:
    """Have the broker force-close the connection with this client-provided name."""
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q",
         "--no-table-headers"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines()
            if f'"{connection_name}"' in line]
    assert len(pids) == 1, f"expected one connection named {connection_name}: {listing}"
    subprocess.run(
        ["rabbitmqctl", "close_connection", pids[0], "closed by test"],
        check=True, capture_output=True, timeout=30,
    )


# --- the bridge in a thread --------------------------------------------------------------------


class BridgeThread:
    def __init__(self, bridge: Bridge, invoker):
        self.bridge = bridge
        self.invoker = invoker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bridge-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.bridge.run()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> BridgeThread:
        self.thread.start()
        wait_for(lambda: self.bridge.healthy, 15, what="the bridge to consume")
        return self

    def stop(self, timeout: float = 20) -> None:
        self.bridge.stop()
        self.thread.join(timeout)
        try:
            self.invoker.close()
        finally:
            assert not self.thread.is_alive(), "the bridge did not stop"
            assert self.error is None, f"the bridge failed: {self.error!r}"


@pytest.fixture
def run_bridge():
    """``run_bridge(settings, invoker, **bridge_kwargs)`` starts a bridge; it is stopped after."""
    started: list[BridgeThread] = []

    def start(settings: Settings, invoker, **kwargs) -> BridgeThread:
        runner = BridgeThread(Bridge(settings, invoker, **kwargs), invoker)
        started.append(runner)
        return runner.start()

    yield start
    for runner in started:
        if runner.thread.is_alive():
            runner.stop()


# --- test invokers (plain classes with the invoker interface) ----------------------------------


class InlineInvoker:
    """Runs the real resize core in the calling bridge thread: fast to start, same code path."""

    def __init__(self, settings: Settings):
        self.runtime = Runtime(settings, s3=s3_client(settings))

    def invoke(self, invocation: Invocation) -> InvocationResult:
        return InvocationResult.from_dict(handle_invocation(invocation.to_dict(), self.runtime))

    def close(self) -> None:
        pass


class RecordingInvoker:
    """Records each job's attempt numbers. ``behave(invocation)`` may return a result, raise, or
    return None to let the real resize run."""

    def __init__(self, delegate, behave=None):
        self.delegate = delegate
        self.behave = behave or (lambda invocation: None)
        self.attempts: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def invoke(self, invocation: Invocation) -> InvocationResult:
        with self._lock:
            self.attempts.setdefault(invocation.job.job_id, []).append(invocation.attempt)
        result = self.behave(invocation)
        return result if result is not None else self.delegate.invoke(invocation)

    def close(self) -> None:
        self.delegate.close()


def retry_result(invocation: Invocation, code: str = "s3_unavailable") -> InvocationResult:
    return InvocationResult(
        job_id=invocation.job.job_id,
        upload_id=invocation.job.upload_id,
        status=RETRY,
        error={"code": code, "message": "injected by the test"},
    )


def attempts_of_one_done_job(storage, probe, run_bridge, behave, timeout: float = 30,
                             **bridge_kwargs) -> list[int]:
    """Run one real job through a bridge whose invoker first calls ``behave``; returns the
    attempt numbers it saw, once the job is done and the bridge stopped with nothing left."""
    from imagepipe.status import StatusStore

    settings = storage.settings
    upload_id = storage.put_original(jpeg_bytes(640, 480))
    invoker = RecordingInvoker(InlineInvoker(settings), behave=behave)
    probe.watch_results()
    runner = run_bridge(settings, invoker, **bridge_kwargs)

    probe.publish(storage.job(upload_id))

    [event] = probe.events(1, timeout=timeout)
    assert (event.job_id, event.status) == (upload_id, "done")
    assert StatusStore(storage.s3, settings.bucket).current(upload_id).state == "done"
    runner.stop()
    assert probe.no_more_events()
    assert probe.ready(settings.resize_queue) == 0
    assert probe.ready(settings.dead_letter_queue) == 0
    return invoker.attempts[upload_id]
