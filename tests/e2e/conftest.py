"""The local stack for end-to-end tests: moto S3, `chalice local` and a bridge as subprocesses on
free ports, with broker names of their own that are deleted afterwards."""

from __future__ import annotations

import contextlib
import uuid

import pika

from imagepipe.broker import declare_topology
from imagepipe_dev.stack import LocalStack, free_port


@contextlib.contextmanager
def running_stack(tmp_path_factory, api_port: int | None = None, bridges: int = 1, **overrides):
    """A started ``LocalStack``; ``overrides`` replace settings (limits, allowed origins ...).

    With ``bridges=0`` the topology is declared here, so that ``complete`` can still publish."""
    name = f"imagepipe-e2e-{uuid.uuid4().hex[:10]}"
    settings = {
        "bucket": name,
        "resize_queue": f"{name}.resize",
        "rerender_queue": f"{name}.rerender",
        "dead_letter_queue": f"{name}.resize.dead",
        "dead_letter_exchange": f"{name}.resize.dlx",
        "results_exchange": f"{name}.results",
        # The local stage turns callbacks on: keep the dispatcher's queues private too.
        "callback_queue": f"{name}.callbacks",
        "callback_dead_letter_queue": f"{name}.callbacks.dead",
        "workers": 2,
        **overrides,
    }
    local = LocalStack(tmp_path_factory.mktemp("run"), api_port=api_port or free_port(),
                       s3_port=free_port(), settings_overrides=settings)
    local.start(bridges=bridges)
    try:
        if not bridges:
            with contextlib.closing(pika.BlockingConnection(
                    pika.URLParameters(local.settings.amqp_url))) as connection:
                declare_topology(connection.channel(), local.settings)
        yield local
    finally:
        local.stop()
        connection = pika.BlockingConnection(pika.URLParameters(local.settings.amqp_url))
        channel = connection.channel()
        for queue in (local.settings.resize_queue, local.settings.rerender_queue,
                      local.settings.dead_letter_queue, local.settings.callback_queue,
                      local.settings.callback_dead_letter_queue):
            channel.queue_delete(queue)
        for exchange in (local.settings.dead_letter_exchange, local.settings.results_exchange):
            channel.exchange_delete(exchange)
        connection.close()
