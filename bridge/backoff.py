"""Capped exponential backoff: how long the bridge waits before trying again.

Three things wait this way: a job's retry (``bridge.settle``), a completion callback's retry
(``bridge.callbacks``), and a reconnect to the broker (``bridge.loop``). The first two follow a
count the broker keeps (the delivery's attempt); a reconnect keeps its own and adds jitter, so a
fleet that lost the broker together does not come back together.
"""

from __future__ import annotations

import random
from typing import Callable

# 2 ** 64 times any sane base is past every cap; a larger exponent would overflow a float.
_MAX_DOUBLINGS = 64


def delay(base_s: float, attempt: int, cap_s: float) -> float:
    """``base_s`` after attempt 1, doubled after each further attempt, at most ``cap_s``."""
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
    return min(base_s * 2 ** doublings, cap_s)


class ReconnectBackoff:
    """The wait before each reconnect: drawn from [d/2, d], where d doubles from ``initial_s``
    up to ``max_s`` with every failed try.

    It starts again at ``initial_s`` after a working session: one that consumed for at least
    ``working_after_s``. A session the broker ends as soon as it starts (a consumer cancelled
    at once, a channel closed on the first publish) does not count, so a broker that keeps
    accepting and dropping the bridge is not hammered at the initial rate.
    """

    def __init__(self, initial_s: float, max_s: float, *, working_after_s: float = 10.0,
                 uniform: Callable[[float, float], float] = random.uniform):
        if not 0 < initial_s <= max_s:
            raise ValueError("reconnect backoff needs 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self.working_after_s = working_after_s
        self._uniform = uniform
        self._current = initial_s

    def next_delay(self, consumed_s: float | None) -> float:
        """The wait after a session that consumed for ``consumed_s`` seconds (None: it never
        reached consuming, say the connect itself failed)."""
        if consumed_s is not None and consumed_s >= self.working_after_s:
            self._current = self.initial_s
        wait = self._uniform(self._current / 2, self._current)
        self._current = min(self._current * 2, self.max_s)
        return wait
