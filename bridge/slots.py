"""The bridge's workers, shared by its two consumers, with live jobs first.

A bridge runs at most ``settings.worker_count`` invocations at once: that is the local invoker's
process pool, or the bridge's share of the resize function's concurrency. Live jobs and rerender
(backfill) jobs come from two queues and two consumers, and both invoke through the same invoker,
so one count of busy workers is kept here:

- a rerender job takes a worker only while fewer than ``settings.rerender_worker_count`` rerender
  jobs run, a worker is free and no live job is waiting for one;
- a live job takes any free worker, and is first in line for the next one.

So with 100,000 rerender jobs queued, ``worker_count - rerender_worker_count`` workers (at least
one, where a bridge has two) are always free for live uploads, and a worker that a rerender job
frees goes to a waiting live job first. The rerender consumer's own prefetch already bounds how
many rerender jobs a bridge holds; this bounds how many run, whatever the invoker.
"""

from __future__ import annotations

import threading

# How often a waiting job looks at its cancel event (a stop request).
POLL_INTERVAL_S = 0.25


class WorkerSlots:
    def __init__(self, workers: int, rerender_share: int):
        if not 0 < rerender_share <= workers:
            raise ValueError("need 0 < rerender_share <= workers")
        self.workers = workers
        self.rerender_share = rerender_share
        self._changed = threading.Condition()
        self._live = 0
        self._rerender = 0
        self._live_waiting = 0

    @property
    def busy(self) -> tuple[int, int]:
        """(live, rerender) invocations running now."""
        with self._changed:
            return self._live, self._rerender

    def acquire(self, rerender: bool, cancel: threading.Event | None = None) -> bool:
        """Wait for a worker; False (holding none) if ``cancel`` was set first."""
        with self._changed:
            if not rerender:
                self._live_waiting += 1
            try:
                # The stop request first: a worker freed at the moment the bridge was told to
                # stop must not start a job that waited for it.
                while not (cancel is not None and cancel.is_set()):
                    if self._free_for(rerender):
                        break
                    self._changed.wait(POLL_INTERVAL_S)
                else:
                    return False
                if rerender:
                    self._rerender += 1
                else:
                    self._live += 1
                return True
            finally:
                if not rerender:
                    self._live_waiting -= 1
                    self._changed.notify_all()  # a rerender job may go now

    def release(self, rerender: bool) -> None:
        with self._changed:
            if rerender:
                self._rerender -= 1
            else:
                self._live -= 1
            self._changed.notify_all()

    def _free_for(self, rerender: bool) -> bool:
        if self._live + self._rerender >= self.workers:
            return False
        if not rerender:
            return True
        return self._rerender < self.rerender_share and self._live_waiting == 0
