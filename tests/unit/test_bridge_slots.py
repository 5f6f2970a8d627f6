"""The workers the bridge's two consumers share (``bridge.slots``): rerender jobs never take more
than their share, and a live job is first in line for a worker. Real threads, no broker."""

from __future__ import annotations

import threading
import time

import pytest

from bridge.observability import BridgeMetrics
from bridge.slots import WorkerSlots
from imagepipe.settings import Settings


def _take(slots: WorkerSlots, rerender: bool, got: list, cancel=None) -> threading.Thread:
    thread = threading.Thread(target=lambda: got.append(slots.acquire(rerender, cancel)),
                              daemon=True)
    thread.start()
    return thread


def _settles(thread: threading.Thread, timeout: float = 2.0) -> bool:
    thread.join(timeout)
    return not thread.is_alive()


def test_rerender_jobs_take_at_most_their_share_and_live_jobs_the_rest():
    slots = WorkerSlots(workers=4, rerender_share=1)
    assert slots.acquire(rerender=True)
    got: list[bool] = []
    second_rerender = _take(slots, True, got)
    assert not _settles(second_rerender, 0.5)  # its share is taken
    for _ in range(3):  # the other three workers are the live jobs'
        assert slots.acquire(rerender=False)
    assert slots.busy == (3, 1)
    slots.release(rerender=True)
    assert _settles(second_rerender) and got == [True]
    assert slots.busy == (3, 1)


def test_a_freed_worker_goes_to_a_waiting_live_job_first():
    slots = WorkerSlots(workers=2, rerender_share=1)
    assert slots.acquire(rerender=True)
    assert slots.acquire(rerender=False)  # all busy
    rerender_got: list[bool] = []
    waiting_rerender = _take(slots, True, rerender_got)
    live_got: list[bool] = []
    waiting_live = _take(slots, False, live_got)
    time.sleep(0.3)  # both wait
    slots.release(rerender=True)  # a rerender's worker: the live job gets it
    assert _settles(waiting_live) and live_got == [True]
    assert not _settles(waiting_rerender, 0.5)
    slots.release(rerender=False)
    assert _settles(waiting_rerender) and rerender_got == [True]
    assert slots.busy == (1, 1)


def test_a_stop_request_ends_the_wait_without_a_worker():
    slots = WorkerSlots(workers=1, rerender_share=1)
    assert slots.acquire(rerender=False)
    cancel = threading.Event()
    got: list[bool] = []
    waiting = _take(slots, True, got, cancel)
    time.sleep(0.1)
    cancel.set()
    assert _settles(waiting) and got == [False]
    slots.release(rerender=False)
    assert slots.busy == (0, 0)


def test_shares_come_from_the_settings_and_are_checked():
    settings = Settings(bucket="photos", workers=8)
    assert (settings.worker_count, settings.rerender_worker_count) == (8, 2)
    with pytest.raises(ValueError):
        WorkerSlots(workers=2, rerender_share=3)


def test_health_needs_both_consumers_and_names_the_rerender_one():
    metrics = BridgeMetrics()
    rerender = metrics.for_rerender()
    assert metrics.health() == (False, "starting")
    metrics.consuming()
    assert metrics.health() == (False, "rerender: starting")
    rerender.consuming()
    assert metrics.health() == (True, "consuming")
    rerender.not_consuming("broker connection lost (StreamLostError); reconnecting")
    assert metrics.health() == (
        False, "rerender: broker connection lost (StreamLostError); reconnecting")
    rerender.consuming()
    assert metrics.reconnects._value.get() == 1
    for observer in (metrics, rerender):
        observer.not_consuming("stopped")
    assert metrics.health() == (False, "stopped")


def test_rerender_jobs_are_counted_apart_from_live_ones():
    metrics = BridgeMetrics()
    rerender = metrics.for_rerender()
    rerender.job_started(attempt=2)
    rerender.settled("failed", 0.5, "corrupt", dead_lettered=True)
    rerender.job_ended()
    metrics.settled("done", 0.1, None, dead_lettered=False)

    def sample(name, labels=None):
        return metrics.registry.get_sample_value(name, labels or {})

    assert sample("imagepipe_bridge_rerender_jobs_total", {"outcome": "failed"}) == 1
    assert sample("imagepipe_bridge_jobs_total", {"outcome": "failed"}) == 0
    assert sample("imagepipe_bridge_jobs_total", {"outcome": "done"}) == 1
    assert sample("imagepipe_bridge_dead_lettered_total", {"code": "corrupt"}) == 1
    assert sample("imagepipe_bridge_redeliveries_total") == 1
    assert sample("imagepipe_bridge_rerender_in_flight") == 0


def test_a_stop_request_wins_over_a_worker_freed_at_the_same_moment():
    # SIGTERM, then the running job ends: the job that waited must not start on its worker.
    slots = WorkerSlots(workers=1, rerender_share=1)
    assert slots.acquire(False)
    cancel = threading.Event()
    got: list = []
    waiting = _take(slots, False, got, cancel)
    with slots._changed:  # both at once, before the waiter looks again
        cancel.set()
        slots._live -= 1
        slots._changed.notify_all()
    waiting.join(5)
    assert got == [False] and slots.busy == (0, 0)
    assert not slots.acquire(False, cancel)  # and so for any job that asks after the stop
    assert slots.acquire(False)  # a final attempt (no cancel) still runs
