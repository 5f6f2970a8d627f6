"""``make bench BENCH_ARGS=lambda``: one bridge on one core driving Lambda Invoke.

The cloud bridge only waits on Invoke, so its throughput is its concurrency over the function's
duration, not its cores. A fake Lambda endpoint (``imagepipe_dev.fake_lambda``) answers each
Invoke after 1 s, about a 12 MP photo's resize in the function. One real bridge
(``python -m bridge``, ``IMAGEPIPE_INVOKER=lambda``, boto3 pointed at the fake with
``AWS_ENDPOINT_URL_LAMBDA``) is pinned to one core with ``sched_setaffinity``. It first drains
one wave of warm-up jobs (boto3 client and connection pool made, a cost paid once per bridge);
then a backlog is published and the clock runs from its first message until its last
``job.done`` event is in a queue bound to the results exchange.

- **default**: the lambda invoker's default concurrency (``IMAGEPIPE_WORKERS`` unset: 64).
  Target: at least 50 jobs/s.
- **baseline**, same run: ``IMAGEPIPE_WORKERS`` = this machine's CPU count, the default before
  the lambda invoker had its own (what a 0.25-vCPU Fargate task ran: it reports 2 CPUs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imagepipe_dev.bench.bridge import _noop_jobs, _Topology
from imagepipe_dev.fake_lambda import FakeLambda
from imagepipe_dev.stack import FAKE_AWS
from imagepipe.settings import DEFAULT_AMQP_URL, DEFAULT_LAMBDA_WORKERS, ENV_AMQP_URL

INVOKE_DELAY_S = 1.0
JOBS = 640  # ten waves of the default 64 at once
JOBS_QUICK = 192
BASELINE_WAVES = 4  # the baseline drains this many waves of cpu-count jobs (about 4 s)
TARGET_JOBS_PER_S = 50
FUNCTION = "imagepipe-bench-resize"
ROOT = Path(__file__).resolve().parents[3]


def run(ctx) -> dict:
    amqp_url = os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL)
    cores = os.cpu_count() or 1
    core = max(os.sched_getaffinity(0))
    jobs = JOBS_QUICK if ctx.quick else JOBS
    with FakeLambda(delay_s=INVOKE_DELAY_S) as fake:
        baseline = _drain(amqp_url, fake, BASELINE_WAVES * cores, cores, core)
        ctx.say(f"baseline, {cores} workers (the CPU count): {baseline['jobs_per_s']:.1f} jobs/s "
                f"({baseline['jobs']} jobs, at most {baseline['max_in_flight']} in flight)")
        default = _drain(amqp_url, fake, jobs, 0, core)
    rate = default["jobs_per_s"]
    verdict = "meets" if rate >= TARGET_JOBS_PER_S else "BELOW"
    ctx.say(f"default ({DEFAULT_LAMBDA_WORKERS} workers), one bridge pinned to core {core}, "
            f"Invoke answered after {INVOKE_DELAY_S:.0f} s: {rate:.1f} jobs/s ({jobs} jobs, at "
            f"most {default['max_in_flight']} in flight, bridge CPU "
            f"{default['bridge_cpu_s']:.2f} s = {default['bridge_cpu_s'] / default['seconds']:.0%}"
            f" of its core); {verdict} the {TARGET_JOBS_PER_S}/s target; "
            f"{rate / baseline['jobs_per_s']:.1f}x the CPU-count default")
    return {
        "summary": {
            "jobs_per_s_one_core": round(rate, 2),
            "vs_cpu_count_workers": round(rate / baseline["jobs_per_s"], 2),
            "bridge_cpu_share": round(default["bridge_cpu_s"] / default["seconds"], 3),
        },
        "details": {
            "invoke_delay_s": INVOKE_DELAY_S,
            "target_jobs_per_s": TARGET_JOBS_PER_S,
            "pinned_core": core,
            "default": default,
            "baseline_cpu_count_workers": baseline,
        },
    }


def _drain(amqp_url: str, fake: FakeLambda, jobs: int, workers: int, core: int) -> dict:
    """Run one pinned bridge subprocess over ``jobs`` fresh jobs; its rate and CPU time."""
    topology = _Topology(amqp_url, invoker="lambda", resize_function=FUNCTION, workers=workers)
    settings = topology.settings
    fake.max_in_flight = 0
    env = {**os.environ, **FAKE_AWS, **settings.to_env(),
           "AWS_ENDPOINT_URL_LAMBDA": fake.url,
           "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tools'}"}
    log = tempfile.TemporaryFile()
    bridge = None
    try:
        bridge = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=lambda: os.sched_setaffinity(0, {core}))

        def alive() -> None:
            if bridge.poll() is not None:
                raise RuntimeError(f"the bridge exited with {bridge.returncode}: {_tail(log)}")

        def events_at_least(count: int):
            def predicate() -> bool:
                alive()
                return topology.depth(topology.events_queue) >= count
            return predicate

        # One wave first, so the boto3 client and its pool's connections exist (a start-up
        # cost, paid once per bridge): the clock measures the rate a running bridge sustains.
        warm_up = workers or DEFAULT_LAMBDA_WORKERS
        _publish(topology, _noop_jobs(warm_up))
        topology.wait(events_at_least(warm_up), 120)
        cpu_before = _cpu_seconds(bridge.pid)
        started = time.perf_counter()
        _publish(topology, _noop_jobs(jobs))
        topology.wait(events_at_least(warm_up + jobs), 600)
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds(bridge.pid) - cpu_before
        return {"jobs": jobs, "workers": warm_up, "seconds": round(seconds, 3),
                "jobs_per_s": round(jobs / seconds, 2), "max_in_flight": fake.max_in_flight,
                "bridge_cpu_s": round(cpu, 3)}
    finally:
        if bridge is not None and bridge.poll() is None:
            bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(30)
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait(10)
        log.close()
        topology.close()


def _publish(topology: _Topology, jobs) -> None:
    """A backlog arriving at once (no confirms: publishing must not be what is measured)."""
    from imagepipe.broker import job_properties

    for job in jobs:
        topology.channel.basic_publish("", topology.settings.resize_queue, job.encode(),
                                       job_properties(job))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(log) -> str:
    log.seek(0)
    return log.read()[-2000:].decode(errors="replace")
