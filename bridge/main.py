"""``python -m bridge``: read settings once, configure logging, consume until SIGTERM/SIGINT.

With ``IMAGEPIPE_HEALTH_PORT`` set, it also serves ``/healthz`` and ``/metrics`` there
(``bridge.observability``).

Exit codes: 0 after a clean stop, 2 for a configuration error (one line on stderr).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from bridge.callbacks import CallbackDispatcher
from bridge.consumer import Bridge
from bridge.invokers import make_invoker
from bridge.observability import BridgeMetrics, serve
from imagepipe.errors import ConfigError
from imagepipe import settings as settings_edge

LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    # pika logs every connection step at INFO; the bridge logs what matters itself.
    logging.getLogger("pika").setLevel(logging.WARNING)


def main() -> int:
    try:
        run()
    except ConfigError as exc:
        print(f"bridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def run() -> None:
    settings = settings_edge.load()  # the broker's credentials come from its secret
    configure_logging()
    metrics = server = None
    if settings.health_port:
        metrics = BridgeMetrics(settings)
        server = serve(metrics, settings)  # a port in use is a ConfigError: exit 2
    invoker = make_invoker(settings)
    dispatcher = callback_thread = None
    try:
        bridge = Bridge(settings, invoker, observer=metrics)
        if settings.callback_secret:
            # Its own connection and threads: a slow callback receiver never holds up a job.
            dispatcher = CallbackDispatcher(settings)
            callback_thread = threading.Thread(target=dispatcher.run, name="callbacks",
                                               daemon=True)
            callback_thread.start()
        else:
            LOGGER.info("completion callbacks are off (no callback secret configured)")

        def request_stop(signum, _frame):
            # Only sets flags. Both settle what is in flight, then return.
            LOGGER.info("%s received: finishing jobs in flight", signal.Signals(signum).name)
            bridge.stop()
            if dispatcher is not None:
                dispatcher.stop()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        bridge.run()
    finally:
        if dispatcher is not None:
            dispatcher.stop()
            callback_thread.join(timeout=30)
        invoker.close()
        if server is not None:
            server.close()
            metrics.close()
