"""``python -m bridge``: read settings once, configure logging, consume until SIGTERM/SIGINT.

With ``IMAGEPIPE_HEALTH_PORT`` set, it also serves ``/healthz`` and ``/metrics`` there
(``bridge.observability``).

Exit codes: 0 after a clean stop, 2 for a configuration error (one line on stderr), 3 when the
drain timeout (``IMAGEPIPE_DRAIN_TIMEOUT_S``) ended the stop with jobs (or callbacks) still
running; the broker redelivers those.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from bridge.callbacks import CallbackDispatcher
from bridge.consumer import Bridge
from bridge.invokers import make_invoker
from bridge.observability import BridgeMetrics, serve
from imagepipe import logs, settings as settings_edge
from imagepipe.errors import ConfigError

LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_DRAIN_TIMEOUT = 3


def main() -> int:
    try:
        drained = run()
    except ConfigError as exc:
        print(f"bridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not drained:
        # Worker threads may still be blocked in an invocation (a Lambda call can take 15
        # minutes), and a normal exit would wait for them. Their deliveries are back with the
        # broker already, so leave now.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(EXIT_DRAIN_TIMEOUT)
    return EXIT_OK


def run() -> bool:
    """Consume until stopped; returns whether every job in flight was settled."""
    settings = settings_edge.load()  # the broker's credentials come from its secret
    # JSON lines on stderr (the container's log driver), readable text on a terminal.
    logs.configure(logging.INFO)
    metrics = server = None
    if settings.health_port:
        metrics = BridgeMetrics(settings)
        server = serve(metrics, settings)  # a port in use is a ConfigError: exit 2
    invoker = make_invoker(settings)
    bridge = dispatcher = callback_thread = None
    callback_errors: list[ConfigError] = []
    try:
        bridge = Bridge(settings, invoker, observer=metrics)
        if settings.callback_secret:
            # Its own connection and threads: a slow callback receiver never holds up a job.
            dispatcher = CallbackDispatcher(settings)

            def run_callbacks():
                try:
                    dispatcher.run()
                except ConfigError as exc:  # its queues contradict the settings: stop it all
                    callback_errors.append(exc)
                    bridge.stop()

            callback_thread = threading.Thread(target=run_callbacks, name="callbacks",
                                               daemon=True)
            callback_thread.start()
        else:
            LOGGER.info("completion callbacks are off (no callback secret configured)")

        def request_stop(signum, _frame):
            # Only sets flags (and the bridge's drain deadline). Both settle what is in flight, then return.
            LOGGER.info("%s received: finishing jobs in flight", signal.Signals(signum).name)
            bridge.stop()
            if dispatcher is not None:
                dispatcher.stop()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        bridge.run()
        if callback_errors:
            raise callback_errors[0]
    finally:
        if dispatcher is not None and bridge is not None and callback_thread is not None:
            dispatcher.stop()
            # Both drain at once from the stop request, under the bridge's bound: a callback
            # still unacked then is redelivered to the next bridge (callbacks are at-least-once).
            deadline = bridge.drain_deadline or time.monotonic()
            callback_thread.join(timeout=max(deadline - time.monotonic(), 1.0))
        # After a drain timeout, stop the resize workers that are still running.
        invoker.close(wait=bridge is None or bridge.drained)
        if server is not None and metrics is not None:
            server.close()
            metrics.close()
    callbacks_drained = dispatcher is None or (callback_thread is not None
                                               and not callback_thread.is_alive()
                                               and dispatcher.drained)
    return bridge.drained and callbacks_drained
