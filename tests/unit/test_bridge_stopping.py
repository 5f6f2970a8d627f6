"""While stopping, the bridge hands back jobs it has not started, but never a final attempt:
releasing it would spend the job's last delivery, and the broker would dead-letter it without a
cause or a failed status. (No broker needed: the decision is made before any I/O.)"""

import time

from bridge.consumer import Bridge
from bridge.settle import ACK, RELEASE
from imagepipe.messages import Invocation, InvocationResult, ResizeJob
from imagepipe.settings import Settings

UID = "0123456789abcdef0123456789abcdef"
JOB = ResizeJob.for_upload(UID, "photos", "image/jpeg")


class DoneInvoker:
    def __init__(self):
        self.attempts = []

    def invoke(self, invocation):
        self.attempts.append(invocation.attempt)
        return InvocationResult(job_id=UID, upload_id=UID, status="done")

    def close(self, wait=True):
        pass


def test_stopping_releases_a_job_not_started_but_runs_a_final_attempt():
    invoker = DoneInvoker()
    bridge = Bridge(Settings(bucket="photos", delivery_limit=2), invoker)
    bridge.stop()
    bridge.live._loop.stopping.set()  # what the I/O loop does on the stop request

    assert bridge.live._run_job(Invocation(JOB, 1, 3), time.monotonic()).action == RELEASE
    assert bridge.live._run_job(Invocation(JOB, 3, 3), time.monotonic()).action == ACK
    assert invoker.attempts == [3]


def test_the_first_stop_starts_the_drain_deadline():
    bridge = Bridge(Settings(bucket="photos", drain_timeout_s=30), DoneInvoker())
    assert bridge.drain_deadline is None
    before = time.monotonic()
    bridge.stop()
    deadline = bridge.drain_deadline
    assert before + 30 <= deadline <= time.monotonic() + 30
    bridge.stop()  # a second signal does not extend the drain
    assert bridge.drain_deadline == deadline
