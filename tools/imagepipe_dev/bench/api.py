"""The ``api`` section: the upload API's own latency through Chalice's test client.

Presign (``POST /uploads``), ``complete`` (``POST /uploads/{id}/complete``, which verifies the
object and publishes with confirms to the real RabbitMQ) and status (``GET /uploads/{id}``), each
called 1,000 times (``--quick``: 100) against in-process moto. The baseline, measured in the same
run, is a route that does nothing, through the same test client: the ratio is what the route's
own work costs over the framework's. Target: p99 under 50 ms.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[3]
UPLOAD_APP = ROOT / "functions" / "upload" / "app.py"
STAGE = "bench"
TARGET_P99_MS = 50.0
WARMUP_CALLS = 20
JSON_HEADERS = {"Content-Type": "application/json"}
# The smallest JPEG the verification accepts: what complete reads is its first bytes.
JPEG_HEAD = b"\xff\xd8\xff\xe0" + b"\x00" * 60


def run(ctx) -> dict:
    calls = 100 if ctx.quick else 1000
    with _app_under_test() as (client, s3, settings):
        baseline = _timed(calls, lambda _: _expect(client.http.get("/ping"), 200))
        # A second yardstick: one S3 call to the same in-process moto (routes make several).
        s3.put_object(Bucket=settings.bucket, Key="bench-probe", Body=b"x")
        s3_call = _timed(calls, lambda _: s3.head_object(Bucket=settings.bucket,
                                                         Key="bench-probe"))

        def presign(_):
            body = {"filename": "cat.jpg", "content_type": "image/jpeg", "size": len(JPEG_HEAD),
                    "method": "PUT"}
            return _expect(client.http.post("/uploads", headers=JSON_HEADERS,
                                            body=json.dumps(body)), 201)["upload_id"]

        _timed(WARMUP_CALLS, presign)
        ids: list[str] = []
        presign_ms = _timed(calls, lambda i: ids.append(presign(i)))
        from imagepipe import keys

        for upload_id in ids:  # the browser's part, untimed
            s3.put_object(Bucket=settings.bucket, Key=keys.original_key(upload_id),
                          Body=JPEG_HEAD, ContentType="image/jpeg")
        complete_ms = _timed(calls, lambda i: _expect(
            client.http.post(f"/uploads/{ids[i]}/complete", headers=JSON_HEADERS, body=""), 202))
        status_ms = _timed(calls, lambda i: _expect(
            client.http.get(f"/uploads/{ids[i]}"), 200))

    measured = {"presign": presign_ms, "complete": complete_ms, "status": status_ms}
    base, probe = _stats(baseline), _stats(s3_call)
    ctx.say(f"{calls} calls each through chalice.test.Client, moto in-process, real RabbitMQ")
    ctx.say(f"{'route':<10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50 / baseline':>15}")
    ctx.say(f"{'baseline':<10} {base['p50_ms']:>8.2f} {base['p99_ms']:>8.2f} "
            f"{base['max_ms']:>8.2f} {'1.0':>15}   (a route that does nothing)")
    ctx.say(f"{'s3 call':<10} {probe['p50_ms']:>8.2f} {probe['p99_ms']:>8.2f} "
            f"{probe['max_ms']:>8.2f} {probe['p50_ms'] / base['p50_ms']:>14.1f}x   "
            "(one HeadObject to moto, no route)")
    summary: dict[str, float] = {"baseline_p50_ms": base["p50_ms"],
                                 "baseline_p99_ms": base["p99_ms"],
                                 "s3_call_p50_ms": probe["p50_ms"]}
    details: dict = {"calls": calls, "target_p99_ms": TARGET_P99_MS, "baseline": base,
                     "s3_call": probe}
    for name, samples in measured.items():
        stats = _stats(samples)
        ratio = stats["p50_ms"] / base["p50_ms"]
        ctx.say(f"{name:<10} {stats['p50_ms']:>8.2f} {stats['p99_ms']:>8.2f} "
                f"{stats['max_ms']:>8.2f} {ratio:>14.1f}x"
                + ("" if stats["p99_ms"] < TARGET_P99_MS else f"  over the {TARGET_P99_MS:g} ms "
                   "target"))
        summary.update({f"{name}_p50_ms": stats["p50_ms"], f"{name}_p99_ms": stats["p99_ms"],
                        f"{name}_p50_vs_baseline": ratio})
        details[name] = stats
    worst = max(details[name]["p99_ms"] for name in measured)
    ctx.say(f"worst p99 {worst:.1f} ms: {'within' if worst < TARGET_P99_MS else 'OVER'} the "
            f"{TARGET_P99_MS:g} ms target")
    summary["worst_p99_ms"] = worst
    return {"summary": summary, "details": details}


@contextlib.contextmanager
def _app_under_test():
    """The upload function's app in a ``chalice.test.Client`` over in-process moto and the real
    RabbitMQ (unique queue names, deleted afterwards); a do-nothing ``/ping`` route added for
    the baseline. Yields (client, s3, settings)."""
    import os

    from chalice.test import Client
    from moto import mock_aws

    from imagepipe.aws import s3_client
    from imagepipe_dev.stack import FAKE_AWS
    from imagepipe.settings import DEFAULT_AMQP_URL, ENV_AMQP_URL, Settings

    name = f"imagepipe-bench-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        bucket=name,
        amqp_url=os.environ.get(ENV_AMQP_URL, DEFAULT_AMQP_URL),
        resize_queue=f"{name}.resize",
        rerender_queue=f"{name}.rerender",
        dead_letter_queue=f"{name}.resize.dead",
        dead_letter_exchange=f"{name}.resize.dlx",
        results_exchange=f"{name}.results",
    )
    fake_aws = {**FAKE_AWS, "AWS_DEFAULT_REGION": settings.region}
    saved = {key: os.environ.get(key) for key in fake_aws}
    os.environ.update(fake_aws)
    module = _load_upload_app()
    # The app logs every upload at INFO for its audit trail; 3,000 lines would drown the table.
    quiet = logging.getLogger("imagepipe")
    level = quiet.level
    quiet.setLevel(logging.WARNING)

    @module.app.route("/ping", methods=["GET"])
    def ping():
        return {"ok": True}

    _declare(settings)
    try:
        with mock_aws(), tempfile.TemporaryDirectory() as project:
            s3 = s3_client(settings)
            s3.create_bucket(Bucket=settings.bucket)
            config = {"version": "2.0", "app_name": "imagepipe-bench",
                      "stages": {STAGE: {"environment_variables": settings.to_env()}}}
            (Path(project) / ".chalice").mkdir()
            (Path(project) / ".chalice" / "config.json").write_text(json.dumps(config))
            with Client(module.app, stage_name=STAGE, project_dir=project) as client:
                try:
                    yield client, s3, settings
                finally:
                    service = module._service
                    if service is not None and hasattr(service.publisher, "close"):
                        service.publisher.close()
    finally:
        quiet.setLevel(level)
        _delete(settings)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_upload_app():
    spec = importlib.util.spec_from_file_location("imagepipe_bench_upload_app", UPLOAD_APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _declare(settings) -> None:
    import pika

    from imagepipe.broker import declare_topology

    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        declare_topology(connection.channel(), settings)
    finally:
        connection.close()


def _delete(settings) -> None:
    import pika

    from imagepipe_dev.bench.bridge import delete_topology

    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        delete_topology(connection.channel(), settings)
    finally:
        connection.close()


def _expect(response, status: int) -> dict:
    if response.status_code != status:
        raise RuntimeError(f"expected HTTP {status}, got {response.status_code}: "
                           f"{response.body[:300]!r}")
    return json.loads(response.body) if response.body else {}


def _timed(calls: int, call: Callable[[int], object]) -> list[float]:
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _stats(samples: list[float]) -> dict:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": statistics.median(samples), "p99_ms": cuts[98], "max_ms": max(samples),
            "mean_ms": statistics.fmean(samples), "calls": len(samples)}
