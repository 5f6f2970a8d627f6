"""The callback dispatcher's TLS set-up, without a broker. (Its reconnect loop is the bridge's,
tested in test_bridge_loop.py.)"""

from bridge import callbacks


def test_tls_context_is_made_once():
    target = callbacks.callbacks.Target(url="https://example.com/", scheme="https",
                                        host="example.com", port=443, path="/",
                                        addresses=("93.184.216.34",))
    first = callbacks._pinned_connection(target, "93.184.216.34", 1.0)
    second = callbacks._pinned_connection(target, "93.184.216.34", 1.0)
    assert first._context is second._context
