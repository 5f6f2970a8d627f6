"""Completion callbacks end to end: the bridge resizes, the callback dispatcher POSTs the signed
result to a real local HTTP receiver (the stage allows loopback), retries, dead-letters."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pika
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from bridge.callbacks import CallbackDispatcher
from imagepipe import keys
from imagepipe.broker import HEADER_ATTEMPTS, HEADER_ERROR_CODE, HEADER_ERROR_MESSAGE
from imagepipe.messages import ResultEvent
from imagepipe.status import StatusStore

from ..conftest import CALLBACK_SECRET, ROOT, unique_name
from .conftest import InlineInvoker, jpeg_bytes, wait_for

pytestmark = pytest.mark.broker

SECRET = CALLBACK_SECRET
OTHER_SECRET = "whsec_" + "b3RoZXJvdGhlcm90aGVyb3RoZXJvdGhlcm90aGVyb3Ro"


class Receiver:
    """An HTTP server that records each POST and answers with the next scripted status."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.requests: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/imagepipe?k=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    started = []

    def start(*statuses):
        started.append(Receiver(statuses))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def blackhole():
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


@pytest.fixture
def cb_settings(broker_settings):
    name = unique_name("imagepipe-cb")
    settings = dataclasses.replace(
        broker_settings, callback_secret=SECRET, callback_allow_private=True,
        callback_queue=f"{name}.callbacks", callback_dead_letter_queue=f"{name}.callbacks.dead",
        callback_attempts=3, callback_backoff_s=0.05, callback_timeout_s=1.5,
    )
    yield settings
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    for queue in (settings.callback_queue, settings.callback_dead_letter_queue):
        channel.queue_delete(queue)
    connection.close()


@pytest.fixture
def run_dispatcher():
    started = []

    def start(settings, **kwargs) -> CallbackDispatcher:
        dispatcher = CallbackDispatcher(settings, **kwargs)
        thread = threading.Thread(target=dispatcher.run, daemon=True)
        thread.start()
        started.append((dispatcher, thread))
        wait_for(lambda: dispatcher.healthy, 15, what="the dispatcher to consume")
        return dispatcher

    yield start
    for dispatcher, thread in started:
        dispatcher.stop()
        thread.join(20)
        assert not thread.is_alive(), "the dispatcher did not stop"


class Events:
    """Publishes result events as the bridge does; reads the callback dead-letter queue."""

    def __init__(self, settings):
        self.settings = settings
        self.connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
        self.channel = self.connection.channel()

    def publish(self, event: ResultEvent) -> None:
        self.channel.basic_publish(self.settings.results_exchange, event.routing_key,
                                   event.encode(),
                                   pika.BasicProperties(message_id=event.job_id, delivery_mode=2))

    def dead_letters(self) -> list:
        got = []
        while True:
            method, properties, body = self.channel.basic_get(
                self.settings.callback_dead_letter_queue, auto_ack=True)
            if method is None:
                return got
            got.append((properties, body))

    def ready(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def close(self):
        self.connection.close()


@pytest.fixture
def events(cb_settings):
    events = Events(cb_settings)
    yield events
    events.close()


def _event(callback_url, status="done"):
    upload_id = keys.new_upload_id()
    error = None if status == "done" else {"code": "corrupt", "message": "image data is corrupt"}
    return ResultEvent(job_id=upload_id, upload_id=upload_id, status=status, error=error,
                       duration_ms=5, callback_url=callback_url)


def test_callback_is_signed_and_retried_after_500s(cb_settings, events, receiver,
                                                   run_dispatcher):
    target = receiver(500, 503)
    run_dispatcher(cb_settings)
    event = _event(target.url, status="failed")

    events.publish(event)

    wait_for(lambda: target.count() == 3, 20, what="three callback attempts")
    bodies = {body for _, body in target.requests}
    assert len(bodies) == 1  # the same body every attempt
    body = bodies.pop()
    payload = json.loads(body)
    assert payload["upload_id"] == event.upload_id
    assert (payload["type"], payload["status"]) == ("imagepipe.job.failed", "failed")
    assert payload["error"]["code"] == "corrupt"
    assert "callback_url" not in payload
    for headers, sent in target.requests:
        assert headers["Content-Type"] == "application/json"
        assert headers["webhook-signature"].startswith("v1,")
        # What a receiver does: the specification's reference library verifies the delivery.
        assert Webhook(SECRET).verify(sent, headers)["upload_id"] == event.upload_id
        with pytest.raises(WebhookVerificationError):
            Webhook(OTHER_SECRET).verify(sent, headers)
        # Retries of one event carry one webhook-id: receivers drop duplicates by it.
        assert headers["webhook-id"] == f"{event.job_id}.failed"
    wait_for(lambda: events.ready(cb_settings.callback_queue) == 0, 10, what="the ack")
    assert events.dead_letters() == []


def test_refused_callback_is_dead_lettered_at_once_with_its_cause(cb_settings, events, receiver,
                                                                  run_dispatcher):
    target = receiver(404)
    run_dispatcher(cb_settings)
    event = _event(target.url)

    events.publish(event)

    [(properties, body)] = wait_for(events.dead_letters, 20, what="a dead letter")
    assert target.count() == 1
    assert properties.headers[HEADER_ERROR_CODE] == "callback_failed"
    assert "404" in properties.headers[HEADER_ERROR_MESSAGE]
    assert properties.headers[HEADER_ATTEMPTS] == 1
    assert ResultEvent.from_dict(json.loads(body)).callback_url == target.url


def test_send_time_resolution_refuses_a_name_rebound_to_loopback(cb_settings, events, receiver,
                                                                 run_dispatcher):
    # Checked public when the upload was made; the name now points at an internal service.
    target = receiver()
    port = target.server.server_address[1]
    settings = dataclasses.replace(cb_settings, callback_allow_private=False)

    def rebound(host, port, type=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    run_dispatcher(settings, resolver=rebound)
    events.publish(_event(f"https://hooks.example.com:{port}/x"))

    [(properties, _)] = wait_for(events.dead_letters, 20, what="a dead letter")
    assert "not a public address" in properties.headers[HEADER_ERROR_MESSAGE]
    assert target.count() == 0


def test_events_without_a_callback_are_acked_and_not_sent(cb_settings, events, receiver,
                                                          run_dispatcher):
    target = receiver()
    run_dispatcher(cb_settings)
    events.publish(_event(None))
    events.publish(_event(target.url))

    wait_for(lambda: target.count() == 1, 20, what="one callback")
    wait_for(lambda: events.ready(cb_settings.callback_queue) == 0, 10, what="both acked")
    assert events.dead_letters() == []


def test_a_deleted_callback_queue_is_declared_again_and_consumed(cb_settings, events, receiver,
                                                                 run_dispatcher):
    # The broker cancels the consumer when its queue is deleted; the channel stays open. The
    # dispatcher must notice (not sit idle reporting healthy) and consume a new queue.
    target = receiver()
    run_dispatcher(cb_settings, reconnect_initial_s=0.1)
    events.channel.queue_delete(cb_settings.callback_queue)

    def consumed_again():
        probe = events.connection.channel()
        try:
            declared = probe.queue_declare(cb_settings.callback_queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        probe.close()
        return declared.method.consumer_count == 1

    wait_for(consumed_again, 20, what="the callback queue to be consumed again")
    events.publish(_event(target.url))
    wait_for(lambda: target.count() == 1, 20, what="the callback after the queue came back")


def test_unreachable_target_never_delays_the_job(cb_settings, storage, probe, run_bridge,
                                                 events, receiver, blackhole, run_dispatcher):
    callback_fields = {f.name: getattr(cb_settings, f.name)
                       for f in dataclasses.fields(cb_settings) if f.name.startswith("callback_")}
    settings = dataclasses.replace(storage.settings, **{
        **callback_fields, "callback_attempts": 2, "callback_timeout_s": 4})
    run_dispatcher(settings)
    run_bridge(settings, InlineInvoker(settings))
    probe.watch_results()
    stuck = storage.put_original(jpeg_bytes(640, 480))
    reachable = storage.put_original(jpeg_bytes(320, 200))
    target = receiver()

    probe.publish(dataclasses.replace(storage.job(stuck), callback_url=blackhole))
    probe.publish(dataclasses.replace(storage.job(reachable), callback_url=target.url))

    done = {e.upload_id: e for e in probe.events(2)}
    # Both jobs are done, and their events out, while the blackhole's callback is still trying
    # (each of its 2 attempts waits out a 4 s timeout before its dead letter).
    assert {e.status for e in done.values()} == {"done"}
    store = StatusStore(storage.s3, settings.bucket)
    assert store.current(stuck).state == "done"
    assert events.dead_letters() == []
    # The other job's callback went out meanwhile: one stuck receiver blocks no other.
    wait_for(lambda: target.count() == 1, 20, what="the reachable callback")
    headers, body = target.requests[0]
    Webhook(SECRET).verify(body, headers)
    payload = json.loads(body)
    assert payload["upload_id"] == reachable
    assert {v["name"] for v in payload["variants"]} == {v.name for v in settings.variants}
    [(properties, _)] = wait_for(events.dead_letters, 30, what="the blackhole's dead letter")
    assert properties.headers[HEADER_ERROR_CODE] == "callback_failed"
    assert "gave up after 2 attempts" in properties.headers[HEADER_ERROR_MESSAGE]


@pytest.mark.timeout(60)
def test_a_callback_queue_that_contradicts_the_settings_stops_the_bridge_with_exit_2(
        cb_settings, events):
    # A classic queue where the dispatcher declares a quorum one: 406 on every reconnect, so
    # the bridge must say so and stop, not run on without callbacks or retry for ever.
    events.channel.queue_declare(cb_settings.callback_queue, durable=True)
    env = {**os.environ, **cb_settings.to_env()}
    completed = subprocess.run([sys.executable, "-m", "bridge"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=50)
    assert completed.returncode == 2, completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("bridge: configuration error:") and "PRECONDITION_FAILED" in last
    assert "Traceback" not in completed.stderr


def test_rerender_callbacks_go_out_only_while_the_stage_asks_for_them(cb_settings, events,
                                                                      receiver, run_dispatcher):
    target = receiver()
    changed = dataclasses.replace(_event(target.url), rerender=True)

    def sent_types() -> list[str]:
        return [json.loads(body)["type"] for _, body in target.requests]

    # Off (the default): the upload's own callbacks only.
    off = run_dispatcher(cb_settings)
    events.publish(changed)
    events.publish(_event(target.url))
    wait_for(lambda: target.count() == 1, 20, what="the job.done callback")
    off.stop()
    wait_for(lambda: not off.healthy, 10, what="the dispatcher to stop")

    # On: variants.changed is sent, signed, with an id of its own; variants.failed never is.
    on = run_dispatcher(dataclasses.replace(cb_settings, rerender_callbacks=True))
    events.publish(dataclasses.replace(_event(target.url, "failed"), rerender=True))
    events.publish(changed)
    wait_for(lambda: target.count() == 2, 20, what="the variants.changed callback")
    headers, body = target.requests[1]
    assert Webhook(SECRET).verify(body, headers)["type"] == "imagepipe.variants.changed"
    assert headers["webhook-id"].startswith(f"{changed.job_id}.variants.changed.")
    on.stop()
    wait_for(lambda: not on.healthy, 10, what="the dispatcher to stop")

    # Off again: one queued while it was on is dropped, and the binding is gone.
    events.publish(changed)
    wait_for(lambda: events.ready(cb_settings.callback_queue) == 1, 10, what="it to queue")
    run_dispatcher(cb_settings)
    wait_for(lambda: events.ready(cb_settings.callback_queue) == 0, 10, what="it acked")
    events.publish(changed)
    events.publish(_event(target.url))
    wait_for(lambda: target.count() == 3, 20, what="the last job.done callback")
    assert events.ready(cb_settings.callback_queue) == 0
    assert sent_types() == ["imagepipe.job.done", "imagepipe.variants.changed",
                            "imagepipe.job.done"]
    assert events.dead_letters() == []
