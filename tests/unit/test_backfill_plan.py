"""The backfill planner (``imagepipe_tools.backfill``) over moto's S3: what it finds stale, what
jobs it would send, what it skips; and the ``imagepipe backfill`` command's output."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from moto import mock_aws

from imagepipe import keys
from imagepipe.aws import s3_client
from imagepipe.messages import RERENDER_JOB_TYPE, ResizeJob, State
from imagepipe.settings import Settings
from imagepipe.spec import DEFAULT_VARIANTS, Variant
from imagepipe_dev.bench.backfill import changed_spec, seed, seed_photo
from imagepipe_tools import cli
from imagepipe_tools.backfill import Backfill, Summary, manifest_upload_ids
from imagepipe_tools.cli import backfill as backfill_cli

ENGINE = "pillow"
WEBP = Variant("webp", "fit", 800, 800, format="webp")
# What the stored photos were made with: "lg" at another quality, and an "old" size since dropped.
OLD = changed_spec(DEFAULT_VARIANTS, "lg") + (Variant("old", "fit", 300, 300),)


@pytest.fixture
def s3(bucket_name):
    with mock_aws():
        client = s3_client(Settings(bucket=bucket_name))
        client.create_bucket(Bucket=bucket_name)
        yield client


def plan(s3, bucket, variants=DEFAULT_VARIANTS, **options) -> tuple[Summary, list[ResizeJob]]:
    published: list[ResizeJob] = []
    run = Backfill(s3, bucket, variants, ENGINE, publish=published.append,
                   concurrency=3, window=5, **options)
    return run.run(), published


def test_the_listing_is_paginated_and_reads_only_manifest_keys(s3, bucket_name):
    ids = seed(s3, bucket_name, 7, DEFAULT_VARIANTS)
    s3.put_object(Bucket=bucket_name, Key="manifests/not-an-id.json", Body=b"{}")
    calls = []
    s3.meta.events.register("before-call.s3.ListObjectsV2",
                            lambda params, **_: calls.append(params["query_string"]["max-keys"]))
    assert sorted(manifest_upload_ids(s3, bucket_name, page_size=3)) == sorted(ids)
    assert calls == [3, 3, 3]  # seven keys plus the odd one, three at a time


def test_a_changed_variant_is_stale_a_new_one_missing_a_dropped_one_extra(s3, bucket_name):
    ids = seed(s3, bucket_name, 12, OLD)
    summary, jobs = plan(s3, bucket_name, DEFAULT_VARIANTS + (WEBP,))
    assert summary.scanned == 12 and summary.up_to_date == 0 and summary.ok
    assert summary.stale == {"lg": 12} and summary.missing == {"webp": 12}
    assert summary.extra == {"old": 12}
    assert summary.jobs_planned == summary.jobs_published == 12 and summary.pruned == 0
    assert sorted(j.upload_id for j in jobs) == sorted(ids)
    job = jobs[0]
    assert job.rerender == ("lg", "webp") and job.prune == ()  # spec order, only those
    assert job.message_type == RERENDER_JOB_TYPE and job.job_id == job.upload_id
    assert job.source_key == keys.original_key(job.upload_id) and job.bucket == bucket_name
    assert ResizeJob.decode(job.encode()) == job  # a valid v1 body


def test_fresh_photos_get_no_job(s3, bucket_name):
    seed(s3, bucket_name, 9, DEFAULT_VARIANTS)
    summary, jobs = plan(s3, bucket_name)
    assert (summary.scanned, summary.up_to_date, summary.jobs_planned, jobs) == (9, 9, 0, [])
    assert not summary.stale and not summary.missing and not summary.extra


def test_legacy_manifests_without_fingerprints_compare_by_their_spec(s3, bucket_name):
    fresh = seed(s3, bucket_name, 4, DEFAULT_VARIANTS, fingerprinted=False)
    stale = seed(s3, bucket_name, 3, changed_spec(DEFAULT_VARIANTS, "md"), fingerprinted=False)
    summary, jobs = plan(s3, bucket_name)
    assert summary.up_to_date == len(fresh) and summary.stale == {"md": 3}
    assert sorted(j.upload_id for j in jobs) == sorted(stale)
    assert {j.rerender for j in jobs} == {("md",)}


def test_only_restricts_the_names_that_count(s3, bucket_name):
    seed(s3, bucket_name, 5, OLD)
    summary, jobs = plan(s3, bucket_name, DEFAULT_VARIANTS + (WEBP,), only=["webp"])
    assert summary.stale == {} and summary.missing == {"webp": 5}
    assert {j.rerender for j in jobs} == {("webp",)}
    summary, jobs = plan(s3, bucket_name, DEFAULT_VARIANTS, only=["md"])
    assert (summary.up_to_date, jobs) == (5, [])  # md is fresh everywhere


def test_prune_sends_the_names_no_longer_in_the_spec(s3, bucket_name):
    seed(s3, bucket_name, 2, DEFAULT_VARIANTS + (Variant("old", "fit", 300, 300),))
    summary, jobs = plan(s3, bucket_name)
    assert (summary.extra, summary.up_to_date, jobs) == ({"old": 2}, 2, [])  # kept, no job
    summary, jobs = plan(s3, bucket_name, prune=True)
    assert [(j.rerender, j.prune) for j in jobs] == [((), ("old",))] * 2
    assert summary.pruned == 2 and summary.jobs_published == 2


def test_a_dry_run_publishes_nothing_and_reports_the_same(s3, bucket_name):
    seed(s3, bucket_name, 6, OLD)
    run = Backfill(s3, bucket_name, DEFAULT_VARIANTS, ENGINE, dry_run=True, prune=True)
    summary = run.run()
    assert summary.dry_run and summary.jobs_planned == 6 and summary.jobs_published == 0
    assert summary.pruned == 0 and summary.stale == {"lg": 6} and summary.extra == {"old": 6}
    with pytest.raises(ValueError):
        Backfill(s3, bucket_name, DEFAULT_VARIANTS, ENGINE)  # publishing needs a publisher


def test_photos_whose_status_is_not_done_are_left_alone(s3, bucket_name):
    done = seed_photo(s3, bucket_name, OLD)
    busy = seed_photo(s3, bucket_name, OLD, state=State.PROCESSING)
    failed = seed_photo(s3, bucket_name, OLD, state=State.FAILED)
    summary, jobs = plan(s3, bucket_name)
    assert [j.upload_id for j in jobs] == [done]
    assert summary.skipped_not_done == 2 and summary.jobs_planned == 1
    reported = []
    Backfill(s3, bucket_name, DEFAULT_VARIANTS, ENGINE, dry_run=True).run(
        report=lambda finding, outcome: reported.append((finding.upload_id, outcome,
                                                         finding.skipped)))
    assert sorted(reported) == sorted([(done, "would_publish", None),
                                       (busy, "skipped", State.PROCESSING),
                                       (failed, "skipped", State.FAILED)])


def test_the_job_carries_the_upload_records_fields(s3, bucket_name):
    upload_id = seed_photo(s3, bucket_name, OLD, record={
        "filename": "cat.png", "content_type": "image/png", "owner": "alice",
        "callback_url": "https://example.com/hook"})
    _, (job,) = plan(s3, bucket_name)
    assert (job.upload_id, job.content_type, job.filename, job.owner, job.callback_url) == (
        upload_id, "image/png", "cat.png", "alice", "https://example.com/hook")
    s3.delete_object(Bucket=bucket_name, Key=keys.upload_record_key(upload_id))
    _, (job,) = plan(s3, bucket_name)  # no record: the manifest's source format
    assert (job.content_type, job.filename, job.owner, job.callback_url) == (
        "image/jpeg", None, None, None)


def test_an_unreadable_manifest_is_a_failure_not_the_end(s3, bucket_name):
    good = seed(s3, bucket_name, 3, OLD)
    bad = keys.new_upload_id()
    s3.put_object(Bucket=bucket_name, Key=keys.manifest_key(bad), Body=b"not json")
    summary, jobs = plan(s3, bucket_name)
    assert summary.failed == 1 and not summary.ok and bad in summary.errors[0]
    assert sorted(j.upload_id for j in jobs) == sorted(good)


def test_a_refused_publish_stops_the_run(s3, bucket_name):
    seed(s3, bucket_name, 5, OLD)
    sent = []

    def publish(job):
        if len(sent) == 2:
            raise RuntimeError("queue missing")
        sent.append(job)

    summary = Backfill(s3, bucket_name, DEFAULT_VARIANTS, ENGINE, publish=publish).run()
    assert summary.jobs_published == 2 and summary.stopped and not summary.ok
    assert summary.scanned == 3  # it stopped at the refused one


def test_rate_caps_jobs_per_second(s3, bucket_name):
    seed(s3, bucket_name, 5, OLD)
    now = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(round(seconds, 6))
        now[0] += seconds

    published = []
    Backfill(s3, bucket_name, DEFAULT_VARIANTS, ENGINE, publish=published.append, rate=2,
             clock=lambda: now[0], sleep=sleep).run()
    assert len(published) == 5
    assert slept == [0.5, 0.5, 0.5, 0.5]  # the first at once, then one every half second


def test_a_second_run_after_the_rerenders_landed_publishes_nothing(s3, bucket_name):
    seed(s3, bucket_name, 4, OLD)
    _, jobs = plan(s3, bucket_name, DEFAULT_VARIANTS, prune=True)
    assert len(jobs) == 4
    seed_photo(s3, bucket_name, OLD, upload_id=jobs[0].upload_id)  # still the old manifest
    for job in jobs[1:]:  # what the worker writes for the other three
        seed_photo(s3, bucket_name, DEFAULT_VARIANTS, upload_id=job.upload_id)
    summary, again = plan(s3, bucket_name, DEFAULT_VARIANTS, prune=True)
    assert [j.upload_id for j in again] == [jobs[0].upload_id]
    assert summary.up_to_date == 3


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def stage(s3, bucket_name, monkeypatch):
    """The command's settings come from the environment (it names a bucket)."""
    env = Settings(bucket=bucket_name, variants=DEFAULT_VARIANTS + (WEBP,),
                   imaging_engine=ENGINE).to_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_the_command_dry_run_prints_a_summary(s3, bucket_name, stage, capsys):
    seed(s3, bucket_name, 3, OLD)
    seed(s3, bucket_name, 2, DEFAULT_VARIANTS + (WEBP,))
    seed_photo(s3, bucket_name, OLD, state=State.PROCESSING)
    assert cli.main(["backfill", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "scanned 6 manifests: 2 up to date, 3 to re-make, 1 skipped (status not done), 0 failed",
        "stale:   lg 4",
        "missing: webp 4",
        "extra:   old 4",
        "dry run: 3 jobs would be published; nothing was published or deleted",
    ]
    assert err == ""  # no bar (stderr is not a terminal), no per-photo lines without -v


def test_the_command_json_summary_and_verbose_lines(s3, bucket_name, stage, capsys):
    ids = seed(s3, bucket_name, 2, OLD)
    assert cli.main(["-v", "backfill", "--dry-run", "--json", "--only", "webp"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "dry_run": True, "scanned": 2, "up_to_date": 0, "stale": {}, "missing": {"webp": 2},
        "extra": {"old": 2}, "skipped_not_done": 0, "jobs_planned": 2, "jobs_published": 0,
        "pruned": 0, "failed": 0, "stopped": None, "errors": []}
    assert len(out.splitlines()) == 1
    for upload_id in ids:
        assert f"{upload_id}: missing webp: would publish" in err.splitlines()


def test_the_command_refuses_an_unknown_only_name(stage, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["backfill", "--dry-run", "--only", "nope"])
    assert exited.value.code == cli.EXIT_USAGE
    assert "not in the variant spec" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["backfill", "--rate", "0"])
    assert exited.value.code == cli.EXIT_USAGE


def test_the_command_exits_1_when_a_manifest_is_unreadable(s3, bucket_name, stage, capsys):
    s3.put_object(Bucket=bucket_name, Key=keys.manifest_key(keys.new_upload_id()), Body=b"[")
    assert cli.main(["backfill", "--dry-run"]) == cli.EXIT_FAILED
    assert "error: " in capsys.readouterr().out


def test_the_progress_bar_counts_photos_and_jobs(s3, bucket_name):
    from rich.console import Console

    seed(s3, bucket_name, 4, OLD)
    seed(s3, bucket_name, 3, DEFAULT_VARIANTS)
    bar = backfill_cli._Bar(s3, bucket_name)
    screen = io.StringIO()
    bar.progress.live.console = Console(file=screen, force_terminal=True, width=120)
    published = []
    with bar:
        Backfill(s3, bucket_name, DEFAULT_VARIANTS, ENGINE, publish=published.append).run(
            progress=bar)
        bar._count()  # the background count, made sure of
    task = bar.progress.tasks[0]
    assert (task.completed, task.total, task.fields["jobs"]) == (7, 7, 4)
    assert "7/7" in screen.getvalue() and "4 jobs" in screen.getvalue()


def test_summary_text_of_a_stopped_run_says_how_to_go_on():
    summary = Summary(scanned=3, jobs_planned=3, jobs_published=2, failed=1,
                      stopped="the broker refused a rerender job: queue missing",
                      errors=["x: publish refused: queue missing"])
    text = backfill_cli.summary_text(replace(summary))
    assert "jobs published: 2, variants pruned: 0" in text
    assert "stopped early: the broker refused a rerender job: queue missing; run it again" in text


def test_a_dry_runs_bar_counts_the_jobs_it_would_publish(s3, bucket_name):
    seed(s3, bucket_name, 2, OLD)
    bar = backfill_cli._Bar(s3, bucket_name, dry_run=True)
    bar.progress.live.console = _quiet_console()
    with bar:
        Backfill(s3, bucket_name, DEFAULT_VARIANTS, ENGINE, dry_run=True).run(progress=bar)
    assert (bar.progress.tasks[0].completed, bar.progress.tasks[0].fields["jobs"]) == (2, 2)


def _quiet_console():
    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=True, width=120)


def test_a_bucket_that_cannot_be_listed_ends_the_command_with_exit_1(s3, bucket_name, stage,
                                                                     capsys, monkeypatch):
    monkeypatch.setenv("IMAGEPIPE_BUCKET", "no-such-bucket-here")
    assert cli.main(["backfill", "--dry-run", "--json"]) == cli.EXIT_FAILED
    summary = json.loads(capsys.readouterr().out)
    assert summary["scanned"] == 0 and "NoSuchBucket" in summary["stopped"]
