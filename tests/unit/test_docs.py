"""docs/configuration.md's settings table is generated from imagepipe/settings.py."""

from pathlib import Path

import pytest

from imagepipe_dev import docs

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_page_is_in_step_with_the_settings():
    page = (ROOT / docs.CONFIGURATION).read_text()
    assert docs.with_settings_table(page) == page, (
        "docs/configuration.md is out of step with imagepipe/settings.py: "
        "run `make docs`")


def test_table_shows_the_real_defaults():
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ")[1]
            for line in docs.settings_table().splitlines()[2:]}
    # The README's hand-written table once left GIF out of the default allowed types.
    assert rows["IMAGEPIPE_ALLOWED_TYPES"] == "`image/jpeg,image/png,image/webp,image/gif`"
    assert rows["IMAGEPIPE_PRESIGN_EXPIRES"] == "`600`"
    assert "1..604800 s" in docs.settings_table()


def test_a_stale_table_is_renewed_and_the_prose_kept(tmp_path):
    stale = ("# Configuration\n\nprose before\n\n" + docs.START + "\n"
             "| `IMAGEPIPE_ALLOWED_TYPES` | `image/jpeg,image/png,image/webp` | types |\n"
             + docs.END + "\n\nprose after\n")
    page = tmp_path / docs.CONFIGURATION
    page.parent.mkdir()
    page.write_text(stale)

    assert docs.render(tmp_path) == [page]
    renewed = page.read_text()
    assert renewed.startswith("# Configuration\n\nprose before\n\n" + docs.START)
    assert renewed.endswith(docs.END + "\n\nprose after\n")
    assert "image/webp,image/gif" in renewed and "image/webp` |" not in renewed
    assert docs.render(tmp_path) == []  # already in step


def test_a_page_without_the_markers_is_an_error():
    with pytest.raises(docs.DocsError, match="settings table"):
        docs.with_settings_table("# Configuration\n")
