"""What the bridge's two broker clients (``bridge.consumer`` and ``bridge.callbacks``) share:
connection parameters, the errors after which a connection is rebuilt, and the stop-aware sleep
of their reconnect loops."""

from __future__ import annotations

import time
from typing import Callable

import pika.exceptions

from imagepipe.broker import connection_parameters
from imagepipe.errors import ConfigError
from imagepipe.settings import ENV_AMQP_URL

# How often an I/O loop checks for a stop request, a silently closed channel or a broker cancel.
POLL_INTERVAL_S = 0.25
# Errors after which the connection is rebuilt. Unsettled work on the old channel is redelivered.
CONNECTION_ERRORS = (pika.exceptions.AMQPError, OSError)


class SessionLost(Exception):
    """The consumer stopped without an exception: a consumer timeout closed the channel (pika's
    BlockingConnection does not report that), or the broker cancelled the consumer."""


def bridge_connection_parameters(url: str, heartbeat: int, connection_name: str):
    """Parsed at construction, so that a malformed URL is a config error at startup, not a
    reconnect loop."""
    try:
        return connection_parameters(
            url,
            heartbeat=heartbeat,
            connection_attempts=1,
            socket_timeout=10,
            # A broker under a resource alarm blocks publishers. Give up on the connection
            # after a while rather than hang in a publish forever.
            blocked_connection_timeout=120,
            # Names the connection in the management UI and in rabbitmqctl.
            client_properties={"connection_name": connection_name},
        )
    except (ValueError, IndexError, TypeError) as exc:
        # The message leaves the URL out, because the URL holds the password.
        raise ConfigError(f"{ENV_AMQP_URL} is not a valid AMQP URL: {exc}") from None


def sleep_unless_stopped(seconds: float, stop_requested: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not stop_requested() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, POLL_INTERVAL_S))
