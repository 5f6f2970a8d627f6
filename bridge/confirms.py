"""Publisher confirms without a round trip per message.

pika's ``BlockingChannel`` in confirm mode blocks every ``basic_publish`` until the broker has
confirmed that one message: one network round trip per result event, which capped the bridge at
about 1,000 messages per second (measured with ``make bench BENCH_ARGS=bridge``). This class
keeps many publishes in flight on a channel of their own and calls back as each is confirmed,
so the bridge acks a delivery only after its event is safe, exactly as before, but without
waiting for each confirm in turn.

It talks to the ``BlockingChannel``'s underlying asynchronous channel (``channel._impl``, a
``pika.channel.Channel``), whose ``confirm_delivery(ack_nack_callback=...)`` and
``basic_publish`` are pika's public asynchronous API; pika is pinned in ``requirements.txt``
and ``tests/integration/test_confirms.py`` pins the behaviour relied on here.

Everything runs on the connection's I/O thread. Callbacks run inside pika's I/O loop, so they
must not call ``BlockingChannel`` methods: even ``basic_ack`` flushes by running the loop, which
re-enters the callback (checked: unbounded recursion). ``ack`` and ``nack`` below write the
frame without running the loop; it goes out on the loop's next turn.
"""

from __future__ import annotations

from typing import Callable

import pika
import pika.exceptions
import pika.spec

# When the broker confirms (True) or refuses (False) a message.
OnConfirm = Callable[[bool], None]


class PipelinedPublisher:
    def __init__(self, connection: pika.BlockingConnection, channel, select_timeout: float = 10):
        self._channel = channel
        self._impl = channel._impl
        self._next_tag = 1  # confirm numbering starts at 1 after confirm.select
        self._pending: dict[int, OnConfirm] = {}
        selected: list[bool] = []
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm,
                                    callback=lambda _frame: selected.append(True))
        deadline_calls = int(select_timeout / 0.05)
        while not selected:
            if not channel.is_open or deadline_calls == 0:
                raise pika.exceptions.ChannelWrongStateError("confirm.select was not answered")
            connection.process_data_events(time_limit=0.05)
            deadline_calls -= 1

    @property
    def is_open(self) -> bool:
        return self._channel.is_open

    @property
    def unconfirmed(self) -> int:
        return len(self._pending)

    def publish(self, exchange: str, routing_key: str, body: bytes, properties,
                on_confirm: OnConfirm) -> None:
        """Publish without waiting; ``on_confirm`` runs on the I/O thread once the broker has
        answered. If the connection is lost first, it never runs (the broker redelivers)."""
        if not self._channel.is_open:
            raise pika.exceptions.ChannelWrongStateError("the events channel is closed")
        self._impl.basic_publish(exchange, routing_key, body, properties)
        self._pending[self._next_tag] = on_confirm
        self._next_tag += 1

    def _on_confirm(self, frame) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        if method.multiple:  # every tag up to this one; pending is in publish order
            tags = []
            for tag in self._pending:
                if tag > method.delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [method.delivery_tag]
        for tag in tags:
            callback = self._pending.pop(tag, None)
            if callback is not None:
                callback(ok)


def ack(channel, delivery_tag: int) -> None:
    """Ack on a ``BlockingChannel`` without running the I/O loop (safe inside a callback)."""
    channel._impl.basic_ack(delivery_tag=delivery_tag)


def nack(channel, delivery_tag: int, requeue: bool = True) -> None:
    """Nack on a ``BlockingChannel`` without running the I/O loop (safe inside a callback)."""
    channel._impl.basic_nack(delivery_tag=delivery_tag, requeue=requeue)
