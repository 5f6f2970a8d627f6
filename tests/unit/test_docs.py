"""The documentation stays honest: docs/configuration.md's settings table is generated from
imagepipe/settings.py, the README stays short, links lead somewhere, make targets are real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

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


# --- the README and the pages of docs/ ----------------------------------------------------------
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250
# [text](target) and ![alt](target); a target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(path: Path) -> str:
    """The page without its code blocks (a snippet's brackets are not links)."""
    return FENCE.sub("", path.read_text())


def anchors(path: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings: lower case, punctuation dropped."""
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", prose(path), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug)
    return found


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(prose(path))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto:


def makefile_targets() -> set[str]:
    """The targets people run: the Makefile's .PHONY list."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    phony = re.search(r"^\.PHONY:(.*)$", text, re.M)
    assert phony, "the Makefile declares its targets .PHONY"
    return set(phony.group(1).split())


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; move detail into docs/ (at most {MAX_README_LINES})")


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_every_relative_link_resolves(path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading makes #{anchor} in {page_id(linked)}")
    assert not broken, f"{page_id(path)}: " + "; ".join(broken)


def test_the_link_check_finds_what_it_must():
    page = ROOT / "docs" / "development.md"
    assert "../README.md#commands" in relative_links(page)
    assert "commands" in anchors(README)
    assert "imagepipe-upload" in anchors(ROOT / "docs" / "commands.md")  # backticks dropped
    # The Uppy snippet's code is not a link.
    assert not [t for t in relative_links(ROOT / "docs" / "browser-uploads.md") if "uppy" in t]


def test_every_make_target_the_readme_names_exists():
    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", README.read_text()))
    assert named, "the README names its make targets"
    assert named <= makefile_targets(), named - makefile_targets()


def test_the_commands_table_lists_every_make_target():
    table = set(re.findall(r"^\| `make ([a-z][a-z-]*)", README.read_text(), re.M))
    assert table == makefile_targets(), {
        "missing from the README": makefile_targets() - table,
        "not in the Makefile": table - makefile_targets()}


def test_the_demo_page_screenshot_is_a_small_png():
    shot = ROOT / "docs" / "demo-page.png"
    assert "docs/demo-page.png" in README.read_text()
    assert shot.stat().st_size < 300 * 1024
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.width >= 600


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_no_development_log_wording(path):
    """The docs describe the project, not the sessions that built it."""
    text = path.read_text()
    for phrase in (r"\bissue \d+", r"this (2|two)-core machine", r"\bmy run\b",
                   r"\bthis session\b", r"\b20\d\d-\d\d-\d\d\b(?! *\])"):
        assert not re.search(phrase, text, re.I), f"{page_id(path)}: {phrase}"
