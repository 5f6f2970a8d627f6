"""The callback dispatcher's reconnect loop and TLS set-up, without a broker."""

import pika.exceptions

from bridge import callbacks
from bridge.callbacks import CallbackDispatcher
from imagepipe.settings import Settings
from tests.conftest import CALLBACK_SECRET


def test_reconnect_backoff_restarts_after_a_session_that_consumed(monkeypatch):
    dispatcher = CallbackDispatcher(Settings(bucket="b", callback_secret=CALLBACK_SECRET),
                                    reconnect_initial_s=1.0, reconnect_max_s=64.0)
    # Three failed connects, one session that consumed and then lost its connection, one more.
    consumed = iter([False, False, False, True, False])
    delays = []

    def session(_executor):
        dispatcher._consumed_since_connect = next(consumed)
        raise pika.exceptions.AMQPConnectionError("down")

    def sleep(seconds, _stopped):
        delays.append(seconds)
        if len(delays) == 5:
            dispatcher.stop()

    monkeypatch.setattr(dispatcher, "_run_session", session)
    monkeypatch.setattr(callbacks, "sleep_unless_stopped", sleep)
    monkeypatch.setattr(callbacks.random, "uniform", lambda low, high: high)

    dispatcher.run()

    assert delays == [1.0, 2.0, 4.0, 1.0, 2.0]


def test_tls_context_is_made_once():
    target = callbacks.callbacks.Target(url="https://example.com/", scheme="https",
                                        host="example.com", port=443, path="/",
                                        addresses=("93.184.216.34",))
    first = callbacks._pinned_connection(target, "93.184.216.34", 1.0)
    second = callbacks._pinned_connection(target, "93.184.216.34", 1.0)
    assert first._context is second._context
