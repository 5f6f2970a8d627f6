"""Invokers: how the bridge runs one resize invocation.

An invoker has ``invoke(invocation) -> InvocationResult`` and ``close()``. ``invoke`` blocks for
the whole job and is called from several bridge threads at once. It returns whatever the resize
function answered (done, failed or retry). When the function could not be run or gave no usable
answer, it raises a ``TransientError`` with code ``invoke_failed`` instead (see
``invoke_failed``). The bridge then retries the job, up to the broker's delivery limit.

- ``LocalInvoker`` runs ``imagepipe.resize.handle_invocation`` in a process pool on this machine.
- ``LambdaInvoker`` calls the deployed resize function through Lambda Invoke.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Protocol

from imagepipe import aws, logs
from imagepipe.errors import invoke_failed
from imagepipe.messages import Invocation, InvocationResult
from imagepipe.settings import Settings

if TYPE_CHECKING:
    from imagepipe.resize import Runtime

LOGGER = logging.getLogger(__name__)


class Invoker(Protocol):
    def invoke(self, invocation: Invocation) -> InvocationResult: ...

    def close(self, wait: bool = True) -> None:
        """Release resources; with ``wait=False``, abandon invocations still running."""


def make_invoker(settings: Settings) -> Invoker:
    if settings.invoker == "lambda":
        return LambdaInvoker(settings)
    return LocalInvoker(settings)


# --- local: a process pool over the core resize function -------------------------------------

_worker_runtime: Runtime | None = None  # one per pool process, made by the pool initializer


def _init_worker(settings: Settings, log_level: int) -> None:
    global _worker_runtime
    from imagepipe.resize import Runtime

    # A spawned process starts with no logging set up: without this the core's warnings
    # (a retry's cause, a failed status write) would reach stderr without time, origin or the
    # job's fields. It shares the bridge's stderr, so it writes the same format.
    logs.configure(log_level)

    # Ctrl-C reaches the whole process group. The parent bridge decides when work stops, so a
    # job that is running keeps running until the bridge shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_runtime = Runtime(settings)


def _run_in_worker(payload: dict) -> dict:
    from imagepipe.resize import handle_invocation

    if _worker_runtime is None:
        raise RuntimeError("the worker process was started without its initializer")
    # The same core function the Lambda handler calls; it never raises.
    return handle_invocation(payload, _worker_runtime)


class LocalInvoker:
    """Runs jobs in ``settings.worker_count`` processes, so CPU-bound resizes do not share one GIL.

    Processes are spawned, not forked, because the bridge already runs pika's I/O thread and a
    thread pool. A fork copies their locks in whatever state they are in at that moment.
    If a worker dies (OOM kill, segfault in a decoder), the pool breaks and every job in it
    fails. The pool is then replaced, and the failed jobs raise ``invoke_failed`` so that the
    bridge retries them.
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._closed = False
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # With spawn, processes start on first use, not here.
        return ProcessPoolExecutor(
            max_workers=self._settings.worker_count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._settings, logging.getLogger().getEffectiveLevel()),
        )

    def invoke(self, invocation: Invocation) -> InvocationResult:
        pool = self._pool
        try:
            payload = pool.submit(_run_in_worker, invocation.to_dict()).result()
        except BrokenProcessPool as exc:
            self._replace_broken(pool)
            raise invoke_failed(f"resize worker process died: {exc}") from exc
        except RuntimeError as exc:  # submit after close(): the bridge is shutting down
            raise invoke_failed(exc) from exc
        try:
            return InvocationResult.from_dict(payload)
        except Exception as exc:
            raise invoke_failed(f"unreadable result from resize worker: {exc}") from exc

    def _replace_broken(self, broken: ProcessPoolExecutor) -> None:
        # Many threads see the same broken pool. Only the first one replaces it.
        with self._lock:
            if self._closed or self._pool is not broken:
                return
            LOGGER.error("resize worker pool broke; starting a new one")
            self._pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            pool = self._pool
        if not wait:
            # A job still running after the drain timeout: its delivery went back to the
            # broker, so its worker is stopped rather than waited for. (Python 3.14 has
            # ProcessPoolExecutor.terminate_workers for this.)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=wait, cancel_futures=True)


# --- lambda: the deployed resize function ----------------------------------------------------


class LambdaInvoker:
    """Calls the resize function with Lambda Invoke (RequestResponse) and reads its result.

    The function's handler never raises. So a ``FunctionError`` means the runtime failed
    (timeout, out of memory, crash, import error), and the job is worth retrying.
    """

    def __init__(self, settings: Settings, client=None):
        self._settings = settings
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self):
        # boto3 clients are thread-safe to use but not to create, hence the lock.
        with self._lock:
            if self._client is None:
                self._client = aws.lambda_client(self._settings)
            return self._client

    def invoke(self, invocation: Invocation) -> InvocationResult:
        function = self._settings.resize_function
        try:
            response = self.client.invoke(
                FunctionName=function,
                InvocationType="RequestResponse",
                Payload=json.dumps(invocation.to_dict()).encode(),
            )
            raw = response["Payload"].read()
        except Exception as exc:  # ClientError (throttle, 5xx, not found, denied), network
            raise invoke_failed(f"lambda {function}: {exc}") from exc
        if response.get("FunctionError"):
            raise invoke_failed(f"lambda {function}: {_describe_function_error(response, raw)}")
        try:
            result = InvocationResult.from_dict(json.loads(raw))
        except Exception as exc:
            raise invoke_failed(f"lambda {function} returned an unreadable result: {exc}") from exc
        if result.job_id != invocation.job.job_id:
            raise invoke_failed(
                f"lambda {function} answered for job {result.job_id!r}, "
                f"not {invocation.job.job_id!r}"
            )
        return result

    def close(self, wait: bool = True) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _describe_function_error(response: dict, raw: bytes) -> str:
    try:
        detail = json.loads(raw)
    except ValueError:
        detail = None
    if not isinstance(detail, dict):
        detail = {"errorMessage": raw[:500].decode(errors="replace")}
    return (
        f"{response['FunctionError']} function error "
        f"{detail.get('errorType', 'unknown')}: {detail.get('errorMessage', '')}"
    )
