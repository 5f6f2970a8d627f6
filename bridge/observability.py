"""The bridge's health and metrics: ``/healthz`` and Prometheus ``/metrics`` on a small HTTP port.

The consumer reports what happens through the narrow ``BridgeObserver`` interface below and
knows nothing of Prometheus. ``BridgeMetrics`` implements it with ``prometheus_client`` on a
registry of its own (two bridges in one process never collide), and ``serve`` exposes it.

Metrics (all prefixed ``imagepipe_bridge_`` unless noted):

- ``jobs_total{outcome}``: settled deliveries by outcome: ``done``, ``failed`` (dead-lettered),
  ``retry`` (requeued after a transient failure), ``released`` (handed back while stopping),
  ``dropped`` (the result came after its connection was lost: the broker redelivers the job).
- ``job_duration_seconds{outcome}``: how long the invocation took (retry backoff excluded).
- ``redeliveries_total``: deliveries that are not a job's first attempt.
- ``dead_lettered_total{code}``: messages the bridge dead-lettered, by reason code.
- ``reconnects_total``: broker sessions re-established after a loss.
- ``in_flight``: jobs handed to the workers and not finished yet.
- ``rerender_jobs_total{outcome}``, ``rerender_job_duration_seconds{outcome}``,
  ``rerender_in_flight``: the same for rerender (backfill) jobs, which the three above leave out
  so that they keep describing live uploads. Redeliveries, dead letters and reconnects count both.
- ``consuming``: 1 while both consumers (work queue and rerender queue) are connected and
  consuming, else 0 (what ``/healthz`` reports; its reason names the rerender consumer when it
  is the one that is not).
- ``imagepipe_queue_messages{queue}`` / ``imagepipe_queue_consumers{queue}``: the work,
  rerender and dead-letter queues' ready messages and consumers, asked of the broker at scrape time over a
  connection of the collector's own (pika connections are not thread-safe; the bridge's belong
  to its I/O thread). Absent when the broker does not answer.
"""

from __future__ import annotations

import json
import logging
import threading
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily

from imagepipe import amqp
from imagepipe.errors import ConfigError
from imagepipe.settings import ENV_HEALTH_PORT, Settings

LOGGER = logging.getLogger(__name__)

OUTCOMES = ("done", "failed", "retry", "released", "dropped")
RERENDER = "rerender"
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
STARTING = "starting"


class BridgeObserver(Protocol):
    """What the consumer reports. Called from the I/O thread and from worker threads."""

    def for_rerender(self) -> "BridgeObserver":
        """The observer of the rerender queue's consumer."""
        ...

    def consuming(self) -> None: ...

    def not_consuming(self, reason: str) -> None: ...

    def job_started(self, attempt: int) -> None: ...

    def job_ended(self) -> None: ...

    def settled(self, outcome: str, duration_s: float | None, code: str | None,
                dead_lettered: bool) -> None: ...


class NullObserver:
    """The observer when metrics are off."""

    def for_rerender(self) -> "NullObserver":
        return self

    def consuming(self) -> None:
        pass

    def not_consuming(self, reason: str) -> None:
        pass

    def job_started(self, attempt: int) -> None:
        pass

    def job_ended(self) -> None:
        pass

    def settled(self, outcome, duration_s, code, dead_lettered) -> None:
        pass


class BridgeMetrics:
    """A ``BridgeObserver`` that keeps Prometheus metrics and the health state."""

    def __init__(self, settings: Settings | None = None):
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        # Per consumer: (healthy, reason, sessions). The work queue's is "", the rerender's
        # is made by for_rerender (a Bridge always makes it).
        self._consumers: dict[str, _ConsumerState] = {"": _ConsumerState()}
        prefix = "imagepipe_bridge_"
        self.jobs = Counter(prefix + "jobs", "Settled deliveries by outcome", ["outcome"],
                            registry=self.registry)
        self.duration = Histogram(prefix + "job_duration_seconds",
                                  "Invocation time by outcome", ["outcome"],
                                  buckets=DURATION_BUCKETS, registry=self.registry)
        for outcome in OUTCOMES:  # every series exists from the start, at 0
            self.jobs.labels(outcome)
            self.duration.labels(outcome)
        self.redeliveries = Counter(prefix + "redeliveries",
                                    "Deliveries that are not a job's first attempt",
                                    registry=self.registry)
        self.dead_lettered = Counter(prefix + "dead_lettered",
                                     "Messages dead-lettered by the bridge, by reason code",
                                     ["code"], registry=self.registry)
        self.reconnects = Counter(prefix + "reconnects",
                                  "Broker sessions re-established after a loss",
                                  registry=self.registry)
        self.in_flight = Gauge(prefix + "in_flight", "Jobs handed to workers, not finished",
                               registry=self.registry)
        self.rerender_jobs = Counter(prefix + "rerender_jobs",
                                     "Settled rerender deliveries by outcome", ["outcome"],
                                     registry=self.registry)
        self.rerender_duration = Histogram(prefix + "rerender_job_duration_seconds",
                                           "Rerender invocation time by outcome", ["outcome"],
                                           buckets=DURATION_BUCKETS, registry=self.registry)
        for outcome in OUTCOMES:
            self.rerender_jobs.labels(outcome)
            self.rerender_duration.labels(outcome)
        self.rerender_in_flight = Gauge(prefix + "rerender_in_flight",
                                        "Rerender jobs handed to workers, not finished",
                                        registry=self.registry)
        self._rerender_view: _RerenderMetrics | None = None
        self.consuming_gauge = Gauge(prefix + "consuming", "1 while connected and consuming",
                                     registry=self.registry)
        self._depth = QueueDepthCollector(settings) if settings is not None else None
        if self._depth is not None:
            self.registry.register(self._depth)

    def close(self) -> None:
        """Release the queue-depth connection."""
        if self._depth is not None:
            self._depth.close()

    # --- BridgeObserver -----------------------------------------------------------------------

    def for_rerender(self) -> "_RerenderMetrics":
        with self._lock:
            if self._rerender_view is None:
                self._consumers[RERENDER] = _ConsumerState()
                self._rerender_view = _RerenderMetrics(self)
            return self._rerender_view

    def consuming(self) -> None:
        self._consuming("")

    def not_consuming(self, reason: str) -> None:
        self._not_consuming("", reason)

    def _consuming(self, consumer: str) -> None:
        with self._lock:
            state = self._consumers[consumer]
            state.sessions += 1
            if state.sessions > 1:
                self.reconnects.inc()
            state.healthy, state.reason = True, "consuming"
            self.consuming_gauge.set(int(self._all_healthy()))

    def _not_consuming(self, consumer: str, reason: str) -> None:
        with self._lock:
            state = self._consumers[consumer]
            state.healthy, state.reason = False, reason
            self.consuming_gauge.set(0)

    def _all_healthy(self) -> bool:
        return all(state.healthy for state in self._consumers.values())

    def job_started(self, attempt: int) -> None:
        self.in_flight.inc()
        if attempt > 1:
            self.redeliveries.inc()

    def job_ended(self) -> None:
        self.in_flight.dec()

    def settled(self, outcome: str, duration_s: float | None, code: str | None,
                dead_lettered: bool) -> None:
        self.jobs.labels(outcome).inc()
        if duration_s is not None:
            self.duration.labels(outcome).observe(duration_s)
        if dead_lettered:
            self.dead_lettered.labels(code or "unknown").inc()

    # --- health -------------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        with self._lock:
            if self._all_healthy():
                return True, "consuming"
            reasons: list[str] = []
            for name, state in self._consumers.items():
                if state.healthy or state.reason in reasons:
                    continue
                # The work queue's reason alone reads as before; when both say the same
                # ("stopped", "starting"), once is enough.
                if name and self._consumers[""].reason == state.reason:
                    continue
                reasons.append(f"{name}: {state.reason}" if name else state.reason)
            return False, "; ".join(reasons)


class _ConsumerState:
    def __init__(self) -> None:
        self.healthy = False
        self.reason = STARTING
        self.sessions = 0


class _RerenderMetrics:
    """The rerender consumer's view of ``BridgeMetrics``: its own job counters, the shared
    health, redeliveries and dead letters."""

    def __init__(self, metrics: BridgeMetrics):
        self._metrics = metrics

    def for_rerender(self) -> "_RerenderMetrics":
        return self

    def consuming(self) -> None:
        self._metrics._consuming(RERENDER)

    def not_consuming(self, reason: str) -> None:
        self._metrics._not_consuming(RERENDER, reason)

    def job_started(self, attempt: int) -> None:
        self._metrics.rerender_in_flight.inc()
        if attempt > 1:
            self._metrics.redeliveries.inc()

    def job_ended(self) -> None:
        self._metrics.rerender_in_flight.dec()

    def settled(self, outcome: str, duration_s: float | None, code: str | None,
                dead_lettered: bool) -> None:
        self._metrics.rerender_jobs.labels(outcome).inc()
        if duration_s is not None:
            self._metrics.rerender_duration.labels(outcome).observe(duration_s)
        if dead_lettered:
            self._metrics.dead_lettered.labels(code or "unknown").inc()


class QueueDepthCollector:
    """Asks the broker for the queues' depths at scrape time (passive declares)."""

    def __init__(self, settings: Settings, timeout: float = 2.0):
        self._settings = settings
        self._timeout = timeout
        self._lock = threading.Lock()
        self._connection: Any = None  # opened at the first scrape
        self._open_channel: Any = None

    def collect(self):
        messages = GaugeMetricFamily("imagepipe_queue_messages", "Messages ready in the queue",
                                     labels=["queue"])
        consumers = GaugeMetricFamily("imagepipe_queue_consumers", "Consumers of the queue",
                                      labels=["queue"])
        # A scrape stuck on a dead connection must not make every later scrape queue up behind it.
        if self._lock.acquire(timeout=self._timeout):
            try:
                for queue, declared in self._declare_all():
                    messages.add_metric([queue], declared.message_count)
                    consumers.add_metric([queue], declared.consumer_count)
            finally:
                self._lock.release()
        yield messages
        yield consumers

    def _declare_all(self) -> list:
        """(queue, Queue.DeclareOk) for each queue that exists; [] when the broker is away.

        A connection that worked before and went stale is replaced once; a fresh one that
        fails ends the attempt, so a scrape while the broker is down stays short.
        """
        import pika.exceptions

        found = []
        queues = [self._settings.resize_queue, self._settings.rerender_queue,
                  self._settings.dead_letter_queue]
        retried = False
        while queues:
            fresh = self._connection is None or not self._connection.is_open
            try:
                channel = self._channel()
                found.append((queues[0], channel.queue_declare(queues[0], passive=True).method))
            except pika.exceptions.ChannelClosedByBroker as exc:  # no such queue (404)
                LOGGER.debug("queue %s: %s", queues[0], exc)
            except (pika.exceptions.AMQPError, OSError) as exc:
                LOGGER.debug("queue depths unavailable: %r", exc)
                self._close()
                if fresh or retried:
                    return found
                retried = True
                continue
            queues.pop(0)
        return found

    def _channel(self):
        if self._connection is None or not self._connection.is_open:
            # It sits idle between scrapes. The heartbeat bounds a call on a half-open
            # connection; if scrapes stop for long, the broker closes it and the next scrape
            # opens another.
            self._connection = amqp.connect(amqp.parameters(
                self._settings, "imagepipe-bridge-metrics", timeout=self._timeout,
                heartbeat=60, blocked_timeout=self._timeout * 5,
            ))
            self._open_channel = self._connection.channel()
        if not self._open_channel.is_open:  # a passive declare of a missing queue closed it
            self._open_channel = self._connection.channel()
        return self._open_channel

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def close(self) -> None:
        with self._lock:
            self._close()


# --- the HTTP side -----------------------------------------------------------------------------


def make_app(metrics: BridgeMetrics):
    """A WSGI app: ``/healthz`` (200 or 503 with a JSON reason) and ``/metrics``."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            healthy, reason = metrics.health()
            body = json.dumps({"status": "ok" if healthy else "unavailable",
                               "reason": reason}).encode()
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(body))),
                                    ("Cache-Control", "no-store")])
            return [body]
        body = b'{"error": "not found; try /healthz or /metrics"}'
        start_response("404 Not Found", [("Content-Type", "application/json"),
                                         ("Content-Length", str(len(body)))])
        return [body]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung scraper never holds up the bridge's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        LOGGER.debug("%s %s", self.address_string(), format % args)


class ObservabilityServer:
    """The HTTP server in a daemon thread; ``close()`` stops it."""

    def __init__(self, metrics: BridgeMetrics, host: str, port: int):
        try:
            self._server = make_server(host, port, make_app(metrics),
                                       server_class=_ThreadingServer,
                                       handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(
                f"{ENV_HEALTH_PORT}: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="bridge-metrics", daemon=True)
        self._thread.start()
        LOGGER.info("health on http://%s:%d/healthz, metrics on /metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(metrics: BridgeMetrics, settings: Settings) -> ObservabilityServer:
    return ObservabilityServer(metrics, settings.health_host, settings.health_port)
