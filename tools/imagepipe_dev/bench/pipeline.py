"""``make bench BENCH_ARGS=pipeline``: the whole local stack, against naive Pillow on all cores.

The local stack (``imagepipe_dev.stack.LocalStack``: moto's S3 server, the upload API under
``chalice local``, one bridge with the local invoker) on fresh queue names and free ports.
Photos are the imaging section's 12 MP photo-like JPEG; every one goes through the API as a
browser sends it (create, PUT to the presigned URL, complete). Jobs are timed by their
``imagepipe.results`` events, read by a consumer in this process, never by polling status
(a tight status loop costs a core).

- **complete→done**, one photo at a time: from sending ``complete`` until its ``job.done``
  event; the p50 of several.
- **burst**: 32 photos uploaded first, then completed at once; photos/s from the first
  ``complete`` to the last event. Baseline, same run: naive Pillow (every variant resized from
  the full image with LANCZOS) in a process pool on all cores over the same photos. Wall-clock
  ratios need a quiet machine: anyone else's work during one but not the other moves them.
- **CPU per photo**: the stack's CPU (moto, ``chalice local``, the bridge and its workers) per
  photo of the burst, against naive Pillow's CPU per photo in one process. Other work on the
  machine hardly moves it, so it is the ratio to read on a shared machine.
- **where the time goes**: CPU seconds of moto's S3 server, ``chalice local`` and the bridge
  (with its worker processes) during the burst, from ``/proc/<pid>/stat``, and of everything
  else (this process, RabbitMQ, anyone else's work on a shared machine: ``/proc/stat``), as a
  share of all cores over the burst.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from imagepipe_dev.bench import imaging as bench_imaging
from imagepipe_dev.stack import FAKE_AWS, LocalStack, free_port

BURST = 32  # long enough that the tail of the last photos is a small part of it
NAIVE_CPU_PHOTOS = 3
BURST_QUICK = 4
SINGLES = 7
SINGLES_QUICK = 3
WIDTH, HEIGHT = 4000, 3000  # 12 MP
TARGET_VS_NAIVE = 3.0
ROOT = Path(__file__).resolve().parents[3]


def run(ctx) -> dict:
    for name, value in FAKE_AWS.items():  # the stack's bucket is made from this process
        os.environ.setdefault(name, value)
    cores = os.cpu_count() or 1
    burst = BURST_QUICK if ctx.quick else BURST
    singles = SINGLES_QUICK if ctx.quick else SINGLES
    photo = bench_imaging.photo_jpeg(WIDTH, HEIGHT)
    naive_rate = bench_imaging.images_per_second(photo, "naive", burst, cores)
    ctx.say(f"naive Pillow, {cores} processes: {naive_rate:.2f} photos/s "
            f"({burst} x {WIDTH}x{HEIGHT}, {len(photo) / 1e6:.1f} MB)")
    naive_cpu = _naive_cpu_per_photo(photo, 1 if ctx.quick else NAIVE_CPU_PHOTOS)

    name = f"imagepipe-bench-{uuid.uuid4().hex[:8]}"
    overrides = {
        "resize_queue": f"{name}.resize", "rerender_queue": f"{name}.rerender",
        "dead_letter_queue": f"{name}.resize.dead",
        "dead_letter_exchange": f"{name}.resize.dlx", "results_exchange": f"{name}.results",
        "callback_queue": f"{name}.callbacks",
        "callback_dead_letter_queue": f"{name}.callbacks.dead",
    }
    run_dir = ROOT / ".run" / "bench-pipeline"
    stack = LocalStack(run_dir, api_port=free_port(), s3_port=free_port(),
                       settings_overrides=overrides)
    stack.start()
    try:
        settings = stack.settings
        with _Results(settings) as results, tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "photo.jpg"
            path.write_bytes(photo)
            pipe = _Pipe(stack, results, path, photo)
            pipe.burst(cores)  # warm up: spawn every worker process, import the engine
            latencies = [pipe.one() for _ in range(singles)]
            pids = _stack_pids(stack)
            before = {role: _cpu_seconds(pid_list) for role, pid_list in pids.items()}
            busy_before = _machine_busy_seconds()
            rate, seconds = pipe.burst(burst)
            cpu = {role: round(_cpu_seconds(pid_list) - before[role], 2)
                   for role, pid_list in pids.items()}
            # Everything else that ran meanwhile (this process, RabbitMQ, other users).
            cpu["other"] = round(_machine_busy_seconds() - busy_before - sum(cpu.values()), 2)
        engine = settings.imaging_engine
    finally:
        stack.stop()
        _delete(settings, overrides)

    p50 = statistics.median(latencies)
    capacity = seconds * cores
    share = {role: round(value / capacity, 3) for role, value in cpu.items()}
    verdict = "meets" if rate / naive_rate >= TARGET_VS_NAIVE else "below"
    ctx.say(f"complete->done, one photo at a time ({engine} engine): p50 {p50 * 1000:.0f} ms "
            f"(of {singles}: {', '.join(f'{x * 1000:.0f}' for x in latencies)} ms)")
    ctx.say(f"burst of {burst}: {rate:.2f} photos/s, {rate / naive_rate:.2f}x naive Pillow on "
            f"{cores} cores ({verdict} the {TARGET_VS_NAIVE:.0f}x target)")
    ctx.say("CPU during the burst (" + f"{seconds:.1f} s x {cores} cores = {capacity:.1f} "
            "core-s): " + ", ".join(f"{role} {cpu[role]:.1f} s ({share[role]:.0%})"
                                     for role in cpu))
    stack_cpu = sum(cpu[role] for role in ("moto", "chalice", "bridge")) or 1.0
    of_stack = {role: round(cpu[role] / stack_cpu, 3) for role in ("moto", "chalice", "bridge")}
    ctx.say("of the stack's own CPU: " + ", ".join(f"{role} {value:.0%}"
                                                    for role, value in of_stack.items())
            + f"; {cpu['bridge'] / burst:.2f} s of resize CPU per photo (bridge and workers)")
    cpu_ratio = naive_cpu / (stack_cpu / burst)
    bridge_cpu_ratio = naive_cpu / max(cpu["bridge"] / burst, 1e-6)
    ctx.say(f"CPU per photo: naive Pillow {naive_cpu:.2f} s, the stack {stack_cpu / burst:.2f} s: "
            f"{cpu_ratio:.2f}x ({'meets' if cpu_ratio >= TARGET_VS_NAIVE else 'below'} the "
            f"{TARGET_VS_NAIVE:.0f}x target); the bridge alone (what the cloud runs) "
            f"{bridge_cpu_ratio:.2f}x")
    return {
        "summary": {
            "complete_to_done_p50_ms": round(p50 * 1000),
            "burst_photos_per_s": round(rate, 3),
            "burst_vs_naive_all_cores": round(rate / naive_rate, 3),
            "moto_cpu_share": share["moto"],
            "chalice_cpu_share": share["chalice"],
            "moto_share_of_stack_cpu": of_stack["moto"],
            "cpu_per_photo_vs_naive": round(cpu_ratio, 3),
            "bridge_cpu_per_photo_vs_naive": round(bridge_cpu_ratio, 3),
        },
        "details": {
            "engine": engine,
            "cores": cores,
            "photo": f"{WIDTH}x{HEIGHT} JPEG, {len(photo)} bytes",
            "burst": burst,
            "burst_seconds": round(seconds, 3),
            "naive_photos_per_s": naive_rate,
            "naive_cpu_s_per_photo": round(naive_cpu, 3),
            "stack_cpu_s_per_photo": round(stack_cpu / burst, 3),
            "complete_to_done_ms": [round(x * 1000) for x in latencies],
            "burst_cpu_s": cpu,
            "burst_cpu_share": share,
            "share_of_stack_cpu": of_stack,
        },
    }


def _naive_cpu_per_photo(photo: bytes, photos: int) -> float:
    """CPU seconds naive Pillow spends on one photo, in this process (after one warm-up)."""
    bench_imaging.naive(photo, bench_imaging.DEFAULT_VARIANTS)
    started = time.process_time()
    for _ in range(photos):
        bench_imaging.naive(photo, bench_imaging.DEFAULT_VARIANTS)
    return (time.process_time() - started) / photos


class _Pipe:
    """Uploads through the API and waits for each job's result event."""

    def __init__(self, stack: LocalStack, results: "_Results", path: Path, photo: bytes):
        from imagepipe_tools.client import UploadClient

        self.client = UploadClient(stack.api_url)
        self.results = results
        self.path = path
        self.photo = photo

    def _sent(self) -> str:
        """Create an upload and PUT the photo; the upload id, not yet completed."""
        created = self.client.create(self.path.name, "image/jpeg", len(self.photo), "PUT")
        self.client.send(created["upload"], self.photo, self.path.name,
                         upload_id=created["upload_id"])
        return created["upload_id"]

    def one(self) -> float:
        upload_id = self._sent()
        started = time.perf_counter()
        self.client.complete(upload_id)
        return self.results.wait(upload_id) - started

    def burst(self, count: int) -> tuple[float, float]:
        with ThreadPoolExecutor(min(count, 8)) as pool:
            upload_ids = list(pool.map(lambda _: self._sent(), range(count)))
        with ThreadPoolExecutor(count) as pool:
            started = time.perf_counter()
            list(pool.map(self.client.complete, upload_ids))
        finished = max(self.results.wait(upload_id) for upload_id in upload_ids)
        seconds = finished - started
        return count / seconds, seconds


class _Results:
    """A consumer thread on the results exchange: when each job's event arrived."""

    def __init__(self, settings, timeout: float = 300, routing_key: str = "job.*"):
        self._settings = settings
        self._routing_key = routing_key  # ``variants.*`` for rerender jobs
        self._timeout = timeout
        self._arrived: dict[str, float] = {}
        self._failed: dict[str, dict] = {}
        self._condition = threading.Condition()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-results", daemon=True)

    def __enter__(self) -> "_Results":
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"could not watch {self._settings.results_exchange}: "
                               f"{self._error!r}")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import pika

        try:
            connection = pika.BlockingConnection(pika.URLParameters(self._settings.amqp_url))
            channel = connection.channel()
            queue = channel.queue_declare("", exclusive=True).method.queue
            channel.queue_bind(queue, self._settings.results_exchange, self._routing_key)
            self._ready.set()
            for method, _, body in channel.consume(queue, auto_ack=True,
                                                   inactivity_timeout=0.1):
                now = time.perf_counter()
                if self._stop.is_set():
                    break
                if method is None:
                    continue
                event = json.loads(body)
                with self._condition:
                    self._arrived.setdefault(event["upload_id"], now)
                    if event.get("status") != "done":
                        self._failed[event["upload_id"]] = event.get("error") or {}
                    self._condition.notify_all()
            connection.close()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            with self._condition:
                self._condition.notify_all()

    def wait(self, upload_id: str) -> float:
        """When the job's event arrived (perf_counter); raises if it failed or never came."""
        with self._condition:
            if not self._condition.wait_for(
                    lambda: upload_id in self._arrived or self._error is not None,
                    self._timeout):
                raise RuntimeError(f"no result event for {upload_id} in {self._timeout:.0f}s")
            if upload_id not in self._arrived:
                raise RuntimeError(f"watching results failed: {self._error!r}")
            if upload_id in self._failed:
                raise RuntimeError(f"job {upload_id} failed: {self._failed[upload_id]}")
            return self._arrived[upload_id]


# --- CPU time from /proc -------------------------------------------------------------------------


def _stack_pids(stack: LocalStack) -> dict[str, list[int]]:
    """The stack's processes by role (its ``NAME.pid`` files); the bridge with its workers."""
    def pid(name: str) -> int:
        return int((stack.run_dir / f"{name}.pid").read_text())

    return {"moto": [pid("s3")], "chalice": [pid("api")],
            "bridge": [pid("bridge"), *_descendants(pid("bridge"))]}


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = _stat(pid)
        except OSError:  # ended since: its time is gone with it
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU time all cores spent not idle since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _delete(settings, overrides: dict) -> None:
    """Remove the run's queues and exchanges (the stack's bridge declared them)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        for key in ("resize_queue", "rerender_queue", "dead_letter_queue", "callback_queue",
                    "callback_dead_letter_queue"):
            channel.queue_delete(overrides[key])
        for key in ("dead_letter_exchange", "results_exchange"):
            channel.exchange_delete(overrides[key])
    finally:
        connection.close()
