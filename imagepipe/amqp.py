"""Connections to RabbitMQ: every broker connection the project makes is opened here.

The URL is ``settings.amqp_url``. In the cloud the environment holds only the broker's endpoint,
and ``settings.load`` (the edge, once per process) has already put the user and password from
the broker's Secrets Manager secret into it; nothing else reads the secret. What the callers
differ in is what they are called (the name shown by the management UI and
``rabbitmqctl list_connections``) and how long they may wait.

pika is imported on first use, like every client: importing the core never needs a broker.
"""

from __future__ import annotations

from imagepipe.errors import ConfigError
from imagepipe.settings import ENV_AMQP_URL, Settings

DEFAULT_TIMEOUT_S = 10.0


def parameters(settings: Settings, name: str, *, timeout: float = DEFAULT_TIMEOUT_S,
               heartbeat: int | None = None, blocked_timeout: float | None = None):
    """pika's connection parameters for ``settings.amqp_url``, as connection ``name``.

    - One connection attempt: each caller has its own rule for trying again (the bridge's
      reconnect backoff, the publisher's single retry, an operator command's error message).
    - ``timeout`` bounds the TCP connect; twice it bounds the whole AMQP handshake.
    - ``heartbeat``: None takes the broker's proposal (60 s on RabbitMQ).
    - ``blocked_timeout``: a broker under a resource alarm blocks publishers. After this long
      the connection is dropped rather than hang in a publish for ever (default: 6 × timeout).

    A malformed URL is a ``ConfigError`` raised here, at construction, so that it stops a
    program at startup instead of feeding a reconnect loop. Its message leaves the URL out:
    the URL holds the password.
    """
    import pika

    try:
        params = pika.URLParameters(settings.amqp_url)
    except (ValueError, IndexError, TypeError) as exc:
        raise ConfigError(f"{ENV_AMQP_URL} is not a valid AMQP URL: {exc}") from None
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.stack_timeout = timeout * 2
    params.blocked_connection_timeout = (
        blocked_timeout if blocked_timeout is not None else timeout * 6
    )
    if heartbeat is not None:
        params.heartbeat = heartbeat
    params.client_properties = {"connection_name": name}
    return params


def connect(params):
    """A ``pika.BlockingConnection`` with ``params`` (from ``parameters``).

    Raises pika's ``AMQPConnectionError`` (or an ``OSError``) when the broker cannot be reached.
    """
    import pika

    return pika.BlockingConnection(params)
