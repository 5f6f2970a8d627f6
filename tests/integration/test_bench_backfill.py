"""The ``backfill`` bench section: it scans every seeded manifest, finds exactly the stale ones,
and reports its rate as a ratio against the plain loop of the same run; then it backfills real
photos through the local stack and reports their rate against the same photos uploaded live."""

from __future__ import annotations

import pytest

from imagepipe_dev.bench import SECTIONS, BenchContext, backfill

pytestmark = pytest.mark.timeout(300)


def test_backfill_section_measures_the_scan_against_the_plain_loop(monkeypatch):
    monkeypatch.setattr(backfill, "MANIFESTS_QUICK", 300)
    monkeypatch.setattr(backfill, "RERENDER_PHOTOS_QUICK", 2)
    lines: list[str] = []
    result = backfill.run(BenchContext(quick=True, say=lines.append))
    summary, details = result["summary"], result["details"]
    assert SECTIONS["backfill"] == "imagepipe_dev.bench.backfill"
    assert details["manifests"] == 300 and details["stale"] == 30
    assert summary["scan_manifests_per_s"] == details["scan_rates"][0] > 0
    assert summary["scan_vs_plain_loop"] == pytest.approx(
        details["scan_rates"][0] / details["plain_loop_rates"][0], rel=0.02)
    assert any(line.startswith("scan rate over 300 manifests") for line in lines)
    # Every photo's rerender ended in variants.changed (a failed or missing one raises), and the
    # rates are the section's own.
    assert summary["live_photos_per_s"] > 0 and summary["rerender_photos_per_s"] > 0
    assert summary["rerender_vs_live"] == pytest.approx(
        summary["rerender_photos_per_s"] / summary["live_photos_per_s"], rel=0.02)
    assert any(line.startswith("live uploads:") and " workers, " in line for line in lines)
