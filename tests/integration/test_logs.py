"""``python -m bridge`` logs JSON lines with each job's upload_id and job_id when its stderr is a
pipe or a file (a container's log driver), and readable text on a terminal."""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from ..conftest import ROOT
from .conftest import jpeg_bytes
from .faults import BridgeProcess, S3FaultProxy

pytestmark = pytest.mark.broker


@pytest.mark.timeout(120)
def test_bridge_and_worker_lines_are_json_with_the_jobs_ids(storage, probe):
    upload_id = storage.put_original(jpeg_bytes(320, 240))
    proxy = S3FaultProxy(storage.settings.s3_endpoint_url)
    # More failures than one invocation's S3 tries (botocore makes about 6), so the resize core,
    # in a worker process of the bridge, logs a retry; a later invocation gets through.
    proxy.fail("GET", rf"^originals/{upload_id}$", 500, times=10)
    settings = dataclasses.replace(storage.settings, s3_endpoint_url=proxy.url, workers=1)
    probe.watch_results()
    bridge = BridgeProcess(settings).wait_consuming()
    try:
        probe.publish(storage.job(upload_id))
        [event] = probe.events(1, timeout=90)
        assert (event.job_id, event.status) == (upload_id, "done")
        assert bridge.terminate() == 0
    finally:
        bridge.close()
        proxy.close()

    lines = [json.loads(line) for line in bridge.log.text().splitlines()]  # each one is JSON
    assert all({"timestamp", "level", "logger", "message"} <= set(line) for line in lines)
    done = [line for line in lines if line.get("outcome") == "done"]
    assert len(done) == 1, lines
    [line] = done
    assert (line["logger"], line["level"]) == ("bridge.consumer", "INFO")
    assert (line["upload_id"], line["job_id"]) == (upload_id, upload_id)
    assert line["attempt"] > 1 and f"job={upload_id}" in line["message"]
    retries = [line for line in lines if "(will retry)" in line["message"]]
    assert len(retries) == line["attempt"] - 1
    for retry in retries:  # from the worker process, in the same format
        assert retry["logger"] == "imagepipe.resize"
        assert (retry["upload_id"], retry["job_id"]) == (upload_id, upload_id)


@pytest.mark.timeout(60)
def test_bridge_logs_text_on_a_terminal(broker_settings):
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge"], cwd=ROOT,
        env={**os.environ, **broker_settings.to_env()},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        # Two consumers (the work queue's and the rerender queue's) start in either order.
        while b"bridge: consuming" not in seen and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                try:
                    seen += os.read(controller, 4096)
                except OSError:  # the process closed the terminal
                    break
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        os.close(controller)
    text = seen.decode()
    [consuming] = [line for line in text.splitlines() if "bridge: consuming" in line]
    assert " INFO bridge.loop bridge: consuming " in consuming, text
    assert not consuming.lstrip().startswith("{")
